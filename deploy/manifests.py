"""What the gateway and Kubernetes need of servegate's manifests, checked without a cluster.

`problems(docs)` lists everything wrong with a rendered set of manifests: names and API groups,
selectors, ports, probes on the gateway's health paths, drain and grace periods, security contexts,
Secrets, the store each process uses, scaling, network policy and scraping. Run it on a kustomization
of your own before applying it:

    python -m deploy.manifests deploy/kubernetes/overlays/single-node [--kubectl]

(`--kubectl` renders with `kubectl kustomize`, for overlays that use more of kustomize than
deploy.render knows.)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from deploy.render import Doc, identity, render
from deploy.schema import schema_errors

# What `servegate serve` listens on and answers by default (gateway.settings, gateway.protocol).
GATEWAY_PORTS = {"http": 8000, "grpc": 8001, "admin": 8002}
PORT_FLAGS = {"--http-port": "http", "--grpc-port": "grpc", "--admin-port": "admin"}
READY_PATH = "/v2/health/ready"  # Open Inference Protocol server health
LIVE_PATH = "/v2/health/live"
DEFAULT_DRAIN_SECONDS = 30
GATEWAY_IMAGE = "servegate"
PLACEHOLDER = "REPLACE_ME"
SENSITIVE = re.compile(r"SECRET|PASSWORD|TOKEN|PRIVATE|(^|_)KEY$", re.IGNORECASE)

# The API group each kind belongs to ("" is the core group); anything else is unexpected here.
KIND_GROUPS = {
    "ServiceAccount": "", "Secret": "", "Service": "", "PersistentVolumeClaim": "",
    "Deployment": "apps", "StatefulSet": "apps", "HorizontalPodAutoscaler": "autoscaling",
    "PodDisruptionBudget": "policy", "NetworkPolicy": "networking.k8s.io",
    "ServiceMonitor": "monitoring.coreos.com",
}
DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def find(docs: list[Doc], kind: str, name: str) -> Doc | None:
    return next((d for d in docs if identity(d) == (kind, name)), None)


def of_kind(docs: list[Doc], *kinds: str) -> list[Doc]:
    return [d for d in docs if d["kind"] in kinds]


def workloads(docs: list[Doc]) -> list[Doc]:
    return of_kind(docs, "Deployment", "StatefulSet")


def pod_labels(workload: Doc) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"].get("labels", {}))


def selects(selector: dict[str, str] | None, labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in (selector or {}).items())


def selected_workloads(docs: list[Doc], selector: dict[str, str] | None) -> list[Doc]:
    return [w for w in workloads(docs) if selects(selector, pod_labels(w))]


def containers(workload: Doc) -> list[Doc]:
    spec = workload["spec"]["template"]["spec"]
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def image_name(image: str) -> str:
    return image.split("@")[0].rsplit("/", 1)[-1].split(":")[0]


def servegate_command(container: Doc) -> str | None:
    """'serve', 'controller', … for a servegate container; None for any other image."""
    if image_name(container.get("image", "")) != GATEWAY_IMAGE:
        return None
    args = container.get("args") or []
    return str(args[0]) if args else "serve"


def servegate_processes(docs: list[Doc]) -> Iterator[tuple[Doc, Doc, str]]:
    for w in workloads(docs):
        for c in containers(w):
            if (command := servegate_command(c)) is not None:
                yield w, c, command


def args_of(container: Doc) -> list[str]:
    return [str(a) for a in [*container.get("command", []), *container.get("args", [])]]


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args[:-1] else None


def env_value(container: Doc, name: str) -> str | None:
    return next((e.get("value") for e in container.get("env", []) if e["name"] == name), None)


def setting(container: Doc, name: str) -> str | None:
    """A servegate setting as the CLI resolves it: the flag first, then SERVEGATE_<NAME>."""
    from_flag = flag(args_of(container), f"--{name.replace('_', '-')}")
    return from_flag or env_value(container, f"SERVEGATE_{name.upper()}")


def store_url(container: Doc) -> Any:
    """The store URL with $(VAR) references blanked out, split into its parts."""
    return urlsplit(re.sub(r"\$\(\w+\)", "x", setting(container, "store") or ""))


def replicas(workload: Doc, docs: list[Doc]) -> int:
    name = workload["metadata"]["name"]
    most = [h["spec"]["maxReplicas"] for h in of_kind(docs, "HorizontalPodAutoscaler")
            if h["spec"]["scaleTargetRef"]["name"] == name]
    return int(max([workload["spec"].get("replicas", 1), *most]))


def is_literal_secret(name: str, value: str) -> bool:
    """A sensitive setting given inline; a path (to a file mounted from a Secret) is fine."""
    return bool(SENSITIVE.search(name)) and bool(value) and not value.startswith("/")


def identity_problems(docs: list[Doc]) -> list[str]:
    out, seen = [], set()
    for doc in docs:
        kind, name = doc.get("kind"), (doc.get("metadata") or {}).get("name")
        if kind not in KIND_GROUPS or not name:
            out.append(f"{kind}/{name}: missing or unexpected kind or metadata.name")
            continue
        group = str(doc.get("apiVersion", "")).rpartition("/")[0]
        if group != KIND_GROUPS[kind]:
            out.append(f"{kind}/{name}: apiVersion {doc.get('apiVersion')} is not in group {KIND_GROUPS[kind]!r}")
        if not (DNS_LABEL if kind == "Service" else DNS_NAME).fullmatch(name) or len(name) > 63:
            out.append(f"{kind}/{name}: not a valid object name")
        if (kind, name) in seen:
            out.append(f"{kind}/{name}: defined twice")
        seen.add((kind, name))
    return out


def workload_problems(w: Doc, docs: list[Doc]) -> list[str]:
    name, spec, pod = w["metadata"]["name"], w["spec"], w["spec"]["template"]["spec"]
    out = []
    if not selects(spec["selector"].get("matchLabels"), pod_labels(w)):
        out.append(f"{name}: selector does not match the pod template's labels")
    account = pod.get("serviceAccountName", "default")
    sa = find(docs, "ServiceAccount", account)
    if account != "default" and sa is None:
        out.append(f"{name}: serviceAccountName {account} does not exist")
    if pod.get("automountServiceAccountToken", (sa or {}).get("automountServiceAccountToken")) is not False:
        out.append(f"{name}: mounts a service account token it does not need")
    if (pod.get("securityContext") or {}).get("seccompProfile", {}).get("type") != "RuntimeDefault":
        out.append(f"{name}: pod seccompProfile is not RuntimeDefault")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for vol in volumes.values():
        out += claim_problems(w, vol, docs)
    defined = set(volumes) | {v["metadata"]["name"] for v in spec.get("volumeClaimTemplates", [])}
    for c in containers(w):
        out += container_problems(f"{name}/{c['name']}", c, pod, defined)
        out += env_problems(f"{name}/{c['name']}", c, docs)
    return out


def claim_problems(w: Doc, volume: Doc, docs: list[Doc]) -> list[str]:
    name, claim = w["metadata"]["name"], (volume.get("persistentVolumeClaim") or {}).get("claimName")
    if not claim:
        return []
    pvc = find(docs, "PersistentVolumeClaim", claim)
    if pvc is None:
        return [f"{name}: volume {volume['name']} claims {claim}, which does not exist"]
    if "ReadWriteOnce" not in pvc["spec"]["accessModes"]:
        return []
    out = []
    if replicas(w, docs) > 1:
        out.append(f"{name}: several replicas cannot share the ReadWriteOnce claim {claim}")
    if w["spec"].get("strategy", {}).get("type") != "Recreate":
        out.append(f"{name}: a ReadWriteOnce claim needs strategy Recreate (one writer at a time)")
    return out


def container_problems(where: str, c: Doc, pod: Doc, volumes: set[str]) -> list[str]:
    out = []
    image = c.get("image", "")
    if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
        out.append(f"{where}: image {image!r} has no pinned tag")
    requests, limits = (c.get("resources") or {}).get("requests", {}), (c.get("resources") or {}).get("limits", {})
    if not {"cpu", "memory"} <= set(requests) or "memory" not in limits:
        out.append(f"{where}: resources need cpu and memory requests and a memory limit")
    own = c.get("securityContext") or {}
    sc = {**(pod.get("securityContext") or {}), **own}
    if sc.get("runAsNonRoot") is not True or not isinstance(sc.get("runAsUser"), int) or sc["runAsUser"] <= 0:
        out.append(f"{where}: must run as a numeric non-root runAsUser with runAsNonRoot")
    if own.get("readOnlyRootFilesystem") is not True:
        out.append(f"{where}: root filesystem is not read-only")
    if own.get("allowPrivilegeEscalation") is not False:
        out.append(f"{where}: allowPrivilegeEscalation is not false")
    if "ALL" not in (own.get("capabilities") or {}).get("drop", []):
        out.append(f"{where}: capabilities do not drop ALL")
    out += [f"{where}: mounts undefined volume {m['name']}"
            for m in c.get("volumeMounts", []) if m["name"] not in volumes]
    ports = {p.get("name") for p in c.get("ports", [])} | {p["containerPort"] for p in c.get("ports", [])}
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        action = (c.get(kind) or {}).get("httpGet") or (c.get(kind) or {}).get("tcpSocket")
        if action and action["port"] not in ports:
            out.append(f"{where}: {kind} targets port {action['port']}, which the container does not declare")
    return out


def env_problems(where: str, c: Doc, docs: list[Doc]) -> list[str]:
    out, defined = [], set()
    for e in c.get("env", []):
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            secret = find(docs, "Secret", ref["name"]) or {}
            if ref["key"] not in {*secret.get("stringData", {}), *secret.get("data", {})}:
                out.append(f"{where}: env {e['name']} reads key {ref['key']} of Secret {ref['name']}, "
                           "which does not exist")
        elif is_literal_secret(e["name"], str(e.get("value", ""))):
            out.append(f"{where}: env {e['name']} holds a literal value; take it from a secretKeyRef")
        for used in re.findall(r"\$\((\w+)\)", str(e.get("value", ""))):
            if used not in defined:
                out.append(f"{where}: env {e['name']} uses $({used}) before it is defined")
        defined.add(e["name"])
    return out


def gateway_problems(w: Doc, c: Doc, docs: list[Doc]) -> list[str]:
    """What `servegate serve` needs of its container and pod."""
    where, args = f"{w['metadata']['name']}/{c['name']}", args_of(c)
    ports = {name: int(flag(args, f) or GATEWAY_PORTS[name]) for f, name in PORT_FLAGS.items()}
    declared = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    out = [] if declared == ports else [f"{where}: container ports {declared} are not the gateway's {ports}"]
    scheme = "HTTPS" if setting(c, "tls_cert") else "HTTP"
    for kind, paths in (("readinessProbe", {READY_PATH}), ("livenessProbe", {LIVE_PATH}),
                        ("startupProbe", {READY_PATH, LIVE_PATH})):
        get = (c.get(kind) or {}).get("httpGet") or {}
        if get.get("path") not in paths or get.get("port") not in ("http", ports["http"]) \
                or get.get("scheme", "HTTP") != scheme:
            out.append(f"{where}: {kind} must GET one of {sorted(paths)} over {scheme} on the HTTP port")
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    if not {"/tmp", "/var/lib/servegate"} <= set(mounts):
        out.append(f"{where}: /tmp and /var/lib/servegate must be writable volumes")
    repository = setting(c, "repository")
    if repository not in mounts or not mounts[repository].get("readOnly"):
        out.append(f"{where}: the model repository {repository} must be a read-only mount")
    if not (setting(c, "jwt_secret") or setting(c, "jwt_public_key")
            or {"SERVEGATE_JWT_SECRET", "SERVEGATE_JWT_PUBLIC_KEY"} & {e["name"] for e in c.get("env", [])}):
        out.append(f"{where}: the admin API needs a JWT key (SERVEGATE_JWT_SECRET or --jwt-public-key)")
    annotations = w["spec"]["template"]["metadata"].get("annotations", {})
    wanted = {"prometheus.io/scrape": "true", "prometheus.io/port": str(ports["admin"]),
              "prometheus.io/path": "/metrics"}
    if any(annotations.get(k) != v for k, v in wanted.items()):
        out.append(f"{where}: Prometheus annotations must be {wanted}")
    return out + shutdown_problems(w, c) + spread_problems(w, docs)


def shutdown_problems(w: Doc, c: Doc) -> list[str]:
    """The pod outlives the preStop pause plus the gateway's drain, or SIGKILL cuts the drain short."""
    where = f"{w['metadata']['name']}/{c['name']}"
    drain = float(setting(c, "drain_seconds") or DEFAULT_DRAIN_SECONDS)
    pre = (c.get("lifecycle") or {}).get("preStop") or {}
    command = (pre.get("exec") or {}).get("command") or []
    pause = int(command[1]) if command[:1] == ["sleep"] else int((pre.get("sleep") or {}).get("seconds", 0))
    out = [] if pause else [f"{where}: no preStop pause to let endpoints forget the pod before the drain"]
    if w["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30) <= pause + drain:
        out.append(f"{where}: terminationGracePeriodSeconds must exceed preStop ({pause}s) + drain ({drain}s)")
    return out


def spread_problems(w: Doc, docs: list[Doc]) -> list[str]:
    if replicas(w, docs) <= 1:
        return []
    affinity = w["spec"]["template"]["spec"].get("affinity") or {}
    terms = affinity.get("podAntiAffinity", {}).get("preferredDuringSchedulingIgnoredDuringExecution", [])
    if any(selects(t["podAffinityTerm"]["labelSelector"].get("matchLabels"), pod_labels(w)) for t in terms):
        return []
    return [f"{w['metadata']['name']}: replicas should prefer different nodes (pod anti-affinity)"]


def store_problems(docs: list[Doc]) -> list[str]:
    """Every servegate process reaches its store, the store fits the replica count, and some process
    runs the promotion controller."""
    out, controllers = [], 0
    for w, c, command in servegate_processes(docs):
        where, url = f"{w['metadata']['name']}/{c['name']}", store_url(c)
        enabled = (setting(c, "controller") or "true").lower() not in ("0", "false", "no", "off")
        if command == "controller" or enabled:
            controllers += replicas(w, docs)
        if url.scheme == "redis":
            service = find(docs, "Service", url.hostname or "")
            if service is None or url.port not in {p["port"] for p in service["spec"]["ports"]}:
                out.append(f"{where}: store {url.hostname}:{url.port} is not a Service port in the manifests")
        elif url.scheme == "sqlite" and command == "serve":
            writable = [m["mountPath"] for m in c.get("volumeMounts", []) if not m.get("readOnly")]
            if not any(url.path.startswith(p.rstrip("/") + "/") for p in writable):
                out.append(f"{where}: SQLite file {url.path} is not on a writable volume")
            if replicas(w, docs) > 1:
                out.append(f"{where}: SQLite cannot be shared by {replicas(w, docs)} replicas; use Redis")
        else:
            out.append(f"{where}: store {url.geturl()!r} must be redis:// (or sqlite:// for one gateway)")
    return out if controllers else [*out, "no promotion controller runs: rollouts would never move"]


def service_problems(s: Doc, docs: list[Doc]) -> list[str]:
    name, selected = s["metadata"]["name"], selected_workloads(docs, s["spec"].get("selector"))
    if len(selected) != 1:
        return [f"Service {name}: selects {len(selected)} workloads, not one"]
    declared = {p.get("name"): p["containerPort"] for c in containers(selected[0]) for p in c.get("ports", [])}
    serves = any(servegate_command(c) == "serve" for c in containers(selected[0]))
    out = []
    for port in s["spec"]["ports"]:
        wanted = port.get("targetPort", port["port"])
        if not port.get("name") or wanted not in {*declared, *declared.values()}:
            out.append(f"Service {name}: port {port.get('name')} targetPort {wanted} is not a container port")
        if serves and not port.get("appProtocol"):
            out.append(f"Service {name}: port {port.get('name')} has no appProtocol")
    return out


def statefulset_problems(st: Doc, docs: list[Doc]) -> list[str]:
    name = st["metadata"]["name"]
    governing = find(docs, "Service", st["spec"].get("serviceName", "")) or {"spec": {}}
    out = []
    headless = governing["spec"].get("clusterIP") == "None"
    if not headless or not selects(governing["spec"].get("selector"), pod_labels(st)):
        out.append(f"{name}: serviceName must name a headless Service that selects its pods")
    claims = {v["metadata"]["name"] for v in st["spec"].get("volumeClaimTemplates", [])}
    for c in (c for c in containers(st) if image_name(c.get("image", "")) == "redis"):
        args = args_of(c)
        if flag(args, "--appendonly") != "yes" or flag(args, "--appendfsync") not in ("always", "everysec"):
            out.append(f"{name}: Redis must run with --appendonly yes and --appendfsync always|everysec")
        data = [m["name"] for m in c.get("volumeMounts", []) if m["mountPath"] == flag(args, "--dir")]
        if not data or data[0] not in claims:
            out.append(f"{name}: Redis --dir must be on a volumeClaimTemplate")
    return out


def scaling_problems(docs: list[Doc]) -> list[str]:
    out = []
    for hpa in of_kind(docs, "HorizontalPodAutoscaler"):
        name, spec, ref = hpa["metadata"]["name"], hpa["spec"], hpa["spec"]["scaleTargetRef"]
        if find(docs, ref["kind"], ref["name"]) is None:
            out.append(f"HPA {name}: scaleTargetRef {ref['kind']}/{ref['name']} does not exist")
        if not 1 <= spec.get("minReplicas", 1) <= spec["maxReplicas"]:
            out.append(f"HPA {name}: minReplicas must lie in 1..maxReplicas")
        if not any(m.get("resource", {}).get("name") == "cpu" for m in spec.get("metrics", [])):
            out.append(f"HPA {name}: no CPU utilisation target")
    for pdb in of_kind(docs, "PodDisruptionBudget"):
        name, spec = pdb["metadata"]["name"], pdb["spec"]
        selected = selected_workloads(docs, spec["selector"].get("matchLabels"))
        if len(selected) != 1:
            out.append(f"PDB {name}: selects {len(selected)} workloads, not one")
        if ("minAvailable" in spec) == ("maxUnavailable" in spec):
            out.append(f"PDB {name}: set exactly one of minAvailable and maxUnavailable")
        elif isinstance(spec.get("minAvailable"), int) and selected \
                and spec["minAvailable"] >= selected[0]["spec"].get("replicas", 1):
            out.append(f"PDB {name}: minAvailable would block every voluntary disruption")
    return out


def secret_problems(docs: list[Doc]) -> list[str]:
    """Committed Secrets hold only marked placeholders: a real key never lands in the repository."""
    out = []
    for secret in of_kind(docs, "Secret"):
        values = secret.get("stringData", {})
        if "data" in secret or not values or not all(PLACEHOLDER in str(v) for v in values.values()):
            out.append(f"Secret {secret['metadata']['name']}: values must be marked {PLACEHOLDER} placeholders")
    return out


def network_problems(docs: list[Doc]) -> list[str]:
    """A NetworkPolicy in front of the store admits every servegate process that uses that store."""
    out = []
    for policy in of_kind(docs, "NetworkPolicy"):
        guarded = selected_workloads(docs, policy["spec"]["podSelector"].get("matchLabels"))
        peers = [peer.get("podSelector", {}).get("matchLabels")
                 for rule in policy["spec"].get("ingress", []) for peer in rule.get("from", [])]
        for w, c, _ in servegate_processes(docs):
            service = find(docs, "Service", store_url(c).hostname or "")
            selector = (service or {"spec": {}})["spec"].get("selector")
            if not any(selects(selector, pod_labels(g)) for g in guarded):
                continue
            if not any(selects(p, pod_labels(w)) for p in peers):
                out.append(f"NetworkPolicy {policy['metadata']['name']}: blocks {w['metadata']['name']}")
    return out


def monitor_problems(docs: list[Doc]) -> list[str]:
    out = []
    for monitor in of_kind(docs, "ServiceMonitor"):
        selector = monitor["spec"]["selector"].get("matchLabels")
        ports = {p.get("name") for s in of_kind(docs, "Service")
                 if selects(selector, s["metadata"].get("labels", {})) for p in s["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            if endpoint.get("port") not in ports or endpoint.get("path") != "/metrics":
                out.append(f"ServiceMonitor {monitor['metadata']['name']}: "
                           f"no selected Service port {endpoint.get('port')} for /metrics")
    return out


def problems(docs: list[Doc]) -> list[str]:
    """Everything wrong with a rendered set of manifests (empty when it holds together)."""
    out = identity_problems(docs)
    for w in workloads(docs):
        out += workload_problems(w, docs)
    for w, c, command in servegate_processes(docs):
        out += gateway_problems(w, c, docs) if command == "serve" else []
    for st in of_kind(docs, "StatefulSet"):
        out += statefulset_problems(st, docs)
    for s in of_kind(docs, "Service"):
        out += service_problems(s, docs)
    return (out + store_problems(docs) + scaling_problems(docs) + secret_problems(docs)
            + network_problems(docs) + monitor_problems(docs))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.manifests", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("kustomizations", nargs="+", type=Path)
    parser.add_argument("--kubectl", action="store_true", help="render with `kubectl kustomize`")
    args = parser.parse_args(argv)
    models: Any = None
    try:
        import kubernetes.client.models as models
    except ImportError:
        print("kubernetes client not installed: field-by-field schema checks skipped", file=sys.stderr)
    failed = False
    for kdir in args.kustomizations:
        if args.kubectl:
            kubectl = ["kubectl", "kustomize", str(kdir)]
            built = subprocess.run(kubectl, check=True, capture_output=True, text=True)
            docs = [d for d in yaml.safe_load_all(built.stdout) if d]
        else:
            docs = render(kdir)
        found = problems(docs) + ([e for d in docs for e in schema_errors(models, d)] if models else [])
        print(f"{kdir}: {'ok' if not found else f'{len(found)} problem(s)'}")
        print("".join(f"  {p}\n" for p in found), end="")
        failed = failed or bool(found)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
