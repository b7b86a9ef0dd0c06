"""Real `servegate serve` processes for end-to-end tests: start on free ports, read the ready line, stop."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.admin.auth import mint
from gateway.settings import AuthSettings

SECRET = "end-to-end-test-secret-0123456789abcdef"


class ServeProcess:
    """`with ServeProcess(repo, store=...) as gw:` -> gw.http / gw.grpc / gw.admin host:port strings."""

    def __init__(self, repo: Path | None, *, store: str, extra: Sequence[str] = (),
                 env: dict[str, str] | None = None, log: Path | None = None) -> None:
        self.repo, self.store, self.extra = repo, store, list(extra)
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", SERVEGATE_JWT_SECRET=SECRET, **(env or {}))
        self.log = log
        self.proc: subprocess.Popen[str] | None = None
        self.http = self.grpc = self.admin = ""
        self._stderr: list[str] = []

    def start(self, timeout: float = 120.0) -> ServeProcess:
        args = [sys.executable, "-m", "gateway.cli", "serve", "--host", "127.0.0.1", "--http-port", "0",
                "--grpc-port", "0", "--admin-port", "0", "--store", self.store, "--drain-seconds", "10",
                *self.extra]
        if self.repo is not None:
            args += ["--repository", str(self.repo)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env)
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("servegate ready"):
                parts = dict(p.split("=", 1) for p in line.split()[2:])
                self.http, self.grpc, self.admin = parts["http"], parts["grpc"], parts["admin"]
                return self
            if not line and self.proc.poll() is not None:
                break
        self.kill()
        raise RuntimeError("servegate did not start:\n" + "".join(self._stderr[-40:]))

    def _drain_stderr(self) -> None:
        proc = self.proc
        if proc is None or proc.stderr is None:
            return
        for line in proc.stderr:
            self._stderr.append(line)
            if self.log is not None:
                with self.log.open("a") as f:
                    f.write(line)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._close()
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        if self.proc is not None:
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.stop()
            except subprocess.TimeoutExpired:
                self.kill()

    # --- admin API -------------------------------------------------------------------------------

    def admin_call(self, method: str, path: str, body: Any = None, role: str = "admin",
                   sub: str = "e2e", content_type: str = "application/json") -> tuple[int, Any]:
        host, port = self.admin.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        headers = {"Authorization": f"Bearer {mint(AuthSettings(jwt_secret=SECRET), sub, [role], 600)}",
                   "Content-Type": content_type}
        payload = body if isinstance(body, str) else (json.dumps(body) if body is not None else None)
        try:
            conn.request(method, path, payload, headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, json.loads(data) if data else None
        finally:
            conn.close()


def wait_for(predicate: Any, timeout: float, interval: float = 0.2) -> Any:
    """Polls until `predicate()` is truthy; returns its value or raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout} s")
