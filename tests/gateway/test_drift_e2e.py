"""Drift through a running gateway: reference traffic stays quiet, a shifted feature is named first, and a
candidate whose predictions shift is rolled back on prediction PSI while its latency and errors are fine."""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.admin.auth import mint
from gateway.demo import models
from gateway.settings import AuthSettings, ControllerSettings
from tests.gateway.harness import GatewayThread, gateway_settings

pytestmark = pytest.mark.integration

AUTH = AuthSettings(jwt_secret="drift-test-secret-0123456789abcdef0123")


def admin(gw: GatewayThread, method: str, path: str, body: Any = None, role: str = "admin") -> tuple[int, Any]:
    assert gw.endpoints is not None
    host, port = gw.endpoints.admin.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, json.dumps(body) if body is not None else None,
                     {"Authorization": f"Bearer {mint(AUTH, 'drift-test', [role], 600)}"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def send_rows(gw: GatewayThread, model: str, name: str, rows: np.ndarray, batch: int = 16) -> None:
    assert gw.endpoints is not None
    host, port = gw.endpoints.http.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        for start in range(0, len(rows), batch):
            part = rows[start:start + batch].astype(np.float32)
            head = json.dumps({"inputs": [{"name": name, "datatype": "FP32", "shape": list(part.shape),
                                           "parameters": {"binary_data_size": part.nbytes}}]}).encode()
            conn.request("POST", f"/v2/models/{model}/infer", head + part.tobytes(),
                         {"Inference-Header-Content-Length": str(len(head))})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200
    finally:
        conn.close()


def test_reference_traffic_is_quiet_and_a_shifted_feature_is_named_first(repo_copy: Path) -> None:
    x, _ = models.tabular_data(seed=0)
    reference = x[: int(len(x) * 0.7)]  # what build_tabular saved as reference.npz
    rng = np.random.default_rng(11)
    # No CPU budget here: how many batches a budget admits depends on the host's speed, and this test
    # is about what the binned rows show (the budget has tests of its own).
    (repo_copy / "tabular" / "config.yaml").write_text("drift_cpu_budget: 0\n")
    with GatewayThread(replace(gateway_settings(repo_copy), auth=AUTH)) as gw:
        send_rows(gw, "tabular", "features", reference[rng.integers(0, len(reference), 3000)])
        status, quiet = admin(gw, "GET", "/admin/v1/models/tabular/versions/2/drift?window=10s", role="viewer")
        assert status == 200 and quiet["reference_source"] == "profile"
        features = next(t for t in quiet["tensors"] if t["tensor"] == "features" and t["role"] == "input")
        assert features["rows"] == 3000 and quiet["sampling"]["batches_over_budget"] == 0
        assert features["psi_max"] < 0.1
        assert len(features["features"]) == 30
        time.sleep(3.0)  # the shifted traffic gets windows of its own
        shifted = reference[rng.integers(0, len(reference), 3000)].copy()
        shifted[:, 7] += 2 * reference[:, 7].std()
        send_rows(gw, "tabular", "features", shifted)
        status, drift = admin(gw, "GET", "/admin/v1/models/tabular/versions/2/drift?window=2s", role="viewer")
        assert gw.gateway is not None
        metrics = gw.gateway.metrics.render().decode()
    assert status == 200
    assert drift["sampling"] == {"rows_per_batch": "all", "cpu_budget": "none", "batches_over_budget": 0}
    busy = next(line for line in metrics.splitlines()
                if line.startswith('servegate_drift_busy_seconds_total{model="tabular",version="2"}'))
    assert 0 < float(busy.rsplit(" ", 1)[1]) < 5  # 6000 rows binned: milliseconds, not seconds
    assert 'servegate_drift_over_budget_batches_total{model="tabular",version="2"}' in metrics
    top = drift["top_features"][0]
    assert top["feature"] == "features[7]" and top["psi"] > 0.25
    inputs = next(t for t in drift["tensors"] if t["tensor"] == "features")
    others = [f["psi"] for f in inputs["features"] if f["feature"] != "features[7]" and f["psi"] is not None]
    assert max(others) < top["psi"]


def test_a_candidate_with_shifted_predictions_is_rolled_back_on_prediction_psi(tmp_path: Path) -> None:
    repo, candidates = tmp_path / "repo", tmp_path / "candidates"
    models.build_mlp(repo, "mlp", "1", seed=0)
    models.build_mlp(candidates, "mlp", "2", seed=0, logit_shift=4.0)  # same network, class 0 pushed up
    (repo / "mlp" / "config.yaml").write_text("drift_cpu_budget: 0\n")  # a busy host must not starve the PSI
    settings = replace(gateway_settings(repo), auth=AUTH, controller=ControllerSettings(interval_s=0.5))
    spec = {"candidate": "2", "strategy": "canary", "window": "3s", "steps": [{"weight": 50}, {"weight": 100}],
            "analysis": {"min_requests": 20, "max_error_rate": 0.05, "max_p99_latency_ratio": 5.0,
                         "max_prediction_psi": 0.25}}
    with GatewayThread(settings) as gw:
        status, body = admin(gw, "POST", "/admin/v1/models/mlp/versions",
                             {"version": "2", "artifact": str(candidates / "mlp" / "2" / "model.onnx")})
        assert status == 201, body
        status, body = admin(gw, "POST", "/admin/v1/models/mlp/rollout", spec, role="operator")
        assert status == 201, body
        deadline = time.monotonic() + 30
        rollout: dict[str, Any] = {}
        while time.monotonic() < deadline:
            send_rows(gw, "mlp", "input", models.mlp_inputs(64, seed=int(time.monotonic() * 1000) % 10_000), batch=4)
            rollout = admin(gw, "GET", "/admin/v1/models/mlp/rollout", role="viewer")[1]["status"]
            if rollout["phase"] in ("promoted", "rolled_back"):
                break
        assert gw.gateway is not None
        # The controller stores the decision, then counts it in the metrics: the API can show it first.
        rolled_back = 'servegate_rollout_phase{model="mlp",phase="rolled_back"} 1.0'
        metrics = gw.gateway.metrics.render().decode()
        settle = time.monotonic() + 5
        while rolled_back not in metrics and time.monotonic() < settle:
            time.sleep(0.05)
            metrics = gw.gateway.metrics.render().decode()
    assert rollout["phase"] == "rolled_back", rollout["message"]
    assert rolled_back in metrics
    assert 'servegate_rollout_phase{model="mlp",phase="progressing"} 0.0' in metrics
    assert 'servegate_controller_decisions_total{action="rollback",model="mlp"} 1.0' in metrics
    assert 'servegate_traffic_weight{model="mlp",version="2"} 0.0' in metrics  # left the table: 0
    assert 'servegate_traffic_weight{model="mlp",version="1"} 100.0' in metrics
    last = rollout["history"][-1]
    assert [c["name"] for c in last["checks"] if c["outcome"] == "breached"] == ["max_prediction_psi"]
    assert last["measurements"]["candidate_error_rate"] == 0.0
    assert last["measurements"]["prediction_psi"] > 0.25


def test_without_a_reference_the_first_live_rows_become_one(repo_copy: Path) -> None:
    (repo_copy / "mixed" / "config.yaml").write_text("reference_rows: 50\n")
    with GatewayThread(replace(gateway_settings(repo_copy), auth=AUTH)) as gw:
        detail = admin(gw, "GET", "/admin/v1/models/mixed", role="viewer")[1]
        building = next(v for v in detail["versions"] if v["version"] == "1")["drift"]
        assert building == {"reference": "live", "ready": False, "reference_rows_needed": 50}
        assert gw.endpoints is not None
        host, port = gw.endpoints.http.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        batch = models.two_input_batch(10, seed=3)
        body = json.dumps({"inputs": [
            {"name": "features", "datatype": "FP32", "shape": [10, 4], "data": batch["features"].ravel().tolist()},
            {"name": "category", "datatype": "INT64", "shape": [10, 1], "data": batch["category"].ravel().tolist()}]})
        for _ in range(8):
            conn.request("POST", "/v2/models/mixed/infer", body)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200
        conn.close()
        assert gw.gateway is not None
        gw.call(gw.gateway.drift.maintain())  # the background pass that stores a finished live reference
        detail = admin(gw, "GET", "/admin/v1/models/mixed", role="viewer")[1]
        ready = next(v for v in detail["versions"] if v["version"] == "1")["drift"]
        stored = gw.gateway.registry.get("mixed", "1").drift_profile
        status, report = admin(gw, "GET", "/admin/v1/models/mixed/versions/1/drift?window=30s", role="viewer")
    assert ready == {"reference": "live", "ready": True}
    assert stored is not None and {t["name"] for t in stored["inputs"]} == {"features", "category"}
    assert status == 200 and report["reference_source"] == "live" and report["rows"] > 0
