"""The scale-out benchmark, one command: `python -m loadtests.scaleout_bench`.

1. Capacity of `servegate serve --workers 2` against `--workers 1` on this host, the same load in one run
   (wrk for REST, h2load for gRPC), alternating the two so that neither profits from going second.
2. Route propagation: three replicas on a private redis-server; a weight switch through replica 1's admin
   API, timed until replicas 2 and 3 both answer with the new version, over `--changes` switches.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jwt

from loadtests.cclients import CClientResult, run_h2load, run_wrk
from loadtests.metadata import discover
from loadtests.payload import grpc_request, infer_path, random_tensors, rest_binary_body
from loadtests.services import Service, cpu_seconds, running, running_all

MODEL = "mlp"
SECRET = "scaleout-bench-secret-0123456789abcdef"
SERVE = [sys.executable, "-m", "gateway.cli", "serve", "--host", "127.0.0.1", "--http-port", "0",
         "--grpc-port", "0", "--admin-port", "0"]
TABULAR_ROW = [0.25] * 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- 1. workers -------------------------------------------------------------------------------------

def build_mlp_repository(root: Path, ort_threads: int) -> Path:
    from gateway.demo.models import build_mlp

    build_mlp(root, MODEL, "1")
    (root / MODEL / "config.yaml").write_text(f"intra_op_threads: {ort_threads}\n")
    return root


def measure_workers(workers: int, repo: Path, args: argparse.Namespace, state: Path) -> dict[str, Any]:
    """One `serve --workers N`: a warm-up, then wrk and h2load, each with the server's CPU use."""
    command = [*SERVE, "--repository", str(repo), "--workers", str(workers),
               "--store", f"sqlite:///{state / f'w{workers}-{time.monotonic_ns()}.db'}"]
    with running(f"workers-{workers}", command, ready_timeout_s=300) as server:
        sig = discover(None, server.http, MODEL)
        tensors = random_tensors(sig.inputs, 1)
        body, request = rest_binary_body(tensors), grpc_request(MODEL, "", tensors)
        run_wrk(server.http or "", infer_path(MODEL, ""), body, connections=args.connections,
                duration_s=args.warmup)
        out: dict[str, Any] = {}

        def rest() -> CClientResult:
            return run_wrk(server.http or "", infer_path(MODEL, ""), body, connections=args.connections,
                           duration_s=args.duration)

        def grpc() -> CClientResult:
            return run_h2load(server.grpc or "", request, streams=args.streams,
                              connections=args.grpc_connections, duration_s=args.duration)

        for name, load in (("rest", rest), ("grpc", grpc)):
            before, start = cpu_seconds(server.pid), time.monotonic()
            result = load()
            after, wall = cpu_seconds(server.pid), time.monotonic() - start
            cores = None if before is None or after is None else round((after - before) / wall, 2)
            latency = result.latency_s.get("p99") or result.latency_s.get("mean")
            out[name] = {"requests_per_s": round(result.requests_per_s, 1), "failed": result.failed,
                         "non_2xx": result.non_2xx, "latency_ms": _ms(latency),
                         "latency_is": "p99" if result.latency_s.get("p99") else "mean",
                         "server_cores": cores, "command": result.command}
            print(f"  workers={workers} {name}: {out[name]['requests_per_s']} req/s, {out[name]['latency_is']} "
                  f"{out[name]['latency_ms']} ms, server {cores} cores", flush=True)
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def workers_comparison(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    repo = build_mlp_repository(tmp / "mlp-repo", args.ort_threads)
    order = [1, 2] + [2, 1] * max(0, args.rounds - 1)
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    for workers in order:
        runs[workers].append(measure_workers(workers, repo, args, tmp))
    summary: dict[str, Any] = {"order": order, "runs": runs}
    for proto in ("rest", "grpc"):
        one = statistics.mean(r[proto]["requests_per_s"] for r in runs[1])
        two = statistics.mean(r[proto]["requests_per_s"] for r in runs[2])
        summary[proto] = {"workers_1_rps": round(one, 1), "workers_2_rps": round(two, 1),
                          "ratio": round(two / one, 3) if one else None}
    return summary


# --- 2. route propagation ---------------------------------------------------------------------------

@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
                             "--save", "", "--appendonly", "yes", "--appendfsync", "always"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def token(role: str) -> str:
    now = int(time.time())
    claims = {"sub": "scaleout-bench", "roles": [role], "aud": "servegate", "iat": now, "nbf": now,
              "exp": now + 3600}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def admin(target: str, method: str, path: str, body: Any, role: str) -> Any:
    host, port = target.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request(method, path, json.dumps(body),
                     {"Authorization": f"Bearer {token(role)}", "Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    if resp.status >= 300:
        raise RuntimeError(f"{method} {path}: {resp.status} {data[:300]!r}")
    return json.loads(data)


class Poller:
    """A keep-alive connection to one replica's data plane, asking which version answers."""

    def __init__(self, target: str) -> None:
        host, port = target.split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10)
        self.body = json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 30],
                                            "data": TABULAR_ROW}]})

    def version(self) -> str:
        self.conn.request("POST", "/v2/models/tabular/infer", self.body, {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        return str(json.loads(resp.read()).get("model_version", ""))


def visible_after(pollers: list[Poller], version: str, since: float, timeout: float = 10.0) -> float:
    seen: dict[int, float] = {}
    while len(seen) < len(pollers):
        if time.monotonic() - since > timeout:
            raise RuntimeError(f"version {version} not visible on every replica within {timeout} s")
        for i, poller in enumerate(pollers):
            if i not in seen and poller.version() == version:
                seen[i] = time.monotonic()
    return max(seen.values()) - since


def propagation(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from gateway.demo.models import build_tabular

    build_tabular(tmp / "tab-repo", "tabular", "1")
    artifact = build_tabular(tmp / "tab-candidates", "tabular", "2", c=0.5)
    env = {"SERVEGATE_JWT_SECRET": SECRET}
    with redis_server(tmp / "redis") as url:
        command = [*SERVE, "--repository", str(tmp / "tab-repo"), "--store", url]
        with running_all([(f"replica-{i}", command) for i in range(3)], env=env, ready_timeout_s=300) as replicas:
            return _switch(replicas, artifact, args.changes)


def _switch(replicas: list[Service], artifact: Path, changes: int) -> dict[str, Any]:
    writer = replicas[0].endpoints["admin"]
    admin(writer, "POST", "/admin/v1/models/tabular/versions", {"version": "2", "artifact": str(artifact)}, "admin")
    pollers = [Poller(r.http or "") for r in replicas[1:]]
    weights = {"1": {"1": 100, "2": 0}, "2": {"1": 0, "2": 100}}
    admin(writer, "PUT", "/admin/v1/models/tabular/traffic", {"policy": "canary", "weights": weights["2"]},
          "operator")
    visible_after(pollers, "2", time.monotonic(), timeout=60)  # loads version 2 everywhere first
    delays = []
    for i in range(changes):
        target = "1" if i % 2 == 0 else "2"
        sent = time.monotonic()
        admin(writer, "PUT", "/admin/v1/models/tabular/traffic", {"policy": "canary", "weights": weights[target]},
              "operator")
        delays.append(visible_after(pollers, target, sent))
    delays.sort()
    return {"changes": changes, "p50_ms": round(statistics.median(delays) * 1000, 1),
            "p99_ms": round(delays[max(0, int(0.99 * len(delays)) - 1)] * 1000, 1),
            "max_ms": round(delays[-1] * 1000, 1),
            "measured_from": "admin PUT sent on replica 1", "measured_to": "replicas 2 and 3 both answer with it"}


# --- command ----------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtests.scaleout_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured load (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring (default 2)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument("--grpc-connections", type=int, default=8,
                   help="h2load connections: the kernel spreads connections, not streams (default 8)")
    p.add_argument("--streams", type=int, default=8, help="h2load streams per connection (default 8)")
    p.add_argument("--rounds", type=int, default=1, help="1: workers 1 then 2; n: 1,2 then (2,1) x (n-1)")
    p.add_argument("--ort-threads", type=int, default=1, help="ONNX Runtime intra-op threads per worker")
    p.add_argument("--changes", type=int, default=100, help="route switches timed for propagation")
    p.add_argument("--skip-workers", action="store_true")
    p.add_argument("--skip-propagation", action="store_true")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--md", type=Path, default=None, help="also write a Markdown section (docs/bench/scaleout.md)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result: dict[str, Any] = {"command": " ".join(["python -m loadtests.scaleout_bench", *(argv or sys.argv[1:])]),
                              "cpus": len(os.sched_getaffinity(0)), "duration_s": args.duration,
                              "connections": args.connections, "ort_threads": args.ort_threads}
    with tempfile.TemporaryDirectory(prefix="scaleout-bench-") as tmp:
        if not args.skip_workers:
            print("workers 1 vs 2:", flush=True)
            result["workers"] = workers_comparison(args, Path(tmp))
        if not args.skip_propagation:
            print(f"route propagation over {args.changes} changes:", flush=True)
            result["propagation"] = propagation(args, Path(tmp))
    summary = dict(result)
    if "workers" in summary:  # the per-run detail stays in --json
        summary["workers"] = {proto: result["workers"][proto] for proto in ("rest", "grpc")}
    print(json.dumps(summary, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    if args.md is not None:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(markdown(result))
    return 0


def markdown(result: dict[str, Any]) -> str:
    """The scale-out section of the benchmark report."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = ["## Scale-out", "", f"Measured by `{result['command'].strip()}` on {result['cpus']} cores "
             f"(load average at the end {load}).", ""]
    workers = result.get("workers")
    if workers:
        lines += [f"`servegate serve --workers 2` against `--workers 1`, the same load in one run, alternating "
                  f"{workers['order']}; {result['duration_s']:g} s per load, MLP, 1 row per request, "
                  "wrk (REST binary) and h2load (gRPC) on the same cores:", "",
                  "| protocol | workers 1 req/s | workers 2 req/s | ratio |", "|---|---:|---:|---:|"]
        for proto in ("rest", "grpc"):
            w = workers[proto]
            lines.append(f"| {proto} | {w['workers_1_rps']:,.1f} | {w['workers_2_rps']:,.1f} | {w['ratio']}x |")
        lines.append("")
    prop = result.get("propagation")
    if prop:
        keys = [k for k in ("changes", "p50_ms", "p90_ms", "p99_ms", "max_ms") if k in prop]
        lines += ["Route propagation: a 100/0 switch through replica 1's admin API, timed until replicas 2 and 3 "
                  "(sharing a private redis-server) both answer with the new version:", "",
                  "| " + " | ".join(keys) + " |", "|" + "---:|" * len(keys),
                  "| " + " | ".join(str(prop[k]) for k in keys) + " |", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
