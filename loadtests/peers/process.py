"""A peer server as a child process: start it in its venv, wait until it answers correctly, stop it.

Stopping sends SIGTERM to the child's own process group (MLServer may fork inference workers),
waits, then SIGKILLs that group. Every call has a deadline; the child also dies with its parent.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from loadtests.peers import config, verify
from loadtests.peers.setup import VENVS, SetupError, check

STOP_GRACE_S = 10.0
PR_SET_PDEATHSIG = 1
POLL_S = 0.25


class PeerStartError(RuntimeError):
    """The peer did not come up, or came up answering wrongly; the message quotes its log's tail."""


@dataclass(frozen=True)
class PeerEndpoints:
    """A running peer: where to call it and which request forms it accepts."""

    name: str
    http: str
    grpc: str
    protocols: tuple[str, ...]
    pid: int
    log_path: Path


def free_port() -> int:
    """A loopback port nobody listens on right now (for MLServer's metrics server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((config.LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    # Runs in the child before exec: Linux sends it SIGTERM if the benchmark process dies first,
    # so a crashed run leaves no server behind.
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop(proc: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the child's process group, then SIGKILL it after `grace_s`."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    _reap_group(proc.pid)


def _reap_group(pgid: int) -> None:
    # The leader may exit before its workers; make sure nothing of the group outlives the context.
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def wait_ready(proc: subprocess.Popen[bytes], endpoints: PeerEndpoints, model: str,
               ref: verify.Reference, deadline: float) -> None:
    """Polls /v2/health/ready and the model's ready route until 200, then checks a gRPC and a REST infer."""
    urls = [f"http://{endpoints.http}/v2/health/ready", f"http://{endpoints.http}/v2/models/{model}/ready"]
    while not all(verify.http_status(u) == 200 for u in urls):
        if proc.poll() is not None:
            raise PeerStartError(f"{endpoints.name} exited with {proc.returncode}:\n{_tail(endpoints.log_path)}")
        if time.monotonic() > deadline:
            raise PeerStartError(f"{endpoints.name} not ready in time:\n{_tail(endpoints.log_path)}")
        time.sleep(POLL_S)
    try:
        verify.check_infer(endpoints.grpc, endpoints.http, model, ref)
    except verify.PeerCheckFailed as exc:
        raise PeerStartError(f"{endpoints.name}: {exc}\n{_tail(endpoints.log_path)}") from exc


@contextmanager
def start_peer(name: str, model_path: Path, model_name: str, *, http_port: int, grpc_port: int,
               intra_op_threads: int = 1, metrics: bool = True, startup_timeout_s: float = 120.0,
               log_dir: Path | None = None,
               mlserver_parallel_workers: int = config.MLSERVER_PARALLEL_WORKERS) -> Iterator[PeerEndpoints]:
    """Starts peer `name` (one of PEERS) serving `model_path` as `model_name` on 127.0.0.1.

    Yields once /v2/health/ready answers 200 and one gRPC (raw) and one REST (JSON) inference return
    onnxruntime's outputs; stops the server on exit. Raises PeerStartError otherwise. The server's
    output goes to `log_dir/<name>.log` (a temporary folder when None). `intra_op_threads` sets
    onnxruntime's threads; `metrics` turns MLServer's metrics server on (on a free port) or off;
    `mlserver_parallel_workers` is MLServer's `parallel_workers` (0 = inference in the server process).
    """
    spec = config.SPECS[name]
    try:
        check(VENVS[spec.venv])
    except SetupError as exc:
        raise PeerStartError(f"{name}: venv unusable ({exc}); run python -m loadtests.peers.setup") from exc
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"peer-{name}-")))
        ref = verify.compute_reference(config.python_of(spec), config.RUNTIMES_DIR, Path(model_path).resolve(),
                                       workdir / "reference.npz", startup_timeout_s)
        ports = config.Ports(http_port, grpc_port, free_port() if metrics else 0)
        launch = config.launch_for(spec, workdir, model_name, Path(model_path).resolve(), ref.signature,
                                   ports, intra_op_threads, mlserver_parallel_workers)
        log_path = (log_dir or workdir) / f"{name}.log"
        log = stack.enter_context(log_path.open("wb"))
        proc = subprocess.Popen(launch.argv, cwd=launch.cwd, env=launch.environment(), stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=_die_with_parent)
        stack.callback(stop, proc)
        endpoints = PeerEndpoints(name, f"{config.LOOPBACK}:{http_port}", f"{config.LOOPBACK}:{grpc_port}",
                                  spec.protocols, proc.pid, log_path)
        wait_ready(proc, endpoints, model_name, ref, time.monotonic() + startup_timeout_s)
        yield endpoints
