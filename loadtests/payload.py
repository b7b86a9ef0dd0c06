"""Request payloads: tensors from a model's metadata or an .npz file, encoded once per protocol.

The encoders produce exactly what goes on the wire (a serialised ModelInferRequest, a binary-extension
body with its JSON header length, or a JSON body), so the load loops only ever send prepared bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from gateway.protocol.pb import grpc_service_pb2 as pb

NUMPY_OF = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
# Random integers stay small so that they are valid indices for embedding-style inputs.
INT_HIGH = 10
BYTES_ELEMENT = 8


@dataclass(frozen=True)
class TensorSpec:
    """A tensor as model metadata declares it; -1 marks a variable dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    array: np.ndarray[Any, Any]

    @property
    def shape(self) -> list[int]:
        return [int(d) for d in self.array.shape]

    def raw(self) -> bytes:
        """Little-endian row-major bytes; BYTES elements carry a 4-byte length prefix each."""
        if self.datatype == "BYTES":
            return b"".join(struct.pack("<I", len(e)) + e for e in _as_bytes_list(self.array))
        return np.ascontiguousarray(self.array, dtype=self.array.dtype.newbyteorder("<")).tobytes()

    def json_data(self) -> list[Any]:
        if self.datatype == "BYTES":
            return [e.decode("utf-8", "replace") for e in _as_bytes_list(self.array)]
        return list(self.array.reshape(-1).tolist())


def _as_bytes_list(array: np.ndarray[Any, Any]) -> list[bytes]:
    return [e if isinstance(e, bytes) else str(e).encode() for e in array.reshape(-1)]


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    try:
        return NUMPY_OF[datatype]
    except KeyError:
        raise ValueError(f"unknown datatype {datatype!r}; expected one of {sorted(NUMPY_OF)}") from None


def concrete_shape(shape: Sequence[int], rows: int) -> tuple[int, ...]:
    """Replaces every variable (-1) dimension with `rows`."""
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    return tuple(rows if d < 0 else int(d) for d in shape)


def random_tensors(specs: Sequence[TensorSpec], rows: int, seed: int = 0) -> list[Tensor]:
    """Random data of the declared datatype: floats in [0, 1), small integers, short byte strings."""
    rng = np.random.default_rng(seed)
    out = []
    for spec in specs:
        shape = concrete_shape(spec.shape, rows)
        out.append(Tensor(spec.name, spec.datatype, _random_array(rng, spec.datatype, shape)))
    return out


def _random_array(rng: np.random.Generator, datatype: str, shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    dtype = numpy_dtype(datatype)
    if datatype == "BYTES":
        flat = [bytes(rng.integers(97, 123, BYTES_ELEMENT, dtype=np.uint8)) for _ in range(int(np.prod(shape)))]
        return np.array(flat, dtype=np.object_).reshape(shape)
    if datatype == "BOOL":
        return rng.integers(0, 2, shape).astype(np.bool_)
    if dtype.kind in "iu":
        return rng.integers(0, INT_HIGH, shape).astype(dtype)
    return rng.random(shape).astype(dtype)


def npz_tensors(path: Path, specs: Sequence[TensorSpec] | None = None) -> list[Tensor]:
    """Tensors from an .npz file; with metadata, arrays are matched by name and checked for datatype."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    if specs is None:
        return [Tensor(name, _datatype_of(a), a) for name, a in arrays.items()]
    missing = [s.name for s in specs if s.name not in arrays]
    if missing:
        raise ValueError(f"{path} lacks input(s) {missing}; it holds {sorted(arrays)}")
    out = []
    for spec in specs:
        array = arrays[spec.name]
        if spec.datatype != "BYTES" and array.dtype != numpy_dtype(spec.datatype):
            array = array.astype(numpy_dtype(spec.datatype))
        out.append(Tensor(spec.name, spec.datatype, array))
    return out


def _datatype_of(array: np.ndarray[Any, Any]) -> str:
    for name, dtype in NUMPY_OF.items():
        if array.dtype == dtype:
            return name
    if array.dtype.kind in "SU":
        return "BYTES"
    raise ValueError(f"no protocol datatype for numpy dtype {array.dtype}")


def rows_of(tensors: Sequence[Tensor]) -> int:
    """Rows per request: the first dimension of the first input (1 for a scalar)."""
    return tensors[0].shape[0] if tensors and tensors[0].shape else 1


@dataclass(frozen=True)
class RestBody:
    body: bytes
    headers: dict[str, str]


def grpc_request(model: str, version: str, tensors: Sequence[Tensor]) -> bytes:
    """A serialised ModelInferRequest carrying every input as raw contents."""
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    for t in tensors:
        request.inputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        request.raw_input_contents.append(t.raw())
    return bytes(request.SerializeToString())


def rest_binary_body(tensors: Sequence[Tensor]) -> RestBody:
    """The binary tensor extension: JSON header, then each input's bytes, outputs asked back in binary."""
    raws = [t.raw() for t in tensors]
    header = orjson.dumps({
        "inputs": [
            {"name": t.name, "shape": t.shape, "datatype": t.datatype,
             "parameters": {"binary_data_size": len(raw)}}
            for t, raw in zip(tensors, raws, strict=True)
        ],
        "parameters": {"binary_data_output": True},
    })
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
    return RestBody(header + b"".join(raws), headers)


def rest_json_body(tensors: Sequence[Tensor]) -> RestBody:
    body = orjson.dumps({
        "inputs": [{"name": t.name, "shape": t.shape, "datatype": t.datatype, "data": t.json_data()}
                   for t in tensors],
    })
    return RestBody(body, {"Content-Type": "application/json"})


def infer_path(model: str, version: str) -> str:
    return f"/v2/models/{model}/versions/{version}/infer" if version else f"/v2/models/{model}/infer"


def grpc_frame(message: bytes) -> bytes:
    """gRPC length-prefixed message: uncompressed flag, 4-byte big-endian length, then the message."""
    return b"\x00" + len(message).to_bytes(4, "big") + message
