"""FrameReader: frames cut from reads split anywhere come out whole, DATA payloads in pieces that join up."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.protocol.h2 import frames as f
from gateway.protocol.h2.reader import FrameReader


class Sink:
    def __init__(self) -> None:
        self.frames: list[tuple[int, int, int, bytes]] = []
        self.pieces: list[tuple[bytes, bool]] = []
        self._open: tuple[int, int, int] | None = None
        self._got = bytearray()

    def frame(self, kind: int, flags: int, stream: int, payload: memoryview) -> None:
        assert self._open is None
        self.frames.append((kind, flags, stream, bytes(payload)))

    def data_start(self, flags: int, stream: int, size: int) -> None:
        assert self._open is None and size > 0
        self._open = (flags, stream, size)

    def data_piece(self, piece: memoryview, last: bool) -> None:
        assert self._open is not None
        self._got += piece
        self.pieces.append((bytes(piece), last))
        if last:
            flags, stream, size = self._open
            assert len(self._got) == size
            self.frames.append((f.DATA, flags, stream, bytes(self._got)))
            self._open, self._got = None, bytearray()


FRAMES = [
    (f.SETTINGS, 0, 0, b""),
    (f.HEADERS, f.END_HEADERS, 1, b"\x83\x86" * 20),
    (f.DATA, 0, 1, bytes(range(256)) * 200),  # 51,200 bytes: spans reads
    (f.DATA, f.END_STREAM, 1, b""),
    (f.DATA, f.PADDED | f.END_STREAM, 3, b"\x02abcdef\x00\x00"),  # padded frames are buffered whole
    (f.PING, 0, 0, b"12345678"),
    (f.DATA, f.END_STREAM, 5, b"x" * 7),
]
WIRE = f.PREFACE + b"".join(f.frame(kind, flags, stream, payload) for kind, flags, stream, payload in FRAMES)


def feed(cuts: list[int]) -> Sink:
    sink = Sink()
    reader = FrameReader(sink, 1 << 20)
    points = sorted({c % len(WIRE) for c in cuts} | {0, len(WIRE)})
    for a, b in itertools.pairwise(points):
        reader.feed(WIRE[a:b])
    return sink


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(WIRE)), max_size=40))
def test_frames_come_out_whole_wherever_the_reads_split(cuts: list[int]) -> None:
    assert feed(cuts).frames == FRAMES


def test_one_byte_at_a_time() -> None:
    assert feed(list(range(len(WIRE)))).frames == FRAMES


def test_a_large_data_frame_in_one_read_is_one_view_and_split_reads_give_pieces() -> None:
    whole = feed([])
    assert whole.pieces == []  # every frame was whole in the one read
    split = feed([len(f.PREFACE) + 9 + 1 + 1000])
    assert len(split.pieces) >= 2 and split.pieces[-1][1] is True


def test_a_bad_preface_or_an_oversized_frame_is_a_connection_error() -> None:
    with pytest.raises(f.ConnectionError_) as bad:
        FrameReader(Sink(), 1 << 20).feed(b"GET / HTTP/1.1\r\n\r\n")
    assert bad.value.code == f.PROTOCOL_ERROR
    reader = FrameReader(Sink(), 16_384)
    with pytest.raises(f.ConnectionError_) as big:
        reader.feed(f.PREFACE + f.frame(f.DATA, 0, 1, b"x" * 16_385)[:20])
    assert big.value.code == f.FRAME_SIZE_ERROR
