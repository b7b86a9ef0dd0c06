"""Checks a decoded request against the model version's signature before anything is queued.

A request that fails here fails alone, with a message naming the field and what was expected, and
never reaches a batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gateway.errors import InvalidInput
from gateway.types import InferRequest, RequestedOutput, Signature

Tensor = np.ndarray[Any, Any]


def admit(signature: Signature, max_batch_size: int, request: InferRequest) -> tuple[dict[str, Tensor], int]:
    """Returns the feeds by input name and the request's row count, or raises InvalidInput."""
    by_name = {t.name: t for t in request.inputs}
    expected = [s.name for s in signature.inputs]
    if len(by_name) != len(request.inputs):
        raise InvalidInput(f"inputs: a tensor name appears more than once; expected each of {expected} once")
    missing = [n for n in expected if n not in by_name]
    unknown = [n for n in by_name if signature.input(n) is None]
    if missing or unknown:
        parts = []
        if unknown:
            parts.append(f"unknown input(s) {unknown}")
        if missing:
            parts.append(f"missing input(s) {missing}")
        raise InvalidInput(f"inputs: {' and '.join(parts)}; model '{request.model}' expects {expected}")
    feeds: dict[str, Tensor] = {}
    rows = -1
    for spec in signature.inputs:
        tensor = by_name[spec.name]
        where = f"input '{spec.name}'"
        if tensor.datatype != spec.datatype:
            raise InvalidInput(f"{where}: datatype {tensor.datatype} does not match the model's {spec.datatype}")
        shape = tensor.shape
        if len(shape) != len(spec.shape):
            raise InvalidInput(f"{where}: shape {list(shape)} has {len(shape)} dimensions; expected "
                               f"{len(spec.shape)} like {list(spec.shape)} (-1 = any size)")
        for axis, (got, want) in enumerate(zip(shape, spec.shape, strict=True)):
            if want >= 0 and got != want and not (axis == 0 and signature.batchable):
                raise InvalidInput(f"{where}: shape {list(shape)} does not match {list(spec.shape)} "
                                   f"at dimension {axis} (expected {want})")
        if signature.batchable:
            if shape[0] < 1:
                raise InvalidInput(f"{where}: the batch dimension must be at least 1, got {shape[0]}")
            if rows == -1:
                rows = shape[0]
            elif shape[0] != rows:
                raise InvalidInput(f"{where}: batch dimension {shape[0]} differs from the other inputs' {rows}")
        feeds[spec.name] = tensor.data
    if not signature.batchable:
        rows = 1
    elif max_batch_size and rows > max_batch_size:
        raise InvalidInput(f"inputs: batch of {rows} rows exceeds max_batch_size {max_batch_size} of "
                           f"model '{request.model}'; split the request")
    return feeds, rows


class Admitter:
    """`admit` compiled for one signature: requests whose inputs come in signature order with exact
    datatypes and fixed dimensions pass in a few comparisons; anything else takes `admit`, which
    also accepts other orders and explains every mistake."""

    __slots__ = ("_batchable", "_max", "_names", "_signature", "_specs")

    def __init__(self, signature: Signature, max_batch_size: int) -> None:
        self._signature, self._max = signature, max_batch_size
        self._batchable = signature.batchable
        exact = all(d >= 0 for t in signature.inputs for d in (t.shape[1:] if signature.batchable else t.shape))
        self._specs = tuple((t.name, t.datatype, t.shape[1:] if signature.batchable else t.shape)
                            for t in signature.inputs) if exact else None
        self._names = tuple(t.name for t in signature.inputs)

    def __call__(self, request: InferRequest) -> tuple[dict[str, Tensor], int]:
        specs, inputs = self._specs, request.inputs
        if specs is None or len(inputs) != len(specs):
            return admit(self._signature, self._max, request)
        feeds: dict[str, Tensor] = {}
        rows = -1
        for tensor, (name, datatype, tail) in zip(inputs, specs, strict=True):
            shape = tensor.shape
            if tensor.name != name or tensor.datatype != datatype:
                return admit(self._signature, self._max, request)
            if self._batchable:
                if not shape or shape[1:] != tail or shape[0] < 1 or (rows != -1 and shape[0] != rows):
                    return admit(self._signature, self._max, request)
                rows = shape[0]
            elif shape != tail:
                return admit(self._signature, self._max, request)
            feeds[name] = tensor.data
        if not self._batchable:
            return feeds, 1
        if self._max and rows > self._max:
            return admit(self._signature, self._max, request)
        return feeds, rows


def check_outputs(signature: Signature, requested: list[RequestedOutput] | None, model: str) -> None:
    if not requested:
        return
    names = [o.name for o in signature.outputs]
    unknown = [o.name for o in requested if o.name not in names]
    if unknown:
        raise InvalidInput(f"outputs: unknown output(s) {unknown}; model '{model}' has {names}")
