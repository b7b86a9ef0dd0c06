"""The gateway a game day plays against, and its admin API: one started here (a temporary repository of
demo models, a temporary SQLite store, free ports) or an existing one named with `--target`.

Everything goes through processes and HTTP, as any client would; admin tokens are HS256 JWTs minted
here with the shared secret, or given ready-made.
"""

from __future__ import annotations

import http.client
import json
import secrets
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt

from loadtests.services import Service, running

AUDIENCE = "servegate"
TOKEN_TTL_S = 900
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 60.0


class AdminError(RuntimeError):
    """The admin API refused a call or could not be reached; the message carries its status and reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"admin API: {status} {message}" if status else f"admin API: {message}")
        self.status = status


def mint_token(secret: str, subject: str = "loadtests", roles: tuple[str, ...] = ("admin",),
               ttl_s: float = TOKEN_TTL_S, audience: str = AUDIENCE) -> str:
    """An HS256 token with the claims the gateway checks: sub, roles, exp and aud."""
    now = int(time.time())
    claims = {"sub": subject, "roles": list(roles), "iat": now, "exp": now + int(ttl_s), "aud": audience}
    return str(jwt.encode(claims, secret, algorithm="HS256"))


class AdminApi:
    """JSON calls to the admin API; a token from a secret is re-minted before it expires (soaks run hours)."""

    def __init__(self, base_url: str, *, token: str | None = None, secret: str | None = None,
                 timeout_s: float = 10.0) -> None:
        if not token and not secret:
            raise ValueError("the admin API needs a token (--token) or the JWT secret (--jwt-secret)")
        parts = urlsplit(base_url if "://" in base_url else f"http://{base_url}")
        if parts.scheme != "http" or not parts.hostname or parts.port is None:
            raise ValueError(f"admin URL must look like http://HOST:PORT, got {base_url!r}")
        self.host, self.port = parts.hostname, parts.port
        self._token, self._secret, self._timeout = token, secret, timeout_s
        self._minted_at = 0.0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _bearer(self) -> str:
        if self._secret is None:
            return self._token or ""
        if self._token is None or time.time() - self._minted_at > TOKEN_TTL_S / 2:
            self._token, self._minted_at = mint_token(self._secret), time.time()
        return self._token

    def raw(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self._timeout)
        headers = {"Authorization": f"Bearer {self._bearer()}", "Content-Type": "application/json"}
        try:
            conn.request(method, path, json.dumps(body) if body is not None else None, headers)
            reply = conn.getresponse()
            return reply.status, reply.read()
        except OSError as exc:
            raise AdminError(0, f"{method} {path}: {exc}") from exc
        finally:
            conn.close()

    def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201)) -> Any:
        status, data = self.raw(method, path, body)
        doc = json.loads(data) if data else None
        if status not in ok:
            reason = doc.get("error") if isinstance(doc, dict) else data[:200].decode(errors="replace")
            raise AdminError(status, f"{method} {path}: {reason}")
        return doc

    def metrics(self) -> str:
        status, data = self.raw("GET", "/metrics")
        if status != 200:
            raise AdminError(status, "GET /metrics")
        return data.decode()

    def model(self, model: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/admin/v1/models/{model}"))

    def register(self, model: str, version: str, artifact: Path) -> dict[str, Any]:
        body = {"version": version, "artifact": str(artifact), "metadata": {"owner": "loadtests"}}
        return dict(self.call("POST", f"/admin/v1/models/{model}/versions", body))

    def start_rollout(self, model: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self.call("POST", f"/admin/v1/models/{model}/rollout", dict(spec)))

    def rollout(self, model: str) -> dict[str, Any] | None:
        """The current or last rollout ({"spec", "status"}), or None when the model never had one."""
        doc = self.call("GET", f"/admin/v1/models/{model}/rollout", ok=(200, 404))
        return dict(doc) if isinstance(doc, dict) and "status" in doc else None

    def abort_rollout(self, model: str) -> None:
        self.call("POST", f"/admin/v1/models/{model}/rollout/abort", ok=(200, 409))

    def set_faults(self, model: str, version: str, faults: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self.call("PUT", f"/admin/v1/models/{model}/versions/{version}/faults", dict(faults)))

    def clear_faults(self, model: str, version: str) -> None:
        self.call("DELETE", f"/admin/v1/models/{model}/versions/{version}/faults")

    def drift(self, model: str, version: str, window_s: float) -> dict[str, Any] | None:
        """Drift of a version over the last window; None where the gateway does not offer it."""
        doc = self.call("GET", f"/admin/v1/models/{model}/versions/{version}/drift?window={window_s:g}s",
                        ok=(200, 404))
        return dict(doc) if isinstance(doc, dict) and "error" not in doc else None


@dataclass
class GameGateway:
    """Endpoints, admin API and (when started here) the process of the gateway under test."""

    grpc: str
    http: str
    admin: AdminApi
    service: Service | None = None

    @property
    def pid(self) -> int | None:
        return self.service.pid if self.service is not None else None

    @property
    def local(self) -> bool:
        return self.service is not None

    @property
    def exit_code(self) -> int | None:
        return self.service.exit_code if self.service is not None else None


def serve_command(repository: Path, store: str, *, ports: tuple[int, int, int] = (0, 0, 0),
                  controller_interval_s: float | None = None) -> list[str]:
    """`servegate serve` on 127.0.0.1; the JWT secret travels in the environment, not the command line."""
    http, grpc, admin = ports
    cmd = [sys.executable, "-m", "gateway.cli", "serve", "--repository", str(repository), "--store", store,
           "--host", "127.0.0.1", "--http-port", str(http), "--grpc-port", str(grpc),
           "--admin-port", str(admin), "--drain-seconds", "10"]
    if controller_interval_s is not None:
        cmd += ["--controller-interval", f"{controller_interval_s:g}"]
    return cmd


def gateway_env(secret: str) -> dict[str, str]:
    return {"SERVEGATE_JWT_SECRET": secret, "SERVEGATE_LOG_LEVEL": "warning", "PYTHONUNBUFFERED": "1"}


@contextmanager
def local_gateway(repository: Path, store: str, *, name: str = "gateway",
                  ports: tuple[int, int, int] = (0, 0, 0), controller_interval_s: float | None = None,
                  secret: str | None = None) -> Iterator[GameGateway]:
    """Starts `servegate serve`, yields once it printed its ready line, and stops it with SIGTERM."""
    secret = secret or secrets.token_hex(32)
    cmd = serve_command(repository, store, ports=ports, controller_interval_s=controller_interval_s)
    with running(name, cmd, ready_timeout_s=READY_TIMEOUT_S, stop_timeout_s=STOP_TIMEOUT_S,
                 env=gateway_env(secret)) as service:
        admin = AdminApi(service.endpoints["admin"], secret=secret)
        yield GameGateway(service.grpc or "", service.http or "", admin, service)


def target_gateway(grpc: str, http: str, admin_url: str, *, token: str | None,
                   secret: str | None) -> GameGateway:
    """A gateway that runs elsewhere (on this host: candidates are registered by file path)."""
    if not admin_url:
        raise ValueError("--target needs --admin-url (http://HOST:PORT of the admin API)")
    return GameGateway(grpc, http, AdminApi(admin_url, token=token, secret=secret))
