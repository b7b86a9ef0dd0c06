"""The HTTP/1.1 echo: asyncio Protocol + httptools, Open Inference Protocol routes, no model behind them.

Inference replies carry the request's inputs as outputs: binary-extension requests get the same
binary chunks back, JSON requests get the same `data` arrays back.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, cast

import httptools
import orjson

from loadtests.payload import Signature

REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


def _response(status: int, body: bytes, content_type: str = "application/json",
              extra: tuple[tuple[str, str], ...] = (), keep_alive: bool = True) -> bytes:
    head = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}", f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in extra]
    if not keep_alive:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def _error(status: int, message: str) -> tuple[int, bytes, str, tuple[tuple[str, str], ...]]:
    return status, orjson.dumps({"error": message}), "application/json", ()


class EchoHttp:
    """The routes; `protocol` is the factory asyncio's create_server needs."""

    def __init__(self, model: str, version: str, signature: Signature, delay_s: float,
                 server_name: str, extensions: tuple[str, ...]) -> None:
        self.model = model
        self.version = version
        self.delay_s = delay_s
        tensors = [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in signature.inputs]
        self._metadata = orjson.dumps({"name": model, "versions": [version], "platform": "echo",
                                       "inputs": tensors, "outputs": tensors})
        self._server = orjson.dumps({"name": server_name, "version": "1", "extensions": list(extensions)})
        self._model_paths = {f"/v2/models/{model}", f"/v2/models/{model}/versions/{version}"}

    def protocol(self) -> _EchoConnection:
        return _EchoConnection(self)

    def route(self, method: str, path: str, header_len: int | None,
              body: bytes) -> tuple[int, bytes, str, tuple[tuple[str, str], ...]]:
        """Status, body, content type and extra headers for one request."""
        fixed = {"/v2/health/live": b'{"live":true}', "/v2/health/ready": b'{"ready":true}',
                 "/v2": self._server, "/v2/": self._server}
        if path in fixed:
            return 200, fixed[path], "application/json", ()
        base, _, action = path.rpartition("/")
        if path in self._model_paths:
            return 200, self._metadata, "application/json", ()
        if base in self._model_paths and action == "ready":
            return 200, orjson.dumps({"name": self.model, "ready": True}), "application/json", ()
        if base in self._model_paths and action == "infer":
            if method != "POST":
                return _error(405, "infer takes POST")
            return self._infer(header_len, body)
        if path.startswith("/v2/models/"):
            return _error(404, f"unknown model path {path!r}; serving {self.model!r}")
        return _error(404, f"no route {path!r}")

    def _infer(self, header_len: int | None, body: bytes) -> tuple[int, bytes, str, tuple[tuple[str, str], ...]]:
        split = len(body) if header_len is None else header_len
        try:
            doc = orjson.loads(body[:split])
            inputs = doc["inputs"]
            outputs = [_echo_output(t) for t in inputs]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            return _error(400, f"malformed inference request: {exc}")
        header = orjson.dumps({"model_name": self.model, "model_version": self.version,
                               "id": doc.get("id", ""), "outputs": outputs})
        if header_len is None:
            return 200, header, "application/json", ()
        extra = (("Inference-Header-Content-Length", str(len(header))),)
        return 200, header + body[split:], "application/octet-stream", extra


def _echo_output(tensor: dict[str, Any]) -> dict[str, Any]:
    out = {"name": tensor["name"], "datatype": tensor["datatype"], "shape": tensor["shape"]}
    if "data" in tensor:
        out["data"] = tensor["data"]
    else:
        out["parameters"] = {"binary_data_size": int(tensor["parameters"]["binary_data_size"])}
    return out


class _EchoConnection(asyncio.Protocol):
    """One client connection; httptools calls the on_* methods as it parses."""

    def __init__(self, app: EchoHttp) -> None:
        self._app = app
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._header_len: int | None = None
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check here.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._write(_response(400, b'{"error":"malformed HTTP request"}', keep_alive=False))
            self._close()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"inference-header-content-length":
            try:
                self._header_len = int(value)
            except ValueError:
                self._header_len = -1

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        method = self._parser.get_method().decode("ascii")
        path = httptools.parse_url(self._url).path.decode("latin-1")
        body = b"".join(self._body)
        keep_alive = bool(self._parser.should_keep_alive())
        header_len = self._header_len
        self._reset()
        if header_len is not None and not 0 <= header_len <= len(body):
            self._write(_response(400, b'{"error":"bad Inference-Header-Content-Length"}'))
            return
        answer = functools.partial(self._answer, method, path, header_len, body, keep_alive)
        if self._app.delay_s:
            self._later(answer)
        else:
            answer()

    def _later(self, answer: Callable[[], None]) -> None:
        asyncio.get_running_loop().call_later(self._app.delay_s, answer)

    def _answer(self, method: str, path: str, header_len: int | None, body: bytes, keep_alive: bool) -> None:
        status, payload, content_type, extra = self._app.route(method, path, header_len, body)
        self._write(_response(status, payload, content_type, extra, keep_alive))
        if not keep_alive:
            self._close()

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
