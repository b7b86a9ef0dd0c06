"""A small synchronous client of the admin API (stdlib only; TLS when the URL is https).

Every method returns the decoded JSON reply; a refusal raises `AdminError(status, message)` carrying
the server's `{"error": ...}` text, and an unreachable server raises it with status 0.
"""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

JSON = dict[str, Any]


class AdminError(Exception):
    """A request the admin API refused (`status` is its HTTP status) or could not take (status 0)."""

    def __init__(self, status: int, message: str, detail: JSON | None = None) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message
        self.detail = detail or {}  # what the reply carried besides `error`, e.g. a validation report


class AdminClient:
    def __init__(self, url: str, token: str | None = None, *, timeout: float = 30.0,
                 ca_file: Path | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"admin URL: expected http://host:port or https://host:port, got {url!r}")
        self.url = url
        self.token = token
        self.timeout = timeout
        self._tls = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._base = parts.path.rstrip("/")
        self._ssl = ssl.create_default_context(cafile=str(ca_file) if ca_file else None) if self._tls else None

    def request(self, method: str, path: str, body: Any = None, *, query: Mapping[str, Any] | None = None,
                raw: bytes | None = None, content_type: str = "application/json") -> Any:
        """One call; `body` is sent as JSON, or `raw` as it is with `content_type`."""
        target = self._base + path
        params = {k: v for k, v in (query or {}).items() if v is not None}
        if params:
            target += "?" + urlencode(params)
        payload = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"accept": "application/json"}
        if payload is not None:
            headers["content-type"] = content_type
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        status, data = self._send(method, target, payload, headers)
        return _decode(status, data)

    def _send(self, method: str, target: str, payload: bytes | None,
              headers: dict[str, str]) -> tuple[int, bytes]:
        conn: http.client.HTTPConnection
        if self._tls:
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout, context=self._ssl)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        try:
            conn.request(method, target, payload, headers)
            response = conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise AdminError(0, f"cannot reach the admin API at {self.url}: {exc}") from exc
        finally:
            conn.close()

    # --- the admin routes -------------------------------------------------------------------------

    def models(self) -> list[JSON]:
        return list(self.request("GET", "/admin/v1/models")["models"])

    def model(self, model: str) -> JSON:
        return dict(self.request("GET", _model(model)))

    def register(self, model: str, body: JSON) -> JSON:
        return dict(self.request("POST", f"{_model(model)}/versions", body))

    def set_stage(self, model: str, version: str, stage: str, reason: str) -> JSON:
        body = {"stage": stage, "reason": reason}
        return dict(self.request("POST", f"{_version(model, version)}/stage", body))

    def set_traffic(self, model: str, table: JSON) -> JSON:
        return dict(self.request("PUT", f"{_model(model)}/traffic", table))

    def start_rollout(self, model: str, spec: str | JSON) -> JSON:
        """A spec as an object (sent as JSON) or as YAML / JSON text (sent as YAML, a superset of JSON)."""
        path = f"{_model(model)}/rollout"
        if isinstance(spec, str):
            return dict(self.request("POST", path, raw=spec.encode(), content_type="application/yaml"))
        return dict(self.request("POST", path, spec))

    def rollout(self, model: str) -> JSON:
        return dict(self.request("GET", f"{_model(model)}/rollout"))

    def rollout_verb(self, model: str, verb: str) -> JSON:
        return dict(self.request("POST", f"{_model(model)}/rollout/{quote(verb, safe='')}"))

    def drift(self, model: str, version: str, window: str | None = None) -> JSON:
        return dict(self.request("GET", f"{_version(model, version)}/drift", query={"window": window}))

    def faults(self, model: str, version: str) -> JSON:
        return dict(self.request("GET", f"{_version(model, version)}/faults"))

    def set_faults(self, model: str, version: str, body: JSON) -> JSON:
        return dict(self.request("PUT", f"{_version(model, version)}/faults", body))

    def clear_faults(self, model: str, version: str) -> JSON:
        return dict(self.request("DELETE", f"{_version(model, version)}/faults"))

    def audit(self, model: str | None = None, since: str | None = None, limit: int | None = None) -> list[JSON]:
        query = {"model": model, "since": since, "limit": limit}
        return list(self.request("GET", "/admin/v1/audit", query=query)["entries"])

    def verify_audit(self) -> JSON:
        return dict(self.request("GET", "/admin/v1/audit/verify"))

    def whoami(self) -> JSON:
        return dict(self.request("GET", "/admin/v1/whoami"))


def _model(model: str) -> str:
    return f"/admin/v1/models/{quote(model, safe='')}"


def _version(model: str, version: str) -> str:
    return f"{_model(model)}/versions/{quote(version, safe='')}"


def _decode(status: int, data: bytes) -> Any:
    try:
        doc = json.loads(data) if data else None
    except ValueError:
        doc = None
    if 200 <= status < 300:
        if doc is None and data:
            raise AdminError(status, "the admin API answered with something other than JSON")
        return doc
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        raise AdminError(status, doc["error"], {k: v for k, v in doc.items() if k != "error"})
    raise AdminError(status, f"HTTP {status} without an error message")
