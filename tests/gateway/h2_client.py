"""Raw HTTP/2 clients for the native gRPC engine's protocol tests: `H2Client` drives the `h2` library over a
plain (or TLS) socket; `Wire` writes hand-built frames (hyperframe + hpack) for what h2 will not send.
"""

from __future__ import annotations

import socket
import struct
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import hpack
from h2.settings import SettingCodes
from hyperframe.frame import DataFrame, Frame, GoAwayFrame, HeadersFrame, RstStreamFrame

from tests.gateway.native_grpc import WAIT_S

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
Header = tuple[str, str]


def grpc_frame(payload: bytes, compressed: bool = False) -> bytes:
    """One length-prefixed gRPC message."""
    return struct.pack(">BI", int(compressed), len(payload)) + payload


def split_messages(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        flag, size = struct.unpack_from(">BI", data, pos)
        if flag:
            raise AssertionError("the server compressed a response message")
        out.append(data[pos + 5:pos + 5 + size])
        pos += 5 + size
    return out


def request_headers(path: str, *, method: str = "POST", content_type: str = "application/grpc",
                    extra: Sequence[Header] = ()) -> list[Header]:
    return [(":method", method), (":scheme", "http"), (":path", path), (":authority", "localhost"),
            ("content-type", content_type), ("te", "trailers"), *extra]


@dataclass
class Reply:
    """What came back on one stream."""

    headers: dict[str, str] = field(default_factory=dict)
    trailers: dict[str, str] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)
    frame_sizes: list[int] = field(default_factory=list)  # flow-controlled length of each DATA frame
    ended: bool = False
    reset: int | None = None

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None

    @property
    def status(self) -> int:
        """grpc-status from the trailers, or from the headers of a trailers-only response."""
        return int(self.trailers.get("grpc-status", self.headers.get("grpc-status", "-1")))

    @property
    def message(self) -> str:
        return self.trailers.get("grpc-message", self.headers.get("grpc-message", ""))

    def messages(self) -> list[bytes]:
        return split_messages(bytes(self.data))


class H2Client:
    """An HTTP/2 client connection (the h2 library's state machine) with `pump` to read until a condition.

    With `auto_window` every received DATA byte is acknowledged at once; without it the test opens the
    windows itself (`open_window`)."""

    def __init__(self, port: int, *, settings: dict[SettingCodes | int, int] | None = None, auto_window: bool = True,
                 sock: socket.socket | None = None) -> None:
        self.sock = sock if sock is not None else socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
        self.sock.settimeout(WAIT_S)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.auto_window = auto_window
        self.replies: dict[int, Reply] = {}
        self.pings: list[bytes] = []
        self.settings_acks = 0
        self.server_settings: dict[int, int] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.sent_frames: Counter[int] = Counter()  # frame type -> count, of what this client wrote
        self._preface_sent = False
        self.conn.initiate_connection()
        expected_acks = 1
        if settings:
            self.conn.update_settings(settings)
            expected_acks += 1
        self.flush()
        self.pump(lambda: bool(self.server_settings) and self.settings_acks >= expected_acks)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def flush(self) -> None:
        out = self.conn.data_to_send()
        if out:
            self._count_frames(out)
            self.sock.sendall(out)

    def _count_frames(self, out: bytes) -> None:
        pos = 0
        if not self._preface_sent:
            self._preface_sent, pos = True, len(PREFACE)
        while pos < len(out):
            size = int.from_bytes(out[pos:pos + 3], "big")
            self.sent_frames[out[pos + 3]] += 1
            pos += 9 + size

    def pump(self, until: Callable[[], bool]) -> None:
        """Reads and handles frames until `until()` holds; fails if the server closes or goes quiet first."""
        while not until():
            if self.closed:
                raise ConnectionError("the server closed the connection")
            self.flush()  # what h2 holds may be what the server waits for
            data = self.sock.recv(1 << 16)
            if not data:
                self.closed = True
                continue
            for event in self.conn.receive_data(data):
                self._on(event)
            self.flush()

    def _on(self, event: h2.events.Event) -> None:
        sid = getattr(event, "stream_id", None)
        reply = self.replies.setdefault(sid, Reply()) if sid else Reply()
        if isinstance(event, h2.events.ResponseReceived):
            reply.headers = _fields(event.headers)
        elif isinstance(event, h2.events.TrailersReceived):
            reply.trailers = _fields(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            reply.data += event.data or b""
            reply.frame_sizes.append(event.flow_controlled_length or 0)
            if self.auto_window and event.flow_controlled_length:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id or 0)
        elif isinstance(event, h2.events.StreamEnded):
            reply.ended = True
        elif isinstance(event, h2.events.StreamReset):
            reply.reset = event.error_code
        elif isinstance(event, h2.events.PingAckReceived):
            self.pings.append(event.ping_data or b"")
        elif isinstance(event, h2.events.SettingsAcknowledged):
            self.settings_acks += 1
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self.server_settings.update({k: v.new_value for k, v in event.changed_settings.items()})
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event

    def open_window(self, increment: int, stream_id: int | None = None) -> None:
        self.conn.increment_flow_control_window(increment, stream_id)
        self.flush()

    def start(self, path: str, body: bytes = b"", *, headers: Sequence[Header] | None = None,
              extra: Sequence[Header] = (), end: bool = True, chunk: int = 16_384, pad: int | None = None) -> int:
        """Opens a stream: HEADERS, then `body` in DATA frames of `chunk` bytes (each with `pad` bytes of
        padding), END_STREAM on the last when `end`. Returns the stream id."""
        sid = self.conn.get_next_available_stream_id()
        self.replies[sid] = Reply()
        self.conn.send_headers(sid, list(headers or request_headers(path, extra=extra)), end_stream=end and not body)
        if body:
            self.send(sid, body, end=end, chunk=chunk, pad=pad)
        self.flush()
        return sid

    def send(self, sid: int, body: bytes, *, end: bool = True, chunk: int = 16_384, pad: int | None = None) -> None:
        """DATA frames of at most `chunk` bytes, waiting for flow-control credit; empty `body` only ends."""
        if not body and end:
            self.conn.end_stream(sid)
        pieces = [body[i:i + chunk] for i in range(0, len(body), chunk)]
        for i, piece in enumerate(pieces):
            cost = len(piece) + (0 if pad is None else pad + 1)
            self._wait_for_credit(sid, cost)
            self.conn.send_data(sid, piece, end_stream=end and i == len(pieces) - 1, pad_length=pad)
        self.flush()

    def _wait_for_credit(self, sid: int, cost: int) -> None:
        self.pump(lambda: self.conn.local_flow_control_window(sid) >= cost)

    def wait(self, sid: int) -> Reply:
        self.pump(lambda: self.replies[sid].done)
        return self.replies[sid]

    def call(self, path: str, body: bytes, *, extra: Sequence[Header] = (), chunk: int = 16_384) -> Reply:
        return self.wait(self.start(path, body, extra=extra, chunk=chunk))


class Wire:
    """Hand-built frames over a plain socket: a preface (or not), any frame, and the frames that come back
    (the server's header blocks are expected to fit one frame, as they do for the requests sent here)."""

    def __init__(self, port: int, *, preface: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
        self.encoder, self.decoder = hpack.Encoder(), hpack.Decoder()
        self.received: list[Frame] = []
        self.fields: dict[int, dict[str, str]] = {}  # id() of a HEADERS frame -> its decoded fields
        self.closed = False
        if preface:
            self.send(PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # and an empty SETTINGS

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, *frames: Frame | bytes) -> None:
        self.sock.sendall(b"".join(f if isinstance(f, bytes) else f.serialize() for f in frames))

    def block(self, path: str, *, method: str = "POST") -> bytes:
        """An HPACK header block of a gRPC request (this connection's encoder state moves with it)."""
        return bytes(self.encoder.encode(request_headers(path, method=method)))

    def _read(self, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def read_frame(self) -> Frame | None:
        """The next frame, or None once the server has closed the connection."""
        head = self._read(9)
        if head is None:
            self.closed = True
            return None
        frame, size = Frame.parse_frame_header(memoryview(head))
        body = self._read(size) if size else b""
        if body is None:
            raise ConnectionError("the connection closed inside a frame")
        frame.parse_body(memoryview(body))
        if isinstance(frame, HeadersFrame):  # decoded as it arrives: HPACK state follows the wire order
            self.fields[id(frame)] = {str(k): str(v) for k, v in self.decoder.decode(frame.data)}
        self.received.append(frame)
        return frame

    def read_until(self, until: Callable[[Frame], bool]) -> Frame:
        while True:
            frame = self.read_frame()
            if frame is None:
                raise ConnectionError(f"closed before the expected frame; got {self.received}")
            if until(frame):
                return frame

    def read_to_close(self) -> list[Frame]:
        while self.read_frame() is not None:
            pass
        return self.received

    def reply(self, sid: int) -> Reply:
        """Reads until stream `sid` ends or is reset; its frames so far, as a Reply."""
        def finished(f: Frame) -> bool:
            return f.stream_id == sid and ("END_STREAM" in f.flags or isinstance(f, RstStreamFrame))
        if not any(finished(f) for f in self.received):
            self.read_until(finished)
        reply = Reply()
        for frame in (f for f in self.received if f.stream_id == sid):
            if isinstance(frame, HeadersFrame):
                if reply.headers:
                    reply.trailers = self.fields[id(frame)]
                else:
                    reply.headers = self.fields[id(frame)]
            elif isinstance(frame, RstStreamFrame):
                reply.reset = frame.error_code
            elif isinstance(frame, DataFrame):
                reply.data += frame.data
            reply.ended = reply.ended or "END_STREAM" in frame.flags
        return reply

    def goaway(self) -> GoAwayFrame:
        frame = self.read_until(lambda f: isinstance(f, GoAwayFrame))
        assert isinstance(frame, GoAwayFrame)
        return frame


def _fields(headers: Iterable[tuple[bytes | str, bytes | str]] | None) -> dict[str, str]:
    """A header block as str (h2 already decoded it: the client's header_encoding is utf-8)."""
    return {str(k): str(v) for k, v in headers or []}


def frames_of(frames: Iterable[Frame], sid: int) -> list[str]:
    """The types of the frames of one stream, e.g. ["HEADERS", "DATA", "HEADERS"]."""
    return [type(f).__name__.removesuffix("Frame").upper() for f in frames if f.stream_id == sid]
