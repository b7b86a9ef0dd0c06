"""The baseline echo servers: discoverable like a real server, and replies that mirror the request."""

from __future__ import annotations

import asyncio

import grpc
import orjson
import pytest

from gateway.protocol.pb import grpc_service_pb2 as pb
from loadtests.baseline import parse_shape
from loadtests.httpclient import fetch
from loadtests.metadata import DiscoveryError, discover, split_hostport
from loadtests.payload import TensorSpec, grpc_request, random_tensors, rest_binary_body, rest_json_body
from loadtests.services import Service, parse_banner

pytestmark = pytest.mark.integration
MLP = TensorSpec("input", "FP32", (-1, 784))


def test_signature_is_discoverable_over_both_protocols(echo: Service) -> None:
    for sig in (discover(echo.grpc, None, "mlp"), discover(None, echo.http, "mlp")):
        assert sig.inputs == (MLP,)
        assert sig.outputs == (MLP,)


def test_unknown_model_fails_discovery(echo: Service) -> None:
    with pytest.raises(DiscoveryError, match="NOT_FOUND"):
        discover(echo.grpc, None, "nope")
    with pytest.raises(DiscoveryError, match="404"):
        discover(None, echo.http, "nope")


async def _grpc_infer(target: str, body: bytes) -> pb.ModelInferResponse:
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                   response_deserializer=pb.ModelInferResponse.FromString)
        return await call(body)


def test_grpc_echo_returns_the_raw_inputs_as_outputs(echo: Service) -> None:
    tensors = random_tensors([MLP], 2, seed=5)
    reply = asyncio.run(_grpc_infer(echo.grpc or "", grpc_request("mlp", "", tensors)))
    assert [(o.name, o.datatype, list(o.shape)) for o in reply.outputs] == [("input", "FP32", [2, 784])]
    assert reply.raw_output_contents[0] == tensors[0].raw()
    assert reply.model_version == "1"


def _post(target: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
    host, port = split_hostport(target)
    reply = asyncio.run(fetch(host, port, "POST", path, headers, body))
    return reply.status, reply.headers, reply.body


def test_http_echo_binary_round_trip(echo: Service) -> None:
    tensors = random_tensors([MLP], 3, seed=2)
    rest = rest_binary_body(tensors)
    status, headers, body = _post(echo.http or "", "/v2/models/mlp/infer", rest.headers, rest.body)
    assert status == 200
    split = int(headers["inference-header-content-length"])
    out = orjson.loads(body[:split])["outputs"][0]
    assert out["shape"] == [3, 784] and out["parameters"]["binary_data_size"] == 3 * 784 * 4
    assert body[split:] == tensors[0].raw()


def test_http_echo_json_round_trip_and_errors(echo: Service) -> None:
    tensors = random_tensors([MLP], 1, seed=3)
    rest = rest_json_body(tensors)
    status, _, body = _post(echo.http or "", "/v2/models/mlp/versions/1/infer", rest.headers, rest.body)
    assert status == 200
    assert orjson.loads(body)["outputs"][0]["data"] == pytest.approx(tensors[0].json_data())
    status, _, body = _post(echo.http or "", "/v2/models/mlp/infer", rest.headers, b"{not json")
    assert status == 400 and "error" in orjson.loads(body)
    status, _, _ = _post(echo.http or "", "/v2/models/other/infer", rest.headers, rest.body)
    assert status == 404


def test_health_and_server_metadata(echo: Service) -> None:
    host, port = split_hostport(echo.http or "")
    live = asyncio.run(fetch(host, port, "GET", "/v2/health/live"))
    meta = asyncio.run(fetch(host, port, "GET", "/v2"))
    assert live.status == 200 and orjson.loads(live.body) == {"live": True}
    assert "binary_tensor_data" in orjson.loads(meta.body)["extensions"]


def test_banner_and_shape_parsing() -> None:
    assert parse_banner("echo ready grpc=127.0.0.1:5 http=127.0.0.1:6\n") == {
        "grpc": "127.0.0.1:5", "http": "127.0.0.1:6"}
    assert parse_banner("servegate ready http=h:1 grpc=h:2 admin=h:3") == {"http": "h:1", "grpc": "h:2", "admin": "h:3"}
    assert parse_banner("loading model grpc=h:1") is None
    assert parse_shape("x:INT64:-1,1") == TensorSpec("x", "INT64", (-1, 1))
    with pytest.raises(ValueError):
        parse_shape("x:FP33:1")
