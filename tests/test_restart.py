"""Restart in the middle of a rollout: the rollout, route table, registry and audit chain come back as
they were, and the rollout continues from where it stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.demo import models
from tests.serve_process import ServeProcess, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPEC = {"candidate": "2", "strategy": "canary", "window": "1s",
        "steps": [{"weight": 30}, {"pause": "manual"}, {"weight": 100}],
        "analysis": {"min_requests": 1, "max_error_rate": 0.5}}


def status_of(gw: ServeProcess) -> dict[str, Any]:
    return dict(gw.admin_call("GET", "/admin/v1/models/tabular/rollout", role="viewer")[1]["status"])


def send(gw: ServeProcess, n: int) -> None:
    import http.client
    import json

    import numpy as np

    host, port = gw.http.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    x = np.zeros((1, 30), np.float32).ravel().tolist()
    for _ in range(n):
        conn.request("POST", "/v2/models/tabular/infer",
                     json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 30], "data": x}]}))
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
    conn.close()


def test_a_rollout_resumes_after_a_restart(tmp_path: Path) -> None:
    repo, candidates = tmp_path / "repo", tmp_path / "candidates"
    models.build_tabular(repo, "tabular", "1")
    models.build_tabular(candidates, "tabular", "2", c=0.5)
    store = f"sqlite:///{tmp_path / 'state.db'}"
    with ServeProcess(repo, store=store) as gw:
        status, _ = gw.admin_call("POST", "/admin/v1/models/tabular/versions",
                                  {"version": "2", "artifact": str(candidates / "tabular" / "2" / "model.onnx")})
        assert status == 201
        status, _ = gw.admin_call("POST", "/admin/v1/models/tabular/rollout", SPEC, role="operator")
        assert status == 201
        send(gw, 50)
        before = wait_for(lambda: (s := status_of(gw))["phase"] == "paused" and s, timeout=30)
        traffic_before = gw.admin_call("GET", "/admin/v1/models/tabular", role="viewer")[1]["traffic"]
        audit_before = gw.admin_call("GET", "/admin/v1/audit?limit=1000", role="viewer")[1]["entries"]
        assert gw.stop() == 0

    with ServeProcess(repo, store=store) as gw:
        after = status_of(gw)
        detail = gw.admin_call("GET", "/admin/v1/models/tabular", role="viewer")[1]
        audit_after = gw.admin_call("GET", "/admin/v1/audit?limit=1000", role="viewer")[1]["entries"]
        verify = gw.admin_call("GET", "/admin/v1/audit/verify", role="viewer")[1]
        for field in ("phase", "step_index", "weights", "candidate", "stable", "started_at", "history"):
            assert after[field] == before[field], field
        assert detail["traffic"] == traffic_before == {"policy": "canary", "weights": {"1": 70, "2": 30},
                                                      "fallback": "1"}
        assert {v["version"]: (v["stage"], v["state"]) for v in detail["versions"]} == {
            "1": ("production", "READY"), "2": ("canary", "READY")}
        assert [e["seq"] for e in audit_after[-len(audit_before):]] == [e["seq"] for e in audit_before]
        assert verify["ok"] is True
        status, _ = gw.admin_call("POST", "/admin/v1/models/tabular/rollout/resume", role="operator")
        assert status == 200
        send(gw, 50)
        done = wait_for(lambda: (s := status_of(gw))["phase"] == "promoted" and s, timeout=30)
        assert done["weights"] == {"1": 0, "2": 100}
