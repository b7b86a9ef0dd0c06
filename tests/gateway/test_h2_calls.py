"""gRPC over HTTP/2 on the native engine, through a raw h2 client: message framing and size limits,
refused requests, grpc-timeout deadlines, compressed requests, metadata, statuses in trailers, the three
call kinds, and cancellation by RST_STREAM."""

from __future__ import annotations

import gzip
import urllib.parse
import zlib
from collections.abc import Callable, Iterator

import pytest

from gateway.protocol.pb import grpc_service_pb2 as pb
from tests.gateway.h2_client import H2Client, Reply, grpc_frame, request_headers
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

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_loop_errors")]

LIMIT = 64 << 10
CANCEL = 0x8


@pytest.fixture
def service() -> EchoService:
    return EchoService()


@pytest.fixture
def server(service: EchoService) -> Iterator[NativeServer]:
    with NativeServer(service, max_message_bytes=LIMIT) as srv:
        yield srv


@pytest.fixture
def client(server: NativeServer) -> Iterator[H2Client]:
    with H2Client(server.port) as c:
        yield c


def body(msg: pb.ModelInferRequest) -> bytes:
    return grpc_frame(msg.SerializeToString())


def answer(reply: Reply) -> list[pb.ModelInferResponse]:
    return [pb.ModelInferResponse.FromString(m) for m in reply.messages()]


@pytest.mark.parametrize("first_frame", [8, 3], ids=["prefix-in-first-frame", "prefix-split"])
def test_a_message_over_the_limit_is_refused_from_its_prefix_alone(client: H2Client, first_frame: int) -> None:
    start = grpc_frame(b"")[:1] + (10 << 20).to_bytes(4, "big") + b"abc"  # announces 10 MiB, sends 3 bytes
    sid = client.start(INFER, start[:first_frame], end=False)
    if first_frame < len(start):
        client.send(sid, start[first_frame:], end=False)
    reply = client.wait(sid)
    assert reply.status == 8  # RESOURCE_EXHAUSTED
    assert str(10 << 20) in reply.message and str(LIMIT) in reply.message
    client.pump(lambda: reply.reset is not None)
    assert reply.reset == 0  # NO_ERROR: "stop sending", the answer stands


def test_the_message_limit_is_inclusive(service: EchoService) -> None:
    at_limit = request("edge", b"x" * 50).SerializeToString()
    with NativeServer(service, max_message_bytes=len(at_limit)) as srv, H2Client(srv.port) as client:
        assert client.call(INFER, grpc_frame(at_limit)).status == 0
        assert client.call(INFER, body(request("edge", b"x" * 51))).status == 8


def refused(path: str = INFER, method: str = "POST", content_type: str = "application/grpc",
            extra: tuple[tuple[str, str], ...] = ()) -> list[tuple[str, str]]:
    return request_headers(path, method=method, content_type=content_type, extra=extra)


REFUSALS = {
    "GET": (refused(method="GET"), b"", "405", None),
    "text/plain": (refused(content_type="text/plain"), b"x", "415", None),
    "unknown path": (refused("/test.Echo/Missing"), body(request()), "200", 12),
    "unknown grpc-encoding": (refused(extra=(("grpc-encoding", "br"),)), body(request()), "200", 12),
    **{f"grpc-timeout {v!r}": (refused(extra=(("grpc-timeout", v),)), body(request()), "200", 13)
       for v in ("", "1", "10x", "-1S", "1.5S", "123456789S")},
}


@pytest.mark.parametrize("headers, sent, http_status, code", REFUSALS.values(), ids=REFUSALS.keys())
def test_a_request_refused_from_its_headers(client: H2Client, headers: list[tuple[str, str]], sent: bytes,
                                            http_status: str, code: int | None) -> None:
    reply = client.wait(client.start("", sent, headers=headers))
    assert reply.headers[":status"] == http_status
    assert reply.ended and not reply.data and not reply.trailers  # one HEADERS frame: trailers-only
    assert reply.status != 0 if code is None else reply.status == code
    assert reply.message
    assert client.call(INFER, body(request("next"))).status == 0  # the connection goes on


def test_a_deadline_that_passes_while_the_handler_waits_ends_the_call_with_4(
        client: H2Client, service: EchoService) -> None:
    reply = client.call(SLOW, body(request("late")), extra=[("grpc-timeout", "50m")])
    assert reply.status == 4  # DEADLINE_EXCEEDED
    assert not reply.data
    assert service.cancelled.get(timeout=WAIT_S) == "late"


def test_a_deadline_that_passes_during_a_server_stream_ends_it_in_trailers(
        client: H2Client, service: EchoService) -> None:
    # 1 s leaves the first reply ample time to go out before the deadline
    reply = client.call(COUNT, body(request("s", count=1, hold=1)), extra=[("grpc-timeout", "1S")])
    assert [m.id for m in answer(reply)] == ["s-0"]
    assert "grpc-status" not in reply.headers
    assert reply.trailers["grpc-status"] == "4" and ":status" not in reply.trailers
    assert service.cancelled.get(timeout=WAIT_S) == "s"


@pytest.mark.parametrize("timeout, most", [("30S", 30.0), ("2M", 120.0), ("1H", 3600.0), ("99999999u", 100.0)])
def test_the_handler_sees_the_time_remaining_of_a_grpc_timeout(client: H2Client, timeout: str, most: float) -> None:
    reply = client.call(INSPECT, body(request()), extra=[("grpc-timeout", timeout)])
    assert reply.status == 0
    assert 0.0 < answer(reply)[0].parameters["time_remaining"].double_param <= most


def test_without_grpc_timeout_there_is_no_deadline(client: H2Client) -> None:
    reply = client.call(INSPECT, body(request()))
    assert answer(reply)[0].parameters["time_remaining"].double_param == -1.0
    assert answer(reply)[0].parameters["peer"].string_param.startswith("ipv4:127.0.0.1:")


@pytest.mark.parametrize("encoding, compress", [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_a_compressed_request_message(client: H2Client, encoding: str, compress: Callable[[bytes], bytes]) -> None:
    raw = request("zipped", pattern(1000) * 20).SerializeToString()
    packed = compress(raw)
    assert len(packed) < len(raw)
    extra = [("grpc-encoding", encoding)]
    reply = client.call(INFER, grpc_frame(packed, compressed=True), extra=extra)
    assert reply.status == 0
    assert answer(reply)[0].raw_output_contents[0] == pattern(1000) * 20
    plain = client.call(INFER, body(request("plain")), extra=extra)  # flag 0: not compressed after all
    assert answer(plain)[0].id == "plain"


COMPRESSION_ERRORS = {
    "flag set, no grpc-encoding": ([], grpc_frame(gzip.compress(b"x"), compressed=True), 13),
    "corrupt gzip": ([("grpc-encoding", "gzip")], grpc_frame(b"\x1f\x8bnot gzip", compressed=True), 13),
    "inflates past the limit": ([("grpc-encoding", "gzip")],
                                grpc_frame(gzip.compress(bytes(4 * LIMIT)), compressed=True), 8),
}


@pytest.mark.parametrize("extra, sent, code", COMPRESSION_ERRORS.values(), ids=COMPRESSION_ERRORS.keys())
def test_a_bad_compressed_message(client: H2Client, extra: list[tuple[str, str]], sent: bytes, code: int) -> None:
    assert len(sent) < LIMIT
    assert client.call(INFER, sent, extra=extra).status == code


@pytest.mark.parametrize("sent, code", [(b"", 13), (body(request()) * 2, 12), (body(request())[:-1], 13)],
                         ids=["no message", "two messages", "ends inside a message"])
def test_a_unary_call_needs_exactly_one_whole_message(client: H2Client, sent: bytes, code: int) -> None:
    reply = client.call(INFER, sent)
    assert reply.status == code and reply.message


def test_text_and_binary_metadata(client: H2Client) -> None:
    extra = [("x-text", "plain text"), ("x-blob-bin", "AAH/gA"), ("x-padded-bin", "AAH/gA=="),
             ("x-three-bin", "AAEC"), ("grpc-timeout", "10S")]
    params = answer(client.call(INFER, body(request()), extra=extra))[0].parameters
    assert params["x-text"].string_param == "str:plain text"
    assert params["x-blob-bin"].string_param == "bytes:" + b"\x00\x01\xff\x80".hex()
    assert params["x-padded-bin"].string_param == "bytes:" + b"\x00\x01\xff\x80".hex()
    assert params["x-three-bin"].string_param == "bytes:000102"
    for reserved in ("te", "content-type", "grpc-timeout", ":path"):
        assert reserved not in params


def test_statuses_from_the_handler(client: H2Client) -> None:
    aborted = client.call(ABORT, body(request("naïve 100% ✓", code=7)))
    assert (aborted.status, aborted.message) == (7, "na%C3%AFve 100%25 %E2%9C%93")
    assert not aborted.data
    set_code = client.call(SET_CODE, body(request("gone")))
    assert (set_code.status, set_code.message) == (5, "gone")
    failed = client.call(FAIL, body(request()))
    assert failed.status == 13 and "internal error" in failed.message
    assert "a bug in the handler" not in failed.message  # details stay in the log


@pytest.mark.parametrize("path, sent", [(ABORT, lambda d: body(request(d, code=3))),
                                        (CHAT, lambda d: body(request("first")) + body(request(d, abort=3)))],
                         ids=["trailers-only", "trailers after a message"])
def test_a_long_grpc_message_is_split_to_the_clients_max_frame_size(
        client: H2Client, path: str, sent: Callable[[str], bytes]) -> None:
    details = "détails," * 4000  # 32,000 characters, about 40 KB percent-encoded: over 16,384 per frame
    reply = client.call(path, sent(details))  # h2 fails the connection on a frame over its MAX_FRAME_SIZE
    assert reply.status == 3
    assert urllib.parse.unquote(reply.message) == (details if path == ABORT else "aborted at " + details)


def test_server_streaming(client: H2Client) -> None:
    reply = client.call(COUNT, body(request("n", count=3, reply_bytes=40_000)))
    assert "grpc-status" not in reply.headers and reply.status == 0
    assert [(m.id, m.raw_output_contents[0]) for m in answer(reply)] == [
        (f"n-{i}", pattern(40_000, i)) for i in range(3)]
    aborted = client.call(COUNT, body(request("a", count=5, abort_after=2)))
    assert [m.id for m in answer(aborted)] == ["a-0", "a-1"]
    assert "grpc-status" not in aborted.headers
    assert (aborted.status, aborted.message) == (15, "stopped before 2")
    at_once = client.call(COUNT, body(request("b", count=5, abort_after=0)))
    assert at_once.headers["grpc-status"] == "15" and not at_once.data and not at_once.trailers


def test_bidi_answers_before_the_request_ends(client: H2Client) -> None:
    sid = client.start(CHAT, body(request("m0")), end=False)
    reply = client.replies[sid]
    client.pump(lambda: len(reply.messages()) == 1)
    coalesced = body(request("m1")) + body(request("m2", pattern(30_000))) + body(request("m3"))[:4]
    client.send(sid, coalesced, end=False, chunk=7000)  # two messages and a split prefix in odd frames
    client.pump(lambda: len(reply.messages()) == 3)
    client.send(sid, body(request("m3"))[4:], end=True)
    client.wait(sid)
    assert [m.id for m in answer(reply)] == ["m0", "m1", "m2", "m3"]
    assert answer(reply)[2].raw_output_contents[0] == pattern(30_000)
    assert reply.status == 0


@pytest.mark.parametrize("ending, code", [(grpc_frame(b"")[:1] + (LIMIT + 1).to_bytes(4, "big"), 8),
                                          (body(request("cut"))[:-2], 13)],
                         ids=["message over the limit", "ends inside a message"])
def test_a_bidi_call_that_fails_on_its_input_ends_its_handler(
        client: H2Client, service: EchoService, ending: bytes, code: int) -> None:
    sid = client.start(CHAT, body(request("first")), end=False)
    client.pump(lambda: len(client.replies[sid].messages()) == 1)
    client.send(sid, ending, end=code == 13)
    assert client.wait(sid).status == code
    assert service.ended.get(timeout=WAIT_S) == "first"


def test_a_bidi_abort_after_some_replies(client: H2Client) -> None:
    sid = client.start(CHAT, body(request("a")) + body(request("b")) + body(request("c", abort=9)))
    reply = client.wait(sid)
    assert [m.id for m in answer(reply)] == ["a", "b"]
    assert (reply.status, reply.message) == (9, "aborted at c")


def test_rst_stream_from_the_client_cancels_a_unary_handler(client: H2Client, service: EchoService) -> None:
    sid = client.start(SLOW, body(request("unary")))
    assert service.started.get(timeout=WAIT_S) == "unary"
    client.conn.reset_stream(sid, CANCEL)
    client.flush()
    assert service.cancelled.get(timeout=WAIT_S) == "unary"
    assert client.call(INFER, body(request("next"))).status == 0


def test_rst_stream_from_the_client_cancels_a_server_streaming_handler(
        client: H2Client, service: EchoService) -> None:
    sid = client.start(COUNT, body(request("stream", count=2, hold=1)))
    assert service.started.get(timeout=WAIT_S) == "stream"
    client.pump(lambda: len(client.replies[sid].messages()) == 2)
    client.conn.reset_stream(sid, CANCEL)
    client.flush()
    assert service.cancelled.get(timeout=WAIT_S) == "stream"
    assert client.call(INFER, body(request("next"))).status == 0


def test_rst_stream_from_the_client_cancels_a_bidi_handler(client: H2Client, service: EchoService) -> None:
    sid = client.start(CHAT, body(request("bidi")), end=False)
    client.pump(lambda: len(client.replies[sid].messages()) == 1)
    client.conn.reset_stream(sid, CANCEL)
    client.flush()
    assert service.cancelled.get(timeout=WAIT_S) == "bidi"
    assert service.ended.get(timeout=WAIT_S) == "bidi"
    assert client.call(INFER, body(request("next"))).status == 0
