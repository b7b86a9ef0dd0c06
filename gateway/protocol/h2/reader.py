"""Cuts HTTP/2 frames out of the bytes a connection reads, copying as little as it can.

A frame that lies whole in one read reaches the connection as a view of that read. A DATA frame that
spans reads is handed over piece by piece as its bytes arrive, so a large message is never gathered
into a buffer just to be framed. Only the rest of a frame header, or a small control frame split
across reads, is buffered.
"""

from __future__ import annotations

from typing import Protocol

from gateway.protocol.h2 import frames as f


class FrameSink(Protocol):
    def frame(self, kind: int, flags: int, stream: int, payload: memoryview) -> None:
        """A whole frame."""

    def data_start(self, flags: int, stream: int, size: int) -> None:
        """An unpadded DATA frame of `size` bytes whose payload follows in `data_piece` calls."""

    def data_piece(self, piece: memoryview, last: bool) -> None:
        """Part of that payload; `last` once all `size` bytes have come."""


class FrameReader:
    def __init__(self, sink: FrameSink, max_frame: int) -> None:
        self._sink = sink
        self._max = max_frame
        self._buf = bytearray()  # the start of a frame that is not whole yet
        self._left = 0  # payload bytes still to come of a DATA frame being handed over in pieces
        self._preface = False

    def feed(self, data: bytes) -> None:
        mv = memoryview(data)
        pos, end = 0, len(data)
        if not self._preface:
            pos = self._read_preface(mv)
            if not self._preface:
                return
        sink, unpack = self._sink, f.HEAD.unpack_from
        while pos < end:
            if self._left:
                take = min(self._left, end - pos)
                self._left -= take
                sink.data_piece(mv[pos:pos + take], self._left == 0)
                pos += take
            elif self._buf:
                pos = self._fill(mv, pos, end)
            elif end - pos < 9:
                self._buf += mv[pos:end]
                return
            else:
                hi, lo, kind, flags, stream = unpack(data, pos)
                size = self._size(hi, lo)
                if end - pos - 9 >= size:
                    sink.frame(kind, flags, stream & 0x7FFFFFFF, mv[pos + 9:pos + 9 + size])
                    pos += 9 + size
                elif kind == f.DATA and not flags & f.PADDED:
                    sink.data_start(flags, stream & 0x7FFFFFFF, size)
                    self._left = size
                    pos += 9
                else:
                    self._buf += mv[pos:end]
                    return

    def _read_preface(self, mv: memoryview) -> int:
        """Checks the client's connection preface; returns how much of `mv` it took."""
        take = min(len(f.PREFACE) - len(self._buf), len(mv))
        self._buf += mv[:take]
        if bytes(self._buf) != f.PREFACE[:len(self._buf)]:
            raise f.ConnectionError_(f.PROTOCOL_ERROR, "not an HTTP/2 client (bad connection preface)")
        if len(self._buf) == len(f.PREFACE):
            self._preface = True
            self._buf = bytearray()
        return take

    def _fill(self, mv: memoryview, pos: int, end: int) -> int:
        """Completes the buffered frame from `mv[pos:]`; returns the new position."""
        buf = self._buf
        if len(buf) < 9:
            take = min(9 - len(buf), end - pos)
            buf += mv[pos:pos + take]
            pos += take
            if len(buf) < 9:
                return pos
        hi, lo, kind, flags, stream = f.HEAD.unpack_from(buf, 0)
        size, stream = self._size(hi, lo), stream & 0x7FFFFFFF
        if kind == f.DATA and not flags & f.PADDED and size > 0:  # only its header was buffered
            self._buf = bytearray()
            self._sink.data_start(flags, stream, size)
            self._left = size
            return pos
        take = min(9 + size - len(buf), end - pos)
        buf += mv[pos:pos + take]
        pos += take
        if len(buf) == 9 + size:
            self._buf = bytearray()
            self._sink.frame(kind, flags, stream, memoryview(bytes(buf[9:])))
        return pos

    def _size(self, hi: int, lo: int) -> int:
        size = (hi << 8) | lo
        if size > self._max:
            raise f.ConnectionError_(f.FRAME_SIZE_ERROR, f"frame of {size} bytes exceeds {self._max}")
        return size
