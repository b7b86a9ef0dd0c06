"""`servegate serve --workers N`: a supervisor running N gateway processes that share the listening ports
(SO_REUSEPORT: the kernel spreads connections over them) and the state store. It forwards SIGTERM,
restarts a worker that dies on its own, and exits 0 once every worker has drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from gateway.settings import SETTINGS, Settings
from gateway.worker_metrics import DIR_ENV, WorkerMetrics

log = logging.getLogger(__name__)

WORKER_ENV = "SERVEGATE_WORKER_INDEX"  # set in each worker: it serves instead of supervising
READY_TIMEOUT_S = 300.0  # loading and warming every model
RESTART_LIMIT = 5  # crashes within RESTART_WINDOW_S before the supervisor gives up
RESTART_WINDOW_S = 60.0
STOP_MARGIN_S = 15.0  # beyond --drain-seconds before a worker that will not stop is killed
POLL_S = 0.1


def is_worker() -> bool:
    return WORKER_ENV in os.environ


def worker_metrics(settings: Settings, render: Callable[[], bytes]) -> WorkerMetrics | None:
    """This worker's share of the merged `/metrics`, when it is one of several under a supervisor."""
    directory = os.environ.get(DIR_ENV)
    index = os.environ.get(WORKER_ENV, "")
    if settings.server.workers < 2 or not directory or not index.isdigit() or not Path(directory).is_dir():
        return None
    return WorkerMetrics(Path(directory), int(index), render)


def settings_env(settings: Settings) -> dict[str, str]:
    """Every resolved setting as its `SERVEGATE_*` variable, so that workers see exactly what the
    supervisor resolved from flags, environment and file."""
    env: dict[str, str] = {}
    for name, (section, attr, _) in SETTINGS.items():
        value = getattr(getattr(settings, section) if section else settings, attr)
        if value is None:
            continue
        env[f"SERVEGATE_{name.upper()}"] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return env


def reserve_ports(host: str, ports: list[int]) -> tuple[list[int], list[socket.socket]]:
    """Binds (never listens on) each port with SO_REUSEPORT, choosing free ones for 0, so that every
    worker binds the same numbers; close the sockets once the workers listen."""
    family = socket.getaddrinfo(host or None, 0, type=socket.SOCK_STREAM)[0][0]
    held: list[socket.socket] = []
    chosen: list[int] = []
    try:
        for port in ports:
            sock = socket.socket(family, socket.SOCK_STREAM)
            held.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            chosen.append(int(sock.getsockname()[1]))
    except OSError:
        for sock in held:
            sock.close()
        raise
    return chosen, held


@dataclass
class Worker:
    index: int
    proc: subprocess.Popen[str]
    ready: threading.Event = field(default_factory=threading.Event)
    banner: str = ""
    exit_code: int | None = None


class Supervisor:
    """Runs the workers until SIGTERM / SIGINT; `run` returns the process exit code."""

    def __init__(self, settings: Settings, config: Path | None) -> None:
        self.settings, self.config = settings, config
        self.count = settings.server.workers
        self.workers: list[Worker] = []
        self._stopping = False
        self._crashes: list[float] = []
        self._env: dict[str, str] = {}

    def run(self) -> int:
        run_dir = tempfile.mkdtemp(prefix="servegate-workers-")  # the workers' private metrics ports
        try:
            return self._run(run_dir)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)

    def _run(self, run_dir: str) -> int:
        s = self.settings.server
        ports, held = reserve_ports(s.host, [s.http_port, s.grpc_port, s.admin_port])
        self._env = {**os.environ, **settings_env(self.settings), "SERVEGATE_HTTP_PORT": str(ports[0]),
                     "SERVEGATE_GRPC_PORT": str(ports[1]), "SERVEGATE_ADMIN_PORT": str(ports[2]),
                     DIR_ENV: run_dir}
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        try:
            self.workers = [self._spawn(i) for i in range(self.count)]
            if not self._await_ready():
                self._begin_stop()
                self._reap()
                return 1
        finally:
            for sock in held:
                sock.close()
        print(self.workers[0].banner, flush=True)
        log.info("%d workers serving on http %d, grpc %d, admin %d", self.count, *ports)
        return self._supervise()

    def _spawn(self, index: int) -> Worker:
        command = [sys.executable, "-m", "gateway.cli", "serve"]
        if self.config is not None:
            command += ["--config", str(self.config)]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                                env={**self._env, WORKER_ENV: str(index)})
        worker = Worker(index, proc)
        threading.Thread(target=_read_stdout, args=(worker,), daemon=True,
                         name=f"servegate-worker-{index}-stdout").start()
        return worker

    def _await_ready(self) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT_S
        for worker in self.workers:
            while not worker.ready.wait(POLL_S):
                if worker.proc.poll() is not None or self._stopping or time.monotonic() > deadline:
                    log.error("worker %d did not start (exit code %s)", worker.index, worker.proc.poll())
                    return False
        return True

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._begin_stop()

    def _begin_stop(self) -> None:
        self._stopping = True
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)

    def _supervise(self) -> int:
        while not self._stopping:
            for i, worker in enumerate(self.workers):
                code = worker.proc.poll()
                if code is not None and not self._stopping:
                    self.workers[i] = self._replace(worker, code)
            time.sleep(POLL_S)
        return self._reap()

    def _replace(self, worker: Worker, code: int) -> Worker:
        now = time.monotonic()
        self._crashes = [t for t in self._crashes if now - t < RESTART_WINDOW_S] + [now]
        if len(self._crashes) > RESTART_LIMIT:
            log.error("worker %d exited with %d; %d crashes within %.0f s, stopping all workers",
                      worker.index, code, len(self._crashes), RESTART_WINDOW_S)
            self._begin_stop()
            return worker
        log.error("worker %d exited with %d; starting a new one", worker.index, code)
        return self._spawn(worker.index)

    def _reap(self) -> int:
        """Waits for every worker to drain (killing any that overstays) and returns the exit code."""
        deadline = time.monotonic() + self.settings.server.drain_seconds + STOP_MARGIN_S
        for worker in self.workers:
            try:
                worker.exit_code = worker.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d did not stop in time; killing it", worker.index)
                worker.proc.kill()
                worker.exit_code = worker.proc.wait()
        failed = [w.index for w in self.workers if w.exit_code != 0]
        if failed or len(self._crashes) > RESTART_LIMIT:
            log.error("workers %s did not exit cleanly", failed)
            return 1
        return 0


def _read_stdout(worker: Worker) -> None:
    """Reads a worker's stdout to its end: notes its ready banner, passes anything else through."""
    stream = worker.proc.stdout
    if stream is None:
        return
    with stream:
        for line in stream:
            if line.startswith("servegate ready") and not worker.ready.is_set():
                worker.banner = line.strip()
                worker.ready.set()
            else:
                sys.stdout.write(line)


async def watch_parent(stop: asyncio.Event, interval_s: float = 1.0) -> None:
    """Sets `stop` once this worker's supervisor has died (the worker was re-parented), so that no
    worker outlives a supervisor killed without a chance to stop it."""
    parent = os.getppid()
    while not stop.is_set():
        if os.getppid() != parent:
            log.error("the supervisor (pid %d) is gone; stopping this worker", parent)
            stop.set()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
