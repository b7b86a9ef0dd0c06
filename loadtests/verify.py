"""Checks of sampled replies: well-formed, the expected outputs, byte sizes that match their shapes.

Each check returns None for a good reply or a short reason, so a load loop can count it as an outcome.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import orjson

from gateway.protocol.pb import grpc_service_pb2 as pb
from loadtests.payload import numpy_dtype


def _expected_bytes(datatype: str, shape: Sequence[int]) -> int | None:
    if datatype == "BYTES":
        return None  # variable length; only the presence of bytes can be checked
    return int(np.prod(shape, dtype=np.int64)) * numpy_dtype(datatype).itemsize


def _names_problem(got: Sequence[str], expected: Sequence[str]) -> str | None:
    if expected and sorted(got) != sorted(expected):
        return f"outputs {sorted(got)} != expected {sorted(expected)}"
    if not got:
        return "reply has no outputs"
    return None


def grpc_reply_problem(raw: bytes, expected_outputs: Sequence[str]) -> str | None:
    """Parses a ModelInferResponse; raw outputs must match their declared shape and datatype."""
    try:
        reply = pb.ModelInferResponse.FromString(raw)
    except Exception as exc:  # protobuf's DecodeError has no type stubs here; any failure is a bad reply
        return f"unparsable ModelInferResponse: {exc}"
    problem = _names_problem([o.name for o in reply.outputs], expected_outputs)
    if problem:
        return problem
    if reply.raw_output_contents:
        if len(reply.raw_output_contents) != len(reply.outputs):
            return f"{len(reply.raw_output_contents)} raw outputs for {len(reply.outputs)} tensors"
        for out, data in zip(reply.outputs, reply.raw_output_contents, strict=True):
            size = _expected_bytes(out.datatype, out.shape)
            if size is not None and size != len(data):
                return f"output {out.name}: {len(data)} bytes, shape {list(out.shape)} needs {size}"
    return None


def rest_reply_problem(status: int, headers: dict[str, str], body: bytes,
                       expected_outputs: Sequence[str]) -> str | None:
    """A 200 reply, JSON or binary extension; binary chunks must add up to the body's remainder."""
    if status != 200:
        return f"HTTP {status}"
    header_len = int(headers.get("inference-header-content-length", len(body)))
    try:
        doc = orjson.loads(body[:header_len])
    except orjson.JSONDecodeError:
        return "reply header is not JSON"
    outputs = doc.get("outputs") if isinstance(doc, dict) else None
    if not isinstance(outputs, list):
        return "reply has no outputs list"
    problem = _names_problem([str(o.get("name")) for o in outputs], expected_outputs)
    if problem:
        return problem
    binary_total = 0
    for out in outputs:
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            binary_total += int(size)
        elif "data" not in out:
            return f"output {out.get('name')} has neither data nor binary_data_size"
    if binary_total != len(body) - header_len:
        return f"binary outputs declare {binary_total} bytes, body carries {len(body) - header_len}"
    return None
