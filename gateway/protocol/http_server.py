"""A lean HTTP/1.1 server on asyncio + httptools: keep-alive, pipelining, body limits, graceful drain.

Routes are data (method, path pattern, handler); every handler is `async (Request) -> Response`.
Bodies over the limit are refused from their Content-Length (or as chunks arrive) before they are
buffered whole. One exception handler, given by the application, turns errors into responses.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import cast
from urllib.parse import parse_qsl, unquote

import httptools
import orjson

log = logging.getLogger(__name__)

MAX_PIPELINED = 32
MAX_HEADER_BYTES = 64 * 1024
SWEEP_SECONDS = 5.0


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    params: dict[str, str] = field(default_factory=dict)  # path parameters
    client: str = ""

    def query_params(self) -> dict[str, str]:
        return dict(parse_qsl(self.query, keep_blank_values=True))


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: Sequence[tuple[str, str]] = ()


Handler = Callable[[Request], Awaitable[Response]]
ErrorHandler = Callable[[Request | None, BaseException], Response]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: str  # e.g. "/v2/models/{model}/versions/{version}/infer"
    handler: Handler


class Router:
    """Matches by path segments; `{name}` captures one segment. First match wins, in table order.

    Matched paths are remembered (a bounded cache), so the hot routes cost one dict lookup."""

    CACHE_SIZE = 4096

    def __init__(self, routes: Sequence[Route]) -> None:
        self._routes = [(r.method, r.pattern.strip("/").split("/"), r.handler) for r in routes]
        self._cache: dict[tuple[str, str], tuple[Handler | None, dict[str, str], bool]] = {}

    def match(self, method: str, path: str) -> tuple[Handler | None, dict[str, str], bool]:
        """(handler, params, path_known): path_known tells 405 from 404 when no handler matched.
        The params dict is the caller's to keep (a copy of the cached one)."""
        key = (method, path)
        found = self._cache.get(key)
        if found is None:
            found = self._match_slow(method, path)
            if len(self._cache) >= self.CACHE_SIZE:
                self._cache.clear()  # unbounded distinct paths (scans) must not grow memory
            self._cache[key] = found
        handler, params, known = found
        return handler, dict(params), known

    def _match_slow(self, method: str, path: str) -> tuple[Handler | None, dict[str, str], bool]:
        parts = path.strip("/").split("/")
        known = False
        for route_method, pattern, handler in self._routes:
            if len(pattern) != len(parts):
                continue
            params = _match(pattern, parts)
            if params is None:
                continue
            if route_method == method:
                return handler, params, True
            known = True
        return None, {}, known


def _match(pattern: list[str], parts: list[str]) -> dict[str, str] | None:
    params: dict[str, str] = {}
    for want, got in zip(pattern, parts, strict=True):
        if want.startswith("{") and want.endswith("}"):
            if not got:
                return None
            params[want[1:-1]] = unquote(got)
        elif want != got:
            return None
    return params


class HttpServer:
    def __init__(self, router: Router, on_error: ErrorHandler, *, host: str, port: int,
                 max_body_bytes: int, tls: ssl.SSLContext | None = None, reuse_port: bool = False,
                 idle_timeout: float = 75.0) -> None:
        self.router = router
        self.on_error = on_error
        self.max_body = max_body_bytes
        self._host, self._port, self._tls, self._reuse = host, port, tls, reuse_port
        self.idle_timeout = idle_timeout
        self._server: asyncio.Server | None = None
        self.connections: set[_Connection] = set()
        self.draining = False
        self.port = 0
        self._sweeper: asyncio.TimerHandle | None = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), self._host, self._port,
                                                ssl=self._tls, reuse_port=self._reuse or None, backlog=1024)
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._sweeper = loop.call_later(SWEEP_SECONDS, self._sweep)
        return self.port

    def _sweep(self) -> None:
        """Closes keep-alive connections idle for longer than `idle_timeout` (one timer for all)."""
        loop = asyncio.get_running_loop()
        limit = loop.time() - self.idle_timeout
        for conn in list(self.connections):
            if not conn.pending and conn.last_active < limit:
                conn.close_if_idle()
        self._sweeper = loop.call_later(SWEEP_SECONDS, self._sweep)

    async def stop(self, grace: float) -> None:
        """Stops accepting, lets requests in flight finish (up to `grace`), then closes connections."""
        self.draining = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close_if_idle()
        deadline = asyncio.get_running_loop().time() + grace
        while self.connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            conn.abort()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None


class _Connection(asyncio.Protocol):
    """One client connection; responses go out in request order even when handlers finish out of order."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.pending: deque[asyncio.Task[Response] | Response] = deque()
        self.client = ""
        self._reset()
        self._closing = False
        self._paused = False
        self._loop = asyncio.get_running_loop()
        self.last_active = self._loop.time()

    def _reset(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.body_size = 0
        self.header_bytes = 0
        self.rejected = False

    # --- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else ""
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        for item in self.pending:
            if isinstance(item, asyncio.Task):
                item.cancel()
        self.pending.clear()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail_fast(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            if not self.rejected:
                self._fail_fast(400, f"malformed HTTP request: {exc}")

    # --- httptools callbacks -----------------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > MAX_HEADER_BYTES:
            self._fail_fast(431, "request headers are too large")
            return
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        length = self.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.server.max_body:
            self._fail_fast(413, f"request body of {int(length)} bytes exceeds the limit of "
                                 f"{self.server.max_body} bytes")
            return
        if self.headers.get("expect", "").lower() == "100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self.rejected:
            return
        self.body_size += len(body)
        if self.body_size > self.server.max_body:
            self._fail_fast(413, f"request body exceeds the limit of {self.server.max_body} bytes")
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.rejected:
            return
        parsed = httptools.parse_url(self.url)
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        request = Request(self.parser.get_method().decode("ascii"), parsed.path.decode("latin-1"),
                          (parsed.query or b"").decode("latin-1"), self.headers, body, client=self.client)
        keep_alive = self.parser.should_keep_alive()
        self._reset()
        if not keep_alive:
            self._closing = True
        handler, params, known = self.server.router.match(request.method, request.path)
        if handler is None:
            status = 405 if known else 404
            message = "method not allowed" if known else f"no route for {request.method} {request.path}"
            self.pending.append(Response(status, _error_body(message)))
        else:
            request.params = params
            task = self._loop.create_task(self._run(handler, request))
            task.add_done_callback(self._flush)
            self.pending.append(task)
        self._flush()
        if len(self.pending) >= MAX_PIPELINED and self.transport is not None and not self._paused:
            self.transport.pause_reading()
            self._paused = True

    async def _run(self, handler: Handler, request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:
            return self.server.on_error(request, exc)

    # --- responses ---------------------------------------------------------------------------------

    def _flush(self, _: object = None) -> None:
        transport = self.transport
        while self.pending and transport is not None:
            head = self.pending[0]
            if isinstance(head, asyncio.Task):
                if not head.done():
                    return
                response = head.result() if not head.cancelled() else Response(503, _error_body("cancelled"))
            else:
                response = head
            self.pending.popleft()
            last = not self.pending and (self._closing or self.server.draining)
            head_bytes, body = _serialise(response, close=last)
            if len(body) < 65536:  # one send for small replies; no copy of large ones
                transport.write(head_bytes + body)
            else:
                transport.writelines((head_bytes, body))
            if last:
                transport.close()
                return
        if transport is not None:
            if self._paused and len(self.pending) < MAX_PIPELINED:
                transport.resume_reading()
                self._paused = False
            if not self.pending:
                self.last_active = self._loop.time()

    def _fail_fast(self, status: int, message: str) -> None:
        """Answers at once and closes: used before a body is read (oversized, malformed)."""
        self.rejected = True
        self._closing = True
        self.pending.append(Response(status, _error_body(message)))
        self._flush()

    def close_if_idle(self) -> None:
        if not self.pending and self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


_REASONS = {s.value: s.phrase for s in HTTPStatus}


def _serialise(response: Response, close: bool) -> tuple[bytes, bytes]:
    """Head and body as separate buffers, so a large body is not copied to be sent."""
    head = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}",
            f"content-type: {response.content_type}", f"content-length: {len(response.body)}"]
    head.extend(f"{k}: {v}" for k, v in response.headers)
    if close:
        head.append("connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1"), response.body


def _error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})
