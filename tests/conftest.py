"""Shared fixtures: free ports, a demo model repository built once, and a private redis-server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.demo import models


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with tabular v1+v2, mlp v1 and mixed v1 (read-only: copy it to change it)."""
    repo = tmp_path_factory.mktemp("repo")
    models.build_demo_repository(repo)
    return repo


@pytest.fixture
def repo_copy(model_repo: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the demo repository."""
    dest = tmp_path / "repo"
    shutil.copytree(model_repo, dest)
    return dest


@dataclass
class RedisServer:
    """A redis-server of the test's own, on a free port, in a temp dir; never the shared :6379."""

    port: int
    workdir: Path
    appendonly: bool = True
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not installed; the Redis tests need the real binary")
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
            "--save", "", "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always", "--daemonize", "no", "--loglevel", "warning",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def wipe(self) -> None:
        """Forget everything on disk (a Redis restarted empty)."""
        for f in self.workdir.glob("*"):
            if f.is_dir():
                shutil.rmtree(f)
            else:
                f.unlink()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(port=free_port(), workdir=tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()
