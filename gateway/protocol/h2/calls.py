"""The gRPC meaning of an HTTP/2 stream: request headers, length-prefixed messages, deadlines, the
handler's run, and the response's status in trailers (the gRPC over HTTP/2 wire format).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc

from gateway.protocol.h2 import frames as f
from gateway.protocol.h2.connection import H2Connection
from gateway.protocol.h2.sender import Stream

log = logging.getLogger(__name__)

UNARY, SERVER_STREAM, BIDI = "unary", "server_stream", "bidi"
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_RESERVED = frozenset(("content-type", "te", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding",
                       "connection", "host"))
_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
# Response headers: :status 200 and the content type, and the encodings the server reads.
RESPONSE_HEAD = (f.STATUS_200 + f.literal("content-type", "application/grpc")
                 + f.literal("grpc-accept-encoding", "identity,deflate,gzip"))
TRAILERS_OK = f.literal("grpc-status", "0")
_EMPTY = object()
# The server's own deadline timer fires a little after the deadline, so a handler that watches the
# deadline itself (the data plane does) ends the call first and records why.
_DEADLINE_GRACE_S = 0.02


@dataclass(frozen=True, slots=True)
class Method:
    kind: str
    deserialize: Callable[[bytes | memoryview], Any]
    serialize: Callable[[Any], bytes]
    handler: Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Head:
    """A request's headers as the call needs them; cached per distinct header block."""

    path: str
    metadata: tuple[tuple[str, str | bytes], ...]
    timeout: float | None
    encoding: str
    refusal: tuple[int, int, str] | None  # (HTTP status, gRPC status, message) for a request refused at once


class Aborted(Exception):
    """Raised by `Context.abort`: the call ends with this status."""

    def __init__(self, code: int, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def code_of(code: grpc.StatusCode | int) -> int:
    return code if isinstance(code, int) else int(code.value[0])


def parse_head(fields: Iterable[tuple[str, str]]) -> Head:
    pseudo: dict[str, str] = {}
    metadata: list[tuple[str, str | bytes]] = []
    timeout, encoding, content_type = None, "identity", ""
    refusal: tuple[int, int, str] | None = None
    for name, value in fields:
        if name[0] == ":":
            pseudo[name] = value
        elif name == "content-type":
            content_type = value
        elif name == "grpc-timeout":
            timeout = _timeout(value)
            if timeout is None:
                refusal = (200, 13, f"grpc-timeout: expected 1-8 digits and a unit of HMSmun, got {value!r}")
        elif name == "grpc-encoding":
            encoding = value
        elif name not in _RESERVED:
            metadata.append((name, _binary(value) if name.endswith("-bin") else value))
    if pseudo.get(":method") != "POST":
        refusal = (405, 12, f"method {pseudo.get(':method')!r} not allowed: gRPC calls are POST")
    elif not content_type.startswith("application/grpc"):
        refusal = (415, 3, f"content-type {content_type!r} is not application/grpc")
    elif encoding not in _DECODERS and encoding != "identity":
        refusal = (200, 12, f"grpc-encoding {encoding!r} is not supported; use identity, deflate or gzip")
    return Head(pseudo.get(":path", ""), tuple(metadata), timeout, encoding, refusal)


def oversized_head(fields: Iterable[tuple[str, str]], size: int, limit: int) -> Head:
    """A request whose header list is over the limit: refused with RESOURCE_EXHAUSTED, its connection kept."""
    path = next((value for name, value in fields if name == ":path"), "")
    return Head(path, (), None, "identity",
                (200, 8, f"request header list of {size} bytes is over the server's limit of {limit} bytes"))


def _timeout(value: str) -> float | None:
    digits, unit = value[:-1], value[-1:]
    if not digits.isdigit() or len(digits) > 8 or unit not in _TIMEOUT_UNITS:
        return None
    return int(digits) * _TIMEOUT_UNITS[unit]


def _binary(value: str) -> bytes:
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4))
    except ValueError:
        return value.encode("latin-1")


def trailers(code: int, message: str = "", *, only: bool = False) -> bytes:
    """grpc-status and grpc-message (percent-encoded); `only` makes a trailers-only response."""
    block = RESPONSE_HEAD if only else b""
    block += f.literal("grpc-status", str(code))
    if message:
        block += f.literal("grpc-message", _percent(message))
    return block


def _percent(message: str) -> bytes:
    """gRPC's percent-encoding; spaces at either end too, since HTTP/2 header values may not have them."""
    raw = message.encode("utf-8")
    last = len(raw) - 1
    return b"".join(bytes((c,)) if (0x20 < c <= 0x7E and c != 0x25) or (c == 0x20 and 0 < i < last)
                    else b"%%%02X" % c for i, c in enumerate(raw))


class Context:
    """The part of a grpc.aio ServicerContext the gateway's handlers use."""

    __slots__ = ("_call", "code", "details")

    def __init__(self, call: GrpcCall) -> None:
        self._call = call
        self.code: int | None = None
        self.details = ""

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._call.head.metadata

    def time_remaining(self) -> float | None:
        deadline = self._call.deadline
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def peer(self) -> str:
        return self._call.conn.peer

    async def abort(self, code: grpc.StatusCode | int, details: str = "") -> NoReturn:
        raise Aborted(code_of(code), details)

    def set_code(self, code: grpc.StatusCode | int) -> None:
        self.code = code_of(code)

    def set_details(self, details: str) -> None:
        self.details = details


class GrpcCall:
    """One RPC on one stream: collects request messages, runs the handler, writes the reply."""

    __slots__ = ("_chunks", "_expiry", "_have", "_headers_sent", "_held", "_messages", "_need", "_queue", "_task",
                 "conn", "deadline", "done", "head", "limit", "method", "stream")

    def __init__(self, conn: H2Connection, stream: Stream, head: Head, method: Method | None, limit: int) -> None:
        self.conn, self.stream, self.head, self.method, self.limit = conn, stream, head, method, limit
        self.done = False
        self._headers_sent = False  # a status after response headers goes in trailers, without :status
        self.deadline: float | None = None
        self._chunks: list[bytes | memoryview] = []  # a message arriving in several DATA frames
        self._have = 0
        self._need = 0  # the current message's size with its prefix, once the prefix is in
        self._messages: list[bytes | memoryview] = []
        self._held = 0  # bytes of a bidi call not yet credited to the client: messages wait unread
        self._queue: asyncio.Queue[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        if head.refusal is not None:
            self._refuse(*head.refusal)
        elif method is None:
            self._status(12, f"unknown method {head.path}: this server implements "
                             "inference.GRPCInferenceService and grpc.health.v1.Health")
        else:
            if head.timeout is not None:
                self.deadline = time.monotonic() + head.timeout
                self._expiry = conn.loop.call_later(head.timeout + _DEADLINE_GRACE_S, self._expire)
            if method.kind == BIDI:
                self._queue = asyncio.Queue()
                stream.auto_window = False  # credited as the handler reads: see `data` and `_requests`
                self._start(self._bidi())

    # --- fed by the connection ---------------------------------------------------------------------

    def data(self, payload: bytes | memoryview) -> None:
        if self.done:
            return
        if self._queue is not None:
            # While the handler has read every message, bytes are credited as they come (a message larger
            # than the window must be able to arrive); while messages wait unread, the client must wait.
            if self._queue.empty():
                self.conn.credit(self.stream, len(payload))
            else:
                self._held += len(payload)
        if not self._have and len(payload) >= 5 and int.from_bytes(payload[1:5], "big") == len(payload) - 5:
            self._message(payload[0], payload[5:], len(payload) - 5)  # the usual case: one frame
            return
        self._chunks.append(payload)
        self._have += len(payload)
        while not self.done:
            if self._need == 0:
                if self._have < 5:
                    return
                if len(self._chunks[0]) < 5:
                    self._chunks = [b"".join(self._chunks)]
                size = int.from_bytes(self._chunks[0][1:5], "big")
                if size > self.limit:  # refused from its prefix, before the rest is buffered
                    self._message(self._chunks[0][0], b"", size)
                    return
                self._need = 5 + size
            if self._have < self._need:
                return
            joined = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
            need, self._need = self._need, 0
            rest = joined[need:]
            self._chunks, self._have = ([rest] if rest else []), len(rest)
            self._message(joined[0], memoryview(joined)[5:need], need - 5)

    def end(self) -> None:
        if self.done or self.method is None:
            return
        if self._have:
            self._status(13, "the request ended inside a message")
        elif self.method.kind == BIDI:
            assert self._queue is not None
            self._queue.put_nowait(_EMPTY)
        elif len(self._messages) != 1:
            self._status(12 if self._messages else 13,
                         f"a unary call takes exactly one request message, got {len(self._messages)}")
        elif self.method.kind == UNARY:
            self._start(self._unary(self._messages[0]))
        else:
            self._start(self._server_stream(self._messages[0]))

    def reset(self) -> None:
        """The client cancelled the stream (or the connection went away)."""
        self._close()
        if self._task is not None:
            self._task.cancel()

    # --- messages ----------------------------------------------------------------------------------

    def _message(self, compressed: int, body: bytes | memoryview, size: int) -> None:
        if size > self.limit:
            self._status(8, f"received message of {size} bytes exceeds the limit of {self.limit} bytes")
            return
        if compressed:
            body = self._decompress(body)
            if self.done:
                return
        if self._queue is not None:
            self._queue.put_nowait(body)
        else:
            self._messages.append(body)

    def _decompress(self, body: bytes | memoryview) -> bytes:
        wbits = _DECODERS.get(self.head.encoding)
        if wbits is None:
            self._status(13, "compressed message without a grpc-encoding")
            return b""
        try:
            inflater = zlib.decompressobj(wbits)
            out = inflater.decompress(body, self.limit + 1)
        except zlib.error as exc:
            self._status(13, f"could not decompress the message ({self.head.encoding}): {exc}")
            return b""
        if len(out) > self.limit:
            self._status(8, f"decompressed message exceeds the limit of {self.limit} bytes")
        return out

    # --- running the handler -----------------------------------------------------------------------

    def _start(self, coro: Any) -> None:
        self._task = self.conn.loop.create_task(coro)

    async def _unary(self, message: bytes | memoryview) -> None:
        method = self.method
        assert method is not None
        context = Context(self)
        try:
            request = method.deserialize(message)
        except Exception as exc:
            self._status(13, f"could not parse the request message: {exc}")
            return
        try:
            response = await method.handler(request, context)
            payload = None if response is None else method.serialize(response)
        except Aborted as exc:
            self._status(exc.code, exc.details)
            return
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("unexpected error in gRPC method %s", self.head.path)
            self._status(13, "internal error; see the gateway's log")
            return
        if self.done:
            return
        if payload is None or (context.code not in (None, 0)):
            self._status(context.code or 2, context.details or "the handler returned no response")
            return
        self._close()
        self.conn.reply(self.stream, RESPONSE_HEAD, _frame(payload), TRAILERS_OK)

    async def _server_stream(self, message: bytes | memoryview) -> None:
        method = self.method
        assert method is not None
        try:
            request = method.deserialize(message)
        except Exception as exc:
            self._status(13, f"could not parse the request message: {exc}")
            return
        await self._stream_out(method.handler(request, Context(self)))

    async def _bidi(self) -> None:
        method = self.method
        assert method is not None
        await self._stream_out(method.handler(self._requests(method), Context(self)))

    async def _requests(self, method: Method) -> AsyncIterator[Any]:
        assert self._queue is not None
        while True:
            body = await self._queue.get()
            if self._held and self._queue.empty():
                self.conn.credit(self.stream, self._held)
                self._held = 0
            if body is _EMPTY:
                return
            try:
                yield method.deserialize(body)
            except Exception as exc:
                raise Aborted(13, f"could not parse a request message: {exc}") from exc

    async def _stream_out(self, responses: AsyncIterator[Any]) -> None:
        method = self.method
        assert method is not None
        started = False
        try:
            async for response in responses:
                if self.done:
                    return
                if not started:
                    self.conn.send_headers(self.stream, RESPONSE_HEAD)
                    started = self._headers_sent = True
                self.conn.send_message(self.stream, _frame(method.serialize(response)))
        except Aborted as exc:
            self._status(exc.code, exc.details, only=not started)
            return
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("unexpected error in gRPC method %s", self.head.path)
            self._status(13, "internal error; see the gateway's log", only=not started)
            return
        if not self.done:
            self._close()
            if started:
                self.conn.finish(self.stream, TRAILERS_OK)
            else:
                self.conn.finish(self.stream, trailers(0, only=True))

    # --- ending ------------------------------------------------------------------------------------

    def _status(self, code: int, message: str, *, only: bool = True) -> None:
        if self.done:
            return
        self._close()
        self.conn.finish(self.stream, trailers(code, message, only=only and not self._headers_sent))
        # Ended from outside the handler (a bidi message over the limit or cut short): the handler ends too.
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()

    def _refuse(self, http_status: int, code: int, message: str) -> None:
        if http_status == 200:
            self._status(code, message)
            return
        self._close()
        block = (f.status_literal(http_status) + f.literal("content-type", "application/grpc")
                 + f.literal("grpc-status", str(code)) + f.literal("grpc-message", _percent(message)))
        self.conn.finish(self.stream, block)

    def _expire(self) -> None:
        self._expiry = None
        if not self.done:
            self._status(4, "Deadline Exceeded")
            if self._task is not None:
                self._task.cancel()

    def _close(self) -> None:
        self.done = True
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None


def _frame(payload: bytes) -> bytes:
    return b"\x00" + len(payload).to_bytes(4, "big") + payload
