"""The native gRPC engine at the HTTP/2 level, through the h2 library's client: streams, flow control both
ways, frame sizes, CONTINUATION, padding, PING and SETTINGS, the header-block cache. Every test runs on
uvloop and on the plain asyncio loop."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from h2.settings import SettingCodes

from gateway.protocol.pb import grpc_service_pb2 as pb
from tests.gateway.h2_client import H2Client, Reply, grpc_frame
from tests.gateway.native_grpc import (
    INFER,
    INSPECT,
    LAGGING_CHAT,
    WAIT_S,
    EchoService,
    NativeServer,
    pattern,
    request,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_loop_errors")]

CONTINUATION, DATA = 0x9, 0x0


@pytest.fixture
def server(use_uvloop: bool) -> Iterator[NativeServer]:
    with NativeServer(EchoService(), use_uvloop=use_uvloop) as srv:
        yield srv


def body(msg: pb.ModelInferRequest) -> bytes:
    return grpc_frame(msg.SerializeToString())


def response(data: bytes) -> pb.ModelInferResponse:
    return pb.ModelInferResponse.FromString(data)


def test_a_unary_call_gets_headers_one_message_and_status_0_in_trailers(server: NativeServer) -> None:
    with H2Client(server.port) as client:
        reply = client.call(INFER, body(request("r1", b"\x00\x01payload")))
    assert reply.headers[":status"] == "200"
    assert reply.headers["content-type"] == "application/grpc"
    assert "grpc-status" not in reply.headers
    assert reply.trailers["grpc-status"] == "0"
    assert reply.ended and reply.reset is None
    [message] = reply.messages()
    assert response(message).id == "r1"
    assert list(response(message).raw_output_contents) == [b"\x00\x01payload"]


def test_many_concurrent_streams_with_interleaved_frames_on_one_connection(server: NativeServer) -> None:
    bodies = [body(request(f"r{i}", pattern(3000, i))) for i in range(200)]
    with H2Client(server.port) as client:
        sids = [client.start(INFER, end=False) for _ in bodies]
        thirds = [(b[:5], b[5:1500], b[1500:]) for b in bodies]  # the prefix alone, then two halves
        for part in range(3):
            for sid, pieces in zip(sids, thirds, strict=True):
                client.send(sid, pieces[part], end=part == 2)
        client.pump(lambda: all(client.replies[sid].done for sid in sids))
        for i, sid in enumerate(sids):
            reply = client.replies[sid]
            assert reply.trailers["grpc-status"] == "0", reply
            [message] = reply.messages()
            assert (response(message).id, response(message).raw_output_contents[0]) == (f"r{i}", pattern(3000, i))


def test_the_header_cache_never_answers_with_another_calls_metadata(server: NativeServer) -> None:
    # h2's HPACK encoder indexes these headers, so repeated header sets arrive as identical blocks
    # (served from the cache) while new values move the dynamic table (which must clear the cache).
    tags = ["alpha", "beta", "gamma"]
    with H2Client(server.port) as client:
        for i in range(40):
            extra = [("x-tag", tags[i % 3])] + ([("x-round", str(i))] if i % 7 == 0 else [])
            reply = client.call(INFER, body(request(f"r{i}")), extra=extra)
            params = response(reply.messages()[0]).parameters
            assert params["x-tag"].string_param == f"str:{tags[i % 3]}"
            assert ("x-round" in params) == (i % 7 == 0)
            if i % 7 == 0:
                assert params["x-round"].string_param == f"str:{i}"


def test_a_repeated_header_block_is_decoded_once(server: NativeServer) -> None:
    """The cache's purpose: a client repeating its headers (indexed, so the blocks are identical) has
    them parsed once, not once per call."""
    parsed: list[int] = []
    parse = server.server.parse_head

    def counting(fields: Any) -> Any:
        parsed.append(1)
        return parse(fields)

    server.server.parse_head = counting  # type: ignore[method-assign]
    with H2Client(server.port) as client:
        for i in range(20):
            assert client.call(INFER, body(request(f"r{i}")), extra=[("x-tag", "same")]).trailers["grpc-status"] == "0"
    # the first block adds the headers to the table; from the second on the block repeats
    assert 1 <= len(parsed) <= 3, len(parsed)


def pump_until_spent(client: H2Client, reply: Reply, credit: int) -> None:
    client.pump(lambda: reply.done or sum(reply.frame_sizes) == credit)


def read_with_small_windows(client: H2Client, sid: int, stream_credit: int, conn_credit: int) -> int:
    """Opens the stream and connection windows a little at a time, only once the server has used all of
    its credit; returns how many times the server had to wait."""
    reply, waits = client.replies[sid], 0
    while True:
        credit = min(stream_credit, conn_credit)
        pump_until_spent(client, reply, credit)
        assert sum(reply.frame_sizes) <= credit  # h2 would also have raised
        if reply.done:
            return waits
        waits += 1
        if stream_credit <= conn_credit:
            client.open_window(1000, sid)
            stream_credit += 1000
        else:
            client.open_window(1500)
            conn_credit += 1500


def test_a_response_larger_than_the_clients_windows_waits_for_credit(server: NativeServer) -> None:
    size = 150_000  # larger than the connection's default window of 65,535 as well
    with H2Client(server.port, settings={SettingCodes.INITIAL_WINDOW_SIZE: 1000}, auto_window=False) as client:
        sid = client.start(INFER, body(request("big", reply_bytes=size)))
        waits = read_with_small_windows(client, sid, 1000, 65_535)
        reply = client.replies[sid]
    assert waits > size // 1500
    assert reply.trailers["grpc-status"] == "0" and reply.reset is None
    assert max(reply.frame_sizes) <= 1500
    assert response(reply.messages()[0]).raw_output_contents[0] == pattern(size)


def test_raising_initial_window_size_by_settings_unblocks_a_waiting_stream(server: NativeServer) -> None:
    size = 100_000
    with H2Client(server.port, settings={SettingCodes.INITIAL_WINDOW_SIZE: 1000}, auto_window=False) as client:
        sid = client.start(INFER, body(request("big", reply_bytes=size)))
        reply = client.replies[sid]
        client.pump(lambda: sum(reply.frame_sizes) == 1000)
        client.conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
        client.flush()
        client.pump(lambda: sum(reply.frame_sizes) == 65_535)  # the SETTINGS alone: up to the connection window
        client.open_window(1 << 20)
        client.wait(sid)
    assert reply.trailers["grpc-status"] == "0"
    assert response(reply.messages()[0]).raw_output_contents[0] == pattern(size)


@pytest.mark.parametrize("max_frame", [16_384, 20_000, 65_536])
def test_data_frames_respect_the_clients_max_frame_size(server: NativeServer, max_frame: int) -> None:
    settings: dict[SettingCodes | int, int] = {SettingCodes.MAX_FRAME_SIZE: max_frame,
                                               SettingCodes.INITIAL_WINDOW_SIZE: 1 << 22}
    with H2Client(server.port, settings=settings) as client:
        client.open_window(1 << 22)
        reply = client.call(INFER, body(request("big", reply_bytes=300_000)))
    assert reply.trailers["grpc-status"] == "0"
    assert max(reply.frame_sizes) == max_frame
    assert response(reply.messages()[0]).raw_output_contents[0] == pattern(300_000)


@pytest.mark.parametrize("chunk", [3, 7_000, 16_384])
def test_a_request_larger_than_64k_in_many_data_frames(server: NativeServer, chunk: int) -> None:
    size = 70_000 if chunk == 3 else 400_000  # chunk 3 splits even the 5-byte prefix
    with H2Client(server.port) as client:
        reply = client.call(INFER, body(request("big", pattern(size))), chunk=chunk)
        assert client.sent_frames[DATA] >= size // chunk
    assert reply.trailers["grpc-status"] == "0"
    assert response(reply.messages()[0]).raw_output_contents[0] == pattern(size)


def test_requests_past_the_servers_stream_and_connection_windows(use_uvloop: bool) -> None:
    # The server announces 4 MiB per stream and 64 MiB per connection: these need its WINDOW_UPDATEs.
    size = 9 << 20
    with NativeServer(EchoService(), max_message_bytes=16 << 20, use_uvloop=use_uvloop) as srv, \
            H2Client(srv.port) as client:
        for i in range(8):
            reply = client.call(INSPECT, body(request(f"r{i}", pattern(size, i))))
            assert reply.status == 0 and response(reply.messages()[0]).id == f"r{i}"


def test_client_trailers_end_the_request(server: NativeServer) -> None:
    with H2Client(server.port) as client:
        sid = client.start(INFER, body(request("with-trailers")), end=False)
        client.conn.send_headers(sid, [("x-checksum", "abc")], end_stream=True)
        client.flush()
        reply = client.wait(sid)
    assert reply.status == 0 and response(reply.messages()[0]).id == "with-trailers"


def test_a_header_block_in_continuation_frames(server: NativeServer) -> None:
    extra = [(f"x-key-{i}", f"value-{i}-" + "v" * 40) for i in range(30)]
    with H2Client(server.port) as client:
        client.conn.max_outbound_frame_size = 64  # h2 then splits the header block (and allows small DATA)
        reply = client.call(INFER, body(request("cont", pattern(5000))), extra=extra, chunk=64)
        assert client.sent_frames[CONTINUATION] >= 10
    assert reply.trailers["grpc-status"] == "0"
    params = response(reply.messages()[0]).parameters
    assert {k: params[k].string_param for k, _ in extra} == {k: f"str:{v}" for k, v in extra}


def test_padded_data_frames(server: NativeServer) -> None:
    msg = body(request("padded", pattern(50_000)))
    with H2Client(server.port) as client:
        sid = client.start(INFER, msg, chunk=1000, pad=200)
        reply = client.wait(sid)
    assert reply.trailers["grpc-status"] == "0"
    assert response(reply.messages()[0]).raw_output_contents[0] == pattern(50_000)


def test_ping_gets_an_ack_with_the_same_payload(server: NativeServer) -> None:
    with H2Client(server.port) as client:
        client.conn.ping(b"8 bytes!")
        client.flush()
        client.pump(lambda: client.pings == [b"8 bytes!"])
        assert client.replies == {}


def test_settings_get_an_ack_and_the_server_announces_its_own(server: NativeServer) -> None:
    with H2Client(server.port) as client:
        acks = client.settings_acks
        client.conn.update_settings({SettingCodes.MAX_HEADER_LIST_SIZE: 1 << 16, SettingCodes.ENABLE_PUSH: 0})
        client.flush()
        client.pump(lambda: client.settings_acks == acks + 1)
        assert client.server_settings[SettingCodes.MAX_CONCURRENT_STREAMS] == 1024
        assert client.server_settings[SettingCodes.ENABLE_PUSH] == 0
        reply = client.call(INFER, body(request("after")))  # the connection still works
    assert reply.trailers["grpc-status"] == "0"


def test_a_bidi_client_cannot_run_ahead_of_a_handler_that_stops_reading(server: NativeServer) -> None:
    """Messages a streaming handler has not read yet hold back the stream's window: the client stops
    after about one window, and goes on once the handler reads again."""
    service = server.service
    message = body(request("m", pattern(256 << 10)))
    with H2Client(server.port) as client:
        window = client.server_settings[SettingCodes.INITIAL_WINDOW_SIZE]
        sid = client.start(LAGGING_CHAT, message, end=False)
        assert service.started.get(timeout=WAIT_S) == "m"  # the handler read the first and now holds
        sent = 0
        while client.conn.local_flow_control_window(sid) >= len(message) and sent < 4 * window:
            client.send(sid, message, end=False)
            sent += len(message)
            client.conn.ping(b"in order")  # its ACK comes after any update the data above earned
            client.flush()
            client.pump(lambda: bool(client.pings))
            client.pings.clear()
        assert window // 2 < sent <= window  # stopped by the window, not by the 4-window cap
        service.gate.set()
        client.send(sid, message, end=True)  # waits for the credit the handler's reads give back
        reply = client.wait(sid)
    assert reply.trailers["grpc-status"] == "0"
    assert len(reply.messages()) == 2 + sent // len(message)
