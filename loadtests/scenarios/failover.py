"""`replica-failover`: three gateway replicas share a private Redis store; under load one is killed with
SIGKILL and restarted on the same ports.

The client is one gRPC channel over all replicas (round_robin over those whose health service says
SERVING) with a retry policy on UNAVAILABLE, so a request that fails on a dead replica is retried on
another, as a production client would be set up.
Lost requests = answers that were not OK after those retries (timeouts included). The allowance is
what was in flight on the killed replica when it died (its `servegate_inflight_requests`, scraped just
before the kill); with retries the expected loss is zero.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from loadtests.game import GameGateway, local_gateway
from loadtests.scenarios.context import Outcome, Run
from loadtests.scenarios.models import build_repository
from loadtests.scenarios.sampler import Watched
from loadtests.scenarios.scrape import model_figures, total_requests
from loadtests.scenarios.verdict import Check, at_most, equals, unsent_share

DEFAULTS = {"duration_s": 45.0, "model": "tabular", "rate": 150.0}
REDIS_READY_S = 15.0
# Round robin over the replicas that report SERVING on the standard health service (a restarting one
# listens before its models are loaded), and a retry on UNAVAILABLE, which picks another replica.
SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": ""},
    "methodConfig": [{
        "name": [{"service": "inference.GRPCInferenceService"}],
        "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.01s", "maxBackoff": "0.1s",
                        "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]},
    }],
}
CHANNEL_OPTIONS: tuple[tuple[str, str | int], ...] = (
    ("grpc.enable_retries", 1), ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
    # A restarted replica rejoins the rotation within a second or two.
    ("grpc.initial_reconnect_backoff_ms", 250), ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def private_redis(binary: str, workdir: Path) -> Iterator[str]:
    """A redis-server of this run only: a free port, its own directory, no persistence."""
    port = free_port()
    data = workdir / "redis"
    data.mkdir()
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--save", "",
           "--appendonly", "no"]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except FileNotFoundError as exc:
        raise RuntimeError(f"replica-failover needs {binary} (apt-get install redis-server)") from exc
    try:
        deadline = time.monotonic() + REDIS_READY_S
        while not _redis_answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {port} did not start")
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Replica:
    """One `servegate serve` on fixed ports, so that a restart comes back where clients look for it."""

    def __init__(self, index: int, repo: Path, store: str, secret: str) -> None:
        self.index, self.repo, self.store, self.secret = index, repo, store, secret
        self.ports = (free_port(), free_port(), free_port())
        self.gateway: GameGateway | None = None
        self._stack = ExitStack()

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.ports[1]}"

    def start(self) -> GameGateway:
        self._stack = ExitStack()
        self.gateway = self._stack.enter_context(local_gateway(
            self.repo, self.store, name=f"replica-{self.index}", ports=self.ports, secret=self.secret))
        return self.gateway

    def kill(self) -> None:
        if self.gateway is not None and self.gateway.pid is not None:
            os.kill(self.gateway.pid, signal.SIGKILL)
        self._stack.close()  # reaps the killed process

    def stop(self) -> None:
        self._stack.close()

    def watched(self) -> Watched:
        gateway = self.start_needed()
        return Watched(f"replica-{self.index}", gateway.admin,
                       lambda: self.gateway.pid if self.gateway is not None else None)

    def start_needed(self) -> GameGateway:
        if self.gateway is None:
            raise RuntimeError(f"replica {self.index} was never started")
        return self.gateway


def play(run: Run) -> Outcome:
    o = run.opts
    with private_redis(o.redis_server, run.workdir) as store, ExitStack() as stack:
        repo = build_repository(run.workdir, o.model)
        secret = secrets.token_hex(32)
        replicas = [Replica(i, repo, store, secret) for i in range(o.replicas)]
        for r in replicas:
            stack.callback(r.stop)
            run.gateways.append(r.start())
        run.event("replicas.ready", f"{len(replicas)} replicas on {store}")
        return _under_load(run, replicas)


def _under_load(run: Run, replicas: list[Replica]) -> Outcome:
    o = run.opts
    victim = replicas[1]
    target = "ipv4:" + ",".join(r.grpc for r in replicas)
    sc = run.scenario(grpc=target, channel_options=CHANNEL_OPTIONS)
    load = run.background("failover", sc, run.plan(o.duration_s, rate=o.rate))
    with run.sampler(watched=[r.watched() for r in replicas]):
        run.wait(o.duration_s / 3)
        inflight = sum(model_figures(victim.start_needed().admin.metrics(), o.model)["inflight"].values())
        victim.kill()
        run.event("replica.kill", f"replica-{victim.index} SIGKILL with {inflight:g} requests in flight")
        run.wait(o.down_s)
        began = time.monotonic()
        run.gateways[victim.index] = victim.start()
        restart_s = time.monotonic() - began
        run.event("replica.restart", f"replica-{victim.index} ready again after {restart_s:.1f} s")
        result = load.result(timeout_s=o.duration_s + 120)
    return _verdict(run, replicas, victim, result, inflight, restart_s)


def _verdict(run: Run, replicas: list[Replica], victim: Replica, result: dict[str, Any], inflight: float,
             restart_s: float) -> Outcome:
    model = run.opts.model
    served = total_requests(model_figures(victim.start_needed().admin.metrics(), model))
    views = [_state_view(r.start_needed(), model) for r in replicas]
    lost = result["requests"]["errors"]
    figures = {"lost_requests": lost, "inflight_at_kill": inflight, "restart_s": restart_s,
               "restarted_replica_served": served, "client_requests": result["requests"]["answered"],
               "outcomes": result["outcomes"], "p99_ms": result["latency_s"]["p99"] * 1e3}
    checks: list[Check] = [
        at_most("lost_requests", lost, inflight, "", "not OK after client retries; allowance: in flight on the "
                "killed replica"),
        equals("restarted_replica_serves", served > 0, True, "requests answered by the restarted replica"),
        equals("shared_state", all(v == views[0] for v in views), True,
               "every replica reports the same versions and route table"),
        at_most("unsent_share", unsent_share(result), 0.01),
    ]
    return Outcome(checks, figures, {"replicas": len(replicas), "client_channel": dict(CHANNEL_OPTIONS)})


def _state_view(gateway: GameGateway, model: str) -> dict[str, Any]:
    doc = gateway.admin.model(model)
    versions = sorted((str(v.get("version")), str(v.get("stage"))) for v in doc.get("versions", []))
    return {"versions": versions, "traffic": doc.get("traffic")}
