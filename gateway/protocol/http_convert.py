"""Pure converters for the REST protocol: JSON tensors and the binary tensor extension, both directions.

A binary request is a JSON header of `Inference-Header-Content-Length` bytes followed by the tensors'
bytes in the order the header lists them (`parameters.binary_data_size` each). Binary inputs become
views of the request body; outputs go binary when the caller asks (per output `binary_data`, or the
request's `binary_data_output`).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from gateway.errors import InvalidInput, PayloadTooLarge
from gateway.protocol import tensors
from gateway.types import DATATYPES, InferInput, InferRequest, InferResponse, ParamValue, RequestedOutput

JSON = "application/json"
BINARY = "application/octet-stream"
HEADER_LENGTH = "inference-header-content-length"


def decode_body(body: bytes, headers: Mapping[str, str], limit: int) -> bytes:
    """Undoes `Content-Encoding: gzip | deflate`, refusing to inflate past `limit` bytes."""
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise InvalidInput(f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"request body is not valid {encoding} data: {exc}") from exc
    if len(data) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"decompressed request body exceeds the limit of {limit} bytes")
    return data


def parse_infer(body: bytes, headers: Mapping[str, str], model: str, version: str,
                deadline: float | None = None) -> InferRequest:
    """Decodes an inference request body (JSON, or JSON header + binary tensors)."""
    header_len = headers.get(HEADER_LENGTH)
    if header_len is None:
        head, binary = body, memoryview(b"")
    else:
        if not header_len.strip().isdigit():
            raise InvalidInput(f"Inference-Header-Content-Length: expected a byte count, got {header_len!r}")
        n = int(header_len)
        if n == 0:
            raise InvalidInput("Inference-Header-Content-Length: 0 (a body without a JSON header) is not "
                               "supported; send the JSON header first")
        if n > len(body):
            raise InvalidInput(f"Inference-Header-Content-Length: {n} is larger than the body ({len(body)} bytes)")
        head, binary = body[:n], memoryview(body)[n:]
    doc = _json_object(head)
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("inputs: expected a non-empty list of input tensors")
    offset = 0
    inputs = []
    for i, raw in enumerate(raw_inputs):
        tensor, offset = _input(i, raw, binary, offset)
        inputs.append(tensor)
    if offset != len(binary):
        raise InvalidInput(f"binary data has {len(binary) - offset} bytes beyond what the inputs' "
                           "binary_data_size values account for")
    parameters = _params(doc.get("parameters"), "parameters")
    outputs = _outputs(doc.get("outputs"))
    timeout_us = parameters.get("timeout")
    if timeout_us is not None:
        if isinstance(timeout_us, bool) or not isinstance(timeout_us, int) or timeout_us < 0:
            raise InvalidInput(f"parameters.timeout: expected microseconds as a non-negative integer, got {timeout_us!r}")
        if timeout_us > 0:
            own = time.monotonic() + timeout_us / 1e6
            deadline = own if deadline is None else min(deadline, own)
    request_id = doc.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidInput(f"id: expected a string, got {type(request_id).__name__}")
    return InferRequest(model, version, inputs, request_id, outputs, parameters, deadline, headers, "http")


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidInput("request body: expected a JSON object")
    return doc


def _input(i: int, raw: Any, binary: memoryview, offset: int) -> tuple[InferInput, int]:
    where = f"inputs[{i}]"
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where}: expected an object with name, shape, datatype and data")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{where}.name: expected a non-empty string")
    where = f"{where} '{name}'"
    dt_name = raw.get("datatype")
    if not isinstance(dt_name, str):
        raise InvalidInput(f"{where}.datatype: expected a string such as \"FP32\"")
    dt = tensors.datatype(dt_name, f"{where}.datatype")
    shape_raw = raw.get("shape")
    if not isinstance(shape_raw, list):
        raise InvalidInput(f"{where}.shape: expected a list of dimensions")
    shape = tensors.shape_of(shape_raw, f"{where}.shape")
    params = _params(raw.get("parameters"), f"{where}.parameters")
    size = params.get("binary_data_size")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidInput(f"{where}.parameters.binary_data_size: expected a byte count, got {size!r}")
        if "data" in raw:
            raise InvalidInput(f"{where}: has both data and binary_data_size; use one")
        if offset + size > len(binary):
            raise InvalidInput(f"{where}: binary_data_size {size} runs past the end of the binary data "
                               f"({len(binary) - offset} bytes left)")
        data = tensors.from_raw(binary[offset:offset + size], dt, shape, where)
        return InferInput(name, dt.name, shape, data), offset + size
    if "data" not in raw:
        raise InvalidInput(f"{where}: no data (give `data` or parameters.binary_data_size with binary data)")
    if dt.name in ("FP16",):
        raise InvalidInput(f"{where}: {dt.name} has no JSON form; send it as binary data")
    return InferInput(name, dt.name, shape, tensors.from_list(raw["data"], dt, shape, f"{where}.data")), offset


def _params(raw: Any, where: str) -> dict[str, ParamValue]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where}: expected an object")
    out: dict[str, ParamValue] = {}
    for key, value in raw.items():
        if not isinstance(value, bool | int | float | str):
            raise InvalidInput(f"{where}.{key}: expected a string, number or boolean")
        out[key] = value
    return out


def _outputs(raw: Any) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidInput("outputs: expected a list of {name, parameters}")
    result = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput(f"outputs[{i}]: expected an object with a name")
        params = _params(item.get("parameters"), f"outputs[{i}].parameters")
        binary = params.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise InvalidInput(f"outputs[{i}].parameters.binary_data: expected true or false")
        cls = params.get("classification", 0)
        if isinstance(cls, bool) or not isinstance(cls, int) or cls < 0:
            raise InvalidInput(f"outputs[{i}].parameters.classification: expected a non-negative integer")
        result.append(RequestedOutput(item["name"], binary, cls))
    return result or None


def encode_infer(response: InferResponse, request: InferRequest) -> tuple[bytes, str, list[tuple[str, str]]]:
    """(body, content type, extra headers) for an inference response."""
    wanted = {o.name: o for o in request.outputs} if request.outputs else {}
    default_binary = request.parameters.get("binary_data_output") is True
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for out in response.outputs:
        asked = wanted.get(out.name)
        binary = asked.binary if asked is not None and asked.binary is not None else default_binary
        entry: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": list(out.shape)}
        if binary:
            chunk = tensors.to_raw(out.data, DATATYPES[out.datatype])
            entry["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            entry["data"] = _json_data(out.data, out.datatype)
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": response.model, "model_version": response.version, "outputs": outputs}
    if response.id:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = response.parameters
    head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return head, JSON, []
    return b"".join([head, *chunks]), BINARY, [("inference-header-content-length", str(len(head)))]


def _json_data(array: np.ndarray[Any, Any], datatype: str) -> Any:
    if datatype == "BYTES":
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in array.reshape(-1)]
    if datatype == "FP16":
        return array.astype(np.float32).reshape(-1)
    return np.ascontiguousarray(array).reshape(-1)


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
