"""Wire form of tensors shared by both protocols: raw little-endian bytes and length-prefixed BYTES.

Decoding returns numpy views of the received buffer where the datatype allows (no copy); every size
mismatch is an `InvalidInput` that names the tensor and the expected byte count.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from gateway.errors import InvalidInput
from gateway.types import DATATYPES, Datatype

Tensor = np.ndarray[Any, Any]
_KNOWN = ", ".join(DATATYPES)


def datatype(name: str, where: str) -> Datatype:
    dt = DATATYPES.get(name)
    if dt is None:
        raise InvalidInput(f"{where}: unknown datatype {name!r}; expected one of {_KNOWN}")
    return dt


def shape_of(dims: Sequence[Any], where: str) -> tuple[int, ...]:
    shape: list[int] = []
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise InvalidInput(f"{where}: shape {list(dims)} must hold non-negative integers")
        shape.append(d)
    if math.prod(shape) > 1 << 40:
        raise InvalidInput(f"{where}: shape {shape} is too large")
    return tuple(shape)


def from_raw(buf: bytes | memoryview, dt: Datatype, shape: tuple[int, ...], where: str) -> Tensor:
    """A view of `buf` as `shape` (BYTES are unpacked into an object array)."""
    count = math.prod(shape)
    if dt.name == "BYTES":
        return np.array(unpack_bytes(buf, count, where), dtype=object).reshape(shape)
    expected = count * dt.itemsize
    if len(buf) != expected:
        raise InvalidInput(f"{where}: has {len(buf)} bytes of data; shape {list(shape)} of {dt.name} "
                           f"needs {expected}")
    return np.frombuffer(buf, dtype=dt.numpy).reshape(shape)


def to_raw(array: Tensor, dt: Datatype) -> bytes:
    if dt.name == "BYTES":
        return pack_bytes(array)
    return np.ascontiguousarray(array, dtype=dt.numpy).tobytes()


def unpack_bytes(buf: bytes | memoryview, count: int, where: str) -> list[bytes]:
    view = memoryview(buf)
    items: list[bytes] = []
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise InvalidInput(f"{where}: truncated BYTES element length at byte {offset}")
        (size,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + size > len(view):
            raise InvalidInput(f"{where}: BYTES element of {size} bytes runs past the end of the data")
        items.append(bytes(view[offset:offset + size]))
        offset += size
    if len(items) != count:
        raise InvalidInput(f"{where}: holds {len(items)} BYTES elements; the shape needs {count}")
    return items


def pack_bytes(array: Tensor) -> bytes:
    parts: list[bytes] = []
    for item in array.reshape(-1):
        data = item if isinstance(item, bytes) else str(item).encode()
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def from_list(values: Any, dt: Datatype, shape: tuple[int, ...], where: str) -> Tensor:
    """Nested or flat JSON/typed values into an array of `shape` and the datatype's numpy type."""
    count = math.prod(shape)
    try:
        if dt.name == "BYTES":
            flat = np.array([v.encode() if isinstance(v, str) else bytes(v) for v in _flatten(values)],
                            dtype=object)
        else:
            flat = np.asarray(values, dtype=dt.numpy).reshape(-1)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInput(f"{where}: data cannot be read as {dt.name}: {exc}") from exc
    if flat.size != count:
        raise InvalidInput(f"{where}: has {flat.size} elements; shape {list(shape)} needs {count}")
    return flat.reshape(shape)


def _flatten(values: Any) -> list[Any]:
    if isinstance(values, list | tuple):
        out: list[Any] = []
        for v in values:
            out.extend(_flatten(v))
        return out
    return [values]
