"""The native gRPC engine's connection lifecycle with hand-built frames (what the h2 library will not send):
connection errors end in GOAWAY while other connections go on, MAX_CONCURRENT_STREAMS refuses the extra
stream, padded HEADERS with priority, and stop(grace) draining a connection."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import hpack
import pytest
from hpack import NeverIndexedHeaderTuple
from hyperframe.frame import DataFrame, GoAwayFrame, HeadersFrame, PingFrame, PriorityFrame

from gateway.protocol.pb import grpc_service_pb2 as pb
from tests.gateway.h2_client import PREFACE, H2Client, Wire, frames_of, grpc_frame, request_headers
from tests.gateway.native_grpc import INFER, SLOW, WAIT_S, EchoService, NativeServer, request

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_loop_errors")]

NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR = 0x0, 0x1, 0x3, 0x6
REFUSED_STREAM, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x7, 0x9, 0xB


@pytest.fixture
def service() -> EchoService:
    return EchoService()


@pytest.fixture
def server(service: EchoService, use_uvloop: bool) -> Iterator[NativeServer]:
    with NativeServer(service, use_uvloop=use_uvloop) as srv:
        yield srv


def raw(kind: int, flags: int, sid: int, payload: bytes = b"", length: int | None = None) -> bytes:
    """A frame built by hand; `length` may lie about the payload's size."""
    n = len(payload) if length is None else length
    return struct.pack(">BHBBI", n >> 16, n & 0xFFFF, kind, flags, sid) + payload


def body(request_id: str) -> bytes:
    return grpc_frame(request(request_id).SerializeToString())


def call(wire: Wire, sid: int, path: str, request_id: str) -> None:
    wire.send(HeadersFrame(sid, wire.block(path), flags=["END_HEADERS"]),
              DataFrame(sid, body(request_id), flags=["END_STREAM"]))


def assert_serves(port: int) -> None:
    with H2Client(port) as client:
        assert client.call(INFER, body("other")).trailers["grpc-status"] == "0"


HPACK_GARBAGE = b"\xff\xff\xff\xff\x0f"  # an indexed field far beyond any table
BIG_HEADERS = hpack.Encoder().encode([*request_headers(INFER), NeverIndexedHeaderTuple("x-big", "v" * 20_000)])
HUGE_HEADERS = hpack.Encoder().encode([*request_headers(INFER), NeverIndexedHeaderTuple("x-big", "v" * 70_000)])
MAX_WINDOW = (1 << 31) - 1

AFTER_PREFACE = {
    "frame longer than the server's MAX_FRAME_SIZE": (raw(0x0, 0, 1, length=(1 << 24) - 1), FRAME_SIZE_ERROR),
    "DATA on stream 0": (raw(0x0, 0, 0, b"x"), PROTOCOL_ERROR),
    "HEADERS on an even stream": (raw(0x1, 0x4, 2, b"\x83"), PROTOCOL_ERROR),
    "undecodable HPACK": (raw(0x1, 0x4, 1, HPACK_GARBAGE), COMPRESSION_ERROR),
    "PING instead of CONTINUATION": (raw(0x1, 0x0, 1, b"\x83") + raw(0x6, 0, 0, b"12345678"), PROTOCOL_ERROR),
    "CONTINUATION of another stream": (raw(0x1, 0x0, 1, b"\x83") + raw(0x9, 0x4, 3, b"\x86"), PROTOCOL_ERROR),
    "CONTINUATION without HEADERS": (raw(0x9, 0x4, 1, b"\x83"), PROTOCOL_ERROR),
    "PING of 4 bytes": (raw(0x6, 0, 0, b"1234"), PROTOCOL_ERROR),
    "SETTINGS of 5 bytes": (raw(0x4, 0, 0, b"\x00\x05\x00\x00\x40"), FRAME_SIZE_ERROR),
    "SETTINGS_MAX_FRAME_SIZE below 16384": (raw(0x4, 0, 0, struct.pack(">HI", 0x5, 100)), PROTOCOL_ERROR),
    "connection WINDOW_UPDATE of 0": (raw(0x8, 0, 0, b"\x00\x00\x00\x00"), PROTOCOL_ERROR),
    "connection window above 2^31-1": (raw(0x8, 0, 0, struct.pack(">I", MAX_WINDOW)), FLOW_CONTROL_ERROR),
    "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1": (raw(0x4, 0, 0, struct.pack(">HI", 0x4, 1 << 31)), FLOW_CONTROL_ERROR),
    "SETTINGS_ENABLE_PUSH of 2": (raw(0x4, 0, 0, struct.pack(">HI", 0x2, 2)), PROTOCOL_ERROR),
    "SETTINGS on a stream": (raw(0x4, 0, 1), PROTOCOL_ERROR),
    "padding longer than the frame": (raw(0x1, 0x4 | 0x8, 1, b"\x05\x83"), PROTOCOL_ERROR),
    "header list over 64 KiB": (raw(0x1, 0x4, 1, HUGE_HEADERS), COMPRESSION_ERROR),
    "header block over 65 KiB in CONTINUATION": (raw(0x1, 0x0, 1, BIG_HEADERS) + raw(0x9, 0, 1, BIG_HEADERS)
                                                 + raw(0x9, 0, 1, BIG_HEADERS) + raw(0x9, 0x4, 1, BIG_HEADERS),
                                                 ENHANCE_YOUR_CALM),
    "SETTINGS ACK with a payload": (raw(0x4, 0x1, 0, bytes(6)), FRAME_SIZE_ERROR),
    "WINDOW_UPDATE of 3 bytes": (raw(0x8, 0, 0, b"\x00\x00\x01"), FRAME_SIZE_ERROR),
    "RST_STREAM on stream 0": (raw(0x3, 0, 0, bytes(4)), PROTOCOL_ERROR),
    "PRIORITY on stream 0": (raw(0x2, 0, 0, bytes(5)), PROTOCOL_ERROR),
    "DATA on a stream never opened": (raw(0x0, 0, 9, b"x"), PROTOCOL_ERROR),
    "PUSH_PROMISE from a client": (raw(0x5, 0x4, 1, b"\x00\x00\x00\x02\x83"), PROTOCOL_ERROR),
    "a flood of 12,000 PINGs": (raw(0x6, 0, 0, b"12345678") * 12_000, ENHANCE_YOUR_CALM),
    "a flood of 12,000 RST_STREAMs": (raw(0x3, 0, 1, bytes(4)) * 12_000, ENHANCE_YOUR_CALM),
}
BAD_INPUT = {"http/1.1 instead of the preface": (b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", PROTOCOL_ERROR),
             **{name: (PREFACE + sent, code) for name, (sent, code) in AFTER_PREFACE.items()}}


@pytest.mark.parametrize("sent, code", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_a_connection_error_sends_goaway_and_closes_while_others_keep_working(
        server: NativeServer, sent: bytes, code: int) -> None:
    with H2Client(server.port) as bystander, Wire(server.port, preface=False) as wire:
        wire.send(sent)
        frames = wire.read_to_close()
        goaway = frames[-1]
        assert isinstance(goaway, GoAwayFrame), frames
        assert goaway.error_code == code
        assert goaway.additional_data  # the reason, for the client's log
        assert bystander.call(INFER, body("bystander")).trailers["grpc-status"] == "0"
    assert_serves(server.port)


def test_a_connection_error_cancels_the_calls_in_flight_on_that_connection(
        server: NativeServer, service: EchoService) -> None:
    with Wire(server.port) as wire:
        call(wire, 1, SLOW, "in-flight")
        assert service.started.get(timeout=WAIT_S) == "in-flight"
        wire.send(raw(0x0, 0, 0, b"x"))  # DATA on stream 0
        assert wire.goaway().last_stream_id == 1
        assert service.cancelled.get(timeout=WAIT_S) == "in-flight"
    assert_serves(server.port)


@pytest.mark.parametrize("increment, code", [(0, PROTOCOL_ERROR), (MAX_WINDOW, FLOW_CONTROL_ERROR)],
                         ids=["WINDOW_UPDATE of 0", "window above 2^31-1"])
def test_a_stream_error_resets_that_stream_and_cancels_its_handler(
        server: NativeServer, service: EchoService, increment: int, code: int) -> None:
    with Wire(server.port) as wire:
        call(wire, 1, SLOW, "victim")
        assert service.started.get(timeout=WAIT_S) == "victim"
        wire.send(raw(0x8, 0, 1, struct.pack(">I", increment)))
        assert wire.reply(1).reset == code
        assert service.cancelled.get(timeout=WAIT_S) == "victim"
        call(wire, 3, INFER, "next")  # the connection goes on
        assert wire.reply(3).status == 0


def test_a_header_list_over_the_limit_fails_only_its_call(server: NativeServer, service: EchoService) -> None:
    """Over 16 KiB (the advertised SETTINGS_MAX_HEADER_LIST_SIZE) but under the hard limit: the call gets
    RESOURCE_EXHAUSTED without reaching its handler, and the connection's HPACK state stays in step."""
    with Wire(server.port) as wire:
        fields = [*request_headers(SLOW), ("x-big", "v" * 20_000)]  # indexed: the table moves
        wire.send(HeadersFrame(1, bytes(wire.encoder.encode(fields)), flags=["END_HEADERS"]),
                  DataFrame(1, body("too-big"), flags=["END_STREAM"]))
        refused = wire.reply(1)
        assert refused.status == 8
        assert "header list of 20" in refused.message and "limit of 16384 bytes" in refused.message
        call(wire, 3, INFER, "next")  # the same connection, with the encoder's table as it now is
        assert wire.reply(3).status == 0
    assert service.started.empty()  # the refused call never reached its (slow) handler


def test_closing_the_connection_cancels_its_calls(server: NativeServer, service: EchoService) -> None:
    with Wire(server.port) as wire:
        call(wire, 1, SLOW, "abandoned")
        assert service.started.get(timeout=WAIT_S) == "abandoned"
    assert service.cancelled.get(timeout=WAIT_S) == "abandoned"
    assert_serves(server.port)


def test_a_request_that_arrives_one_byte_at_a_time(server: NativeServer) -> None:
    with Wire(server.port, preface=False) as wire:
        wire.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sent = PREFACE + raw(0x4, 0, 0) + raw(0x1, 0x4, 1, wire.block(INFER)) + raw(0x0, 0x1, 1, body("slowly"))
        for i in range(len(sent)):
            wire.send(sent[i:i + 1])
        reply = wire.reply(1)
    assert reply.status == 0
    assert pb.ModelInferResponse.FromString(reply.messages()[0]).id == "slowly"


def test_unknown_frame_types_priority_and_a_client_goaway_are_ignored(server: NativeServer) -> None:
    with Wire(server.port) as wire:
        wire.send(raw(0xFA, 0xFF, 0, b"extension"), raw(0xFB, 0, 1, b"on a stream"),
                  PriorityFrame(7, depends_on=1, stream_weight=3))
        call(wire, 1, INFER, "still-served")
        assert wire.reply(1).status == 0
        wire.send(GoAwayFrame(0, last_stream_id=0, error_code=NO_ERROR))
        wire.send(PingFrame(0, b"12345678"))
        wire.read_until(lambda f: isinstance(f, PingFrame) and "ACK" in f.flags)


def test_streams_beyond_max_concurrent_streams_are_refused(use_uvloop: bool, service: EchoService) -> None:
    with NativeServer(service, max_streams=2, use_uvloop=use_uvloop) as srv, Wire(srv.port) as wire:
        for sid in (1, 3, 5):
            call(wire, sid, SLOW, f"s{sid}")
        assert wire.reply(5).reset == REFUSED_STREAM
        assert {service.started.get(timeout=WAIT_S) for _ in range(2)} == {"s1", "s3"}
        assert frames_of(wire.received, 5) == ["RSTSTREAM"]
        service.gate.set()
        assert wire.reply(1).status == 0
        assert wire.reply(3).status == 0
        call(wire, 7, INFER, "after")  # the finished streams no longer count
        assert wire.reply(7).status == 0


def test_padded_headers_with_priority_and_padded_data(server: NativeServer) -> None:
    msg = body("padded")
    with Wire(server.port) as wire:
        wire.send(PriorityFrame(1, depends_on=0, stream_weight=200),
                  HeadersFrame(1, wire.block(INFER), pad_length=17, depends_on=0, stream_weight=15,
                               flags=["END_HEADERS", "PADDED", "PRIORITY"]),
                  DataFrame(1, msg[:10], pad_length=255, flags=["PADDED"]),
                  DataFrame(1, msg[10:], pad_length=0, flags=["PADDED", "END_STREAM"]))
        reply = wire.reply(1)
    assert reply.status == 0
    assert pb.ModelInferResponse.FromString(reply.messages()[0]).id == "padded"


def test_a_refused_request_that_had_ended_gets_no_rst_stream(server: NativeServer) -> None:
    # The client closed its side with the HEADERS; once the server's reply ends the stream is closed,
    # and nothing more may be sent on it (RFC 9113 section 5.1).
    with Wire(server.port) as wire:
        wire.send(HeadersFrame(1, wire.block(INFER, method="GET"), flags=["END_HEADERS", "END_STREAM"]))
        reply = wire.reply(1)
        wire.send(PingFrame(0, b"after..."))
        wire.read_until(lambda f: isinstance(f, PingFrame) and "ACK" in f.flags)
    assert reply.headers[":status"] == "405"
    assert frames_of(wire.received, 1) == ["HEADERS"]


def test_a_cached_header_block_is_not_reused_once_the_hpack_table_moves(server: NativeServer) -> None:
    # The request headers never enter the table; only x-tag does, so after a new tag is inserted the
    # block for "the newest entry" is byte for byte the block the cache holds for the previous tag.
    base = [NeverIndexedHeaderTuple(k, v) for k, v in request_headers(INFER)]
    with Wire(server.port) as wire:
        blocks = [bytes(wire.encoder.encode([*base, ("x-tag", tag)])) for tag in ("alpha", "alpha", "beta", "beta")]
        for i, block in enumerate(blocks):
            wire.send(HeadersFrame(2 * i + 1, block, flags=["END_HEADERS"]),
                      DataFrame(2 * i + 1, body(f"r{i}"), flags=["END_STREAM"]))
        tags = [pb.ModelInferResponse.FromString(wire.reply(2 * i + 1).messages()[0]).parameters["x-tag"].string_param
                for i in range(4)]
    assert blocks[1] == blocks[3] != blocks[0]
    assert tags == ["str:alpha", "str:alpha", "str:beta", "str:beta"]


def test_stop_drains_a_connection_refuses_new_ones_and_lets_the_call_in_flight_finish(
        server: NativeServer, service: EchoService) -> None:
    with Wire(server.port) as wire:
        call(wire, 1, SLOW, "in-flight")
        assert service.started.get(timeout=WAIT_S) == "in-flight"
        stopping = server.stop(grace=60.0)
        goaway = wire.goaway()
        assert (goaway.error_code, goaway.last_stream_id) == (NO_ERROR, 1)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S).close()
        call(wire, 3, INFER, "too-late")
        assert wire.reply(3).reset == REFUSED_STREAM
        assert not stopping.done()  # the call in flight holds the drain
        service.gate.set()
        reply = wire.reply(1)
        assert reply.status == 0 and reply.reset is None
        assert pb.ModelInferResponse.FromString(reply.messages()[0]).id == "in-flight"
        wire.read_to_close()  # the server closes the drained connection
        stopping.result(WAIT_S)
    assert service.cancelled.empty()


def test_stop_without_grace_cancels_the_calls_in_flight(server: NativeServer, service: EchoService) -> None:
    with Wire(server.port) as wire:
        call(wire, 1, SLOW, "in-flight")
        assert service.started.get(timeout=WAIT_S) == "in-flight"
        server.stop(grace=0.0).result(WAIT_S)
        assert service.cancelled.get(timeout=WAIT_S) == "in-flight"
        frames = wire.read_to_close()
    assert any(isinstance(f, GoAwayFrame) for f in frames)
    assert not any(f.stream_id == 1 and "END_STREAM" in f.flags for f in frames)


def test_pings_and_resets_within_the_flood_allowance_are_answered(server: NativeServer) -> None:
    with Wire(server.port) as wire:
        wire.send(raw(0x6, 0, 0, b"12345678") * 2_000 + raw(0x3, 0, 1, bytes(4)) * 2_000)
        call(wire, 3, INFER, "after")
        reply = wire.reply(3)
    assert reply.trailers["grpc-status"] == "0"


def test_a_client_that_stops_answering_gets_a_ping_then_loses_its_connection(service: EchoService) -> None:
    """Keepalive: silent for 0.2 s, the client gets a PING; it does not answer within 0.3 s, so its
    connection closes and its call in flight is cancelled rather than held for good."""
    with NativeServer(service, keepalive=(0.2, 0.3)) as srv, Wire(srv.port) as wire:
        call(wire, 1, SLOW, "stranded")
        assert service.started.get(timeout=WAIT_S) == "stranded"
        frames = wire.read_to_close()  # the test thread never answers
        pings = [f for f in frames if isinstance(f, PingFrame) and "ACK" not in f.flags]
        goaway = frames[-1]
        assert pings and pings[0].opaque_data == b"servegat"
        assert isinstance(goaway, GoAwayFrame) and goaway.error_code == NO_ERROR
        assert b"keepalive" in goaway.additional_data
        assert frames.index(pings[0]) < frames.index(goaway)
        assert service.cancelled.get(timeout=WAIT_S) == "stranded"
        service.gate.set()
        assert_serves(srv.port)


def test_a_client_that_answers_pings_keeps_its_connection(service: EchoService) -> None:
    with NativeServer(service, keepalive=(0.1, 0.3)) as srv, Wire(srv.port) as wire:
        call(wire, 1, INFER, "before")
        assert wire.reply(1).status == 0
        answered = 0
        end = time.monotonic() + 1.0
        while time.monotonic() < end:  # idle but for the PING ACKs
            frame = wire.read_frame()
            if isinstance(frame, PingFrame) and "ACK" not in frame.flags:
                wire.send(PingFrame(0, opaque_data=frame.opaque_data, flags=["ACK"]))
                answered += 1
        assert answered >= 3  # about one per 0.1 s of silence
        call(wire, 3, INFER, "after")
        assert wire.reply(3).status == 0  # the same connection, still open
