"""Drivers for C load clients, which measure a server's capacity without Python's own cost in the way.

wrk posts a pre-built REST inference body through a generated Lua script; h2load posts a pre-framed
gRPC ModelInfer message over HTTP/2. h2load sees HTTP status only, never grpc-status in trailers.
Each result carries the client's own CPU time over its run: on a machine the client shares with the
server, what the client costs per request is CPU the server did not get.
"""

from __future__ import annotations

import json
import math
import re
import resource
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtests.payload import RestBody, grpc_frame

WRK_MARK = "SERVEGATE_WRK "
_LUA = """\
wrk.method = "POST"
wrk.path = [==[{path}]==]
{headers}
local f = assert(io.open([==[{body}]==], "rb"))
wrk.body = f:read("*a")
f:close()

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{mark}{{"duration_us":%d,"requests":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"mean_us":%f,"min_us":%d,"max_us":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d}}\\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.min, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
"""


class ClientMissing(RuntimeError):
    """The C client binary is not installed."""


@dataclass
class CClientResult:
    """What a C client reported; latency figures are seconds, and `None` where the tool has none."""

    tool: str
    command: list[str]
    duration_s: float
    requests: int
    requests_per_s: float
    failed: int
    non_2xx: int
    latency_s: dict[str, float | None] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)
    cpu_s: float | None = None  # the client's user + system CPU seconds over its whole run (warm-up included)
    wall_s: float | None = None  # and that run's wall-clock seconds

    def cpu_us_per_request(self) -> float | None:
        return cpu_us_per_request(self.cpu_s, self.wall_s, self.requests_per_s)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cpu_us_per_request(cpu_s: float | None, wall_s: float | None, requests_per_s: float) -> float | None:
    """A client's CPU per request: the cores it used over its run divided by its request rate."""
    if cpu_s is None or not wall_s or requests_per_s <= 0:
        return None
    return cpu_s / wall_s / requests_per_s * 1e6


def _require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise ClientMissing(f"{binary} is not installed (apt-get install {'wrk' if binary == 'wrk' else 'nghttp2-client'})")
    return path


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(command: list[str], timeout_s: float) -> tuple[str, float, float]:
    """(stdout, client CPU seconds, wall seconds). The CPU is what this process's reaped children used
    over the run: the client alone, as nothing else is reaped while it runs (the benchmark steps one
    load at a time)."""
    cpu_before, start = _children_cpu_s(), time.monotonic()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{command[0]} ran past {timeout_s:.0f} s") from exc
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(command[0]).name} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return proc.stdout, _children_cpu_s() - cpu_before, time.monotonic() - start


def _with_cpu(result: CClientResult, cpu_s: float, wall_s: float) -> CClientResult:
    result.cpu_s, result.wall_s = cpu_s, wall_s
    return result


def wrk_script(path: str, body: RestBody, body_file: Path, extra_headers: dict[str, str]) -> str:
    """The Lua script that makes wrk post `body` to `path` and print a JSON summary when done."""
    headers = {**body.headers, **extra_headers}
    lines = "\n".join(f"wrk.headers[ [==[{k}]==] ] = [==[{v}]==]" for k, v in headers.items())
    return _LUA.format(path=path, headers=lines, body=body_file, mark=WRK_MARK)


def run_wrk(target: str, path: str, body: RestBody, *, connections: int, duration_s: float,
            threads: int = 1, extra_headers: dict[str, str] | None = None,
            timeout_s: float = 10.0) -> CClientResult:
    """wrk with `connections` keep-alive connections for whole seconds (at least one)."""
    binary = _require("wrk")
    seconds = max(1, math.ceil(duration_s))
    with tempfile.TemporaryDirectory(prefix="loadtests-wrk-") as tmp:
        body_file = Path(tmp) / "body.bin"
        body_file.write_bytes(body.body)
        script = Path(tmp) / "infer.lua"
        script.write_text(wrk_script(path, body, body_file, extra_headers or {}))
        command = [binary, "-t", str(max(1, min(threads, connections))), "-c", str(connections),
                   "-d", f"{seconds}s", "--timeout", f"{math.ceil(timeout_s)}s", "--latency",
                   "-s", str(script), f"http://{target}"]
        out, cpu_s, wall_s = _run(command, seconds + timeout_s + 30)
    return _with_cpu(parse_wrk(out, command), cpu_s, wall_s)


def parse_wrk(output: str, command: list[str]) -> CClientResult:
    line = next((ln for ln in output.splitlines() if ln.startswith(WRK_MARK)), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary; output was: {output[-500:]}")
    doc = json.loads(line[len(WRK_MARK):])
    duration = doc["duration_us"] / 1e6
    failed = doc["connect"] + doc["read"] + doc["write"] + doc["timeout"]
    return CClientResult(
        tool="wrk", command=command, duration_s=duration, requests=doc["requests"],
        requests_per_s=doc["requests"] / duration if duration else 0.0, failed=failed,
        non_2xx=doc["status"],
        latency_s={"p50": doc["p50_us"] / 1e6, "p90": doc["p90_us"] / 1e6, "p99": doc["p99_us"] / 1e6,
                   "p99.9": doc["p999_us"] / 1e6, "mean": doc["mean_us"] / 1e6,
                   "min": doc["min_us"] / 1e6, "max": doc["max_us"] / 1e6},
        detail={"errors": {k: doc[k] for k in ("connect", "read", "write", "status", "timeout")},
                "bytes": doc["bytes"]},
    )


def run_h2load(target: str, request: bytes, *, streams: int, connections: int = 1, duration_s: float,
               warmup_s: float = 0.0, threads: int = 1, extra_headers: dict[str, str] | None = None,
               path: str = "/inference.GRPCInferenceService/ModelInfer") -> CClientResult:
    """h2load posting one serialised ModelInferRequest (framed here) on `connections` x `streams`."""
    binary = _require("h2load")
    with tempfile.TemporaryDirectory(prefix="loadtests-h2load-") as tmp:
        frame = Path(tmp) / "request.grpc"
        frame.write_bytes(grpc_frame(request))
        command = [binary, "-d", str(frame), "-H", "content-type: application/grpc", "-H", "te: trailers",
                   "-m", str(streams), "-c", str(connections), "-t", str(max(1, min(threads, connections))),
                   "-D", f"{round(duration_s * 1000)}ms"]
        if warmup_s > 0:
            command += [f"--warm-up-time={round(warmup_s * 1000)}ms"]
        for name, value in (extra_headers or {}).items():
            command += ["-H", f"{name.lower()}: {value}"]
        command.append(f"http://{target}{path}")
        out, cpu_s, wall_s = _run(command, duration_s + warmup_s + 60)
    return _with_cpu(parse_h2load(out, command), cpu_s, wall_s)


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise RuntimeError(f"h2load printed an unreadable time {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_h2load(output: str, command: list[str]) -> CClientResult:
    finished = re.search(r"finished in ([\d.]+)(us|ms|s), ([\d.]+) req/s", output)
    counts = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                       r"(\d+) errored, (\d+) timeout", output)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output)
    timing = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", output)
    if not (finished and counts and codes and timing):
        raise RuntimeError(f"h2load output not understood: {output[-800:]}")
    done, succeeded, failed, errored, timeouts = (int(counts.group(i)) for i in (3, 4, 5, 6, 7))
    ok_2xx, c3, c4, c5 = (int(codes.group(i)) for i in (1, 2, 3, 4))
    duration = float(finished.group(1)) * _UNITS[finished.group(2)]
    return CClientResult(
        tool="h2load", command=command, duration_s=duration, requests=done,
        requests_per_s=float(finished.group(3)), failed=failed + errored + timeouts,
        non_2xx=c3 + c4 + c5,
        latency_s={"min": _seconds(timing.group(1)), "max": _seconds(timing.group(2)),
                   "mean": _seconds(timing.group(3)), "sd": _seconds(timing.group(4)),
                   "p50": None, "p99": None},
        detail={"succeeded": succeeded, "status_2xx": ok_2xx, "failed": failed, "errored": errored,
                "timeout": timeouts},
    )
