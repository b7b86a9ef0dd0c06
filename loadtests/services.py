"""Server processes for benchmarks: start a command, wait for its one-line ready banner, stop it cleanly.

A banner is any stdout line containing `ready` and `KEY=HOST:PORT` tokens, which covers both
`servegate ready http=... grpc=... admin=...` and `echo ready grpc=... http=...`.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_TOKEN = re.compile(r"(\w+)=(\S+:\d+)")


class ServiceError(RuntimeError):
    """A server did not come up, or did not stop when asked."""


@dataclass
class Service:
    name: str
    command: list[str]
    endpoints: dict[str, str]
    proc: subprocess.Popen[str]
    log: Path
    exit_code: int | None = None

    @property
    def grpc(self) -> str | None:
        return self.endpoints.get("grpc")

    @property
    def http(self) -> str | None:
        return self.endpoints.get("http")

    @property
    def pid(self) -> int | None:
        return self.proc.pid


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process and its live children; None when it cannot be read."""
    if pid is None:
        return None
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
        return float(sum(p.cpu_times().user + p.cpu_times().system for p in procs))
    except psutil.Error:
        return None


def parse_banner(line: str) -> dict[str, str] | None:
    """Endpoints from a ready line, or None when the line is not a ready banner."""
    if "ready" not in line.split():
        return None
    tokens = dict(_TOKEN.findall(line))
    return tokens or None


def _read_lines(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
    """Reads stdout to its end (so a chatty server never blocks on a full pipe); None marks the end."""
    stream = proc.stdout
    try:
        if stream is not None:
            for line in stream:
                lines.put(line)
    except (OSError, ValueError):
        pass  # the pipe was closed under us
    lines.put(None)


def _wait_banner(proc: subprocess.Popen[str], lines: queue.Queue[str | None], timeout_s: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            proc.wait(timeout=10)
            raise ServiceError(f"exited with code {proc.returncode} before it was ready")
        found = parse_banner(line)
        if found:
            return found
    raise ServiceError(f"printed no ready line within {timeout_s:.0f} s")


def _wait_or_kill(proc: subprocess.Popen[str], timeout_s: float) -> int:
    """Waits for a process that was asked to stop; kills it when it overstays `timeout_s`."""
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return int(proc.returncode)


def _tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


class _Started:
    """A launched process whose banner has not been read yet."""

    def __init__(self, name: str, command: Sequence[str], env: dict[str, str] | None) -> None:
        with tempfile.NamedTemporaryFile(prefix=f"loadtests-{name}-", suffix=".log", delete=False) as log:
            self.log_path = Path(log.name)
        # stderr goes to a file so a chatty server can never block on a full pipe.
        with self.log_path.open("w") as err:
            self.proc = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=err, text=True,
                                         env={**os.environ, **(env or {})}, start_new_session=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=_read_lines, args=(self.proc, self.lines), daemon=True)
        self.reader.start()
        self.service = Service(name, list(command), {}, self.proc, self.log_path)
        self._signalled = False

    def wait(self, timeout_s: float) -> Service:
        try:
            self.service.endpoints = _wait_banner(self.proc, self.lines, timeout_s)
        except ServiceError as exc:
            command = " ".join(self.service.command)
            raise ServiceError(f"{self.service.name} ({command}): {exc}\n{_tail(self.log_path)}") from None
        return self.service

    def terminate(self) -> None:
        """Sends SIGTERM once; a second one could make a server skip its drain."""
        if self.proc.poll() is None and not self._signalled:
            self.proc.send_signal(signal.SIGTERM)
            self._signalled = True

    def stop(self, timeout_s: float) -> None:
        self.terminate()
        self.service.exit_code = _wait_or_kill(self.proc, timeout_s)
        self.reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self.service.exit_code == 0:
            self.log_path.unlink(missing_ok=True)


@contextmanager
def running_all(commands: Sequence[tuple[str, Sequence[str]]], *, ready_timeout_s: float = 120.0,
                stop_timeout_s: float = 30.0, env: dict[str, str] | None = None) -> Iterator[list[Service]]:
    """Starts every (name, command) at once, yields when all banners are read, stops all with SIGTERM."""
    started: list[_Started] = []
    try:
        for name, command in commands:
            started.append(_Started(name, command, env))
        yield [s.wait(ready_timeout_s) for s in started]
    finally:
        # Ask every server to stop first, then wait: they drain at the same time.
        for s in started:
            s.terminate()
        for s in reversed(started):
            s.stop(stop_timeout_s)


@contextmanager
def running(name: str, command: Sequence[str], *, ready_timeout_s: float = 120.0, stop_timeout_s: float = 30.0,
            env: dict[str, str] | None = None) -> Iterator[Service]:
    """Starts `command`, yields once its banner is read, and stops it with SIGTERM on the way out."""
    with running_all([(name, command)], ready_timeout_s=ready_timeout_s, stop_timeout_s=stop_timeout_s,
                     env=env) as (service,):
        yield service
