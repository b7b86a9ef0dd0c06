"""The sending half of an HTTP/2 connection: stream state, replies within the client's flow-control
windows and frame size, and one write per loop iteration."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from gateway.protocol.h2 import frames as f

STREAM_WINDOW = 4 << 20  # what a client may send on one stream before the server reads it


class Call(Protocol):
    """The gRPC side of one stream, fed by the connection."""

    def data(self, payload: memoryview) -> None: ...

    def end(self) -> None: ...

    def reset(self) -> None: ...


class Stream:
    __slots__ = ("auto_window", "call", "id", "local_closed", "pending", "recv_unacked", "recv_window",
                 "remote_closed", "send_window", "trailers")

    def __init__(self, stream_id: int, send_window: int) -> None:
        self.id = stream_id
        self.send_window = send_window
        self.recv_window = STREAM_WINDOW
        self.recv_unacked = 0
        self.remote_closed = False
        self.local_closed = False
        self.pending: deque[bytes] = deque()  # DATA payload waiting for flow-control credit
        self.trailers: bytes | None = None  # sent once `pending` is empty
        self.call: Call | None = None
        # True: the receive window is topped up as data arrives. False: the call credits what it has
        # consumed (`H2Connection.credit`), so a client cannot run ahead of a slow streaming handler.
        self.auto_window = True


class Sender:
    """Frames out of one connection; the connection adds the reading half and closing."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, Stream] = {}
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._conn_send = f.DEFAULT_WINDOW
        self._peer_frame = f.DEFAULT_FRAME_SIZE
        self._blocked: dict[int, Stream] = {}

    # --- frames out --------------------------------------------------------------------------------

    def reply(self, stream: Stream, head: bytes, message: bytes | None, trailers: bytes) -> None:
        """A whole response: headers, one length-prefixed message (or none), trailers."""
        if stream.local_closed or stream.id not in self.streams:
            return
        self._headers_out(stream.id, 0, head)
        if message is not None:
            stream.pending.append(message)
        stream.trailers = trailers
        self._drain(stream)

    def send_headers(self, stream: Stream, head: bytes) -> None:
        if not stream.local_closed and stream.id in self.streams:
            self._headers_out(stream.id, 0, head)

    def send_message(self, stream: Stream, message: bytes) -> None:
        if not stream.local_closed and stream.id in self.streams:
            stream.pending.append(message)
            self._drain(stream)

    def finish(self, stream: Stream, trailers: bytes) -> None:
        """Trailers (or a trailers-only response) once every message before them has gone out."""
        if not stream.local_closed and stream.id in self.streams:
            stream.trailers = trailers
            self._drain(stream)

    def reset(self, stream: Stream, code: int) -> None:
        if self.streams.pop(stream.id, None) is not None:
            self._queue(f.rst_stream(stream.id, code))
            self._blocked.pop(stream.id, None)
            stream.local_closed = True
            if stream.call is not None:
                stream.call.reset()
            self._maybe_close()

    def _drain(self, stream: Stream) -> None:
        pending, sid = stream.pending, stream.id
        while pending:
            credit = min(self._conn_send, stream.send_window)
            if credit <= 0:
                self._blocked[sid] = stream
                return
            chunk = pending[0]
            size = min(len(chunk), credit, self._peer_frame)
            if size == len(chunk):
                pending.popleft()
            else:
                pending[0] = chunk[size:]
                chunk = chunk[:size]
            self._conn_send -= size
            stream.send_window -= size
            self._queue(f.frame(f.DATA, 0, sid, chunk))
        self._blocked.pop(sid, None)
        if stream.trailers is not None:
            self._headers_out(sid, f.END_STREAM, stream.trailers)
            stream.local_closed = True
            if stream.remote_closed:
                del self.streams[sid]
            else:  # answered before the request ended: ask the client to stop sending, without error
                self._queue(f.rst_stream(sid, f.NO_ERROR))
                del self.streams[sid]
            self._maybe_close()

    def _headers_out(self, sid: int, flags: int, block: bytes) -> None:
        """HEADERS, with CONTINUATION for what exceeds the client's MAX_FRAME_SIZE (a long grpc-message)."""
        size = self._peer_frame
        if len(block) <= size:
            self._queue(f.frame(f.HEADERS, flags | f.END_HEADERS, sid, block))
            return
        self._queue(f.frame(f.HEADERS, flags, sid, block[:size]))
        for i in range(size, len(block), size):
            last = i + size >= len(block)
            self._queue(f.frame(f.CONTINUATION, f.END_HEADERS if last else 0, sid, block[i:i + size]))

    def _unblock(self) -> None:
        for stream in list(self._blocked.values()):
            if self._conn_send <= 0:
                return
            self._drain(stream)

    def _queue(self, data: bytes) -> None:
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        if self.transport is not None and out:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _maybe_close(self) -> None:
        """Called whenever a stream ends; the connection closes here once it is draining and idle."""
