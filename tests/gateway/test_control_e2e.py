"""The control side against a running gateway: traffic changes through the admin API take effect on the
next request, A/B stickiness, shadow comparisons, refusals, and the audit chain.
"""

from __future__ import annotations

import http.client
import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.admin.auth import mint
from gateway.settings import AuthSettings
from tests.gateway.harness import GatewayThread, gateway_settings
from tests.scaleout_cluster import scrape_metrics

pytestmark = pytest.mark.integration

SECRET = "test-secret-for-the-admin-api-0123456789"
AUTH = AuthSettings(jwt_secret=SECRET)


def token(*roles: str, sub: str = "sre-1") -> str:
    return mint(AUTH, sub, roles, 600)


class Api:
    def __init__(self, gw: GatewayThread) -> None:
        assert gw.endpoints is not None
        self.admin = gw.endpoints.admin
        self.http = gw.endpoints.http

    def call(self, method: str, path: str, body: Any = None, role: str = "admin",
             address: str | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        host, port = (address or self.admin).split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        sent = {"Authorization": f"Bearer {token(role)}", **(headers or {})}
        try:
            conn.request(method, path, json.dumps(body) if body is not None else None, sent)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, json.loads(data) if data else None
        finally:
            conn.close()

    def infer(self, conn: http.client.HTTPConnection, headers: dict[str, str] | None = None) -> str:
        x = np.random.default_rng(0).random((1, 30), dtype=np.float32)
        body = json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 30],
                                       "data": x.ravel().tolist()}]})
        conn.request("POST", "/v2/models/tabular/infer", body, headers or {})
        resp = conn.getresponse()
        doc = json.loads(resp.read())
        if resp.status != 200:
            raise AssertionError(f"{resp.status}: {doc}")
        return str(doc["model_version"])


@pytest.fixture(scope="module")
def gw(model_repo: Path) -> Iterator[GatewayThread]:
    settings = replace(gateway_settings(model_repo), auth=AUTH)
    with GatewayThread(settings) as running:
        yield running


def data_conn(api: Api) -> http.client.HTTPConnection:
    host, port = api.http.split(":")
    return http.client.HTTPConnection(host, int(port), timeout=30)


def test_registry_sync_makes_the_highest_version_production(gw: GatewayThread) -> None:
    status, body = Api(gw).call("GET", "/admin/v1/models/tabular", role="viewer")
    assert status == 200
    stages = {v["version"]: v["stage"] for v in body["versions"]}
    assert stages == {"1": "validated", "2": "production"}
    assert body["traffic"] == {"policy": "canary", "weights": {"2": 100}}
    served = {v["version"]: v["state"] for v in body["versions"]}
    assert served["2"] == "READY" and served["1"] == "UNAVAILABLE"  # validated but unused: not loaded


def test_a_canary_split_takes_effect_on_the_next_request(gw: GatewayThread) -> None:
    api = Api(gw)
    status, table = api.call("PUT", "/admin/v1/models/tabular/traffic",
                             {"policy": "canary", "weights": {"2": 80, "1": 20}}, role="operator")
    assert status == 200 and table["weights"] == {"2": 80, "1": 20}
    conn = data_conn(api)
    counts = Counter(api.infer(conn) for _ in range(1500))
    conn.close()
    share = counts["1"] / 1500
    assert abs(share - 0.20) < 4 * (0.2 * 0.8 / 1500) ** 0.5
    status, _ = api.call("PUT", "/admin/v1/models/tabular/traffic", {"policy": "canary", "weights": {"2": 100}},
                         role="operator")
    assert status == 200


def test_traffic_refusals_name_what_is_wrong(gw: GatewayThread) -> None:
    api = Api(gw)
    status, body = api.call("PUT", "/admin/v1/models/tabular/traffic",
                            {"policy": "canary", "weights": {"2": 50, "9": 50}}, role="operator")
    assert status == 404 and "no version '9'" in body["error"]
    status, body = api.call("PUT", "/admin/v1/models/tabular/traffic",
                            {"policy": "canary", "weights": {"2": 50, "1": 40}}, role="operator")
    assert status == 400 and "must sum to 100" in body["error"]
    status, body = api.call("PUT", "/admin/v1/models/tabular/traffic",
                            {"policy": "canary", "weights": {"2": 100}}, role="viewer")
    assert status == 403


def test_ab_stickiness_over_many_users(gw: GatewayThread) -> None:
    api = Api(gw)
    status, _ = api.call("PUT", "/admin/v1/models/tabular/traffic",
                         {"policy": "ab", "weights": {"2": 50, "1": 50}, "sticky_key": "x-user-id"},
                         role="operator")
    assert status == 200
    conn = data_conn(api)
    users = [f"user-{i}" for i in range(400)]
    first = {u: api.infer(conn, {"x-user-id": u}) for u in users}
    second = {u: api.infer(conn, {"x-user-id": u}) for u in users}
    conn.close()
    assert first == second
    share = sum(v == "1" for v in first.values()) / len(users)
    assert 0.40 < share < 0.60
    api.call("PUT", "/admin/v1/models/tabular/traffic", {"policy": "canary", "weights": {"2": 100}}, role="operator")


def test_shadow_answers_are_compared_not_returned(gw: GatewayThread) -> None:
    api = Api(gw)
    status, _ = api.call("PUT", "/admin/v1/models/tabular/traffic",
                         {"policy": "canary", "weights": {"2": 100}, "shadow": {"version": "1", "percent": 100}},
                         role="operator")
    assert status == 200
    conn = data_conn(api)
    served = {api.infer(conn) for _ in range(200)}
    conn.close()
    assert served == {"2"}
    time.sleep(0.3)
    _, body = api.call("GET", "/admin/v1/models/tabular", role="viewer")
    shadow = body["shadow"]
    assert shadow["version"] == "1" and shadow["requests"] >= 150
    assert 0.8 <= shadow["agreement_rate"] <= 1.0  # two logistic regressions of the same data mostly agree
    assert shadow["mean_abs_delta"] is not None
    api.call("PUT", "/admin/v1/models/tabular/traffic", {"policy": "canary", "weights": {"2": 100}}, role="operator")


def test_weight_changes_under_load_drop_nothing(gw: GatewayThread) -> None:
    """100 switches between versions while callers keep sending: every request succeeds, and the first
    request sent after each change is answered by the new version."""
    api = Api(gw)
    stop, failures, served = threading.Event(), [], Counter()

    def caller() -> None:
        conn = data_conn(api)
        while not stop.is_set():
            try:
                served[api.infer(conn)] += 1
            except Exception as exc:  # every failure is a finding
                failures.append(repr(exc))
        conn.close()

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for t in threads:
        t.start()
    probe = data_conn(api)
    wrong_after_change = 0
    try:
        for i in range(100):
            target = "1" if i % 2 == 0 else "2"
            status, _ = api.call("PUT", "/admin/v1/models/tabular/traffic",
                                 {"policy": "canary", "weights": {target: 100}}, role="operator")
            assert status == 200
            if api.infer(probe) != target:
                wrong_after_change += 1
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        probe.close()
    assert failures == []
    assert wrong_after_change == 0
    assert served["1"] > 0 and served["2"] > 0


def test_audit_chain_verifies_and_records_traffic_changes(gw: GatewayThread) -> None:
    api = Api(gw)
    status, body = api.call("GET", "/admin/v1/audit?model=tabular&limit=500", role="viewer")
    assert status == 200
    actions = [e["action"] for e in body["entries"]]
    assert "set_traffic" in actions and "register" in actions and "promote" in actions
    change = next(e for e in body["entries"] if e["action"] == "set_traffic")
    assert change["actor"] == "sre-1" and change["after"]["policy"] in ("canary", "ab")
    status, result = api.call("GET", "/admin/v1/audit/verify", role="viewer")
    assert status == 200 and result["ok"] is True and result["checked"] >= 5


def test_a_tampered_audit_entry_is_detected(repo_copy: Path, tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    settings = replace(gateway_settings(repo_copy, store=f"sqlite:///{db}"), auth=AUTH)
    with GatewayThread(settings) as running:
        api = Api(running)
        api.call("PUT", "/admin/v1/models/tabular/traffic", {"policy": "canary", "weights": {"2": 90, "1": 10}},
                 role="operator")
        assert api.call("GET", "/admin/v1/audit/verify", role="viewer")[1]["ok"] is True
        with sqlite3.connect(db) as conn:
            seq, entry = conn.execute("SELECT seq, entry FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            doc = json.loads(entry)
            doc["actor"] = "someone-else"
            conn.execute("UPDATE audit SET entry = ? WHERE seq = ?", (json.dumps(doc), seq))
        status, result = api.call("GET", "/admin/v1/audit/verify", role="viewer")
    assert status == 200 and result["ok"] is False and result["broken_at"] == seq


def _withdrawn_count(api: Api, version: str) -> float:
    text = scrape_metrics(api.admin)
    prefix = "servegate_requests_total{"
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(prefix) and 'model="tabular"' in line and f'version="{version}"' in line
               and 'outcome="withdrawn"' in line)


@pytest.mark.parametrize("rolled_back", [False, True])
def test_a_candidate_taken_out_during_a_call_does_not_answer_it(gw: GatewayThread, rolled_back: bool) -> None:
    """The call chose candidate 1 (stable 2 is its fallback); while 1 is busy with it, a rollback sends
    all traffic to 2. The answer then comes from 2: a rolled-back version answers nothing afterwards."""
    api = Api(gw)
    traffic, faults = "/admin/v1/models/tabular/traffic", "/admin/v1/models/tabular/versions/1/faults"
    status, _ = api.call("PUT", traffic, {"policy": "canary", "weights": {"2": 0, "1": 100}, "fallback": "2"},
                         role="operator")
    assert status == 200
    assert api.call("PUT", faults, {"latency_ms": 800, "duration": "60s"})[0] == 200
    before = _withdrawn_count(api, "1")
    answered: list[str] = []
    conn = data_conn(api)
    call = threading.Thread(target=lambda: answered.append(api.infer(conn)))
    call.start()
    time.sleep(0.3)  # the call is inside version 1's slow batch now
    if rolled_back:
        assert api.call("PUT", traffic, {"policy": "canary", "weights": {"2": 100}}, role="operator")[0] == 200
    call.join(timeout=30)
    conn.close()
    assert api.call("DELETE", faults)[0] == 200
    api.call("PUT", traffic, {"policy": "canary", "weights": {"2": 100}}, role="operator")
    assert answered == (["2"] if rolled_back else ["1"])
    assert _withdrawn_count(api, "1") - before == (1 if rolled_back else 0)


def test_blue_green_switch_keeps_the_previous_version_warm_for_a_switch_back(gw: GatewayThread) -> None:
    api = Api(gw)
    status, table = api.call("PUT", "/admin/v1/models/tabular/traffic", {"policy": "blue_green", "active": "1"},
                             role="operator")
    assert status == 200
    assert "2" in table["retained"] and table["retained"]["2"] > time.time() + 60  # warm for the window
    _, detail = api.call("GET", "/admin/v1/models/tabular", role="viewer")
    states = {v["version"]: v["state"] for v in detail["versions"]}
    assert states == {"1": "READY", "2": "READY"}
    conn = data_conn(api)
    assert {api.infer(conn) for _ in range(20)} == {"1"}
    status, _ = api.call("PUT", "/admin/v1/models/tabular/traffic", {"policy": "blue_green", "active": "2"},
                         role="operator")
    assert status == 200
    assert api.infer(conn) == "2"  # the switch back needs no load: the very next request is served by 2
    conn.close()
    api.call("PUT", "/admin/v1/models/tabular/traffic", {"policy": "canary", "weights": {"2": 100}}, role="operator")
