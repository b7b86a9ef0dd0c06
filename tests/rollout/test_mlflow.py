"""MLflow import: MLmodel directories written here with a demo ONNX file, read without MLflow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from rollout.errors import InvalidSpec
from rollout.mlflow import DATATYPES, import_mlflow, read_mlmodel
from rollout.registry import Registry, Stage
from rollout.validation import Validator
from tests.fakes.store import FakeStore
from tests.rollout.test_validation import OrtProbe


def spec(name: str, dtype: str, shape: Any) -> dict[str, Any]:
    return {"type": "tensor", "tensor-spec": {"dtype": dtype, "shape": shape}, "name": name}


INPUTS = [spec("features", "float32", [-1, 30])]
OUTPUTS = [spec("label", "int64", [-1]), spec("probabilities", "float32", [-1, 2])]


def mlmodel(directory: Path, model_repo: Path, **changes: Any) -> Path:
    """An MLflow 2.x onnx package for the demo tabular model; `changes` replace top-level keys."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(model_repo / "tabular" / "1" / "model.onnx", directory / "model.onnx")
    doc: dict[str, Any] = {
        "artifact_path": "model",
        "flavors": {
            "onnx": {"code": None, "data": "model.onnx", "onnx_version": "1.16.0",
                     "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]},
            "python_function": {"data": "model.onnx", "loader_module": "mlflow.onnx", "python_version": "3.11.7",
                                "env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"}},
        },
        "mlflow_version": "2.12.1",
        "model_size_bytes": 1234,
        "model_uuid": "6c1f3a0e2b7d4c3f9a8e5d4c3b2a1f0e",
        "run_id": "e0b4d1c2a3f4",
        "utc_time_created": "2024-05-01 10:00:00.000000",
        "signature": {"inputs": json.dumps(INPUTS), "outputs": json.dumps(OUTPUTS), "params": None},
        "metadata": {"owner": "risk-team", "region": "eu-west-1"},
    }
    doc.update(changes)
    (directory / "MLmodel").write_text(yaml.safe_dump(doc))
    return directory


def test_reads_the_onnx_file_signature_and_lineage(model_repo: Path, tmp_path: Path) -> None:
    package = read_mlmodel(mlmodel(tmp_path / "pkg", model_repo))
    assert package.artifact == (tmp_path / "pkg" / "model.onnx").resolve()
    assert package.signature == {
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 30]}],
        "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]},
                    {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}],
        "batchable": True,
    }
    assert package.metadata["region"] == "eu-west-1" and package.metadata["owner"] == "risk-team"
    assert package.metadata["mlflow"] == {
        "run_id": "e0b4d1c2a3f4", "model_uuid": "6c1f3a0e2b7d4c3f9a8e5d4c3b2a1f0e",
        "utc_time_created": "2024-05-01 10:00:00.000000", "mlflow_version": "2.12.1",
        "artifact_path": "model", "model_size_bytes": 1234, "onnx_version": "1.16.0"}


def test_a_package_without_a_signature_reads_as_none(model_repo: Path, tmp_path: Path) -> None:
    package = read_mlmodel(mlmodel(tmp_path / "pkg", model_repo, signature=None))
    assert package.signature is None


@pytest.mark.parametrize(("dtype", "datatype"), [("float32", "FP32"), ("float64", "FP64"), ("int64", "INT64"),
                                                 ("int32", "INT32"), ("bool", "BOOL"), ("str", "BYTES"),
                                                 ("object", "BYTES"), ("uint8", "UINT8"), ("float16", "FP16")])
def test_numpy_dtypes_map_to_protocol_datatypes(model_repo: Path, tmp_path: Path, dtype: str, datatype: str) -> None:
    signature = {"inputs": json.dumps([spec("x", dtype, [-1, 1])]), "outputs": "[]"}
    package = read_mlmodel(mlmodel(tmp_path / "pkg", model_repo, signature=signature))
    assert package.signature is not None and package.signature["inputs"][0]["datatype"] == datatype
    assert DATATYPES[dtype] == datatype


def test_import_registers_a_version_with_the_declared_signature(model_repo: Path, tmp_path: Path) -> None:
    store = FakeStore()
    registry = Registry(store)
    v = import_mlflow(registry, "tabular", "7", mlmodel(tmp_path / "pkg", model_repo), actor="ci",
                      metadata={"owner": "platform"})
    assert v.stage == Stage.REGISTERED and v.signature["inputs"][0]["name"] == "features"
    assert v.metadata["owner"] == "platform" and v.metadata["region"] == "eu-west-1"
    assert v.metadata["mlflow"]["run_id"] == "e0b4d1c2a3f4"
    assert store.audit_all()[-1].reason.startswith("imported from MLflow package")


@pytest.mark.integration
def test_import_runs_the_gates_and_checks_the_declared_signature(model_repo: Path, tmp_path: Path) -> None:
    registry = Registry(FakeStore(), validator=Validator(OrtProbe()))
    good = import_mlflow(registry, "tabular", "1", mlmodel(tmp_path / "good", model_repo), actor="ci",
                         holdout=model_repo / "tabular" / "1" / "holdout.npz")
    assert good.stage == Stage.VALIDATED
    assert {g["gate"]: g["passed"] for g in good.validation["gates"]}["declared_signature"] is True
    wrong = {"inputs": json.dumps([spec("features", "float64", [-1, 30])]), "outputs": json.dumps(OUTPUTS)}
    bad = import_mlflow(registry, "tabular", "2", mlmodel(tmp_path / "bad", model_repo, signature=wrong), actor="ci")
    gate = {g["gate"]: g for g in bad.validation["gates"]}["declared_signature"]
    assert bad.stage == Stage.REJECTED and "datatype FP64 -> FP32" in gate["detail"]


@pytest.mark.parametrize(("changes", "field", "message"), [
    ({"flavors": {"sklearn": {"pickled_model": "model.pkl"}, "python_function": {}}}, "flavors.onnx",
     "this package has: python_function, sklearn"),
    ({"flavors": {"onnx": {"data": "missing.onnx"}}}, "flavors.onnx.data", "found nothing"),
    ({"flavors": {"onnx": {"data": "../../outside.onnx"}}}, "flavors.onnx.data", "inside the model directory"),
    ({"signature": {"inputs": "[{not json", "outputs": "[]"}}, "signature.inputs", "JSON list"),
    ({"signature": {"inputs": json.dumps([{"type": "double", "name": "age"}])}}, "signature.inputs[0]",
     "column specs"),
    ({"signature": {"inputs": json.dumps([spec("x", "complex64", [-1])])}}, "signature.inputs[0].tensor-spec.dtype",
     "complex64"),
    ({"signature": {"inputs": json.dumps([spec("x", "float32", "batch")])}}, "signature.inputs[0].tensor-spec.shape",
     "list of integers"),
    ({"signature": {"inputs": json.dumps([{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1]}}])}},
     "signature.inputs[0].name", "by name"),
])
def test_bad_packages_are_refused_naming_the_field(model_repo: Path, tmp_path: Path, changes: dict[str, Any],
                                                   field: str, message: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        read_mlmodel(mlmodel(tmp_path / "pkg", model_repo, **changes))
    assert err.value.field == field and message in err.value.message


def test_a_missing_or_broken_mlmodel_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec, match="expected an MLmodel file") as err:
        read_mlmodel(tmp_path)
    assert err.value.field == "MLmodel"
    (tmp_path / "MLmodel").write_text("flavors: [unclosed")
    with pytest.raises(InvalidSpec, match="expected YAML"):
        read_mlmodel(tmp_path)


def test_an_unusable_signature_can_be_ignored(model_repo: Path, tmp_path: Path) -> None:
    columns = {"inputs": json.dumps([{"type": "double", "name": "age"}]), "outputs": "[]"}
    path = mlmodel(tmp_path / "pkg", model_repo, signature=columns)
    v = import_mlflow(Registry(FakeStore()), "tabular", "1", path, actor="ci", use_signature=False)
    assert v.signature == {} and v.stage == Stage.REGISTERED
