"""HTTP/2 framing (RFC 9113): frame and settings codes, the frames the server writes, and the HPACK
literals of its response headers (never indexed, so they need no encoder state)."""

from __future__ import annotations

import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 0x5, 0x6, 0x7, 0x8, 0x9
ENHANCE_YOUR_CALM = 0xB

HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS = 0x1, 0x2, 0x3
INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = 0x4, 0x5, 0x6

DEFAULT_WINDOW = 65_535
DEFAULT_FRAME_SIZE = 16_384
MAX_WINDOW = (1 << 31) - 1
MAX_FRAME_SIZE_LIMIT = (1 << 24) - 1

HEAD = struct.Struct(">HBBBI")  # 24-bit length as (high 16, low 8), type, flags, stream id
_U32 = struct.Struct(">I")
_SETTING = struct.Struct(">HI")


class ConnectionError_(Exception):
    """A connection error: the server sends GOAWAY with `code` and closes."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class StreamError(Exception):
    """A stream error: the server resets that stream with `code`; the connection goes on."""

    def __init__(self, stream: int, code: int, message: str) -> None:
        super().__init__(message)
        self.stream = stream
        self.code = code


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return HEAD.pack(n >> 8, n & 0xFF, kind, flags, stream) + payload


def settings(items: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(k, v) for k, v in items.items()))


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    if len(payload) % 6:
        raise ConnectionError_(FRAME_SIZE_ERROR, "SETTINGS payload is not a multiple of 6 bytes")
    return [_SETTING.unpack_from(payload, i) for i in range(0, len(payload), 6)]


def window_update(stream: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream, _U32.pack(increment))


def rst_stream(stream: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream, _U32.pack(code))


def goaway(last_stream: int, code: int, debug: str = "") -> bytes:
    return frame(GOAWAY, 0, 0, _U32.pack(last_stream) + _U32.pack(code) + debug.encode()[:256])


def u32(payload: bytes, offset: int = 0) -> int:
    return int(_U32.unpack_from(payload, offset)[0])


# --- HPACK (RFC 7541) literals for what the server sends ------------------------------------------

def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: str, value: str | bytes) -> bytes:
    """A header field "never indexed, new name": it leaves the peer's dynamic table unchanged."""
    raw_name, raw_value = name.encode("ascii"), value if isinstance(value, bytes) else value.encode("ascii")
    return (b"\x10" + _integer(len(raw_name), 7, 0) + raw_name + _integer(len(raw_value), 7, 0) + raw_value)


STATUS_200 = b"\x88"  # static table entry 8, ":status: 200"


def status_literal(status: int) -> bytes:
    """`:status` for statuses other than 200: a literal with the static table's name (index 8)."""
    raw = str(status).encode()
    return b"\x18" + _integer(len(raw), 7, 0) + raw  # never indexed, indexed name 8
