"""A lean HTTP/1.1 keep-alive client on an asyncio Protocol: one connection, one request at a time.

Requests are pre-built bytes, so a call costs one write and one parse of the status line, the
headers and a Content-Length (or chunked) body. Enough for load and metadata, nothing more.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import cast


class HttpError(Exception):
    """The connection failed or the reply could not be parsed."""


@dataclass(frozen=True)
class HttpReply:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes


def build_request(method: str, host: str, path: str, headers: dict[str, str] | None = None,
                  body: bytes = b"") -> bytes:
    """Encodes one keep-alive request; Content-Length is always set so the server needs no guessing."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _ReplyParser:
    """Incremental parser of one reply at a time; `feed` returns a reply once it is complete."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._head: tuple[int, dict[str, str]] | None = None
        self._length = -1
        self._chunked = False

    def feed(self, data: bytes) -> HttpReply | None:
        self._buf += data
        if self._head is None and not self._parse_head():
            return None
        body = self._take_chunked() if self._chunked else self._take_sized()
        if body is None or self._head is None:
            return None
        status, headers = self._head
        self._head = None
        return HttpReply(status, headers, body)

    def _parse_head(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        lines = bytes(self._buf[:end]).decode("latin-1").split("\r\n")
        del self._buf[: end + 4]
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise HttpError(f"bad status line {lines[0]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        self._head = (int(parts[1]), headers)
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self._length = int(headers.get("content-length", "0")) if not self._chunked else -1
        return True

    def _take_sized(self) -> bytes | None:
        if len(self._buf) < self._length:
            return None
        body = bytes(self._buf[: self._length])
        del self._buf[: self._length]
        return body

    def _take_chunked(self) -> bytes | None:
        # Parse without consuming until the terminating chunk has arrived.
        pos, body = 0, bytearray()
        while True:
            line_end = self._buf.find(b"\r\n", pos)
            if line_end < 0:
                return None
            size = int(bytes(self._buf[pos:line_end]).split(b";")[0], 16)
            start = line_end + 2
            if size == 0:
                trailer_end = self._buf.find(b"\r\n\r\n", line_end)
                if trailer_end < 0:
                    return None
                del self._buf[: trailer_end + 4]
                return bytes(body)
            if len(self._buf) < start + size + 2:
                return None
            body += self._buf[start:start + size]
            pos = start + size + 2


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection; `request` sends bytes and waits for the whole reply."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._parser = _ReplyParser()
        self._waiter: asyncio.Future[HttpReply] | None = None
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConnection:
        loop = asyncio.get_running_loop()
        try:
            _, proto = await loop.create_connection(cls, host, port)
        except OSError as exc:
            raise HttpError(f"cannot connect to {host}:{port}: {exc}") from exc
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check here.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            reply = self._parser.feed(data)
        except (HttpError, ValueError) as exc:
            self._fail(HttpError(f"unparsable reply: {exc}"))
            self.close()
            return
        if reply is not None and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(reply)
            if reply.headers.get("connection", "").lower() == "close":
                self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(HttpError(f"connection closed: {exc}" if exc else "connection closed by peer"))

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    async def request(self, raw: bytes) -> HttpReply:
        """Sends one pre-built request; raises HttpError when the connection fails."""
        if self.closed or self._transport is None:
            raise HttpError("connection is closed")
        if self._waiter is not None and not self._waiter.done():
            raise HttpError("a request is already in flight on this connection")
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(raw)
        return await self._waiter

    def close(self) -> None:
        if self._transport is not None and not self.closed:
            self._transport.close()
        self.closed = True


async def fetch(host: str, port: int, method: str, path: str, headers: dict[str, str] | None = None,
                body: bytes = b"", timeout_s: float = 10.0) -> HttpReply:
    """One request on a fresh connection that is closed afterwards (metadata, health)."""
    conn = await HttpConnection.open(host, port)
    try:
        raw = build_request(method, f"{host}:{port}", path, headers, body)
        return await asyncio.wait_for(conn.request(raw), timeout_s)
    finally:
        conn.close()
