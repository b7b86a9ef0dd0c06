"""Static checks of the container image and the Kubernetes manifests, without Docker or a cluster.

The manifests are rendered as kustomize renders them (deploy.render), checked field by field against
the Kubernetes API types (deploy.schema), then against what the gateway needs (deploy.manifests); the
Dockerfile is checked by deploy.image. The expectations are tied to the gateway's own code, and
mutation tests prove that each check catches what it is meant to catch.
"""

from __future__ import annotations

import copy
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.image import (
    dockerfile_problems,
    dockerfile_stages,
    dockerignore_excludes,
    dockerignore_patterns,
    final_user,
)
from deploy.manifests import (
    DEFAULT_DRAIN_SECONDS,
    GATEWAY_PORTS,
    LIVE_PATH,
    READY_PATH,
    containers,
    find,
    identity_problems,
    of_kind,
    pod_labels,
    problems,
    selects,
    servegate_command,
    setting,
    store_url,
)
from deploy.render import Doc, identity, load_yaml, named_items, render
from deploy.schema import schema_errors

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
BASE = KUBE / "base"
OVERLAYS = sorted(p.parent for p in (KUBE / "overlays").glob("*/kustomization.yaml"))
KUSTOMIZATIONS = [BASE, *OVERLAYS]
HEALTHCHECK_SCRIPT = ROOT / "deploy" / "docker" / "healthcheck.py"
# The Open Inference Protocol's server health paths: the only ones a probe may use.
OIP_HEALTH_PATHS = ("/v2/health/live", "/v2/health/ready")


def test_the_checks_expect_what_the_gateway_serves() -> None:
    from gateway.protocol.http_app import routes
    from gateway.settings import ServerSettings

    handlers: dict[str, object] = {}

    class Handlers:
        def __getattr__(self, name: str) -> object:
            return handlers.setdefault(name, object())

    def deny(request: object) -> None:
        raise PermissionError("no token")

    table = {(r.method, r.pattern): r.handler for r in routes(Handlers(), authorize=deny)}
    for path in (READY_PATH, LIVE_PATH):
        assert path in OIP_HEALTH_PATHS
        # kubelet sends no token: the health routes must be the bare handlers, not wrapped in auth
        assert table[("GET", path)] in handlers.values(), path
    defaults = ServerSettings()
    assert {"http": defaults.http_port, "grpc": defaults.grpc_port, "admin": defaults.admin_port} == GATEWAY_PORTS
    assert defaults.drain_seconds == DEFAULT_DRAIN_SECONDS


@pytest.fixture(scope="module")
def k8s_models() -> Any:
    return pytest.importorskip("kubernetes.client.models", reason="the Kubernetes API types come with kserve")


@pytest.fixture
def base_docs() -> list[Doc]:
    return render(BASE)


def gateway(docs: list[Doc]) -> Doc:
    found = find(docs, "Deployment", "servegate")
    assert found is not None
    return found


def gateway_container(docs: list[Doc]) -> Doc:
    return containers(gateway(docs))[0]


def test_every_manifest_names_a_known_kind_in_its_api_group() -> None:
    files = [p for p in KUBE.rglob("*.yaml") if p.name != "kustomization.yaml"]
    assert len(files) >= 12
    for path in files:
        docs = load_yaml(path)
        assert docs, f"{path} holds no document"
        assert identity_problems(docs) == [], path


@pytest.mark.parametrize("kdir", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_kustomization_lists_files_that_exist_and_forgets_none(kdir: Path) -> None:
    spec = load_yaml(kdir / "kustomization.yaml")[0]
    listed = [*spec.get("resources", []), *(p["path"] for p in spec.get("patches", []) if "path" in p)]
    assert all((kdir / entry).exists() for entry in listed), listed
    assert {p.name for p in kdir.glob("*.yaml")} - {"kustomization.yaml"} == {e for e in listed if "/" not in e}


@pytest.mark.parametrize("kdir", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_rendered_manifests_use_only_fields_of_the_kubernetes_api(kdir: Path, k8s_models: Any) -> None:
    docs = render(kdir)
    assert [e for d in docs for e in schema_errors(k8s_models, d)] == []
    assert "$patch" not in json.dumps(docs)


@pytest.mark.parametrize("kdir", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_rendered_manifests_hold_together(kdir: Path) -> None:
    assert problems(render(kdir)) == []


def normalised(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: normalised(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [normalised(v) for v in value]
        return sorted(items, key=lambda i: i["name"]) if named_items(items) else items
    return value


@pytest.mark.parametrize("kdir", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_the_renderer_agrees_with_kubectl_kustomize(kdir: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    built = subprocess.run([kubectl, "kustomize", str(kdir)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    theirs = sorted((normalised(d) for d in yaml.safe_load_all(built.stdout) if d), key=identity)
    assert theirs == sorted((normalised(d) for d in render(kdir)), key=identity)


def test_base_runs_three_gateways_on_a_shared_durable_redis(base_docs: list[Doc]) -> None:
    assert gateway(base_docs)["spec"]["replicas"] == 3
    assert store_url(gateway_container(base_docs)).scheme == "redis"
    [hpa] = of_kind(base_docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["spec"]["minReplicas"] == 3
    [pdb] = of_kind(base_docs, "PodDisruptionBudget")
    assert pdb["spec"].get("maxUnavailable") == 1 or pdb["spec"].get("minAvailable") == 2
    [redis] = of_kind(base_docs, "StatefulSet")
    assert redis["spec"]["volumeClaimTemplates"]
    services = {s["metadata"]["name"]: s["spec"] for s in of_kind(base_docs, "Service")}
    assert services["servegate-admin"]["type"] == "ClusterIP"
    assert [p["port"] for p in services["servegate-admin"]["ports"]] == [GATEWAY_PORTS["admin"]]
    assert {p["name"]: p["port"] for p in services["servegate"]["ports"]} == {"http": 8000, "grpc": 8001}
    assert all(sa["automountServiceAccountToken"] is False for sa in of_kind(base_docs, "ServiceAccount"))


def test_single_node_overlay_keeps_state_in_sqlite_without_redis() -> None:
    docs = render(KUBE / "overlays" / "single-node")
    assert gateway(docs)["spec"]["replicas"] == 1
    assert of_kind(docs, "StatefulSet", "HorizontalPodAutoscaler", "NetworkPolicy") == []
    assert store_url(gateway_container(docs)).scheme == "sqlite"
    volumes = {v["name"]: v for v in gateway(docs)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"] == {"name": "state", "persistentVolumeClaim": {"claimName": "servegate-state"}}


def test_dedicated_controller_overlay_moves_control_to_one_controller_pod() -> None:
    docs = render(KUBE / "overlays" / "dedicated-controller")
    controller = find(docs, "Deployment", "servegate-controller")
    assert controller is not None and controller["spec"]["replicas"] == 1
    assert [servegate_command(c) for c in containers(controller)] == ["controller"]
    assert setting(containers(controller)[0], "store") == setting(gateway_container(docs), "store")
    assert setting(gateway_container(docs), "controller") == "false"
    assert not any(selects(s["spec"]["selector"], pod_labels(controller)) for s in of_kind(docs, "Service"))


def _change(kind: str, name: str, path: str, value: Any) -> Callable[[list[Doc]], None]:
    """A mutation that sets a dotted path (list indices as numbers) in one document."""
    def mutate(docs: list[Doc]) -> None:
        node: Any = find(docs, kind, name)
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        for part in parents:
            node = node[part]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return mutate


def _gw(path: str, value: Any) -> Callable[[list[Doc]], None]:
    return _change("Deployment", "servegate", path, value)


POD = "spec.template.spec"
GW = f"{POD}.containers.0"
MUTATIONS: list[tuple[str, Callable[[list[Doc]], None], str]] = [
    ("readiness-path", _gw(f"{GW}.readinessProbe.httpGet.path", "/healthz"), "readinessProbe must GET"),
    ("liveness-port", _gw(f"{GW}.livenessProbe.httpGet.port", "admin"), "livenessProbe must GET"),
    ("selector", _gw("spec.selector.matchLabels", {"app.kubernetes.io/name": "x"}), "selector does not match"),
    ("root-user", _gw(f"{GW}.securityContext.runAsUser", 0), "non-root runAsUser"),
    ("escalation", _gw(f"{GW}.securityContext.allowPrivilegeEscalation", True), "allowPrivilegeEscalation"),
    ("writable-root", _gw(f"{GW}.securityContext.readOnlyRootFilesystem", False), "read-only"),
    ("short-grace", _gw(f"{POD}.terminationGracePeriodSeconds", 30), "terminationGracePeriodSeconds"),
    ("no-prestop", _gw(f"{GW}.lifecycle", None), "no preStop pause"),
    ("renamed-port", _gw(f"{GW}.ports.1.name", "rpc"), "container ports"),
    ("no-limits", _gw(f"{GW}.resources", {"requests": {"cpu": "1"}}), "resources need"),
    ("scrape-port", _gw("spec.template.metadata.annotations", {"prometheus.io/scrape": "true"}), "Prometheus"),
    ("missing-secret", _gw(f"{GW}.env.2.valueFrom.secretKeyRef.name", "servegate-old"), "Secret servegate-old"),
    ("literal-secret", _gw(f"{GW}.env.2", {"name": "SERVEGATE_JWT_SECRET", "value": "s3"}), "literal value"),
    ("no-jwt-key", _gw(f"{GW}.env.2", {"name": "SERVEGATE_LOG_LEVEL", "value": "info"}), "needs a JWT key"),
    ("env-order", lambda d: gateway_container(d)["env"].reverse(), "before it is defined"),
    ("sqlite-shared", _gw(f"{GW}.env.1.value", "sqlite:///var/lib/servegate/s.db"), "SQLite cannot be shared"),
    ("models-writable", _gw(f"{GW}.volumeMounts.0.readOnly", False), "read-only mount"),
    ("no-controller", _gw(f"{GW}.args", ["serve", "--repository", "/models", "--controller", "false"]),
     "no promotion controller"),
    ("no-spread", _gw(f"{POD}.affinity", None), "anti-affinity"),
    ("service-target", _change("Service", "servegate", "spec.ports.1.targetPort", "grcp"), "targetPort grcp"),
    ("service-selector", _change("Service", "servegate-admin", "spec.selector", {"x": "y"}), "selects 0"),
    ("redis-port", _change("Service", "servegate-redis", "spec.ports.0.port", 6380), "store servegate-redis:6379"),
    ("hpa-target", _change("HorizontalPodAutoscaler", "servegate", "spec.scaleTargetRef.name", "gw"),
     "scaleTargetRef"),
    ("pdb-both", _change("PodDisruptionBudget", "servegate", "spec.minAvailable", 2), "exactly one"),
    ("appendonly-off", _change("StatefulSet", "servegate-redis", f"{GW}.args.5", "no"), "--appendonly yes"),
    ("no-claims", _change("StatefulSet", "servegate-redis", "spec.volumeClaimTemplates", None),
     "volumeClaimTemplate"),
    ("real-secret", _change("Secret", "servegate-jwt", "stringData.secret", "0123abcd"), "placeholders"),
    ("policy-blocks", _change("NetworkPolicy", "servegate-redis", "spec.ingress.0.from.0.podSelector",
                              {"matchLabels": {"a": "b"}}), "blocks servegate"),
    ("wrong-group", _gw("apiVersion", "extensions/v1beta1"), "not in group"),
]


@pytest.mark.parametrize(("mutate", "expected"), [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS])
def test_checks_catch_a_broken_manifest(
    base_docs: list[Doc], mutate: Callable[[list[Doc]], None], expected: str
) -> None:
    broken = copy.deepcopy(base_docs)
    mutate(broken)
    assert broken != base_docs
    found = problems(broken)
    assert any(expected in p for p in found), found


def test_schema_check_catches_a_misspelt_field_and_a_wrong_type(base_docs: list[Doc], k8s_models: Any) -> None:
    broken = copy.deepcopy(gateway(base_docs))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    broken["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] = 8002
    errors = schema_errors(k8s_models, broken)
    assert any("unknown field 'readinesProbe'" in e for e in errors), errors
    assert any("annotations.prometheus.io/port: expected str" in e for e in errors), errors


def test_dockerfile_builds_a_slim_non_root_image_that_serves_and_drains() -> None:
    assert dockerfile_problems((ROOT / "Dockerfile").read_text(), ROOT) == []


DOCKERFILE_MUTATIONS: list[tuple[str, Callable[[str], str], str]] = [
    ("single-stage", lambda t: t.split("AS runtime")[1].replace("COPY --from=builder", "COPY"), "multi-stage"),
    ("root", lambda t: t.replace("USER ${SERVEGATE_UID}:${SERVEGATE_UID}", "USER root"), "non-root USER"),
    ("uid-zero", lambda t: t.replace("ARG SERVEGATE_UID=10001", "ARG SERVEGATE_UID=0"), "non-root USER"),
    ("no-healthcheck", lambda t: re.sub(r"HEALTHCHECK[^\n]*\\\n[^\n]*\n", "", t), "HEALTHCHECK"),
    ("ports", lambda t: t.replace("EXPOSE 8000 8001 8002", "EXPOSE 8000"), "EXPOSE"),
    ("stop-signal", lambda t: t.replace("STOPSIGNAL SIGTERM", "STOPSIGNAL SIGKILL"), "STOPSIGNAL"),
    ("baked-secret", lambda t: t.replace("PYTHONUNBUFFERED=1", "PYTHONUNBUFFERED=1 SERVEGATE_JWT_SECRET=a"),
     "bakes a secret"),
    ("shell-entrypoint", lambda t: t.replace('ENTRYPOINT ["servegate"]', "ENTRYPOINT servegate"), "ENTRYPOINT"),
    ("store-off-volume", lambda t: t.replace("sqlite:///var/lib/servegate/", "sqlite:///opt/"), "default store"),
    ("ignored-source", lambda t: t.replace("COPY rollout ./rollout", "COPY tests ./tests"), "COPY source tests"),
    ("compilers-at-runtime", lambda t: t.replace("RUN groupadd", "RUN apt-get install gcc && groupadd"),
     "compilers"),
]


@pytest.mark.parametrize(("mutate", "expected"), [m[1:] for m in DOCKERFILE_MUTATIONS],
                         ids=[m[0] for m in DOCKERFILE_MUTATIONS])
def test_dockerfile_checks_catch_a_broken_image(mutate: Callable[[str], str], expected: str) -> None:
    text = (ROOT / "Dockerfile").read_text()
    changed = mutate(text)
    assert changed != text
    found = dockerfile_problems(changed, ROOT)
    assert any(expected in p for p in found), found


def test_the_image_user_is_the_pods_user() -> None:
    user = final_user(dockerfile_stages((ROOT / "Dockerfile").read_text()))
    assert user is not None
    deployments = of_kind(render(KUBE / "overlays" / "dedicated-controller"), "Deployment")
    assert len(deployments) == 2
    for w in deployments:
        assert w["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(user.split(":")[0])


def test_dockerignore_keeps_the_context_to_what_the_build_copies() -> None:
    patterns = dockerignore_patterns(ROOT)
    for path in (".git/HEAD", ".venv/bin/python", "gateway/__pycache__/app.cpython-311.pyc",
                 "tests/test_deploy.py", ".pytest_cache/v/cache/nodeids", "servegate.egg-info/PKG-INFO",
                 "state.db", "deploy/kubernetes/base/pdb.yaml", "gateway/.env"):
        assert dockerignore_excludes(patterns, path), path
    for path in ("pyproject.toml", "README.md", "gateway/cli.py", "rollout/store/base.py",
                 "deploy/docker/healthcheck.py"):
        assert not dockerignore_excludes(patterns, path), path


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200
    paths: list[str] = []

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[int, type[_Health]]]:
    handler = type("Health", (_Health,), {"status": 200, "paths": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def run_healthcheck(port: int) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVEGATE_")}
    env["SERVEGATE_HTTP_PORT"] = str(port)
    # -S: the script needs only the standard library, as in the image.
    command = [sys.executable, "-S", str(HEALTHCHECK_SCRIPT)]
    return subprocess.run(command, env=env, capture_output=True, timeout=30).returncode


def test_healthcheck_passes_only_while_the_gateway_is_ready(health_server: tuple[int, type[_Health]]) -> None:
    port, handler = health_server
    assert run_healthcheck(port) == 0
    handler.status = 503  # starting or draining
    assert run_healthcheck(port) == 1
    assert handler.paths == [READY_PATH, READY_PATH]


def test_healthcheck_fails_when_nothing_listens() -> None:
    with socket.socket() as bound:  # bound but not listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        assert run_healthcheck(bound.getsockname()[1]) == 1


def test_the_command_reports_a_broken_overlay_of_ones_own(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from deploy.manifests import main

    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(
        {"resources": [str(BASE)], "patches": [{"path": "probe.yaml"}]}))
    (tmp_path / "probe.yaml").write_text(yaml.safe_dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "servegate"},
        "spec": {"template": {"spec": {"containers": [
            {"name": "gateway", "readinessProbe": {"httpGet": {"path": "/healthz"}}}]}}}}))
    assert main([str(BASE)]) == 0
    assert main([str(tmp_path)]) == 1
    assert "readinessProbe must GET one of ['/v2/health/ready']" in capsys.readouterr().out
