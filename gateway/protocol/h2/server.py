"""The native gRPC server: listens, owns its connections, maps paths to methods, drains on stop."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable
from typing import Any

from gateway.protocol.h2 import calls
from gateway.protocol.h2.calls import GrpcCall, Head, Method
from gateway.protocol.h2.connection import H2Connection
from gateway.protocol.h2.sender import Stream

log = logging.getLogger(__name__)

MAX_STREAMS = 1024
MAX_HEADER_LIST = 16 << 10
KEEPALIVE_TIME, KEEPALIVE_TIMEOUT = 7200.0, 20.0  # grpc-core's defaults for servers


class H2GrpcServer:
    """Serves `methods` (keyed by `/package.Service/Method`) on one port; `start` returns the port."""

    def __init__(self, methods: dict[str, Method], *, host: str, port: int, max_message_bytes: int,
                 ssl_context: ssl.SSLContext | None = None, reuse_port: bool = False,
                 max_streams: int = MAX_STREAMS, max_connection_age: float = 0.0,
                 max_connection_age_grace: float = 30.0, keepalive_time: float = KEEPALIVE_TIME,
                 keepalive_timeout: float = KEEPALIVE_TIMEOUT) -> None:
        self.methods = methods
        # a connection older than this (+-10% jitter, so clients do not reconnect in step) is drained
        self.max_connection_age, self.max_connection_age_grace = max_connection_age, max_connection_age_grace
        # a client silent this long gets a PING and `keepalive_timeout` to answer it
        self.keepalive_time, self.keepalive_timeout = keepalive_time, keepalive_timeout
        self.max_message_bytes = max_message_bytes
        self.max_streams = max_streams
        self.max_header_list = MAX_HEADER_LIST
        self.connections: set[H2Connection] = set()
        self._host, self._port = host, port
        self._ssl = ssl_context
        self._reuse_port = reuse_port
        self._server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: H2Connection(self), self._host, self._port,
                                                ssl=self._ssl, reuse_port=self._reuse_port or None,
                                                backlog=1024)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self, grace: float) -> None:
        """Refuses new connections and streams at once (GOAWAY); calls in flight get `grace` seconds."""
        if self._server is None:
            return
        self._server.close()
        for conn in list(self.connections):
            conn.drain()
        deadline = asyncio.get_running_loop().time() + max(0.0, grace)
        while self.connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            conn.abort()
        await self._server.wait_closed()
        self._server = None

    # --- Host, for the connections ----------------------------------------------------------------

    def parse_head(self, fields: Iterable[tuple[str, str]]) -> Head:
        return calls.parse_head(fields)

    def oversized_head(self, fields: Iterable[tuple[str, str]], size: int) -> Head:
        return calls.oversized_head(fields, size, self.max_header_list)

    def open_call(self, conn: H2Connection, stream: Stream, head: Any) -> GrpcCall:
        return GrpcCall(conn, stream, head, self.methods.get(head.path), self.max_message_bytes)

    def connection_made(self, conn: H2Connection) -> None:
        self.connections.add(conn)
        if self._server is None or not self._server.is_serving():
            conn.drain()

    def connection_lost(self, conn: H2Connection) -> None:
        self.connections.discard(conn)


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """TLS for gRPC: TLS 1.2 or later and ALPN `h2`, as gRPC clients require."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["h2"])
    return context
