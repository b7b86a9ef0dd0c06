"""The native gRPC engine through real grpcio clients: the three call kinds, statuses and details,
metadata, compression, deadlines, cancellation, the standard health service, draining on stop, and TLS."""

from __future__ import annotations

import queue
import socket
import ssl
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.protocol import grpc_health
from gateway.protocol.h2.calls import SERVER_STREAM, UNARY, Method
from gateway.protocol.h2.server import tls_context
from gateway.protocol.pb import grpc_service_pb2 as pb
from tests.gateway.h2_client import H2Client, grpc_frame
from tests.gateway.native_grpc import (
    ABORT,
    CHAT,
    COUNT,
    FAIL,
    INFER,
    INSPECT,
    SET_CODE,
    SLOW,
    WAIT_S,
    EchoService,
    NativeServer,
    pattern,
    request,
)
from tests.gateway.test_tls_auth import self_signed

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_loop_errors")]

@pytest.fixture
def service() -> EchoService:
    return EchoService()


@pytest.fixture
def server(service: EchoService) -> Iterator[NativeServer]:
    with NativeServer(service) as srv:
        yield srv


@pytest.fixture
def channel(server: NativeServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as ch:
        yield ch


def unary(channel: grpc.Channel, path: str) -> Any:
    return channel.unary_unary(path, request_serializer=pb.ModelInferRequest.SerializeToString,
                               response_deserializer=pb.ModelInferResponse.FromString)


def streaming(channel: grpc.Channel, path: str) -> Any:
    return channel.unary_stream(path, request_serializer=pb.ModelInferRequest.SerializeToString,
                                response_deserializer=pb.ModelInferResponse.FromString)


def bidi(channel: grpc.Channel, path: str) -> Any:
    return channel.stream_stream(path, request_serializer=pb.ModelInferRequest.SerializeToString,
                                 response_deserializer=pb.ModelInferResponse.FromString)


def test_unary_with_text_and_binary_metadata(channel: grpc.Channel) -> None:
    metadata = (("x-text", "plain value"), ("x-blob-bin", b"\x00\xff\x01"), ("x-two-bin", b"\xfe\x00"))
    reply, call = unary(channel, INFER).with_call(request("r1", b"input"), metadata=metadata, timeout=WAIT_S)
    assert call.code() == grpc.StatusCode.OK
    assert (reply.id, list(reply.raw_output_contents)) == ("r1", [b"input"])
    assert reply.parameters["x-text"].string_param == "str:plain value"
    assert reply.parameters["x-blob-bin"].string_param == "bytes:00ff01"
    assert reply.parameters["x-two-bin"].string_param == "bytes:fe00"
    assert reply.parameters["user-agent"].string_param.startswith("str:grpc-python")


def test_many_concurrent_calls_on_one_channel(channel: grpc.Channel) -> None:
    stub = unary(channel, INFER)
    futures = [stub.future(request(f"r{i}", pattern(5000, i)), timeout=WAIT_S) for i in range(64)]
    for i, fut in enumerate(futures):
        assert fut.result().raw_output_contents[0] == pattern(5000, i)


def test_messages_of_megabytes_both_ways(channel: grpc.Channel) -> None:
    echo = unary(channel, INFER)(request("big", pattern(3 << 20)), timeout=WAIT_S)
    assert list(echo.raw_output_contents) == [pattern(3 << 20)]
    reply = unary(channel, INFER)(request("small", reply_bytes=3 << 20), timeout=WAIT_S)
    assert list(reply.raw_output_contents) == [pattern(3 << 20)]


def test_the_handler_sees_the_deadline_and_the_peer(channel: grpc.Channel) -> None:
    reply = unary(channel, INSPECT)(request(), timeout=30.0)
    # grpc-core sends grpc-timeout rounded up to its unit's precision (100 ms at 10-100 s), so a deadline
    # a hair over 30 s arrives as 30.1 s
    assert 25.0 < reply.parameters["time_remaining"].double_param <= 30.1
    assert reply.parameters["peer"].string_param.startswith("ipv4:127.0.0.1:")


@pytest.mark.parametrize("compression", [grpc.Compression.Gzip, grpc.Compression.Deflate])
def test_compressed_requests(channel: grpc.Channel, compression: grpc.Compression) -> None:
    reply = unary(channel, INFER)(request("zipped", pattern(2000) * 50), compression=compression, timeout=WAIT_S)
    assert reply.raw_output_contents[0] == pattern(2000) * 50


def test_a_compressed_request_is_limited_by_its_inflated_size(service: EchoService) -> None:
    # Zeros compress to almost nothing: only an inflated message can exceed the limit here.
    with NativeServer(service, max_message_bytes=64 << 10) as srv, grpc.insecure_channel(srv.address) as ch:
        with pytest.raises(grpc.RpcError) as err:
            unary(ch, INFER)(request("zeros", bytes(1 << 20)), compression=grpc.Compression.Gzip, timeout=WAIT_S)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "decompressed" in err.value.details()
        with pytest.raises(grpc.RpcError) as plain:
            unary(ch, INFER)(request("zeros", bytes(1 << 20)), timeout=WAIT_S)
        assert plain.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


ERRORS = {
    "abort": (ABORT, request("naïve 100% sûr ✓ %41", code=grpc.StatusCode.PERMISSION_DENIED.value[0]),
              grpc.StatusCode.PERMISSION_DENIED, "naïve 100% sûr ✓ %41"),
    "set_code": (SET_CODE, request("not here"), grpc.StatusCode.NOT_FOUND, "not here"),
    "edge spaces": (SET_CODE, request("  padded message "), grpc.StatusCode.NOT_FOUND, "  padded message "),
    "handler raises": (FAIL, request(), grpc.StatusCode.INTERNAL, "internal error; see the gateway's log"),
}


@pytest.mark.parametrize("path, msg, code, details", ERRORS.values(), ids=ERRORS.keys())
def test_status_and_details_reach_the_client(channel: grpc.Channel, path: str, msg: pb.ModelInferRequest,
                                             code: grpc.StatusCode, details: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        unary(channel, path)(msg, timeout=WAIT_S)
    assert (err.value.code(), err.value.details()) == (code, details)


def test_an_unknown_method_is_unimplemented(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as err:
        unary(channel, "/test.Echo/Missing")(request(), timeout=WAIT_S)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_deadline_cancels_the_handler(channel: grpc.Channel, service: EchoService) -> None:
    with pytest.raises(grpc.RpcError) as err:
        unary(channel, SLOW)(request("late"), timeout=0.2)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert service.cancelled.get(timeout=WAIT_S) == "late"


def test_cancelling_a_call_cancels_the_handler(channel: grpc.Channel, service: EchoService) -> None:
    fut = unary(channel, SLOW).future(request("cancel-me"))
    assert service.started.get(timeout=WAIT_S) == "cancel-me"
    assert fut.cancel()
    assert service.cancelled.get(timeout=WAIT_S) == "cancel-me"
    assert unary(channel, INFER)(request("next"), timeout=WAIT_S).id == "next"


def test_bidi_replies_to_each_message_before_the_next_is_sent(channel: grpc.Channel) -> None:
    outbox: queue.Queue[pb.ModelInferRequest | None] = queue.Queue()
    replies = bidi(channel, CHAT)(iter(outbox.get, None), timeout=WAIT_S)
    for i in range(5):
        outbox.put(request(f"m{i}", pattern(100 * i, i)))
        reply = next(replies)
        assert (reply.id, list(reply.raw_output_contents)) == (f"m{i}", [pattern(100 * i, i)] if i else [])
    outbox.put(None)
    assert list(replies) == []
    assert replies.code() == grpc.StatusCode.OK


def test_bidi_with_many_messages_each_way(channel: grpc.Channel) -> None:
    replies = bidi(channel, CHAT)(iter([request(f"m{i}", pattern(20_000, i)) for i in range(100)]), timeout=WAIT_S)
    assert [(r.id, r.raw_output_contents[0]) for r in replies] == [(f"m{i}", pattern(20_000, i)) for i in range(100)]


def test_bidi_abort_after_some_replies(channel: grpc.Channel) -> None:
    replies = bidi(channel, CHAT)(iter([request("a"), request("b"), request("c", abort=9)]), timeout=WAIT_S)
    assert [next(replies).id, next(replies).id] == ["a", "b"]
    with pytest.raises(grpc.RpcError) as err:
        next(replies)
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.FAILED_PRECONDITION, "aborted at c")


def test_server_streaming(channel: grpc.Channel) -> None:
    replies = streaming(channel, COUNT)(request("n", count=20, reply_bytes=200_000), timeout=WAIT_S)
    assert [(r.id, r.raw_output_contents[0]) for r in replies] == [(f"n-{i}", pattern(200_000, i)) for i in range(20)]
    assert replies.code() == grpc.StatusCode.OK
    aborted = streaming(channel, COUNT)(request("a", count=5, abort_after=2), timeout=WAIT_S)
    assert [next(aborted).id, next(aborted).id] == ["a-0", "a-1"]
    with pytest.raises(grpc.RpcError) as err:
        next(aborted)
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.DATA_LOSS, "stopped before 2")


async def _set_health(health: grpc_health.HealthService, service: str, status: int) -> None:
    health.set(service, status)


def test_the_health_service_checks_and_watches(service: EchoService) -> None:
    health = grpc_health.HealthService()
    health.set("", grpc_health.SERVING)
    methods = {f"/{grpc_health.SERVICE}/{name}": Method(SERVER_STREAM if streams else UNARY, req.FromString,
                                                        resp.SerializeToString, getattr(health, name))
               for name, req, resp, streams in grpc_health.METHODS}
    with NativeServer(service, extra_methods=methods) as srv, grpc.insecure_channel(srv.address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        assert stub.Check(health_pb2.HealthCheckRequest(), timeout=WAIT_S).status == grpc_health.SERVING
        with pytest.raises(grpc.RpcError) as err:
            stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=WAIT_S)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        watch = stub.Watch(health_pb2.HealthCheckRequest())
        assert next(watch).status == grpc_health.SERVING
        srv.run(_set_health(health, "", grpc_health.NOT_SERVING)).result(WAIT_S)
        assert next(watch).status == grpc_health.NOT_SERVING
        watch.cancel()  # the Watch handler must end (the server fails on exit if it is still running)


def test_a_request_over_the_limit_is_resource_exhausted(service: EchoService) -> None:
    with NativeServer(service, max_message_bytes=100_000) as srv, grpc.insecure_channel(srv.address) as ch:
        with pytest.raises(grpc.RpcError) as err:
            unary(ch, INFER)(request("big", bytes(200_000)), timeout=WAIT_S)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert unary(ch, INFER)(request("small", bytes(1000)), timeout=WAIT_S).id == "small"


def test_stop_finishes_the_call_in_flight_and_refuses_new_ones(service: EchoService) -> None:
    with NativeServer(service) as srv, grpc.insecure_channel(srv.address) as ch:
        in_flight: Future[pb.ModelInferResponse] = unary(ch, SLOW).future(request("in-flight"), timeout=WAIT_S * 2)
        assert service.started.get(timeout=WAIT_S) == "in-flight"
        stopping = srv.stop(grace=60.0)
        with pytest.raises(grpc.RpcError) as err:
            unary(ch, INFER)(request("too-late"), timeout=WAIT_S)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        service.gate.set()
        assert in_flight.result().id == "in-flight"
        stopping.result(WAIT_S)
    assert service.cancelled.empty()


@pytest.mark.parametrize("use_uvloop", [True, False], ids=["uvloop", "asyncio"])
def test_tls_with_alpn_h2(service: EchoService, tmp_path: Path, use_uvloop: bool) -> None:
    cert, key = self_signed(tmp_path)
    with NativeServer(service, ssl_context=tls_context(str(cert), str(key)), use_uvloop=use_uvloop) as srv:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(f"localhost:{srv.port}", credentials) as ch:
            assert unary(ch, INFER)(request("secure", b"tls"), timeout=WAIT_S).raw_output_contents[0] == b"tls"
            replies = bidi(ch, CHAT)(iter([request("a"), request("b")]), timeout=WAIT_S)
            assert [r.id for r in replies] == ["a", "b"]
        context = ssl.create_default_context(cafile=str(cert))
        context.set_alpn_protocols(["h2"])
        sock = context.wrap_socket(socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT_S),
                                   server_hostname="localhost")
        assert sock.selected_alpn_protocol() == "h2"
        with H2Client(srv.port, sock=sock) as client:
            reply = client.call(INFER, grpc_frame(request("raw-tls").SerializeToString()))
        assert reply.status == 0


def test_max_connection_age_moves_a_client_to_new_connections(service: EchoService) -> None:
    """Each connection is drained after about 0.3 s: a client calling for 2 s goes through several, and
    every call succeeds (grpcio reconnects on GOAWAY)."""
    with NativeServer(service, max_connection_age=0.3) as srv, grpc.insecure_channel(srv.address) as ch:
        inspect, peers, calls = unary(ch, INSPECT), set(), 0
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            peers.add(inspect(request(), timeout=WAIT_S).parameters["peer"].string_param)
            calls += 1
            time.sleep(0.01)
    assert calls > 20 and len(peers) >= 3, (calls, peers)


def test_an_aged_connection_lets_its_calls_finish(service: EchoService) -> None:
    with NativeServer(service, max_connection_age=0.3, max_connection_age_grace=10) as srv, \
            grpc.insecure_channel(srv.address) as ch:
        slow = unary(ch, SLOW).future(request("held"), timeout=WAIT_S)
        assert service.started.get(timeout=WAIT_S) == "held"
        time.sleep(0.6)  # past the age (with its jitter): the connection is draining
        assert unary(ch, INFER)(request("meanwhile"), timeout=WAIT_S).id == "meanwhile"  # on a new connection
        service.gate.set()
        assert slow.result(timeout=WAIT_S).id == "held"


def test_an_aged_connection_closes_after_the_grace(service: EchoService) -> None:
    with NativeServer(service, max_connection_age=0.2, max_connection_age_grace=0.2) as srv, \
            grpc.insecure_channel(srv.address) as ch:
        slow = unary(ch, SLOW).future(request("outlived"), timeout=WAIT_S)
        assert service.started.get(timeout=WAIT_S) == "outlived"
        with pytest.raises(grpc.RpcError) as err:
            slow.result(timeout=WAIT_S)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert service.cancelled.get(timeout=WAIT_S) == "outlived"
        service.gate.set()
