"""gRPC converters without a server: raw and typed inputs, size checks, raw outputs, parameters."""

from __future__ import annotations

import time

import numpy as np
import pytest
from google.protobuf.message import DecodeError

from gateway.errors import InvalidInput
from gateway.protocol import grpc_convert
from gateway.protocol.pb import grpc_service_pb2 as pb
from gateway.types import InferOutput, InferResponse


def raw_request(array: np.ndarray, datatype: str = "FP32") -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="m", id="r1")
    msg.inputs.add(name="x", datatype=datatype, shape=list(array.shape))
    msg.raw_input_contents.append(array.tobytes())
    return msg


def test_raw_input_becomes_an_array_of_its_shape() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    req = grpc_convert.to_request(raw_request(x), {"x-user-id": "7"}, None)
    np.testing.assert_array_equal(req.inputs[0].data, x)
    assert (req.model, req.id, req.protocol, req.routing["x-user-id"]) == ("m", "r1", "grpc", "7")


def test_typed_contents_are_read() -> None:
    msg = pb.ModelInferRequest(model_name="m")
    t = msg.inputs.add(name="c", datatype="INT64", shape=[2, 1])
    t.contents.int64_contents.extend([3, 4])
    req = grpc_convert.to_request(msg, {}, None)
    np.testing.assert_array_equal(req.inputs[0].data, np.array([[3], [4]], np.int64))


def test_wrong_byte_count_names_the_input_and_expected_size() -> None:
    msg = raw_request(np.zeros((2, 3), np.float32))
    msg.raw_input_contents[0] = b"\x00" * 20
    with pytest.raises(InvalidInput, match=r"inputs\[0\] 'x' .raw_input_contents\[0\].: has 20 bytes.*needs 24"):
        grpc_convert.to_request(msg, {}, None)


def test_unknown_datatype_lists_the_known_ones() -> None:
    with pytest.raises(InvalidInput, match="unknown datatype 'FP33'; expected one of BOOL"):
        grpc_convert.to_request(raw_request(np.zeros(2, np.float32), "FP33"), {}, None)


def test_raw_entries_must_match_inputs() -> None:
    msg = raw_request(np.zeros(2, np.float32))
    msg.raw_input_contents.append(b"")
    with pytest.raises(InvalidInput, match="raw_input_contents has 2 entries for 1 inputs"):
        grpc_convert.to_request(msg, {}, None)


def test_raw_and_typed_together_are_refused() -> None:
    msg = raw_request(np.zeros(2, np.float32))
    msg.inputs[0].contents.fp32_contents.extend([1.0, 2.0])
    with pytest.raises(InvalidInput, match="both raw_input_contents and typed contents"):
        grpc_convert.to_request(msg, {}, None)


def test_timeout_parameter_sets_a_deadline() -> None:
    msg = raw_request(np.zeros(2, np.float32))
    msg.parameters["timeout"].int64_param = 5_000_000
    before = time.monotonic()
    req = grpc_convert.to_request(msg, {}, None)
    assert req.deadline is not None and before + 4.9 <= req.deadline <= time.monotonic() + 5.0


def test_response_carries_raw_outputs_in_order() -> None:
    y = np.arange(4, dtype=np.float32).reshape(2, 2)
    label = np.array([1, 0], np.int64)
    resp = InferResponse("m", "3", [InferOutput("y", "FP32", (2, 2), y), InferOutput("label", "INT64", (2,), label)], "r1")
    msg = grpc_convert.to_response(resp)
    assert [o.name for o in msg.outputs] == ["y", "label"]
    assert msg.model_version == "3" and msg.id == "r1"
    np.testing.assert_array_equal(np.frombuffer(msg.raw_output_contents[0], np.float32).reshape(2, 2), y)
    np.testing.assert_array_equal(np.frombuffer(msg.raw_output_contents[1], np.int64), label)


def test_bytes_tensors_round_trip_length_prefixed() -> None:
    words = np.array([b"ab", b"", b"xyz"], dtype=object)
    msg = grpc_convert.to_response(InferResponse("m", "1", [InferOutput("w", "BYTES", (3,), words)]))
    back = raw_request(np.zeros(1))
    back.inputs[0].datatype, back.inputs[0].shape[:] = "BYTES", [3]
    back.raw_input_contents[0] = msg.raw_output_contents[0]
    assert list(grpc_convert.to_request(back, {}, None).inputs[0].data) == [b"ab", b"", b"xyz"]


# --- parse_infer: large messages keep their raw contents as views -------------------------------------


def _large_request(rows: int = 40) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="mlp", model_version="1", id="req-7")
    msg.parameters["timeout"].int64_param = 5_000_000
    a = np.arange(rows * 784, dtype=np.float32).reshape(rows, 784)
    b = np.arange(rows, dtype=np.int64).reshape(rows, 1)
    msg.inputs.add(name="input", datatype="FP32", shape=[rows, 784])
    msg.inputs.add(name="category", datatype="INT64", shape=[rows, 1])
    msg.outputs.add(name="probabilities")
    msg.raw_input_contents.extend([a.tobytes(), b.tobytes()])
    return msg


def test_parse_infer_splits_raw_contents_off_a_large_message_without_changing_anything_else() -> None:
    msg = _large_request()
    data = msg.SerializeToString()
    assert len(data) >= grpc_convert.SPLIT_RAW_BYTES
    parsed = grpc_convert.parse_infer(memoryview(data))
    assert isinstance(parsed, grpc_convert.InferMessage)
    assert [bytes(v) for v in parsed.raw] == list(msg.raw_input_contents)
    assert all(v.obj is data for v in parsed.raw)  # views of the received bytes, not copies
    stripped = pb.ModelInferRequest()
    stripped.CopyFrom(msg)
    del stripped.raw_input_contents[:]
    assert parsed.msg == stripped
    request = grpc_convert.to_request(parsed.msg, {}, None, parsed.raw)
    direct = grpc_convert.to_request(msg, {}, None)
    assert [i.name for i in request.inputs] == [i.name for i in direct.inputs]
    for got, want in zip(request.inputs, direct.inputs, strict=True):
        np.testing.assert_array_equal(got.data, want.data)
    assert request.id == "req-7" and request.parameters == direct.parameters


def test_parse_infer_leaves_small_messages_to_protobuf_and_reports_malformed_large_ones() -> None:
    small = pb.ModelInferRequest(model_name="mlp", raw_input_contents=[b"\0" * 16])
    assert grpc_convert.parse_infer(small.SerializeToString()) == small
    data = _large_request().SerializeToString()
    with pytest.raises(DecodeError):
        grpc_convert.parse_infer(data[:-10])  # the last field's length runs past the end
    with pytest.raises(DecodeError):
        grpc_convert.parse_infer(data + b"\x0f")  # wire type 7 does not exist
