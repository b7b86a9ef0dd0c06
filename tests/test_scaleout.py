"""Scale-out with real processes: a private redis-server and three `servegate serve` replicas.

A weight change through one replica reaches the other two within a second (p99 over 100 changes); the
controller's windows count every replica's traffic; killing the lease holder hands control over and the
rollout goes on; Redis going away costs no request and control resumes when it is back; Redis coming
back empty is noticed and healed with `servegate state restore`.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gateway.demo import models
from rollout.snapshot import read_documents
from tests.conftest import RedisServer, free_port
from tests.scaleout_cluster import LEASE_TTL_S, Client, Cluster, Steady, burst, bursts, metric, ready_body
from tests.serve_process import SECRET, ServeProcess, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHANGES = 100


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(port=free_port(), workdir=tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cluster(redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three replicas shared by the tests below (starting them is most of the cost); each test brings
    its own candidate version, and the one that kills a replica runs last."""
    root = tmp_path_factory.mktemp("scaleout")
    models.build_tabular(root / "repo", "tabular", "1")
    running = Cluster(redis, root / "repo", root, candidates=root / "candidates").start()
    try:
        yield running
    finally:
        running.stop()


def production(gw: ServeProcess) -> str:
    versions = gw.admin_call("GET", "/admin/v1/models/tabular", role="viewer")[1]["versions"]
    return next(str(v["version"]) for v in versions if v["stage"] == "production")


def set_weights(gw: ServeProcess, weights: dict[str, int]) -> None:
    status, body = gw.admin_call("PUT", "/admin/v1/models/tabular/traffic",
                                 {"policy": "canary", "weights": weights}, role="operator")
    assert status == 200, body


def visible_after(replicas: list[ServeProcess], version: str, since: float, timeout: float = 5.0) -> float:
    """Seconds from `since` until every replica answers with `version` (polled on its data plane)."""
    clients = [Client(gw.http) for gw in replicas]
    seen: dict[int, float] = {}
    try:
        while len(seen) < len(clients) and time.monotonic() - since < timeout:
            for i, client in enumerate(clients):
                if i not in seen and client.infer()[1] == version:
                    seen[i] = time.monotonic()
    finally:
        for client in clients:
            client.close()
    assert len(seen) == len(clients), f"version {version} not visible everywhere within {timeout} s"
    return max(seen.values()) - since


def rollout_status(gw: ServeProcess) -> dict[str, Any]:
    status, body = gw.admin_call("GET", "/admin/v1/models/tabular/rollout", role="viewer")
    assert status == 200, body
    return dict(body["status"])


def wait_status(gw: ServeProcess, check: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
    def matched() -> dict[str, Any] | None:
        status = rollout_status(gw)
        return status if check(status) else None

    return dict(wait_for(matched, timeout=timeout, interval=0.1))


def test_a_weight_change_reaches_every_replica_within_a_second(
        cluster: Cluster, record_property: Callable[[str, object], None]) -> None:
    writer, *others = cluster.gateways
    stable, candidate = production(writer), cluster.candidate(writer)
    set_weights(writer, {stable: 0, candidate: 100})  # the first switch also loads it everywhere: not measured
    visible_after(others, candidate, time.monotonic(), timeout=30)
    delays = []
    for i in range(CHANGES):
        target = stable if i % 2 == 0 else candidate
        sent = time.monotonic()
        set_weights(writer, {stable: 100 if target == stable else 0, candidate: 100 if target == candidate else 0})
        delays.append(visible_after(others, target, sent))
    delays.sort()
    p50, p99 = statistics.median(delays), delays[int(0.99 * len(delays)) - 1]
    figures = {"changes": CHANGES, "p50_ms": round(p50 * 1e3, 1), "p99_ms": round(p99 * 1e3, 1),
               "max_ms": round(delays[-1] * 1e3, 1)}
    record_property("route_propagation", json.dumps(figures))
    print(f"route propagation over {CHANGES} changes (admin call sent -> both other replicas answer): {figures}")
    assert p99 < 1.0, figures


def test_a_redis_outage_costs_no_request_and_control_resumes(cluster: Cluster) -> None:
    gw1 = cluster.gateways[0]
    production_before, candidate = production(gw1), cluster.candidate(gw1)
    spec = {"candidate": candidate, "window": "3s", "steps": [{"weight": 30}, {"weight": 100}],
            "analysis": {"min_requests": 10, "max_error_rate": 0.05}}
    assert gw1.admin_call("POST", "/admin/v1/models/tabular/rollout", spec, role="operator")[0] == 201
    wait_for(lambda: all(burst(gw, 20).versions.get(candidate) for gw in cluster.gateways), timeout=15)
    audit_before = gw1.admin_call("GET", "/admin/v1/audit?limit=1000", role="viewer")[1]["entries"]
    with Steady(cluster.gateways) as steady:
        cluster.redis.stop()
        down_at = time.monotonic()
        for gw in cluster.gateways:
            wait_for(lambda gw=gw: ready_body(gw) == (200, {"ready": True, "store": "degraded"}), timeout=10)
        wait_for(lambda: all(metric(gw, "servegate_store_degraded") == 1 for gw in cluster.gateways), timeout=15)
        # nothing moves while the store is away: every replica still splits traffic between both arms
        split_while_down = [burst(gw, 30).versions for gw in cluster.gateways]
        time.sleep(max(0.0, 6.0 - (time.monotonic() - down_at)))  # longer than a window plus the lease
        served_while_down = [s.ok for s in steady.sent]
        cluster.redis.start()  # the same append-only file: nothing may be lost
        for gw in cluster.gateways:
            wait_for(lambda gw=gw: ready_body(gw)[1].get("store") == "ok", timeout=15)
        done = wait_status(gw1, lambda s: s["phase"] == "promoted", timeout=30)
    assert all(not s.failed for s in steady.sent), [s.failed[:3] for s in steady.sent]
    assert all(n > 0 for n in served_while_down)
    assert all(set(v) == {production_before, candidate} for v in split_while_down), split_while_down
    audit_after = gw1.admin_call("GET", "/admin/v1/audit?limit=1000", role="viewer")[1]["entries"]
    assert [e["hash"] for e in audit_after[-len(audit_before):]] == [e["hash"] for e in audit_before]
    assert gw1.admin_call("GET", "/admin/v1/audit/verify", role="viewer")[1]["ok"] is True
    assert all(metric(gw, "servegate_store_reset") == 0 for gw in cluster.gateways)
    # the window that spanned the outage was judged on slices shipped once Redis was back
    assert done["history"][0]["measurements"]["candidate_requests"] > 0


def test_an_emptied_redis_is_reported_and_healed_by_state_restore(cluster: Cluster) -> None:
    gw1, gw2, gw3 = cluster.gateways
    stable, candidate = production(gw1), cluster.candidate(gw1)
    set_weights(gw1, {stable: 50, candidate: 50})
    wait_for(lambda: all(len(burst(gw, 40).versions) == 2 for gw in cluster.gateways), timeout=15)
    before = gw1.admin_call("GET", "/admin/v1/models/tabular", role="viewer")[1]
    audit = gw1.admin_call("GET", "/admin/v1/audit?limit=1000", role="viewer")[1]["entries"]
    time.sleep(1.5)  # the mirrors refresh after every change notification
    cluster.redis.stop()
    cluster.redis.wipe()
    cluster.redis.start()
    for gw in cluster.gateways:
        wait_for(lambda gw=gw: ready_body(gw) == (200, {"ready": True, "store": "reset"}), timeout=15)
        assert metric(gw, "servegate_store_reset") == 1
        assert len(burst(gw, 40).versions) == 2  # still serving the last route table: both versions
    assert "LOST ITS DATA" in gw1.stderr
    store = cluster.store()
    try:
        assert all(not docs for docs in read_documents(store).values())  # nothing stale written back
    finally:
        store.close()

    restore = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "state", "restore", "--store", cluster.redis.url,
         "--from-replica", f"http://{gw2.admin}", "--jwt-secret", SECRET],
        capture_output=True, text=True, timeout=60)
    assert restore.returncode == 0, restore.stderr
    report = json.loads(restore.stdout)
    assert report["documents"] >= 4 and report["audit_entries"] == len(audit) > 0
    for gw in cluster.gateways:
        wait_for(lambda gw=gw: ready_body(gw)[1].get("store") == "ok", timeout=15)
    after = gw3.admin_call("GET", "/admin/v1/models/tabular", role="viewer")[1]
    assert after["traffic"] == before["traffic"]
    assert {v["version"]: v["stage"] for v in after["versions"]} == {v["version"]: v["stage"]
                                                                      for v in before["versions"]}
    assert gw3.admin_call("GET", "/admin/v1/audit/verify", role="viewer")[1]["ok"] is True
    assert cluster.wait_for_holder() is not None  # control resumed on the restored store


def test_windows_count_every_replica_and_the_rollout_survives_its_controller(cluster: Cluster) -> None:
    holder = cluster.wait_for_holder()
    serving = [gw for gw in cluster.gateways if gw is not holder]  # the holder gets no traffic at all
    candidate = cluster.candidate(serving[0])
    spec = {"candidate": candidate, "window": "6s", "steps": [{"weight": 50}, {"weight": 100}],
            "analysis": {"min_requests": 20, "max_error_rate": 0.05}}
    status, body = serving[0].admin_call("POST", "/admin/v1/models/tabular/rollout", spec, role="operator")
    assert status == 201, body
    time.sleep(1.0)  # the burst lies inside the first window, away from its edges
    first = bursts(serving, 120)
    assert all(not s.failed for s in first)
    judged = wait_status(serving[1], lambda s: s["step_index"] >= 1, timeout=30)
    window = judged["history"][0]["measurements"]
    assert window["candidate_requests"] + window["stable_requests"] == sum(s.ok for s in first) == 240
    assert window["candidate_requests"] > 0 and window["stable_requests"] > 0
    # The holder served nothing: drift figures in its window can only come from the shipped counts.
    assert window["candidate_input_psi_max"] is not None and window["stable_input_psi_max"] is not None
    assert window["prediction_psi"] is not None

    second = bursts(serving, 60)  # the second window's traffic, all on the candidate now
    killed_at = time.monotonic()
    holder.kill()
    successor = cluster.wait_for_holder(timeout=4 * LEASE_TTL_S, other_than=holder)
    handover_s = time.monotonic() - killed_at
    assert successor in serving and handover_s <= 2 * LEASE_TTL_S, handover_s
    done = wait_status(serving[0], lambda s: s["phase"] == "promoted", timeout=30)
    assert done["history"][1]["measurements"]["candidate_requests"] == sum(s.ok for s in second) == 120
    assert [h["step"] for h in done["history"]] == [0, 1]
    print(f"lease hand-over after the holder was killed: {handover_s:.2f} s (TTL {LEASE_TTL_S} s)")
