"""Pure converters between the gRPC messages and the data plane's values (no server needed to test).

Requests decode raw contents into views of the received bytes (typed contents are read too); replies
always carry raw output contents, which is what tritonclient decodes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
from google.protobuf import json_format

from gateway.errors import InvalidInput
from gateway.protocol import tensors
from gateway.protocol.pb import grpc_service_pb2 as pb
from gateway.types import (
    DATATYPES,
    Datatype,
    InferInput,
    InferRequest,
    InferResponse,
    ParamValue,
    RequestedOutput,
)

# Which typed-contents field carries each datatype.
_TYPED_FIELD = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
    "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
    "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


def params(mapping: Mapping[str, pb.InferParameter]) -> dict[str, ParamValue]:
    out: dict[str, ParamValue] = {}
    for key, p in mapping.items():
        which = p.WhichOneof("parameter_choice")
        if which is not None:
            out[key] = getattr(p, which)
    return out


def set_param(target: Any, key: str, value: ParamValue) -> None:
    p = target[key]
    if isinstance(value, bool):
        p.bool_param = value
    elif isinstance(value, int):
        p.int64_param = value
    elif isinstance(value, float):
        p.double_param = value
    else:
        p.string_param = str(value)


# From this size on, `parse_infer` keeps raw_input_contents as views of the received message: protobuf
# would copy them twice (into its arena, then into a bytes object), which costs more than walking the
# message's few top-level fields in Python.
SPLIT_RAW_BYTES = 64 << 10
_RAW_FIELD = 7  # ModelInferRequest.raw_input_contents


class InferMessage:
    """A ModelInferRequest decoded without its raw_input_contents, which stay views in `raw`."""

    __slots__ = ("msg", "raw")

    def __init__(self, msg: pb.ModelInferRequest, raw: list[memoryview]) -> None:
        self.msg, self.raw = msg, raw


def parse_infer(data: bytes | memoryview) -> pb.ModelInferRequest | InferMessage:
    """Decodes a received ModelInferRequest (the native gRPC engine's decoder for ModelInfer)."""
    if len(data) < SPLIT_RAW_BYTES:
        return pb.ModelInferRequest.FromString(cast(bytes, data))  # protobuf parses any buffer
    view = memoryview(data)
    rest, raw = bytearray(), []
    pos, end = 0, len(view)
    while pos < end:
        start = pos
        key, pos = _varint(view, pos)
        wire = key & 7
        if wire == 2:
            size, pos = _varint(view, pos)
            if key >> 3 == _RAW_FIELD and pos + size <= end:
                raw.append(view[pos:pos + size])
                pos += size
                continue
            pos += size
        elif wire == 0:
            pos = _varint(view, pos)[1]
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            pos = end + 1
        if pos > end:  # malformed: protobuf says how
            return pb.ModelInferRequest.FromString(cast(bytes, data))
        rest += view[start:pos]
    return InferMessage(pb.ModelInferRequest.FromString(bytes(rest)), raw)


def _varint(view: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    end = len(view)
    while pos < end and shift < 64:
        byte = view[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    return 0, end + 1


def to_request(msg: pb.ModelInferRequest, routing: Mapping[str, str], deadline: float | None,
               raw_contents: list[memoryview] | None = None) -> InferRequest:
    """Decodes a ModelInferRequest; `deadline` is the call's own (monotonic clock) or None;
    `raw_contents` replaces `msg.raw_input_contents` when `parse_infer` kept them as views."""
    raw: Any = msg.raw_input_contents if raw_contents is None else raw_contents
    inputs_msg = msg.inputs
    if raw and len(raw) != len(inputs_msg):
        raise InvalidInput(f"raw_input_contents has {len(raw)} entries for {len(inputs_msg)} inputs; "
                           "send one entry per input, in the order of `inputs`")
    if raw:
        inputs = [_raw_input(i, t, raw[i]) for i, t in enumerate(inputs_msg)]
    else:
        inputs = [_typed_input(i, t) for i, t in enumerate(inputs_msg)]
    parameters = params(msg.parameters) if msg.parameters else {}
    timeout_us = parameters.get("timeout")
    if isinstance(timeout_us, int) and not isinstance(timeout_us, bool) and timeout_us > 0:
        own = time.monotonic() + timeout_us / 1e6
        deadline = own if deadline is None else min(deadline, own)
    outputs = [RequestedOutput(o.name, None, _classification(o)) for o in msg.outputs] if msg.outputs else None
    return InferRequest(msg.model_name, msg.model_version, inputs, msg.id, outputs, parameters,
                        deadline, routing, "grpc")


def _classification(o: pb.ModelInferRequest.InferRequestedOutputTensor) -> int:
    p = o.parameters.get("classification")
    return int(p.int64_param) if p is not None and p.WhichOneof("parameter_choice") == "int64_param" else 0


def _where(index: int, t: pb.ModelInferRequest.InferInputTensor) -> str:
    return f"inputs[{index}] '{t.name}'"


def _header(index: int, t: pb.ModelInferRequest.InferInputTensor) -> tuple[Datatype, tuple[int, ...]]:
    if not t.name:
        raise InvalidInput(f"inputs[{index}]: name is empty")
    dt = DATATYPES.get(t.datatype)
    if dt is None:
        dt = tensors.datatype(t.datatype, _where(index, t))  # raises, naming the known datatypes
    shape = tuple(t.shape)
    if shape and min(shape) < 0:
        tensors.shape_of(list(shape), _where(index, t))  # raises with the offending shape
    return dt, shape


def _raw_input(index: int, t: pb.ModelInferRequest.InferInputTensor, raw: bytes | memoryview) -> InferInput:
    dt, shape = _header(index, t)
    if t.HasField("contents") and t.contents.ByteSize():
        raise InvalidInput(f"{_where(index, t)}: carries both raw_input_contents and typed contents; use one")
    expected = math.prod(shape) * dt.itemsize
    if dt.itemsize and len(raw) == expected:  # the common case: no copy, no checks left to do
        return InferInput(t.name, dt.name, shape, np.frombuffer(raw, dtype=dt.numpy).reshape(shape))
    data = tensors.from_raw(raw, dt, shape, f"{_where(index, t)} (raw_input_contents[{index}])")
    return InferInput(t.name, dt.name, shape, data)


def _typed_input(index: int, t: pb.ModelInferRequest.InferInputTensor) -> InferInput:
    dt, shape = _header(index, t)
    where = _where(index, t)
    tensors.shape_of(list(shape), where)
    field = _TYPED_FIELD.get(dt.name)
    if field is None:
        raise InvalidInput(f"{where}: {dt.name} can only be sent in raw_input_contents")
    data = tensors.from_list(list(getattr(t.contents, field)), dt, shape, f"{where} (contents.{field})")
    return InferInput(t.name, dt.name, shape, data)


def to_response(resp: InferResponse) -> pb.ModelInferResponse:
    msg = pb.ModelInferResponse(model_name=resp.model, model_version=resp.version, id=resp.id)
    for out in resp.outputs:
        msg.outputs.add(name=out.name, datatype=out.datatype, shape=out.shape)
        msg.raw_output_contents.append(tensors.to_raw(out.data, DATATYPES[out.datatype]))
    for key, value in resp.parameters.items():
        set_param(msg.parameters, key, value)
    return msg


def model_metadata(d: Mapping[str, Any]) -> pb.ModelMetadataResponse:
    msg = pb.ModelMetadataResponse(name=d["name"], versions=d["versions"], platform=d["platform"])
    for t in d["inputs"]:
        msg.inputs.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
    for t in d["outputs"]:
        msg.outputs.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
    return msg


def model_config(d: Mapping[str, Any]) -> pb.ModelConfigResponse:
    msg = pb.ModelConfigResponse()
    json_format.ParseDict(dict(d), msg.config, ignore_unknown_fields=True)
    return msg


def model_statistics(stats: list[dict[str, Any]]) -> pb.ModelStatisticsResponse:
    msg = pb.ModelStatisticsResponse()
    json_format.ParseDict({"model_stats": stats}, msg, ignore_unknown_fields=True)
    return msg


def repository_index(index: list[dict[str, str]]) -> pb.RepositoryIndexResponse:
    msg = pb.RepositoryIndexResponse()
    for m in index:
        msg.models.add(name=m["name"], version=m["version"], state=m["state"], reason=m["reason"])
    return msg
