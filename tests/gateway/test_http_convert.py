"""REST converters without a server: JSON and binary tensors, framing errors, binary outputs."""

from __future__ import annotations

import gzip

import numpy as np
import orjson
import pytest

from gateway.errors import InvalidInput, PayloadTooLarge
from gateway.protocol import http_convert
from gateway.types import InferOutput, InferResponse


def binary_body(arrays: dict[str, np.ndarray], extra: bytes = b"") -> tuple[bytes, dict[str, str]]:
    inputs = [{"name": n, "datatype": "FP32", "shape": list(a.shape),
               "parameters": {"binary_data_size": a.nbytes}} for n, a in arrays.items()]
    head = orjson.dumps({"inputs": inputs})
    body = head + b"".join(a.tobytes() for a in arrays.values()) + extra
    return body, {"inference-header-content-length": str(len(head))}


def test_json_nested_data_is_read_with_its_shape() -> None:
    body = orjson.dumps({"id": "a", "inputs": [{"name": "x", "datatype": "INT64", "shape": [2, 2], "data": [[1, 2], [3, 4]]}]})
    req = http_convert.parse_infer(body, {}, "m", "")
    np.testing.assert_array_equal(req.inputs[0].data, np.array([[1, 2], [3, 4]], np.int64))
    assert req.id == "a" and req.protocol == "http"


def test_binary_inputs_are_views_of_the_body() -> None:
    a, b = np.ones((1, 3), np.float32), np.full((1, 2), 2.0, np.float32)
    body, headers = binary_body({"a": a, "b": b})
    req = http_convert.parse_infer(body, headers, "m", "")
    np.testing.assert_array_equal(req.inputs[0].data, a)
    np.testing.assert_array_equal(req.inputs[1].data, b)


@pytest.mark.parametrize(("body", "headers", "message"), [
    (b"{not json", {}, "request body is not valid JSON"),
    (b"[1, 2]", {}, "expected a JSON object"),
    (b'{"inputs": []}', {}, "inputs: expected a non-empty list"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2]}]}', {}, r"inputs\[0\] 'x': no data"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": [1, 2]}]}', {}, "has 2 elements; shape \\[3\\] needs 3"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}]}', {}, "must hold non-negative integers"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": ["a"]}]}', {}, "cannot be read as FP32"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}', {"inference-header-content-length": "999"}, "larger than the body"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}', {"inference-header-content-length": "abc"}, "expected a byte count"),
])
def test_malformed_bodies_are_invalid_input(body: bytes, headers: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        http_convert.parse_infer(body, headers, "m", "")


def test_binary_size_past_the_end_is_refused() -> None:
    body, headers = binary_body({"a": np.ones((1, 4), np.float32)})
    with pytest.raises(InvalidInput, match="runs past the end of the binary data"):
        http_convert.parse_infer(body[:-4], headers, "m", "")


def test_trailing_binary_bytes_are_refused() -> None:
    body, headers = binary_body({"a": np.ones((1, 4), np.float32)}, extra=b"xx")
    with pytest.raises(InvalidInput, match="2 bytes beyond"):
        http_convert.parse_infer(body, headers, "m", "")


def test_outputs_go_binary_when_asked_and_json_otherwise() -> None:
    y = np.arange(4, dtype=np.float32).reshape(2, 2)
    label = np.array([1, 0], np.int64)
    response = InferResponse("m", "2", [InferOutput("y", "FP32", (2, 2), y), InferOutput("label", "INT64", (2,), label)])
    body = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [0]}],
                         "outputs": [{"name": "y", "parameters": {"binary_data": True}}, {"name": "label"}]})
    request = http_convert.parse_infer(body, {}, "m", "")
    payload, content_type, headers = http_convert.encode_infer(response, request)
    assert content_type == "application/octet-stream"
    n = int(dict(headers)["inference-header-content-length"])
    doc = orjson.loads(payload[:n])
    assert doc["model_version"] == "2"
    assert doc["outputs"][0]["parameters"]["binary_data_size"] == 16
    assert doc["outputs"][1]["data"] == [1, 0]
    np.testing.assert_array_equal(np.frombuffer(payload[n:], np.float32).reshape(2, 2), y)


def test_gzip_bodies_are_inflated_within_the_limit() -> None:
    raw = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]})
    assert http_convert.decode_body(gzip.compress(raw), {"content-encoding": "gzip"}, 1000) == raw
    with pytest.raises(PayloadTooLarge):
        http_convert.decode_body(gzip.compress(b"0" * 10_000), {"content-encoding": "gzip"}, 1000)
    with pytest.raises(InvalidInput, match="not valid gzip"):
        http_convert.decode_body(b"plain", {"content-encoding": "gzip"}, 1000)
