"""Transport-neutral values of the data plane: tensor specs, inference requests and responses.

Protocol adapters decode into these and encode from them; nothing here knows gRPC or HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ParamValue = bool | int | float | str


@dataclass(frozen=True, slots=True)
class Datatype:
    """One Open Inference Protocol datatype and its equivalents elsewhere."""

    name: str  # protocol name, e.g. "FP32"
    numpy: np.dtype[Any]  # element type of the decoded array (object for BYTES)
    itemsize: int  # bytes per element on the wire; 0 = variable (BYTES)
    ort: str  # ONNX Runtime's type string, e.g. "tensor(float)"
    config: str  # Triton model-config enum name, e.g. "TYPE_FP32"


def _dt(name: str, np_type: Any, itemsize: int, ort: str, config: str) -> Datatype:
    return Datatype(name, np.dtype(np_type), itemsize, ort, config)


DATATYPES: Mapping[str, Datatype] = {
    d.name: d
    for d in (
        _dt("BOOL", np.bool_, 1, "tensor(bool)", "TYPE_BOOL"),
        _dt("UINT8", np.uint8, 1, "tensor(uint8)", "TYPE_UINT8"),
        _dt("UINT16", np.uint16, 2, "tensor(uint16)", "TYPE_UINT16"),
        _dt("UINT32", np.uint32, 4, "tensor(uint32)", "TYPE_UINT32"),
        _dt("UINT64", np.uint64, 8, "tensor(uint64)", "TYPE_UINT64"),
        _dt("INT8", np.int8, 1, "tensor(int8)", "TYPE_INT8"),
        _dt("INT16", np.int16, 2, "tensor(int16)", "TYPE_INT16"),
        _dt("INT32", np.int32, 4, "tensor(int32)", "TYPE_INT32"),
        _dt("INT64", np.int64, 8, "tensor(int64)", "TYPE_INT64"),
        _dt("FP16", np.float16, 2, "tensor(float16)", "TYPE_FP16"),
        _dt("FP32", np.float32, 4, "tensor(float)", "TYPE_FP32"),
        _dt("FP64", np.float64, 8, "tensor(double)", "TYPE_FP64"),
        _dt("BYTES", np.object_, 0, "tensor(string)", "TYPE_STRING"),
    )
}
DATATYPE_BY_ORT: Mapping[str, Datatype] = {d.ort: d for d in DATATYPES.values()}
DATATYPE_BY_NUMPY: Mapping[np.dtype[Any], Datatype] = {
    d.numpy: d for d in DATATYPES.values() if d.name != "BYTES"
}


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A named tensor of a model signature. `shape` includes the batch dimension; -1 = variable."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> TensorSpec:
        return TensorSpec(str(d["name"]), str(d["datatype"]), tuple(int(x) for x in d["shape"]))


@dataclass(frozen=True, slots=True)
class Signature:
    """Inputs and outputs of a model version; `batchable` = a variable first dimension on every tensor."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batchable: bool

    def input(self, name: str) -> TensorSpec | None:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "batchable": self.batchable,
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Signature:
        return Signature(
            tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
            tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
            bool(d.get("batchable", True)),
        )


@dataclass(slots=True)
class InferInput:
    """A decoded input tensor: `data` already has the declared shape and the datatype's numpy type."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray[Any, Any]


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """An output the caller asked for; `binary` None means the protocol's default."""

    name: str
    binary: bool | None = None
    classification: int = 0


@dataclass(slots=True)
class InferRequest:
    """One inference call, whichever protocol carried it.

    `version` empty means the router chooses. `deadline` is absolute on the event loop's clock
    (`loop.time()`); None means no deadline. `routing` carries request metadata that routing may use
    (sticky key values, a forced version header), with lower-case keys.
    """

    model: str
    version: str
    inputs: list[InferInput]
    id: str = ""
    outputs: list[RequestedOutput] | None = None
    parameters: dict[str, ParamValue] = field(default_factory=dict)
    deadline: float | None = None
    routing: Mapping[str, str] = field(default_factory=dict)
    protocol: str = "grpc"

    @property
    def rows(self) -> int:
        """The request's own batch size: the first dimension of its first input (1 for scalars)."""
        if not self.inputs or not self.inputs[0].shape:
            return 1
        return self.inputs[0].shape[0]


@dataclass(slots=True)
class InferOutput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray[Any, Any]


@dataclass(slots=True)
class InferResponse:
    model: str
    version: str
    outputs: list[InferOutput]
    id: str = ""
    parameters: dict[str, ParamValue] = field(default_factory=dict)
