"""Payloads from model metadata or .npz files, and their wire encodings (gRPC raw, REST binary, JSON)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import orjson
import pytest

from gateway.protocol.pb import grpc_service_pb2 as pb
from loadtests.payload import (
    Tensor,
    TensorSpec,
    grpc_frame,
    grpc_request,
    infer_path,
    npz_tensors,
    random_tensors,
    rest_binary_body,
    rest_json_body,
    rows_of,
)

TABULAR = TensorSpec("features", "FP32", (-1, 30))
MIXED = (TensorSpec("features", "FP32", (-1, 4)), TensorSpec("category", "INT64", (-1, 1)))


def test_variable_dims_take_the_row_count_and_datatypes_follow_metadata() -> None:
    tensors = random_tensors([*MIXED, TensorSpec("flag", "BOOL", (-1,)), TensorSpec("half", "FP16", (2, -1))], 5)
    assert [t.shape for t in tensors] == [[5, 4], [5, 1], [5], [2, 5]]
    assert [t.array.dtype for t in tensors] == [np.float32, np.int64, np.bool_, np.float16]
    assert rows_of(tensors) == 5
    assert ((tensors[1].array >= 0) & (tensors[1].array < 10)).all()


def test_unknown_datatype_and_bad_rows_are_refused() -> None:
    with pytest.raises(ValueError, match="datatype"):
        random_tensors([TensorSpec("x", "FP8", (-1,))], 1)
    with pytest.raises(ValueError, match="rows"):
        random_tensors([TABULAR], 0)


def test_grpc_request_carries_raw_contents_in_input_order() -> None:
    tensors = random_tensors(MIXED, 3, seed=4)
    req = pb.ModelInferRequest.FromString(grpc_request("mixed", "2", tensors))
    assert (req.model_name, req.model_version) == ("mixed", "2")
    assert [(i.name, i.datatype, list(i.shape)) for i in req.inputs] == [
        ("features", "FP32", [3, 4]), ("category", "INT64", [3, 1])]
    got = np.frombuffer(req.raw_input_contents[1], dtype="<i8").reshape(3, 1)
    np.testing.assert_array_equal(got, tensors[1].array)


def test_rest_binary_body_is_json_header_then_chunks_in_order() -> None:
    tensors = random_tensors(MIXED, 2, seed=9)
    rest = rest_binary_body(tensors)
    header_len = int(rest.headers["Inference-Header-Content-Length"])
    header = orjson.loads(rest.body[:header_len])
    sizes = [i["parameters"]["binary_data_size"] for i in header["inputs"]]
    assert sizes == [2 * 4 * 4, 2 * 1 * 8]
    assert header_len + sum(sizes) == len(rest.body)
    assert header["parameters"]["binary_data_output"] is True
    first = np.frombuffer(rest.body[header_len:header_len + sizes[0]], dtype="<f4").reshape(2, 4)
    np.testing.assert_array_equal(first, tensors[0].array)
    assert rest.headers["Content-Type"] == "application/octet-stream"


def test_bytes_tensors_use_four_byte_length_prefixes() -> None:
    tensor = Tensor("s", "BYTES", np.array([b"ab", b"xyz"], dtype=np.object_))
    assert tensor.raw() == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 3) + b"xyz"
    assert tensor.json_data() == ["ab", "xyz"]


def test_rest_json_body_has_flat_data_arrays() -> None:
    tensors = random_tensors([TABULAR], 2)
    doc = orjson.loads(rest_json_body(tensors).body)
    data = doc["inputs"][0]["data"]
    assert len(data) == 60 and data == pytest.approx(tensors[0].array.reshape(-1).tolist())
    assert "binary_data_size" not in orjson.dumps(doc).decode()


def test_npz_inputs_match_metadata_by_name_and_cast(tmp_path: Path) -> None:
    path = tmp_path / "in.npz"
    np.savez(path, category=np.ones((3, 1), dtype=np.int32), features=np.zeros((3, 4), dtype=np.float64))
    tensors = npz_tensors(path, MIXED)
    assert [t.name for t in tensors] == ["features", "category"]
    assert [t.array.dtype for t in tensors] == [np.float32, np.int64]
    with pytest.raises(ValueError, match="lacks"):
        npz_tensors(path, [TensorSpec("other", "FP32", (-1,))])
    bare = npz_tensors(path)
    assert {t.name: t.datatype for t in bare} == {"category": "INT32", "features": "FP64"}


def test_paths_and_grpc_frame() -> None:
    assert infer_path("mlp", "") == "/v2/models/mlp/infer"
    assert infer_path("mlp", "3") == "/v2/models/mlp/versions/3/infer"
    framed = grpc_frame(b"abc")
    assert framed[0] == 0 and int.from_bytes(framed[1:5], "big") == 3 and framed[5:] == b"abc"
