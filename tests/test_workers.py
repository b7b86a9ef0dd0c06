"""Several processes on one host and a controller of its own: `servegate serve --workers 2` shares its
ports between two workers and replaces one that dies; `servegate controller` drives a rollout from the
slices a serving replica ships, and gives its lease back when it stops."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.controller_process import LIVE_PATH, READY_PATH
from gateway.demo import models
from gateway.settings import load
from gateway.workers import reserve_ports, settings_env
from rollout.store.base import KIND_LEASE
from rollout.store.redis import RedisStore
from tests.conftest import RedisServer
from tests.scaleout_cluster import Client, burst, ready_body
from tests.serve_process import ServeProcess, wait_for


def test_workers_inherit_every_resolved_setting(tmp_path: Path) -> None:
    settings = load({"store": "redis://x:1/0", "workers": "3", "controller": "false", "lease_ttl": "2.5",
                     "jwt_secret": "s3cret", "repository": str(tmp_path)}, {"SERVEGATE_DRAIN_SECONDS": "7"})
    assert load({}, settings_env(settings)) == settings


def test_reserved_ports_can_be_shared_and_zero_picks_free_ones() -> None:
    ports, held = reserve_ports("127.0.0.1", [0, 0])
    try:
        assert len(set(ports)) == 2 and all(p > 0 for p in ports)
        ports_again, held_again = reserve_ports("127.0.0.1", ports)  # as a worker binds them too
        assert ports_again == ports
        for sock in held_again:
            sock.close()
    finally:
        for sock in held:
            sock.close()


def listeners(pid: int, port: int) -> bool:
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
               for c in psutil.Process(pid).connections(kind="tcp"))


def workers_of(proc: subprocess.Popen[str]) -> list[int]:
    return [p.pid for p in psutil.Process(proc.pid).children()]


@pytest.mark.integration
@pytest.mark.slow
def test_two_workers_share_the_ports_and_a_dead_one_is_replaced(tmp_path: Path) -> None:
    models.build_tabular(tmp_path / "repo", "tabular", "1")
    gw = ServeProcess(tmp_path / "repo", store=f"sqlite:///{tmp_path / 'state.db'}", extra=["--workers", "2"],
                      log=tmp_path / "supervisor.log")
    with gw:
        assert gw.proc is not None
        port = int(gw.http.split(":")[1])
        first = workers_of(gw.proc)
        assert len(first) == 2 and all(listeners(pid, port) for pid in first)
        assert burst(gw, 50).ok == 50
        for _ in range(4):  # whichever worker a scrape reaches answers for both
            assert merged_metrics(gw.admin) == ({"0": 1.0, "1": 1.0}, 50.0)
        supervisor = gw.proc
        psutil.Process(first[0]).kill()

        def replaced() -> bool:
            now = workers_of(supervisor)
            return len(now) == 2 and first[0] not in now and all(listeners(pid, port) for pid in now)

        wait_for(replaced, timeout=60)
        assert burst(gw, 50).ok == 50
        # the replacement counts from zero: 50 more requests, of which the survivor served its share
        up, served = merged_metrics(gw.admin)
        assert up == {"0": 1.0, "1": 1.0} and 50 <= served <= 100
        survivors = workers_of(supervisor)
        assert gw.stop() == 0
        assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                       for pid in survivors)
    assert "worker 0 exited with -9; starting a new one" in gw.stderr or \
        "worker 1 exited with -9; starting a new one" in gw.stderr


def merged_metrics(hostport: str) -> tuple[dict[str, float], float]:
    """(scrape-up by worker, successful requests summed over workers) from the shared /metrics."""
    client = Client(hostport)
    try:
        status, body = client.get("/metrics")
        assert status == 200
    finally:
        client.close()
    up: dict[str, float] = {}
    served = 0.0
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "servegate_worker_scrape_up":
                up[sample.labels["worker"]] = sample.value
            elif sample.name == "servegate_requests_total" and sample.labels.get("outcome") == "success":
                assert "worker" in sample.labels
                served += sample.value
    return up, served


def get_json(hostport: str, path: str) -> dict[str, Any]:
    client = Client(hostport)
    try:
        status, body = client.get(path)
        assert status == 200, (path, status)
        return dict(json.loads(body))
    finally:
        client.close()


def lease_holder(url: str) -> str:
    store = RedisStore(url)
    try:
        doc = store.get(KIND_LEASE, "controller")
        return str(doc.value["holder"]) if doc is not None else ""
    finally:
        store.close()


@pytest.mark.integration
@pytest.mark.slow
def test_a_controller_process_drives_a_rollout_on_shipped_slices(tmp_path: Path, redis_server: RedisServer) -> None:
    models.build_tabular(tmp_path / "repo", "tabular", "1")
    models.build_tabular(tmp_path / "candidates", "tabular", "2", c=0.5)
    with (tmp_path / "controller.log").open("w") as log:
        controller = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "controller", "--store", redis_server.url, "--host", "127.0.0.1",
             "--admin-port", "0", "--lease-ttl", "2", "--controller-interval", "0.25"],
            stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert controller.stdout is not None
        banner = controller.stdout.readline()
        assert banner.startswith("servegate controller ready admin="), banner
        health = banner.strip().split("admin=")[1]
        with ServeProcess(tmp_path / "repo", store=redis_server.url, extra=["--controller", "false"]) as gw:
            wait_for(lambda: lease_holder(redis_server.url).startswith("controller-"), timeout=15)
            wait_for(lambda: get_json(health, READY_PATH)["leader"] is True, timeout=10)
            assert get_json(health, READY_PATH)["store"] == "ok" and get_json(health, LIVE_PATH)["live"]
            status, body = gw.admin_call("POST", "/admin/v1/models/tabular/versions", {
                "version": "2", "artifact": str(tmp_path / "candidates" / "tabular" / "2" / "model.onnx")})
            assert status == 201, body
            spec = {"candidate": "2", "window": "2s", "steps": [{"weight": 50}, {"weight": 100}],
                    "analysis": {"min_requests": 10, "max_error_rate": 0.05}}
            assert gw.admin_call("POST", "/admin/v1/models/tabular/rollout", spec, role="operator")[0] == 201

            def promoted() -> bool:
                assert burst(gw, 20).ok == 20
                return bool(gw.admin_call("GET", "/admin/v1/models/tabular/rollout",
                                          role="viewer")[1]["status"]["phase"] == "promoted")

            wait_for(promoted, timeout=40, interval=0.0)
            assert ready_body(gw)[1]["store"] == "ok"
        controller.send_signal(signal.SIGTERM)
        assert controller.wait(30) == 0
        assert lease_holder(redis_server.url) == ""  # given back on the way out, not left to expire
    finally:
        if controller.poll() is None:
            controller.kill()
            controller.wait(10)
        if controller.stdout is not None:
            controller.stdout.close()

