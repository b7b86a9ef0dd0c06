"""The dedicated-controller overlay runs what `servegate controller` is: its command, its one listener on
the admin port, probes on the paths that process serves, and the scrape annotations of its metrics."""

from __future__ import annotations

from pathlib import Path

from deploy.manifests import containers, find, setting
from deploy.render import render
from gateway.cli import CONTROLLER_SETTINGS, build_parser
from gateway.controller_process import LIVE_PATH, METRICS_PATH, READY_PATH
from gateway.settings import ServerSettings

OVERLAY = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes" / "overlays" / "dedicated-controller"


def test_the_controller_pod_matches_the_controller_process() -> None:
    deployment = find(render(OVERLAY), "Deployment", "servegate-controller")
    assert deployment is not None
    [container] = containers(deployment)
    args = [str(a) for a in container["args"]]
    assert build_parser().parse_args(args).func.__name__ == "cmd_controller"
    port = int(setting(container, "admin_port") or ServerSettings().admin_port)
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("admin", port)]
    probes = {kind: container[kind]["httpGet"] for kind in ("readinessProbe", "livenessProbe")}
    assert probes == {"readinessProbe": {"path": READY_PATH, "port": "admin"},
                      "livenessProbe": {"path": LIVE_PATH, "port": "admin"}}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
                           "prometheus.io/path": METRICS_PATH}
    given = {e["name"] for e in container.get("env", []) if e["name"].startswith("SERVEGATE_")}
    assert given <= {f"SERVEGATE_{name.upper()}" for name in CONTROLLER_SETTINGS}
