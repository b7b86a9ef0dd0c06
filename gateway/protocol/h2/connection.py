"""One HTTP/2 connection of the native gRPC server: frames in, stream states, flow control both ways,
frames out. The gRPC meaning of a stream (messages, status, deadlines) lives in `calls.py`.

Reads are parsed in place. Everything written in one loop iteration leaves in one `transport.write`.
Decoded request header blocks are cached while HPACK's dynamic table does not change: clients repeat
the same block call after call, so decoding costs a dictionary lookup.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Iterable
from typing import Any, Protocol, cast

import hpack

from gateway.protocol.h2 import frames as f
from gateway.protocol.h2.reader import FrameReader
from gateway.protocol.h2.sender import STREAM_WINDOW, Call, Sender, Stream

log = logging.getLogger(__name__)

CONN_WINDOW = 64 << 20
CONTROL_BURST, CONTROL_RATE = 10_000, 1_000.0  # PING / SETTINGS / RST_STREAM a client may send (see _spend)
MAX_FRAME = 1 << 20
_HEAD_CACHE = 256
# A header list over the host's limit fails only its call; past this many times the limit (a block
# that inflates through HPACK's table, say) the connection ends: decoding it would cost too much.
HARD_HEADER_FACTOR = 4


class Host(Protocol):
    """The server a connection belongs to: limits, header parsing and how a stream becomes a call."""

    max_streams: int
    max_header_list: int
    max_connection_age: float  # seconds; 0 = connections live as long as the client keeps them
    max_connection_age_grace: float  # seconds the calls of an aged-out connection get to finish
    keepalive_time: float  # seconds without a byte from the client before the server PINGs it; 0 = never
    keepalive_timeout: float  # seconds the client then has to answer before its connection is closed

    def parse_head(self, fields: Iterable[tuple[str, str]]) -> Any: ...

    def oversized_head(self, fields: Iterable[tuple[str, str]], size: int) -> Any: ...

    def open_call(self, conn: H2Connection, stream: Stream, head: Any) -> Call: ...

    def connection_made(self, conn: H2Connection) -> None: ...

    def connection_lost(self, conn: H2Connection) -> None: ...


class H2Connection(Sender, asyncio.Protocol):
    def __init__(self, host: Host) -> None:
        super().__init__(asyncio.get_running_loop())
        self.host = host
        self.peer = ""
        self._reader = FrameReader(self, MAX_FRAME)
        self._rx: Stream | None = None  # the stream the DATA frame being read belongs to
        self._rx_end = False  # and whether that frame ends it
        self._decoder = hpack.Decoder(max_header_list_size=HARD_HEADER_FACTOR * host.max_header_list)
        self._heads: dict[bytes, Any] = {}
        self.last_stream = 0
        self._peer_initial = f.DEFAULT_WINDOW
        self._conn_recv = CONN_WINDOW
        self._conn_unacked = 0
        self._block: tuple[int, int, bytearray] | None = None  # header block awaiting CONTINUATION
        self.draining = False
        self._control_tokens, self._control_at = float(CONTROL_BURST), self.loop.time()
        self._age_timer: asyncio.TimerHandle | None = None
        self._keepalive: asyncio.TimerHandle | None = None
        self._heard = False  # bytes arrived since the keepalive last looked

    # --- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio's classes
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # replies are small: never wait for an ACK
        peer = transport.get_extra_info("peername")
        self.peer = f"ipv4:{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self._queue(f.settings({f.MAX_CONCURRENT_STREAMS: self.host.max_streams,
                                f.INITIAL_WINDOW_SIZE: STREAM_WINDOW, f.MAX_FRAME_SIZE: MAX_FRAME,
                                f.MAX_HEADER_LIST_SIZE: self.host.max_header_list, f.ENABLE_PUSH: 0})
                    + f.window_update(0, CONN_WINDOW - f.DEFAULT_WINDOW))
        if self.host.max_connection_age > 0:
            age = self.host.max_connection_age * random.uniform(0.9, 1.1)
            self._age_timer = self.loop.call_later(age, self._aged)
        if self.host.keepalive_time > 0:
            self._keepalive = self.loop.call_later(self.host.keepalive_time, self._keepalive_tick)
        self.host.connection_made(self)

    def _keepalive_tick(self) -> None:
        """Every `keepalive_time`: a client heard from since the last tick is alive; one that was silent
        gets a PING, and its connection closes unless some byte (the ACK, say) comes within the timeout.
        This finds clients that vanished without closing (a dead host, a NAT or load balancer that
        dropped the flow), whose calls would otherwise hold their handlers and memory for good."""
        if self.transport is None:
            return
        if self._heard:
            self._heard = False
            self._keepalive = self.loop.call_later(self.host.keepalive_time, self._keepalive_tick)
            return
        self._queue(f.frame(f.PING, 0, 0, b"servegat"))
        self._keepalive = self.loop.call_later(self.host.keepalive_timeout, self._keepalive_check)

    def _keepalive_check(self) -> None:
        if self.transport is None:
            return
        if self._heard:
            self._keepalive_tick()
            return
        self._keepalive = None
        self.fail(f.NO_ERROR, f"keepalive: no answer to a PING within {self.host.keepalive_timeout:g} s")
        self.abort()  # the peer is gone: do not wait for the socket buffer to drain into the void

    def _aged(self) -> None:
        """Max connection age reached: GOAWAY, so the client reconnects for new calls (possibly to another
        replica); the calls in flight get the grace period, then the connection closes regardless."""
        self._age_timer = None
        if self.transport is None:
            return
        log.debug("gRPC connection from %s reached its maximum age: draining", self.peer)
        self.drain()
        if self.transport is not None:
            self._age_timer = self.loop.call_later(self.host.max_connection_age_grace, self.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        for timer in (self._age_timer, self._keepalive):
            if timer is not None:
                timer.cancel()
        self._age_timer = self._keepalive = None
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            if stream.call is not None:
                stream.call.reset()
        self._blocked.clear()
        self.host.connection_lost(self)

    def data_received(self, data: bytes) -> None:
        self._heard = True
        try:
            self._reader.feed(data)
        except f.ConnectionError_ as exc:
            self.fail(exc.code, str(exc))
        except Exception:  # a defect here must cost one connection, never the server
            log.exception("gRPC connection from %s: unexpected error", self.peer)
            self.fail(f.INTERNAL_ERROR, "internal error")

    # --- frames in (FrameSink) ---------------------------------------------------------------------

    def frame(self, kind: int, flags: int, sid: int, payload: memoryview) -> None:
        if self._block is not None and kind != f.CONTINUATION:
            raise f.ConnectionError_(f.PROTOCOL_ERROR, "a header block must be followed by CONTINUATION")
        if kind == f.DATA:
            self.data_start(flags, sid, len(payload))
            body = _unpad(payload) if flags & f.PADDED else payload
            if self._rx is not None and not self._rx.auto_window and len(body) < len(payload):
                self.credit(self._rx, len(payload) - len(body))  # padding is never the call's to consume
            self.data_piece(body, True)
        elif kind == f.HEADERS:
            self._headers(flags, sid, payload)
        else:
            self._control(kind, flags, sid, bytes(payload))

    def data_start(self, flags: int, sid: int, size: int) -> None:
        """Flow control for a DATA frame of `size` bytes (padding included) and the stream it feeds."""
        if self._block is not None:
            raise f.ConnectionError_(f.PROTOCOL_ERROR, "a header block must be followed by CONTINUATION")
        if sid == 0:
            raise f.ConnectionError_(f.PROTOCOL_ERROR, "DATA on stream 0")
        self._rx = None
        self._conn_recv -= size
        if self._conn_recv < 0:
            raise f.ConnectionError_(f.FLOW_CONTROL_ERROR, "the client overran the connection window")
        self._conn_unacked += size
        if self._conn_unacked >= CONN_WINDOW // 2:
            self._queue(f.window_update(0, self._conn_unacked))
            self._conn_recv += self._conn_unacked
            self._conn_unacked = 0
        stream = self.streams.get(sid)
        if stream is None or stream.remote_closed:
            if sid > self.last_stream:
                raise f.ConnectionError_(f.PROTOCOL_ERROR, f"DATA on idle stream {sid}")
            return  # a stream this side already closed: late frames are dropped
        stream.recv_window -= size
        if stream.recv_window < 0:
            self.reset(stream, f.FLOW_CONTROL_ERROR)
            return
        self._rx_end = bool(flags & f.END_STREAM)
        if stream.auto_window and not self._rx_end:
            self.credit(stream, size)
        self._rx = stream

    def credit(self, stream: Stream, size: int) -> None:
        """Gives the client `size` more bytes on `stream`; updates go out in steps of a quarter window,
        which leaves a client at least three quarters of it whenever nothing is held back."""
        if stream.remote_closed or stream.id not in self.streams:
            return
        stream.recv_unacked += size
        if stream.recv_unacked >= STREAM_WINDOW // 4:
            self._queue(f.window_update(stream.id, stream.recv_unacked))
            stream.recv_window += stream.recv_unacked
            stream.recv_unacked = 0

    def data_piece(self, piece: memoryview, last: bool) -> None:
        stream = self._rx
        if stream is None:
            return
        if last:
            self._rx = None
            if self._rx_end:
                stream.remote_closed = True
        call = stream.call
        if call is None or stream.id not in self.streams:
            return
        if piece:
            call.data(piece)
        if last and self._rx_end and stream.id in self.streams:
            call.end()

    def _headers(self, flags: int, sid: int, payload: memoryview) -> None:
        if sid == 0 or sid % 2 == 0:
            raise f.ConnectionError_(f.PROTOCOL_ERROR, f"HEADERS on stream {sid}: clients open odd streams")
        if flags & f.PADDED:
            payload = _unpad(payload)
        if flags & f.PRIORITY_FLAG:
            payload = payload[5:]
        if not flags & f.END_HEADERS:
            self._block = (sid, flags, bytearray(payload))
            return
        self._header_block(sid, flags, bytes(payload))

    def _continuation(self, flags: int, sid: int, payload: bytes) -> None:
        if self._block is None or self._block[0] != sid:
            raise f.ConnectionError_(f.PROTOCOL_ERROR, "CONTINUATION without a header block on that stream")
        block = self._block[2]
        block += payload
        if len(block) > HARD_HEADER_FACTOR * self.host.max_header_list + 1024:
            raise f.ConnectionError_(f.ENHANCE_YOUR_CALM, "header block too large")
        if flags & f.END_HEADERS:
            first_flags = self._block[1]
            self._block = None
            self._header_block(sid, first_flags, bytes(block))

    def _header_block(self, sid: int, flags: int, block: bytes) -> None:
        head = self._decode(block)  # always decoded: HPACK state must follow every block
        stream = self.streams.get(sid)
        if stream is not None or sid <= self.last_stream:  # trailers from the client, or a closed stream
            if stream is not None and not stream.remote_closed:
                stream.remote_closed = True
                if stream.call is not None:
                    stream.call.end()
            return
        self.last_stream = sid
        if self.draining or len(self.streams) >= self.host.max_streams:
            self._queue(f.rst_stream(sid, f.REFUSED_STREAM))
            return
        stream = Stream(sid, self._peer_initial)
        # Before the call opens: a request refused at once then ends a closed stream, with no RST_STREAM.
        stream.remote_closed = bool(flags & f.END_STREAM)
        self.streams[sid] = stream
        stream.call = self.host.open_call(self, stream, head)
        if stream.remote_closed and sid in self.streams:
            stream.call.end()

    def _decode(self, block: bytes) -> Any:
        head = self._heads.get(block)
        if head is not None:
            return head
        table = self._decoder.header_table.dynamic_entries
        size, first = len(table), (table[0] if table else None)
        try:
            decoded = self._decoder.decode(block)
        except (hpack.HPACKError, UnicodeDecodeError) as exc:
            raise f.ConnectionError_(f.COMPRESSION_ERROR, f"header block: {exc}") from exc
        fields = cast(list[tuple[str, str]], decoded)  # raw=False: names and values are str
        list_size = sum(len(name) + len(value) + 32 for name, value in fields)  # RFC 9113's measure
        head = (self.host.parse_head(fields) if list_size <= self.host.max_header_list
                else self.host.oversized_head(fields, list_size))
        if len(table) == size and (table[0] if table else None) is first:
            if len(self._heads) >= _HEAD_CACHE:
                self._heads.clear()
            self._heads[block] = head
        else:  # the table moved: cached blocks may now mean something else
            self._heads.clear()
        return head

    def _control(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if kind == f.CONTINUATION:
            self._continuation(flags, sid, payload)
        elif kind == f.SETTINGS:
            self._settings(flags, sid, payload)
        elif kind == f.WINDOW_UPDATE:
            self._window_update(sid, payload)
        elif kind == f.PING:
            if sid != 0 or len(payload) != 8:
                raise f.ConnectionError_(f.PROTOCOL_ERROR, "PING must carry 8 bytes on stream 0")
            if not flags & f.ACK:
                self._spend()
                self._queue(f.frame(f.PING, f.ACK, 0, payload))
        elif kind == f.RST_STREAM:
            if sid == 0 or len(payload) != 4:
                raise f.ConnectionError_(f.PROTOCOL_ERROR, "RST_STREAM needs a stream and 4 bytes")
            self._spend()
            stream = self.streams.pop(sid, None)
            self._blocked.pop(sid, None)
            if stream is not None and stream.call is not None:
                stream.call.reset()
            self._maybe_close()
        elif kind == f.PUSH_PROMISE:
            raise f.ConnectionError_(f.PROTOCOL_ERROR, "clients must not send PUSH_PROMISE")
        elif kind == f.PRIORITY and sid == 0:
            raise f.ConnectionError_(f.PROTOCOL_ERROR, "PRIORITY on stream 0")
        # GOAWAY from a client, PRIORITY and unknown frame types need nothing from the server

    def _spend(self) -> None:
        """PING, SETTINGS and RST_STREAM cost the server work for nothing in return: a client gets
        CONTROL_BURST of them at once and CONTROL_RATE a second after that (a ping or reset flood,
        "rapid reset", ends its connection)."""
        now = self.loop.time()
        self._control_tokens = min(CONTROL_BURST, self._control_tokens + (now - self._control_at) * CONTROL_RATE) - 1
        self._control_at = now
        if self._control_tokens < 0:
            raise f.ConnectionError_(f.ENHANCE_YOUR_CALM, "too many PING, SETTINGS or RST_STREAM frames")

    def _settings(self, flags: int, sid: int, payload: bytes) -> None:
        if sid != 0:
            raise f.ConnectionError_(f.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & f.ACK:
            if payload:
                raise f.ConnectionError_(f.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        self._spend()
        for key, value in f.parse_settings(payload):
            if key == f.INITIAL_WINDOW_SIZE:
                if value > f.MAX_WINDOW:
                    raise f.ConnectionError_(f.FLOW_CONTROL_ERROR, "initial window above 2^31-1")
                delta, self._peer_initial = value - self._peer_initial, value
                for stream in self.streams.values():
                    stream.send_window += delta
            elif key == f.MAX_FRAME_SIZE:
                if not f.DEFAULT_FRAME_SIZE <= value <= f.MAX_FRAME_SIZE_LIMIT:
                    raise f.ConnectionError_(f.PROTOCOL_ERROR, f"max frame size {value} out of range")
                self._peer_frame = value
            elif key == f.ENABLE_PUSH and value > 1:
                raise f.ConnectionError_(f.PROTOCOL_ERROR, "ENABLE_PUSH must be 0 or 1")
        self._queue(f.frame(f.SETTINGS, f.ACK, 0))
        self._unblock()

    def _window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise f.ConnectionError_(f.FRAME_SIZE_ERROR, "WINDOW_UPDATE needs 4 bytes")
        increment = f.u32(payload) & 0x7FFFFFFF
        if sid == 0:
            if increment == 0:
                raise f.ConnectionError_(f.PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection")
            self._conn_send += increment
            if self._conn_send > f.MAX_WINDOW:
                raise f.ConnectionError_(f.FLOW_CONTROL_ERROR, "connection window above 2^31-1")
            self._unblock()
            return
        stream = self.streams.get(sid)
        if stream is None:
            return
        stream.send_window += increment
        if increment == 0 or stream.send_window > f.MAX_WINDOW:
            self.reset(stream, f.PROTOCOL_ERROR if increment == 0 else f.FLOW_CONTROL_ERROR)
        elif stream.pending:
            self._drain(stream)

    # --- ending ------------------------------------------------------------------------------------

    def drain(self) -> None:
        """Graceful close: GOAWAY, no new streams; the connection closes once its streams are done."""
        if not self.draining:
            self.draining = True
            self._queue(f.goaway(self.last_stream, f.NO_ERROR))
            self._maybe_close()

    def fail(self, code: int, message: str) -> None:
        """A connection error: GOAWAY with the reason, then close."""
        log.info("gRPC connection from %s closed: %s", self.peer, message)
        self._queue(f.goaway(self.last_stream, code, message))
        self._flush()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self._flush()
            self.transport.abort()

    def _maybe_close(self) -> None:
        if self.draining and not self.streams and self.transport is not None:
            self._flush()
            self.transport.close()


def _unpad(payload: memoryview) -> memoryview:
    if not payload or payload[0] >= len(payload):
        raise f.ConnectionError_(f.PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1:len(payload) - payload[0]]
