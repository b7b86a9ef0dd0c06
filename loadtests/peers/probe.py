"""A short throughput probe of each peer: h2load on gRPC (pre-framed request), wrk on REST JSON.

Run from the main venv: python -m loadtests.peers.probe [--peers ...] [--model mlp] [--callers 16,64]
A sanity check that the peers run at plausible rates, not the benchmark (that is loadtests/bench.py).
Besides the client's rate it reports the server's CPU ms per request, which other load on a shared
machine disturbs far less. Every run is bounded by --seconds; all traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

from gateway.demo.models import build_mlp, build_tabular
from gateway.protocol.pb import grpc_service_pb2 as pb
from loadtests.peers import PEERS, start_peer
from loadtests.peers.config import MLSERVER_PARALLEL_WORKERS, RUNTIMES_DIR, SPECS, python_of
from loadtests.peers.verify import DATATYPES, compute_reference

GRPC_PATH = "/inference.GRPCInferenceService/ModelInfer"
MAX_CONNECTIONS = 4
Arrays = dict[str, np.ndarray]


def _datatype(array: np.ndarray) -> str:
    return next(k for k, v in DATATYPES.items() if np.dtype(v) == array.dtype)


def grpc_body(model: str, inputs: Arrays) -> bytes:
    """One length-prefixed gRPC message (uncompressed) holding a raw-contents ModelInferRequest."""
    request = pb.ModelInferRequest(model_name=model)
    for name, array in inputs.items():
        request.inputs.add(name=name, datatype=_datatype(array), shape=list(array.shape))
        request.raw_input_contents.append(array.tobytes())
    message = request.SerializeToString()
    return b"\x00" + len(message).to_bytes(4, "big") + message


def json_body(inputs: Arrays) -> bytes:
    return json.dumps({"inputs": [{"name": n, "datatype": _datatype(a), "shape": list(a.shape),
                                   "data": a.ravel().tolist()} for n, a in inputs.items()]}).encode()


def _split(callers: int) -> tuple[int, int]:
    connections = min(MAX_CONNECTIONS, callers)
    return connections, max(1, callers // connections)


@dataclass(frozen=True)
class Result:
    """One run: the client's rate and mean latency, failures it saw, and the server's CPU per request."""

    req_s: float
    mean_ms: float
    failed: int
    cpu_ms_per_req: float

    def line(self) -> str:
        return (f"{self.req_s:6.0f} req/s mean {self.mean_ms:6.1f} ms "
                f"cpu {self.cpu_ms_per_req:5.2f} ms/req failed {self.failed}")


def server_cpu_s(pid: int) -> float:
    """User + system CPU seconds of the server and its child processes."""
    root = psutil.Process(pid)
    total = 0.0
    for proc in (root, *root.children(recursive=True)):
        with suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def h2load_grpc(target: str, body: Path, callers: int, seconds: int) -> tuple[str, int]:
    """h2load with `callers` = connections x concurrent streams; counts replies, not gRPC status."""
    connections, streams = _split(callers)
    out = _run(["h2load", "-c", str(connections), "-m", str(streams), "-D", str(seconds),
                "-H", "content-type: application/grpc", "-H", "te: trailers",
                "-d", str(body), f"http://{target}{GRPC_PATH}"], seconds)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, \d+ succeeded, (\d+) failed", out)
    return out, int(done.group(1)) if done else 0


def parse_h2load(out: str, done: int, cpu_s: float) -> Result:
    rate = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out)
    failed = re.search(r"\d+ succeeded, (\d+) failed", out)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out)
    return Result(float(rate.group(1)) if rate else 0.0, _ms(mean.group(1)) if mean else 0.0,
                  int(failed.group(1)) if failed else -1, 1e3 * cpu_s / max(done, 1))


def wrk_json(target: str, model: str, body: Path, callers: int, seconds: int) -> tuple[str, int]:
    """wrk with `callers` connections POSTing the JSON body."""
    script = body.with_suffix(".lua")
    script.write_text(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f'local f = io.open("{body}", "rb")\nwrk.body = f:read("*all")\nf:close()\n')
    out = _run(["wrk", "-t", "1", "-c", str(callers), "-d", f"{seconds}s", "-s", str(script),
                f"http://{target}/v2/models/{model}/infer"], seconds)
    done = re.search(r"(\d+) requests in", out)
    return out, int(done.group(1)) if done else 0


def parse_wrk(out: str, done: int, cpu_s: float) -> Result:
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    mean = re.search(r"Latency\s+(\S+)", out)
    failed = (int(bad.group(1)) if bad else 0) + (sum(int(g) for g in errors.groups()) if errors else 0)
    return Result(float(rate.group(1)) if rate else 0.0, _ms(mean.group(1)) if mean else 0.0,
                  failed, 1e3 * cpu_s / max(done, 1))


def measured(pid: int, run: Callable[[], tuple[str, int]], parse: Callable[[str, int, float], Result]) -> Result:
    before = server_cpu_s(pid)
    out, done = run()
    return parse(out, done, server_cpu_s(pid) - before)


def _ms(text: str) -> float:
    value = float(re.sub(r"[a-z]+$", "", text))
    unit = re.search(r"[a-z]+$", text)
    return value * {"us": 1e-3, "ms": 1.0, "s": 1e3}.get(unit.group(0) if unit else "ms", 1.0)


def _run(argv: list[str], seconds: int) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=False)
    return done.stdout + done.stderr


def errors_logged(log_path: Path) -> int:
    """ERROR lines in the peer's log: h2load counts HTTP 200 even when the gRPC status is not OK."""
    return sum(" ERROR " in line for line in log_path.read_text(errors="replace").splitlines())


def probe_peer(peer: str, model: str, path: Path, callers: list[int], seconds: int,
               ports: tuple[int, int], workers: int, log_dir: Path | None) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ref = compute_reference(python_of(SPECS[peer]), RUNTIMES_DIR, path, work / "r.npz", 120.0)
        (work / "grpc.bin").write_bytes(grpc_body(model, ref.inputs))
        (work / "body.json").write_bytes(json_body(ref.inputs))
        lines = []
        with start_peer(peer, path, model, http_port=ports[0], grpc_port=ports[1],
                        mlserver_parallel_workers=workers, log_dir=log_dir) as ep:
            for n in callers:
                g = measured(ep.pid, lambda n=n: h2load_grpc(ep.grpc, work / "grpc.bin", n, seconds),
                             parse_h2load)
                r = measured(ep.pid, lambda n=n: wrk_json(ep.http, model, work / "body.json", n, seconds),
                             parse_wrk)
                lines.append(f"{peer:18} {model:8} callers={n:<3} grpc {g.line()} | rest-json {r.line()} | "
                             f"logged errors {errors_logged(ep.log_path)}")
        return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--model", choices=("mlp", "tabular"), default="mlp")
    parser.add_argument("--callers", default="16,64")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--http-port", type=int, default=18080)
    parser.add_argument("--grpc-port", type=int, default=18081)
    parser.add_argument("--mlserver-workers", type=int, default=MLSERVER_PARALLEL_WORKERS)
    parser.add_argument("--log-dir", type=Path)
    args = parser.parse_args()
    callers = [int(c) for c in args.callers.split(",")]
    with tempfile.TemporaryDirectory() as repo:
        build = build_mlp if args.model == "mlp" else build_tabular
        path = build(Path(repo))
        for peer in args.peers.split(","):
            for line in probe_peer(peer, args.model, path, callers, args.seconds,
                                   (args.http_port, args.grpc_port), args.mlserver_workers,
                                   args.log_dir):
                print(line, flush=True)


if __name__ == "__main__":
    main()
