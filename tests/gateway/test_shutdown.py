"""SIGTERM on a real `servegate serve` process: stop accepting, finish in-flight requests, exit 0."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration


def build_slow_model(path: Path, width: int = 512, depth: int = 200) -> None:
    """A chain of MatMuls sharing one weight: tens of milliseconds per row, so requests stay in flight."""
    from onnx import TensorProto, helper, numpy_helper

    w = (np.eye(width) * 0.999).astype(np.float32)
    nodes, prev = [], "x"
    for i in range(depth):
        nodes.append(helper.make_node("MatMul", [prev, "w"], [f"h{i}"]))
        prev = f"h{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    graph = helper.make_graph(nodes, "slow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", width])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())


def start(repo: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    env = dict(os.environ, SERVEGATE_DRAIN_SECONDS="30", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--repository", str(repo), "--host", "127.0.0.1",
         "--http-port", "0", "--grpc-port", "0", "--admin-port", "0", "--store", "sqlite:///:memory:"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("servegate ready"):
        proc.kill()
        raise AssertionError(f"no ready line: {line!r} {proc.stderr.read() if proc.stderr else ''}")
    endpoints = dict(part.split("=", 1) for part in line.split()[2:])
    return proc, endpoints


def infer(address: str, rows: int, results: list[int], finished: list[float]) -> None:
    host, port = address.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, 512],
                                   "data": [0.1] * (rows * 512)}]})
    try:
        conn.request("POST", "/v2/models/slow/infer", body)
        resp = conn.getresponse()
        resp.read()
        results.append(resp.status)
        finished.append(time.monotonic())
    except OSError:
        results.append(-1)
    finally:
        conn.close()


def test_sigterm_drains_in_flight_requests_and_exits_zero(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    build_slow_model(repo / "slow" / "1" / "model.onnx", depth=400)
    (repo / "slow" / "config.yaml").write_text("max_batch_size: 64\n")
    proc, endpoints = start(repo)
    try:
        results: list[int] = []
        finished: list[float] = []
        threads = [threading.Thread(target=infer, args=(endpoints["http"], 64, results, finished))
                   for _ in range(8)]  # tenths of a second each, one after another on one worker
        for t in threads:
            t.start()
        time.sleep(0.3)  # the requests are queued or running
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        host, port = endpoints["http"].split(":")
        with pytest.raises(OSError):  # no new connections once draining
            conn = http.client.HTTPConnection(host, int(port), timeout=2)
            conn.request("GET", "/v2/health/ready")
            conn.getresponse().read()
        for t in threads:
            t.join(60)
        code = proc.wait(60)
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    assert results == [200] * 8  # every in-flight request finished
    assert max(finished) > sent  # and some of them were still running when SIGTERM arrived
    assert code == 0
    assert elapsed < 30  # within the grace period
