"""Several real `servegate serve` processes on one private redis-server, and plain HTTP clients for them:
the rig of the scale-out tests."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.demo import models
from rollout.store.base import KIND_LEASE
from rollout.store.redis import RedisStore
from tests.conftest import RedisServer
from tests.serve_process import ServeProcess

# A short lease and a fast controller keep the hand-over inside the test budget.
LEASE_TTL_S = 2.0
CONTROLLER_FLAGS = ("--lease-ttl", str(LEASE_TTL_S), "--controller-interval", "0.25")
ROW = [0.25] * 30
INFER_BODY = json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 30], "data": ROW}]})


class Client:
    """One keep-alive HTTP connection to one replica's data plane (not thread-safe: one per thread)."""

    def __init__(self, hostport: str, timeout: float = 10.0) -> None:
        host, port = hostport.split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=timeout)

    def infer(self) -> tuple[int, str]:
        """(HTTP status, the version that answered)."""
        self.conn.request("POST", "/v2/models/tabular/infer", INFER_BODY, {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        body = resp.read()
        return resp.status, str(json.loads(body).get("model_version", "")) if resp.status == 200 else ""

    def get(self, path: str) -> tuple[int, bytes]:
        self.conn.request("GET", path)
        resp = self.conn.getresponse()
        return resp.status, resp.read()

    def close(self) -> None:
        self.conn.close()


def ready_body(gw: ServeProcess) -> tuple[int, dict[str, Any]]:
    client = Client(gw.http)
    try:
        status, body = client.get("/v2/health/ready")
        return status, json.loads(body)
    finally:
        client.close()


def scrape_metrics(admin: str) -> str:
    """The Prometheus page of the admin listener at host:port."""
    host, port = admin.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def metric(gw: ServeProcess, name: str) -> float | None:
    text = scrape_metrics(gw.admin)
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


@dataclass
class Sent:
    """What one client thread sent: successes, failures, and which version answered how often."""

    ok: int = 0
    failed: list[str] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)


def burst(gw: ServeProcess, n: int) -> Sent:
    """`n` requests, one after another, on one connection."""
    sent, client = Sent(), Client(gw.http)
    try:
        for _ in range(n):
            try:
                status, version = client.infer()
            except OSError as exc:
                sent.failed.append(repr(exc))
                client.close()
                client = Client(gw.http)
                continue
            if status == 200:
                sent.ok += 1
                sent.versions[version] = sent.versions.get(version, 0) + 1
            else:
                sent.failed.append(f"HTTP {status}")
    finally:
        client.close()
    return sent


def bursts(gateways: Sequence[ServeProcess], n: int) -> list[Sent]:
    """`n` requests to each gateway at the same time."""
    with ThreadPoolExecutor(len(gateways)) as pool:
        return list(pool.map(lambda gw: burst(gw, n), gateways))


class Steady:
    """Requests to every gateway, back to back, until stopped; counts every failure."""

    def __init__(self, gateways: Sequence[ServeProcess]) -> None:
        self._stop = threading.Event()
        self.sent = [Sent() for _ in gateways]
        self._threads = [threading.Thread(target=self._loop, args=(gw, s), daemon=True)
                         for gw, s in zip(gateways, self.sent, strict=True)]

    def __enter__(self) -> Steady:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _loop(self, gw: ServeProcess, sent: Sent) -> None:
        while not self._stop.is_set():
            result = burst(gw, 20)
            sent.ok += result.ok
            sent.failed += result.failed


class Cluster:
    """A redis-server and `n` gateways on it, started together; `stop` stops them together."""

    def __init__(self, redis: RedisServer, repo: Path, logs: Path, *, candidates: Path, n: int = 3,
                 extra: Sequence[str] = CONTROLLER_FLAGS) -> None:
        self.redis, self.candidates = redis, candidates
        self.gateways = [ServeProcess(repo, store=redis.url, extra=list(extra), log=logs / f"gateway-{i}.log")
                         for i in range(n)]
        self._next_version = 2

    def candidate(self, gw: ServeProcess) -> str:
        """Builds the next version of `tabular` (weights differ by version) and registers it via `gw`."""
        version = str(self._next_version)
        self._next_version += 1
        models.build_tabular(self.candidates, "tabular", version, c=1.0 / int(version))
        artifact = self.candidates / "tabular" / version / "model.onnx"
        status, body = gw.admin_call("POST", "/admin/v1/models/tabular/versions",
                                     {"version": version, "artifact": str(artifact)})
        if status != 201:
            raise AssertionError(f"registering version {version}: {status} {body}")
        return version

    def start(self) -> Cluster:
        with ThreadPoolExecutor(len(self.gateways)) as pool:
            list(pool.map(lambda gw: gw.start(), self.gateways))
        return self

    def stop(self) -> list[int]:
        for gw in self.gateways:
            if gw.proc is not None and gw.proc.poll() is None:
                gw.proc.terminate()
        return [gw.stop() for gw in self.gateways]

    def store(self) -> RedisStore:
        return RedisStore(self.redis.url)

    def holder(self) -> ServeProcess | None:
        """The gateway whose controller holds the lease now (None: nobody, or not a gateway)."""
        store = self.store()
        try:
            doc = store.get(KIND_LEASE, "controller")
        finally:
            store.close()
        name = str(doc.value["holder"]) if doc is not None else ""
        for gw in self.gateways:
            if gw.proc is not None and f"-{gw.proc.pid}-" in name:
                return gw
        return None

    def wait_for_holder(self, timeout: float = 15.0, other_than: ServeProcess | None = None) -> ServeProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.holder()
            if found is not None and found is not other_than:
                return found
            time.sleep(0.05)
        raise TimeoutError("no gateway took the controller lease")
