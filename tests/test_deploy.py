"""Static checks of the container image and the Kubernetes manifests, without Docker or a cluster.

The manifests are rendered as kustomize renders them (resources plus strategic-merge patches: the
subset deploy/kubernetes uses), checked field by field against the Kubernetes API types, then against
what the gateway needs: its ports, health paths, drain time, secrets and shared store. Mutation tests
prove that the checks catch what they are meant to catch.
"""

from __future__ import annotations

import copy
import http.server
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
BASE = KUBE / "base"
OVERLAYS = sorted(p.parent for p in (KUBE / "overlays").glob("*/kustomization.yaml"))
KUSTOMIZATIONS = [BASE, *OVERLAYS]
HEALTHCHECK_SCRIPT = ROOT / "deploy" / "docker" / "healthcheck.py"

# What `servegate serve` listens on and answers by default.
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
CUSTOM_KINDS = {"ServiceMonitor"}  # not in the Kubernetes API types; checked by `monitor_problems`
DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")

Doc = dict[str, Any]

# --- rendering: a small kustomize ----------------------------------------------------------------


def load_yaml(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def identity(doc: Doc) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def render(kdir: Path) -> list[Doc]:
    """The documents `kustomize build kdir` produces, for the features deploy/kubernetes uses."""
    spec = load_yaml(kdir / "kustomization.yaml")[0]
    unknown = set(spec) - {"apiVersion", "kind", "resources", "patches"}
    if unknown:
        raise ValueError(f"{kdir}: this renderer does not know {sorted(unknown)}; teach it first")
    docs: list[Doc] = []
    for entry in spec.get("resources", []):
        target = kdir / entry
        docs.extend(render(target) if target.is_dir() else load_yaml(target))
    for entry in spec.get("patches", []):
        patches = load_yaml(kdir / entry["path"]) if "path" in entry else [yaml.safe_load(entry["patch"])]
        for patch in patches:
            docs = apply_patch(docs, patch)
    return docs


def apply_patch(docs: list[Doc], patch: Doc) -> list[Doc]:
    target = identity(patch)
    if sum(identity(d) == target for d in docs) != 1:
        raise ValueError(f"patch for {target} does not match exactly one document")
    if patch.get("$patch") == "delete":
        return [d for d in docs if identity(d) != target]
    return [merge(d, patch) if identity(d) == target else d for d in docs]


def merge(base: Any, patch: Any) -> Any:
    """Strategic merge: maps key by key (null deletes a key), lists of named items (containers, env,
    volumes) item by item (`$patch: delete` removes one), any other list is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = merge(out[key], value) if key in out else value
        return out
    if isinstance(base, list) and isinstance(patch, list) and _named(base) and _named(patch):
        items = list(base)
        for item in patch:
            at = next((i for i, old in enumerate(items) if old["name"] == item["name"]), None)
            if item.get("$patch") == "delete":
                items = [old for old in items if old["name"] != item["name"]]
            elif at is None:
                items.append(item)
            else:
                items[at] = merge(items[at], item)
        return items
    return patch


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, dict) and "name" in i for i in items)


# --- schema: every field is one the Kubernetes API defines, with the right type -------------------


def schema_errors(models: Any, doc: Doc) -> list[str]:
    if doc.get("kind") in CUSTOM_KINDS:
        return []
    version = str(doc.get("apiVersion", "")).rsplit("/", 1)[-1]
    type_name = version.capitalize() + str(doc.get("kind"))
    if not hasattr(models, type_name):
        return [f"{doc.get('kind')}: no such type in the Kubernetes API ({type_name})"]
    errors: list[str] = []
    _check_type(models, doc, type_name, str(doc.get("kind")), errors)
    return errors


def _check_type(models: Any, value: Any, type_name: str, where: str, errors: list[str]) -> None:
    if (m := re.fullmatch(r"List\[(.+)\]", type_name)) is not None:
        if not isinstance(value, list):
            errors.append(f"{where}: expected a list")
            return
        for i, item in enumerate(value):
            _check_type(models, item, m[1], f"{where}[{i}]", errors)
    elif (m := re.fullmatch(r"Dict\[str, (.+)\]", type_name)) is not None:
        if not isinstance(value, dict):
            errors.append(f"{where}: expected a map")
            return
        for key, item in value.items():
            _check_type(models, item, m[1], f"{where}.{key}", errors)
    elif type_name == "object":
        return  # int-or-string and free-form fields
    elif type_name in ("str", "bytes", "datetime"):
        if not isinstance(value, str):
            errors.append(f"{where}: expected str, got {value!r}")
    elif type_name in ("int", "float", "bool"):
        wanted = {"int": int, "float": (int, float), "bool": bool}[type_name]
        if not isinstance(value, wanted) or (type_name != "bool" and isinstance(value, bool)):
            errors.append(f"{where}: expected {type_name}, got {value!r}")
    else:
        cls = getattr(models, type_name)
        if not isinstance(value, dict):
            errors.append(f"{where}: expected an object ({type_name})")
            return
        fields = {wire: attr for attr, wire in cls.attribute_map.items()}
        for key, item in value.items():
            if key not in fields:
                errors.append(f"{where}: unknown field {key!r}")
            else:
                _check_type(models, item, cls.openapi_types[fields[key]], f"{where}.{key}", errors)


# --- consistency: what the gateway and Kubernetes need of these manifests -------------------------


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
    return flag(args_of(container), f"--{name.replace('_', '-')}") or env_value(container, f"SERVEGATE_{name.upper()}")


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
        if command == "controller" or (setting(c, "controller") or "true").lower() not in ("0", "false", "no", "off"):
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
    if governing["spec"].get("clusterIP") != "None" or not selects(governing["spec"].get("selector"), pod_labels(st)):
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
            if service is None or not any(selects(service["spec"].get("selector"), pod_labels(g)) for g in guarded):
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


# --- the Dockerfile ---------------------------------------------------------------------------------

Instruction = tuple[str, str]  # upper-cased keyword, the rest of the (joined) line


def dockerfile_stages(text: str) -> list[list[Instruction]]:
    """Instructions per stage; index 0 holds what comes before the first FROM (global ARGs)."""
    stages: list[list[Instruction]] = [[]]
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append((keyword.upper(), rest.strip()))
    return stages


def arg_defaults(instructions: list[Instruction], into: dict[str, str]) -> dict[str, str]:
    for keyword, rest in instructions:
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            into[name] = default.strip('"')
    return into


def substitute(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m[1] or m[2], m[0]), text)


def exec_form(rest: str | None) -> list[str] | None:
    try:
        value = json.loads(rest or "")
    except ValueError:
        return None
    return value if isinstance(value, list) else None


def final_user(stages: list[list[Instruction]]) -> str | None:
    variables = arg_defaults(stages[-1], arg_defaults(stages[0], {}))
    users = [substitute(rest, variables) for keyword, rest in stages[-1] if keyword == "USER"]
    return users[-1] if users else None


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether Docker leaves `path` (relative to the context) out: the last matching pattern wins,
    and a pattern that matches a folder matches everything in it."""
    excluded, parts = False, path.split("/")
    for pattern in patterns:
        regex = _glob_regex(pattern.lstrip("!").strip("/"))
        if any(re.fullmatch(regex, "/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            excluded = not pattern.startswith("!")
    return excluded


def _glob_regex(pattern: str) -> str:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i:end + 1], end + 1
        else:
            out, i = out + {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i])), i + 1
    return out


def dockerfile_problems(text: str) -> list[str]:
    stages = dockerfile_stages(text)
    if len(stages) < 3:
        return ["the Dockerfile must be multi-stage (a builder and a runtime)"]
    builder, final, global_args = stages[1], stages[-1], arg_defaults(stages[0], {})
    out = []
    bases = [substitute(stage[0][1], global_args).split()[0] for stage in stages[1:]]
    if not all(re.fullmatch(r"python:3\.1[1-9][\w.-]*-slim(@sha256:\w+)?", b) for b in bases):
        out.append(f"every stage must start from python:3.11-slim or newer, not {bases}")
    if not re.search(r"venv.*pip|pip.*venv", " ".join(rest for k, rest in builder if k == "RUN")):
        out.append("the builder must pip-install into a virtual environment")
    earlier = {stage[0][1].split()[-1] for stage in stages[1:-1] if " AS " in stage[0][1].upper()}
    sources = {m[1] for k, rest in final if k == "COPY" and (m := re.search(r"--from=(\S+)", rest))}
    if not sources & earlier:
        out.append("the runtime stage must copy the environment from the builder")
    if any(k == "RUN" and re.search(r"build-essential|gcc|g\+\+", rest) for k, rest in final):
        out.append("compilers belong to the builder stage only")
    user = final_user(stages)
    if user is None or not re.fullmatch(r"\d+(:\d+)?", user) or int(user.split(":")[0]) == 0:
        out.append(f"the runtime must run as a numeric non-root USER, not {user or 'root'}")
    exposed = {port.split("/")[0] for k, rest in final if k == "EXPOSE" for port in rest.split()}
    if not {str(p) for p in GATEWAY_PORTS.values()} <= exposed:
        out.append(f"EXPOSE must list {sorted(GATEWAY_PORTS.values())}")
    last = {k: rest for k, rest in final}
    if exec_form(last.get("ENTRYPOINT")) != ["servegate"]:
        out.append('ENTRYPOINT must be ["servegate"] (exec form, so the gateway receives SIGTERM)')
    if exec_form(last.get("CMD")) != ["serve", "--repository", "/models", "--host", "0.0.0.0"]:
        out.append("CMD must serve /models on 0.0.0.0")
    if last.get("STOPSIGNAL") != "SIGTERM":
        out.append("STOPSIGNAL must be SIGTERM (the gateway drains on it)")
    return out + healthcheck_problems(final) + secret_and_file_problems(stages)


def healthcheck_problems(final: list[Instruction]) -> list[str]:
    """The HEALTHCHECK asks the readiness path, inline or through a script copied from the repository."""
    checks = [rest for keyword, rest in final if keyword == "HEALTHCHECK"]
    command = (checks or [""])[-1].partition("CMD ")[2]
    if READY_PATH in command:
        return []
    copied = {shlex.split(rest)[-1]: shlex.split(rest)[-2] for k, rest in final if k == "COPY" and "--from" not in rest}
    scripts = [ROOT / copied[word] for word in re.findall(r"[\w./-]+", command) if word in copied]
    if scripts and READY_PATH in scripts[0].read_text():
        return []
    return [f"a HEALTHCHECK CMD must probe {READY_PATH}"]


def secret_and_file_problems(stages: list[list[Instruction]]) -> list[str]:
    out, env, patterns = [], {}, dockerignore_patterns()
    for keyword, rest in (instruction for stage in stages for instruction in stage):
        if keyword in ("ENV", "ARG"):
            pairs = dict(word.partition("=")[::2] for word in shlex.split(rest))
            env.update(pairs)
            out += [f"{keyword} {k} bakes a secret into the image" for k, v in pairs.items() if is_literal_secret(k, v)]
        elif keyword == "COPY" and "--from" not in rest:
            for src in shlex.split(rest)[:-1]:
                if re.search(r"(^|/)(\.env|id_rsa)|\.(pem|key)$", src):
                    out.append(f"COPY {src} puts key material into the image")
                if not (ROOT / src).exists() or dockerignore_excludes(patterns, src):
                    out.append(f"COPY source {src} is missing or left out by .dockerignore")
    volumes = {v for keyword, rest in stages[-1] if keyword == "VOLUME" for v in exec_form(rest) or rest.split()}
    if not {"/var/lib/servegate", "/tmp"} <= volumes:
        out.append("VOLUME must declare /var/lib/servegate and /tmp (the only writable paths)")
    store = urlsplit(env.get("SERVEGATE_STORE", "")).path
    if not any(store.startswith(v.rstrip("/") + "/") for v in volumes):
        out.append(f"the default store {store or '(none)'} must live on a declared volume")
    return out


# --- tests ----------------------------------------------------------------------------------------


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
        return sorted(items, key=lambda i: i["name"]) if _named(items) else items
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
    assert dockerfile_problems((ROOT / "Dockerfile").read_text()) == []


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
    found = dockerfile_problems(changed)
    assert any(expected in p for p in found), found


def test_the_image_user_is_the_pods_user() -> None:
    user = final_user(dockerfile_stages((ROOT / "Dockerfile").read_text()))
    assert user is not None
    deployments = of_kind(render(KUBE / "overlays" / "dedicated-controller"), "Deployment")
    assert len(deployments) == 2
    for w in deployments:
        assert w["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(user.split(":")[0])


def test_dockerignore_keeps_the_context_to_what_the_build_copies() -> None:
    patterns = dockerignore_patterns()
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
    done = subprocess.run([sys.executable, "-S", str(HEALTHCHECK_SCRIPT)], env=env, capture_output=True, timeout=30)
    return done.returncode


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
