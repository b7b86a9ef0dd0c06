"""Import of MLflow model directories (an `MLmodel` file with the `onnx` flavor) as registry versions.

Reads the YAML without MLflow itself: the onnx flavor's model file, the tensor signature mapped to
protocol datatypes, and the lineage fields (run_id, model_uuid, creation time, MLflow version).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from rollout.errors import InvalidSpec

if TYPE_CHECKING:
    from rollout.registry import ModelVersion, Registry

# numpy dtype names as MLflow writes them in tensor specs -> Open Inference Protocol datatypes.
DATATYPES: Mapping[str, str] = {
    "bool": "BOOL", "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
    "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
    "float16": "FP16", "float32": "FP32", "float64": "FP64",
    "str": "BYTES", "object": "BYTES", "bytes": "BYTES", "string": "BYTES",
}
LINEAGE = ("run_id", "model_uuid", "utc_time_created", "mlflow_version", "artifact_path", "model_size_bytes")


@dataclass(frozen=True, slots=True)
class MlflowModel:
    """What the registry needs from an MLflow package."""

    artifact: Path
    signature: dict[str, Any] | None  # None when the package declares none
    metadata: dict[str, Any]  # the package's metadata block plus {"mlflow": {run_id, model_uuid, …}}


def read_mlmodel(path: str | Path, *, use_signature: bool = True) -> MlflowModel:
    """Parses `<path>/MLmodel`; every problem raises `InvalidSpec` naming the field at fault.
    `use_signature=False` skips the declared signature (e.g. column-based ones)."""
    directory = Path(path)
    doc = _load_yaml(directory / "MLmodel")
    flavors = doc.get("flavors")
    if not isinstance(flavors, Mapping) or "onnx" not in flavors:
        found = ", ".join(sorted(flavors)) if isinstance(flavors, Mapping) else "none"
        raise InvalidSpec("flavors.onnx", f"expected an onnx flavor; this package has: {found}")
    onnx = flavors["onnx"] if isinstance(flavors["onnx"], Mapping) else {}
    artifact = _model_file(directory, onnx.get("data"))
    lineage = {k: _plain(doc[k]) for k in LINEAGE if k in doc}
    lineage["onnx_version"] = _plain(onnx.get("onnx_version"))
    # The package's own metadata block (owner, region, …) becomes the version's metadata.
    user = _plain(doc["metadata"]) if isinstance(doc.get("metadata"), Mapping) else {}
    signature = read_signature(doc.get("signature")) if use_signature else None
    return MlflowModel(artifact, signature, {**user, "mlflow": lineage})


def _load_yaml(file: Path) -> dict[str, Any]:
    if not file.is_file():
        raise InvalidSpec("MLmodel", f"expected an MLmodel file at {file}; is this an MLflow model directory?")
    try:
        doc = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InvalidSpec("MLmodel", f"expected YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidSpec("MLmodel", f"expected a YAML mapping, got {type(doc).__name__}")
    return doc


def _model_file(directory: Path, data: object) -> Path:
    if not isinstance(data, str) or not data:
        raise InvalidSpec("flavors.onnx.data", f"expected the model file's name, got {data!r}")
    artifact = (directory / data).resolve()
    if not artifact.is_relative_to(directory.resolve()):
        raise InvalidSpec("flavors.onnx.data", f"expected a file inside the model directory, got {data!r}")
    if not artifact.is_file():
        raise InvalidSpec("flavors.onnx.data", f"expected a model file, found nothing at {artifact}")
    return artifact


def _plain(value: Any) -> Any:
    """YAML may yield dates and other non-JSON scalars; the registry stores JSON."""
    return json.loads(json.dumps(value, default=str))


def read_signature(signature: object) -> dict[str, Any] | None:
    """MLflow's signature block -> {"inputs": [...], "outputs": [...], "batchable": bool}."""
    if signature is None:
        return None
    if not isinstance(signature, Mapping):
        raise InvalidSpec("signature", f"expected a mapping with inputs and outputs, got {signature!r}")
    sides = {side: _tensors(f"signature.{side}", signature.get(side)) for side in ("inputs", "outputs")}
    tensors = sides["inputs"] + sides["outputs"]
    batchable = bool(tensors) and all(t["shape"] and t["shape"][0] == -1 for t in tensors)
    return {"inputs": sides["inputs"], "outputs": sides["outputs"], "batchable": batchable}


def _tensors(field: str, text: object) -> list[dict[str, Any]]:
    if text is None:
        return []
    try:
        specs = json.loads(text) if isinstance(text, str) else text
    except ValueError as exc:
        raise InvalidSpec(field, f"expected a JSON list of tensor specs: {exc}") from exc
    if not isinstance(specs, list):
        raise InvalidSpec(field, f"expected a JSON list of tensor specs, got {type(specs).__name__}")
    return [_tensor(f"{field}[{i}]", spec) for i, spec in enumerate(specs)]


def _tensor(field: str, spec: object) -> dict[str, Any]:
    if not isinstance(spec, Mapping):
        raise InvalidSpec(field, f"expected a tensor spec object, got {spec!r}")
    if spec.get("type") != "tensor":
        raise InvalidSpec(field, f"expected a tensor spec (type 'tensor'); column specs ({spec.get('type')!r}) "
                                 "cannot be matched to ONNX inputs")
    name, tensor = spec.get("name"), spec.get("tensor-spec")
    if not isinstance(name, str) or not name:
        raise InvalidSpec(f"{field}.name", "expected a tensor name; servegate matches tensors by name")
    if not isinstance(tensor, Mapping):
        raise InvalidSpec(f"{field}.tensor-spec", f"expected dtype and shape, got {tensor!r}")
    dtype = str(tensor.get("dtype"))
    if dtype not in DATATYPES:
        raise InvalidSpec(f"{field}.tensor-spec.dtype", f"expected one of {', '.join(DATATYPES)}, got {dtype!r}")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise InvalidSpec(f"{field}.tensor-spec.shape", f"expected a list of integers, got {shape!r}")
    return {"name": name, "datatype": DATATYPES[dtype], "shape": shape}


def import_mlflow(registry: Registry, model: str, version: str, path: str | Path, *, actor: str,
                  reason: str = "", metadata: Mapping[str, Any] | None = None, breaking: bool = False,
                  holdout: str | Path | Mapping[str, Any] | None = None,
                  reference_profile: Mapping[str, Any] | None = None, validate: bool = True,
                  use_signature: bool = True) -> ModelVersion:
    """Registers the package's ONNX file as `model`/`version`; the caller's metadata is merged over
    the MLflow lineage. `use_signature=False` ignores a declared signature that cannot be read."""
    package = read_mlmodel(path, use_signature=use_signature)
    merged = {**package.metadata, **dict(metadata or {})}
    return registry.register(model, version, package.artifact, actor=actor, metadata=merged,
                             reason=reason or f"imported from MLflow package {path}", breaking=breaking,
                             holdout=holdout, reference_profile=reference_profile, validate=validate,
                             signature=package.signature)

