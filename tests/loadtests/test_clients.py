"""Callers carry the extra headers and sticky user keys on the wire, for gRPC and for REST alike."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import orjson
import pytest

from gateway.protocol.pb import grpc_service_pb2 as pb
from loadtests.clients import CallerPool, Workload
from loadtests.payload import TensorSpec, grpc_request, random_tensors, rest_json_body

SPEC = [TensorSpec("x", "FP32", (-1, 2))]
HEADERS = (("X-Servegate-Version", "2"),)


def test_header_sets_add_one_user_key_per_sticky_user() -> None:
    work = Workload("grpc", "h:1", "", b"", (), headers=HEADERS, sticky_keys=3)
    sets = work.header_sets()
    assert len(sets) == 3
    assert {dict(s)["x-user-id"] for s in sets} == {"user-0", "user-1", "user-2"}
    assert all(dict(s)["x-servegate-version"] == "2" for s in sets)
    assert Workload("grpc", "h:1", "", b"", ()).header_sets() == [()]


async def _grpc_seen(calls: int) -> list[dict[str, str]]:
    seen: list[dict[str, str]] = []

    async def infer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        seen.append({k: v for k, v in context.invocation_metadata() or ()})
        reply = pb.ModelInferResponse(model_name="m")
        reply.outputs.add(name="x", datatype="FP32", shape=[1, 2])
        reply.raw_output_contents.append(b"\0" * 8)
        return bytes(reply.SerializeToString())

    handler = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService", {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)})
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    body = grpc_request("m", "", random_tensors(SPEC, 1))
    work = Workload("grpc", f"127.0.0.1:{port}", "", body, (), headers=HEADERS, sticky_keys=4,
                    expected_outputs=("x",), check_every=1)
    pool = CallerPool(work)
    try:
        (caller,) = await pool.open(1)
        outcomes = [await caller.call() for _ in range(calls)]
    finally:
        await pool.close()
        await server.stop(None)
    assert outcomes == ["OK"] * calls and pool.samples.checked == calls and pool.samples.failed == 0
    return seen


def test_grpc_metadata_carries_headers_and_user_keys() -> None:
    seen = asyncio.run(_grpc_seen(40))
    assert all(s["x-servegate-version"] == "2" for s in seen)
    users = {s["x-user-id"] for s in seen}
    assert users <= {f"user-{i}" for i in range(4)} and len(users) > 1


async def _rest_seen(calls: int, reply_body: bytes) -> tuple[list[str], list[bytes]]:
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(ln.split(b":")[1] for ln in head.split(b"\r\n")
                                  if ln.lower().startswith(b"content-length")))
                await reader.readexactly(length)
                heads.append(head)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(reply_body) + reply_body)
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    rest = rest_json_body(random_tensors(SPEC, 1))
    work = Workload("rest-json", f"127.0.0.1:{port}", "/v2/models/m/infer", rest.body,
                    tuple(rest.headers.items()), headers=HEADERS, sticky_keys=4, expected_outputs=("x",),
                    check_every=1)
    pool = CallerPool(work)
    try:
        (caller,) = await pool.open(1)
        outcomes = [await caller.call() for _ in range(calls)]
    finally:
        await pool.close()
        server.close()
        await server.wait_closed()
    return outcomes, heads


def test_rest_requests_carry_headers_and_user_keys_on_one_connection() -> None:
    reply = orjson.dumps({"outputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [0, 0]}]})
    outcomes, heads = asyncio.run(_rest_seen(30, reply))
    assert outcomes == ["OK"] * 30 and len(heads) == 30
    assert all(b"x-servegate-version: 2" in h.lower() for h in heads)
    users = {h.lower().split(b"x-user-id: ")[1].split(b"\r\n")[0] for h in heads}
    assert users <= {b"user-%d" % i for i in range(4)} and len(users) > 1


@pytest.mark.parametrize("body", [b"{}", b"not json"])
def test_a_reply_without_the_expected_outputs_is_a_bad_reply(body: bytes) -> None:
    outcomes, _ = asyncio.run(_rest_seen(2, body))
    assert outcomes == ["bad-reply", "bad-reply"]


def test_unreachable_grpc_target_is_a_clear_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    work = Workload("grpc", f"127.0.0.1:{port}", "", b"", (), timeout_s=0.5)

    async def open_pool() -> Any:
        pool = CallerPool(work)
        try:
            await pool.open(1)
        finally:
            await pool.close()

    with pytest.raises(RuntimeError, match="no gRPC connection"):
        asyncio.run(open_pool())
