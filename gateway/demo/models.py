"""Builders of the real demo models: a scikit-learn classifier, an MLP and a two-input model, as ONNX files.

Each builder writes `<repo>/<model>/<version>/model.onnx` in Triton's layout, plus `reference.npz`
(a sample of training inputs, for drift) and, where labels exist, `holdout.npz` (inputs and `y`).
Tests, benchmarks and `servegate demo` all use these, so every figure is about the same models.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

OPSET = 17
IR_VERSION = 8
TABULAR_FEATURES = 30
MLP_INPUTS = 784
MLP_CLASSES = 10


def _version_dir(repo: Path, model: str, version: str) -> Path:
    path = Path(repo) / model / version
    path.mkdir(parents=True, exist_ok=True)
    return path


def tabular_data(seed: int = 0) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The breast-cancer data set that scikit-learn ships: 569 rows x 30 float features, binary label."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data.target))
    return data.data[order].astype(np.float32), data.target[order].astype(np.int64)


def build_tabular(repo: Path, model: str = "tabular", version: str = "1", *, c: float = 1.0,
                  seed: int = 0) -> Path:
    """Trains scaler + logistic regression on the shipped data set and converts it with skl2onnx.

    Input `features` FP32 [-1, 30]; outputs `label` INT64 [-1] and `probabilities` FP32 [-1, 2].
    """
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = tabular_data(seed)
    split = int(len(y) * 0.7)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    pipeline.fit(x[:split], y[:split])
    onx = convert_sklearn(
        pipeline,
        initial_types=[("features", FloatTensorType([None, TABULAR_FEATURES]))],
        options={id(pipeline.steps[-1][1]): {"zipmap": False}},
        target_opset={"": OPSET, "ai.onnx.ml": 3},
    )
    _rename_outputs(onx, {"output_label": "label", "output_probability": "probabilities"})
    onx.ir_version = IR_VERSION
    out = _version_dir(repo, model, version)
    (out / "model.onnx").write_bytes(onx.SerializeToString())
    np.savez(out / "reference.npz", features=x[:split])
    np.savez(out / "holdout.npz", features=x[split:], y=y[split:])
    return out / "model.onnx"


def _rename_outputs(onx: Any, names: dict[str, str]) -> None:
    for node in onx.graph.node:
        node.output[:] = [names.get(o, o) for o in node.output]
    for out in onx.graph.output:
        out.name = names.get(out.name, out.name)


def build_mlp(repo: Path, model: str = "mlp", version: str = "1", *, seed: int = 0,
              hidden: tuple[int, ...] = (256, 128), inputs: int = MLP_INPUTS, classes: int = MLP_CLASSES,
              logit_shift: float = 0.0) -> Path:
    """An MLP built with onnx.helper: Gemm + Relu layers, softmax head, seeded random weights.

    Input `input` FP32 [-1, inputs]; output `probabilities` FP32 [-1, classes]. `logit_shift`
    adds a constant to the first class's logit (a candidate whose predictions drift).
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    sizes = (inputs, *hidden, classes)
    nodes, inits = [], []
    prev = "input"
    for i, (fan_in, fan_out) in enumerate(pairwise(sizes)):
        w = (rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        b = (rng.standard_normal(fan_out) * 0.01).astype(np.float32)
        if i == len(sizes) - 2:
            b[0] += logit_shift
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        out = f"h{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [out]))
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [out], [f"r{i}"]))
            out = f"r{i}"
        prev = out
    nodes.append(helper.make_node("Softmax", [prev], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", inputs])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes])],
        inits,
    )
    onx = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    out_dir = _version_dir(repo, model, version)
    (out_dir / "model.onnx").write_bytes(onx.SerializeToString())
    np.savez(out_dir / "reference.npz", input=mlp_inputs(2000, seed=seed + 1000))
    return out_dir / "model.onnx"


def mlp_inputs(rows: int, seed: int = 0, inputs: int = MLP_INPUTS) -> np.ndarray[Any, Any]:
    """Inputs like the MLP's traffic: pixel-like values in [0, 1]."""
    return np.random.default_rng(seed).random((rows, inputs), dtype=np.float32)


def build_two_input(repo: Path, model: str = "mixed", version: str = "1", *, seed: int = 0,
                    categories: int = 16) -> Path:
    """A model with two inputs of different datatypes.

    Inputs `features` FP32 [-1, 4] and `category` INT64 [-1, 1]; output `score` FP32 [-1, 1] =
    features . w + embedding[category].
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4, 1)).astype(np.float32)
    table = rng.standard_normal((categories, 1)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["features", "w"], ["linear"]),
        helper.make_node("Squeeze", ["category", "axis1"], ["cat_flat"]),
        helper.make_node("Gather", ["table", "cat_flat"], ["embedded"], axis=0),
        helper.make_node("Add", ["linear", "embedded"], ["score"]),
    ]
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(table, "table"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
    ]
    graph = helper.make_graph(
        nodes, "mixed",
        [
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("category", TensorProto.INT64, ["batch", 1]),
        ],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        inits,
    )
    onx = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    out_dir = _version_dir(repo, model, version)
    (out_dir / "model.onnx").write_bytes(onx.SerializeToString())
    return out_dir / "model.onnx"


def two_input_batch(rows: int, seed: int = 0, categories: int = 16) -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    return {
        "features": rng.standard_normal((rows, 4)).astype(np.float32),
        "category": rng.integers(0, categories, size=(rows, 1), dtype=np.int64),
    }


def build_demo_repository(repo: Path) -> Path:
    """The demo's repository: tabular v1 (production) and v2 (candidate), mlp v1, mixed v1."""
    build_tabular(repo, "tabular", "1", c=1.0)
    build_tabular(repo, "tabular", "2", c=0.5)
    build_mlp(repo, "mlp", "1")
    build_two_input(repo, "mixed", "1")
    return Path(repo)
