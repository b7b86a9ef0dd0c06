"""A short throughput probe of each peer: h2load on gRPC (pre-framed request), wrk on REST JSON.

Run from the main venv: python -m loadtests.peers.probe [--peers ...] [--model mlp] [--callers 16,64]
A sanity check that the peers run at plausible rates, not the benchmark (that is loadtests/bench.py).
Every run is bounded by --seconds; all traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from gateway.demo.models import build_mlp, build_tabular
from gateway.protocol.pb import grpc_service_pb2 as pb
from loadtests.peers import PEERS, start_peer
from loadtests.peers.config import RUNTIMES_DIR, SPECS, python_of
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


def h2load_grpc(target: str, body: Path, callers: int, seconds: int) -> dict[str, float]:
    """h2load with `callers` = connections x concurrent streams; counts replies, not gRPC status."""
    connections, streams = _split(callers)
    out = _run(["h2load", "-c", str(connections), "-m", str(streams), "-D", str(seconds),
                "--warm-up-time", "1", "-H", "content-type: application/grpc", "-H", "te: trailers",
                "-d", str(body), f"http://{target}{GRPC_PATH}"], seconds)
    rate = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out)
    return {"req_s": float(rate.group(1)) if rate else 0.0,
            "failed": float(done.group(3)) if done else -1.0,
            "mean_ms": _ms(mean.group(1)) if mean else 0.0}


def wrk_json(target: str, model: str, body: Path, callers: int, seconds: int) -> dict[str, float]:
    """wrk with `callers` connections POSTing the JSON body."""
    script = body.with_suffix(".lua")
    script.write_text(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f'local f = io.open("{body}", "rb")\nwrk.body = f:read("*all")\nf:close()\n')
    out = _run(["wrk", "-t", "1", "-c", str(callers), "-d", f"{seconds}s", "-s", str(script),
                f"http://{target}/v2/models/{model}/infer"], seconds)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    mean = re.search(r"Latency\s+(\S+)", out)
    return {"req_s": float(rate.group(1)) if rate else 0.0,
            "failed": float(bad.group(1)) if bad else 0.0,
            "mean_ms": _ms(mean.group(1)) if mean else 0.0}


def _ms(text: str) -> float:
    value = float(re.sub(r"[a-z]+$", "", text))
    unit = re.search(r"[a-z]+$", text)
    return value * {"us": 1e-3, "ms": 1.0, "s": 1e3}.get(unit.group(0) if unit else "ms", 1.0)


def _run(argv: list[str], seconds: int) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=False)
    return done.stdout + done.stderr


def probe_peer(peer: str, model: str, path: Path, callers: list[int], seconds: int,
               ports: tuple[int, int]) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ref = compute_reference(python_of(SPECS[peer]), RUNTIMES_DIR, path, work / "r.npz", 120.0)
        (work / "grpc.bin").write_bytes(grpc_body(model, ref.inputs))
        (work / "body.json").write_bytes(json_body(ref.inputs))
        lines = []
        with start_peer(peer, path, model, http_port=ports[0], grpc_port=ports[1]) as ep:
            for n in callers:
                g = h2load_grpc(ep.grpc, work / "grpc.bin", n, seconds)
                r = wrk_json(ep.http, model, work / "body.json", n, seconds)
                lines.append(f"{peer:18} {model:8} callers={n:<3} grpc {g['req_s']:8.0f} req/s "
                             f"mean {g['mean_ms']:6.1f} ms failed {g['failed']:.0f} | rest-json "
                             f"{r['req_s']:8.0f} req/s mean {r['mean_ms']:6.1f} ms non-2xx {r['failed']:.0f}")
        return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--model", choices=("mlp", "tabular"), default="mlp")
    parser.add_argument("--callers", default="16,64")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--http-port", type=int, default=18080)
    parser.add_argument("--grpc-port", type=int, default=18081)
    args = parser.parse_args()
    callers = [int(c) for c in args.callers.split(",")]
    with tempfile.TemporaryDirectory() as repo:
        build = build_mlp if args.model == "mlp" else build_tabular
        path = build(Path(repo))
        for peer in args.peers.split(","):
            for line in probe_peer(peer, args.model, path, callers, args.seconds,
                                   (args.http_port, args.grpc_port)):
                print(line, flush=True)


if __name__ == "__main__":
    main()
