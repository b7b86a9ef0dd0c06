"""Bad input against a running gateway: every mistake gets the right status and names the field.

Each call goes through the real listeners (gRPC with tritonclient and raw stubs, HTTP with a raw
socket so framing errors can be sent as they are), and a good request right after still succeeds.
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

import grpc
import numpy as np
import orjson
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

from gateway.protocol.pb import grpc_service_pb2 as pb
from tests.gateway.harness import GatewayThread

pytestmark = pytest.mark.integration


def post(served: GatewayThread, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    assert served.endpoints is not None
    host, port = served.endpoints.http.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("POST", path, body, headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, json.loads(data) if data else None
    finally:
        conn.close()


def grpc_infer(served: GatewayThread, msg: pb.ModelInferRequest, timeout: float = 10) -> pb.ModelInferResponse:
    assert served.endpoints is not None
    with grpc.insecure_channel(served.endpoints.grpc) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                   request_serializer=pb.ModelInferRequest.SerializeToString,
                                   response_deserializer=pb.ModelInferResponse.FromString)
        return call(msg, timeout=timeout)


def mlp_json(rows: int = 1, width: int = 784, name: str = "input", datatype: str = "FP32") -> bytes:
    return orjson.dumps({"inputs": [{"name": name, "datatype": datatype, "shape": [rows, width],
                                     "data": [0.5] * (rows * width)}]})


def test_unknown_model_and_version_are_not_found(served: GatewayThread) -> None:
    status, body = post(served, "/v2/models/nope/infer", mlp_json())
    assert status == 404 and "unknown model 'nope'" in body["error"]
    status, body = post(served, "/v2/models/mlp/versions/9/infer", mlp_json())
    assert status == 404 and "has no version '9'" in body["error"]
    assert served.endpoints is not None
    client = tgrpc.InferenceServerClient(served.endpoints.grpc)
    try:
        item = tgrpc.InferInput("input", [1, 784], "FP32")
        item.set_data_from_numpy(np.zeros((1, 784), np.float32))
        with pytest.raises(InferenceServerException) as err:
            client.infer("nope", [item])
        assert err.value.status() == "StatusCode.NOT_FOUND"
        assert not client.is_model_ready("nope")
    finally:
        client.close()


@pytest.mark.parametrize(("body", "fragment"), [
    (mlp_json(name="pixels"), "unknown input(s) ['pixels']"),
    (mlp_json(datatype="FP64"), "datatype FP64 does not match the model's FP32"),
    (mlp_json(width=783), "shape [1, 783] does not match [-1, 784] at dimension 1"),
    (b"{\"inputs\": [", "request body is not valid JSON"),
    (orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784], "data": [1, 2]}]}),
     "has 2 elements; shape [1, 784] needs 784"),
])
def test_http_invalid_requests_are_400_naming_the_field(served: GatewayThread, body: bytes, fragment: str) -> None:
    status, doc = post(served, "/v2/models/mlp/infer", body)
    assert status == 400
    assert fragment in doc["error"]
    ok, _ = post(served, "/v2/models/mlp/infer", mlp_json())
    assert ok == 200


def test_http_binary_framing_errors_are_400(served: GatewayThread) -> None:
    head = orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784],
                                     "parameters": {"binary_data_size": 3136}}]})
    good = head + np.zeros(784, np.float32).tobytes()
    status, _ = post(served, "/v2/models/mlp/infer", good, {"Inference-Header-Content-Length": str(len(head))})
    assert status == 200
    status, doc = post(served, "/v2/models/mlp/infer", good[:-8], {"Inference-Header-Content-Length": str(len(head))})
    assert status == 400 and "runs past the end of the binary data" in doc["error"]
    status, doc = post(served, "/v2/models/mlp/infer", good, {"Inference-Header-Content-Length": "10"})
    assert status == 400 and "not valid JSON" in doc["error"]


def test_grpc_byte_size_mismatch_is_invalid_argument(served: GatewayThread) -> None:
    msg = pb.ModelInferRequest(model_name="mlp")
    msg.inputs.add(name="input", datatype="FP32", shape=[1, 784])
    msg.raw_input_contents.append(b"\x00" * 100)
    with pytest.raises(grpc.RpcError) as err:
        grpc_infer(served, msg)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "has 100 bytes of data; shape [1, 784] of FP32 needs 3136" in (err.value.details() or "")


def test_batch_over_the_limit_names_max_batch_size(served: GatewayThread) -> None:
    status, doc = post(served, "/v2/models/mlp/infer", mlp_json(rows=65))
    assert status == 400 and "exceeds max_batch_size 64" in doc["error"]


def test_one_bad_value_in_a_burst_fails_alone(served: GatewayThread) -> None:
    """`mixed` gathers an embedding by category: 99 is out of range and makes the runtime fail."""
    assert served.endpoints is not None
    client = thttp.InferenceServerClient(served.endpoints.http, concurrency=16)
    try:
        futures = []
        for i in range(16):
            feats = thttp.InferInput("features", [1, 4], "FP32")
            feats.set_data_from_numpy(np.full((1, 4), float(i), np.float32))
            cat = thttp.InferInput("category", [1, 1], "INT64")
            cat.set_data_from_numpy(np.array([[99 if i == 5 else i % 16]], np.int64))
            futures.append(client.async_infer("mixed", [feats, cat]))
        outcomes: list[Any] = []
        for fut in futures:
            try:
                outcomes.append(fut.get_result().as_numpy("score"))
            except InferenceServerException as exc:
                outcomes.append(exc)
    finally:
        client.close()
    failed = [i for i, o in enumerate(outcomes) if isinstance(o, InferenceServerException)]
    assert failed == [5]
    assert "inference failed" in str(outcomes[5])


def test_oversized_body_is_refused_from_its_content_length(served: GatewayThread) -> None:
    """The server answers 413 after the headers, without waiting for (or reading) the body."""
    assert served.endpoints is not None
    host, port = served.endpoints.http.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 999999999999\r\n\r\n{")
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413")
    assert b"exceeds the limit" in reply


def test_unknown_route_and_method(served: GatewayThread) -> None:
    status, doc = post(served, "/v2/nothing/here", b"{}")
    assert status == 404 and "no route" in doc["error"]
    status, doc = post(served, "/v2/health/live", b"")
    assert status == 405
