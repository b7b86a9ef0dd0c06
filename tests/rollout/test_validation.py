"""Registration gates: pure gate logic with a scripted probe, then real ONNX models through ONNX Runtime."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.metrics import roc_auc_score

from gateway.types import DATATYPE_BY_ORT
from rollout.errors import InvalidSpec
from rollout.registry import Registry, Stage
from rollout.store.sqlite import SqliteStore
from rollout.validation import GatePolicy, Production, Validation, Validator, auc
from tests.fakes.probe import Arrays, FakeModel, FakeProbe, signature, tensor

SIG = signature([tensor("features", "FP32", [-1, 3])],
                [tensor("label", "INT64", [-1]), tensor("probabilities", "FP32", [-1, 2])])
ROWS = 40
X = np.random.default_rng(0).standard_normal((ROWS, 3)).astype(np.float32)
Y = (X[:, 0] > 0).astype(np.int64)


def classifier(flip: int = 0) -> FakeModel:
    """Predicts y exactly, except for the first `flip` rows."""

    def outputs(inputs: Arrays) -> Arrays:
        label = (inputs["features"][:, 0] > 0).astype(np.int64)
        label[:flip] = 1 - label[:flip]
        p1 = np.where(label == 1, 0.9, 0.1).astype(np.float32)
        return {"label": label, "probabilities": np.stack([1 - p1, p1], axis=1)}

    return FakeModel(SIG, outputs)


def gates(result: Validation) -> dict[str, dict[str, Any]]:
    return {g["gate"]: g for g in result.report["gates"]}


def run(probe: FakeProbe, policy: GatePolicy | None = None, production: Production | None = None,
        **kwargs: Any) -> Validation:
    return Validator(probe).validate("cand.onnx", policy=policy or GatePolicy(), production=production,
                                     metadata=kwargs.pop("metadata", {}), **kwargs)


def probe_with(model: FakeModel | Exception, prod: FakeModel | None = None) -> FakeProbe:
    probe = FakeProbe()
    probe.add("cand.onnx", model)
    if prod is not None:
        probe.add("prod.onnx", prod)
    return probe


PROD = Production("1", "prod.onnx", SIG)


# -- policy ----------------------------------------------------------------------------------------


def test_policy_round_trips_and_names_bad_fields() -> None:
    policy = GatePolicy(metric="auc", threshold=0.8, allowed_regions=("eu-west-1",))
    assert GatePolicy.from_dict(policy.to_dict()) == policy
    cases: list[tuple[dict[str, Any], str]] = [({"metric": "f1"}, "gates.metric"), ({"latency_budget_ms": "fast"}, "gates.latency_budget_ms"),
                        ({"colour": 1}, "gates.colour"), ({"allowed_regions": "eu"}, "gates.allowed_regions"),
                        ({"latency_runs": 0}, "gates.latency_runs")]
    for data, field in cases:
        with pytest.raises(InvalidSpec) as err:
            GatePolicy.from_dict(data)
        assert err.value.field == field


# -- the gates -------------------------------------------------------------------------------------


def test_a_model_that_does_not_load_fails_and_nothing_else_runs() -> None:
    result = run(probe_with(RuntimeError("protobuf parsing failed")))
    found = gates(result)
    assert result.report["passed"] is False and result.signature is None
    assert found["loads"]["passed"] is False and "protobuf parsing failed" in found["loads"]["detail"]
    assert all(not found[n]["passed"] for n in ("signature", "holdout", "latency"))


def test_everything_passes_for_a_good_first_model() -> None:
    result = run(probe_with(classifier()), holdout={"features": X, "y": Y})
    assert result.report["passed"] is True and result.signature == SIG
    assert gates(result)["holdout"]["value"] == 1.0
    assert gates(result)["signature"]["skipped"] and gates(result)["holdout_regression"]["skipped"]


def test_signature_changes_fail_unless_declared_breaking() -> None:
    changed = FakeModel(signature([tensor("features", "FP64", [-1, 4])], [tensor("score", "FP32", [-1, 1])]))
    refused = gates(run(probe_with(changed), production=PROD))["signature"]
    assert refused["passed"] is False
    assert refused["value"] == ["input 'features' datatype FP32 -> FP64", "input 'features' shape [-1, 3] -> [-1, 4]",
                                "output 'label' removed", "output 'probabilities' removed", "output 'score' added"]
    allowed = gates(run(probe_with(changed), production=PROD, breaking=True))["signature"]
    assert allowed["passed"] is True and allowed["detail"].startswith("breaking change declared")


@pytest.mark.parametrize(("threshold", "passed"), [(0.9, True), (0.99, False)])
def test_holdout_metric_must_meet_its_threshold(threshold: float, passed: bool) -> None:
    result = run(probe_with(classifier(flip=2)), GatePolicy(threshold=threshold), holdout={"features": X, "y": Y})
    gate = gates(result)["holdout"]
    assert gate["value"] == pytest.approx(1 - 2 / ROWS) and gate["passed"] is passed
    assert result.report["passed"] is passed


@pytest.mark.parametrize(("flip", "passed"), [(2, True), (4, False)])
def test_holdout_must_not_regress_against_production_beyond_the_margin(flip: int, passed: bool) -> None:
    probe = probe_with(classifier(flip=flip), prod=classifier(flip=1))
    result = run(probe, GatePolicy(max_regression=0.05), production=PROD, holdout={"features": X, "y": Y})
    gate = gates(result)["holdout_regression"]
    assert gate["value"] == pytest.approx((flip - 1) / ROWS) and gate["passed"] is passed
    assert str(Path("prod.onnx").resolve()) in probe.loaded


def test_accuracy_falls_back_to_the_argmax_of_probabilities() -> None:
    model = classifier(flip=3)
    only_probs = FakeModel(signature(SIG["inputs"], [SIG["outputs"][1]]),
                           lambda x: {"probabilities": model.outputs(x)["probabilities"]})
    assert gates(run(probe_with(only_probs), holdout={"features": X, "y": Y}))["holdout"]["value"] == \
        pytest.approx(1 - 3 / ROWS)


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_scikit_learn_including_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200) * 0.5 + y * 0.3, 1)  # rounding makes many ties
    assert auc(scores, y == 1) == pytest.approx(roc_auc_score(y, scores))


def test_auc_gate_uses_the_positive_class_column() -> None:
    probs = np.stack([1 - X[:, 0], X[:, 0]], axis=1)
    model = FakeModel(SIG, lambda _: {"label": Y, "probabilities": probs})
    result = run(probe_with(model), GatePolicy(metric="auc"), holdout={"features": X, "y": Y})
    assert gates(result)["holdout"]["value"] == pytest.approx(1.0)
    flipped = run(probe_with(model), GatePolicy(metric="auc", positive_class=0), holdout={"features": X, "y": 1 - Y})
    assert gates(flipped)["holdout"]["value"] == pytest.approx(0.0)


def test_rmse_threshold_is_a_ceiling() -> None:
    y = np.arange(ROWS, dtype=np.float64)
    model = FakeModel(signature(SIG["inputs"], [tensor("variable", "FP32", [-1, 1])]),
                      lambda _: {"variable": (y + 0.5).reshape(-1, 1)})
    result = run(probe_with(model), GatePolicy(metric="rmse", threshold=0.4), holdout={"features": X, "y": y})
    gate = gates(result)["holdout"]
    assert gate["value"] == pytest.approx(0.5) and gate["passed"] is False


def test_a_configured_output_that_does_not_exist_fails_the_gate() -> None:
    result = run(probe_with(classifier()), GatePolicy(label_output="class_id"), holdout={"features": X, "y": Y})
    assert not gates(result)["holdout"]["passed"] and "'class_id'" in gates(result)["holdout"]["detail"]


def test_a_model_that_fails_on_the_holdout_fails_the_gate() -> None:
    model = classifier()
    model.fail_predict = ValueError("bad shape")
    result = run(probe_with(model), holdout={"features": X, "y": Y})
    assert not gates(result)["holdout"]["passed"] and "bad shape" in gates(result)["holdout"]["detail"]


@pytest.mark.parametrize(("samples", "passed"), [([5.0] * 99 + [50.0], True), ([5.0] * 90 + [250.0] * 10, False)])
def test_latency_p99_at_batch_one_must_fit_the_budget(samples: list[float], passed: bool) -> None:
    model = classifier()
    model.latencies = samples
    gate = gates(run(probe_with(model), GatePolicy(latency_budget_ms=100, latency_runs=100)))["latency"]
    assert gate["passed"] is passed and gate["threshold"] == 100
    assert gate["value"] == pytest.approx(float(np.percentile(samples, 99)), abs=1e-3)
    assert model.latency_calls == [(1, 100)]


@pytest.mark.parametrize(("metadata", "passed"), [({"region": "eu-west-1"}, True), ({"region": "us-east-1"}, False),
                                                  ({}, False)])
def test_region_must_be_allowed_when_a_set_is_configured(metadata: dict[str, Any], passed: bool) -> None:
    policy = GatePolicy(allowed_regions=("eu-west-1", "eu-central-1"))
    assert gates(run(probe_with(classifier()), policy, metadata=metadata))["region"]["passed"] is passed
    assert gates(run(probe_with(classifier()), metadata=metadata))["region"]["skipped"] is True


def test_a_declared_signature_must_describe_the_artifact() -> None:
    declared = signature([tensor("features", "FP32", [-1, 3])],
                         [tensor("label", "INT64", [-1]), tensor("probabilities", "FP32", [-1, -1])])
    assert gates(run(probe_with(classifier()), declared_signature=declared))["declared_signature"]["passed"]
    declared["inputs"][0]["datatype"] = "FP64"
    gate = gates(run(probe_with(classifier()), declared_signature=declared))["declared_signature"]
    assert not gate["passed"] and "datatype FP64 -> FP32" in gate["detail"]


@pytest.mark.parametrize(("holdout", "message"), [
    ({"features": X}, "'y'"),
    ({"features": X[:5], "y": Y}, "features"),
    ({"other": X, "y": Y}, "missing features"),
    ("/no/such/holdout.npz", "nothing at"),
])
def test_holdout_problems_are_invalid_input(holdout: Any, message: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        run(probe_with(classifier()), holdout=holdout)
    assert err.value.field == "holdout" and message in err.value.message


def test_holdout_from_an_npz_file(tmp_path: Path) -> None:
    np.savez(tmp_path / "holdout.npz", features=X.astype(np.float64), y=Y)
    model = classifier()
    result = run(probe_with(model), holdout=tmp_path / "holdout.npz")
    assert gates(result)["holdout"]["value"] == 1.0
    assert model.seen[0]["features"].dtype == np.float32  # fed as the signature declares


# -- real ONNX models through ONNX Runtime ---------------------------------------------------------


class OrtModel:
    def __init__(self, path: str) -> None:
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        specs = [(side, t) for side in ("inputs", "outputs")
                 for t in (self.session.get_inputs() if side == "inputs" else self.session.get_outputs())]
        self.signature: dict[str, Any] = {"inputs": [], "outputs": [], "batchable": True}
        for side, t in specs:
            shape = [d if isinstance(d, int) else -1 for d in t.shape]
            self.signature[side].append(tensor(t.name, DATATYPE_BY_ORT[t.type].name, shape))

    def predict(self, inputs: Arrays) -> Arrays:
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, inputs), strict=True))

    def latency_ms(self, batch_rows: int, runs: int) -> list[float]:
        feeds = {t.name: np.zeros([batch_rows if not isinstance(d, int) else d for d in t.shape],
                                  dtype=DATATYPE_BY_ORT[t.type].numpy) for t in self.session.get_inputs()}
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            self.session.run(None, feeds)
            samples.append((time.perf_counter() - start) * 1000)
        return samples


class OrtProbe:
    def load(self, artifact_path: str) -> OrtModel:
        return OrtModel(artifact_path)


@pytest.mark.integration
def test_real_models_pass_fail_and_compare_against_production(model_repo: Path, tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path}/state.db")
    try:
        registry = Registry(store, validator=Validator(OrtProbe()))
        registry.set_gate_policy("tabular", GatePolicy(threshold=0.9, latency_budget_ms=1000), actor="ops")
        tab = model_repo / "tabular"
        v1 = registry.register("tabular", "1", tab / "1" / "model.onnx", actor="ci", holdout=tab / "1" / "holdout.npz")
        assert v1.stage == Stage.VALIDATED, v1.validation
        assert v1.signature["inputs"] == [tensor("features", "FP32", [-1, 30])]
        assert v1.validation["gates"][2]["gate"] == "holdout" and v1.validation["gates"][2]["value"] > 0.9
        registry.promote("tabular", "1", actor="ops", reason="first production")
        v2 = registry.register("tabular", "2", tab / "2" / "model.onnx", actor="ci", holdout=tab / "2" / "holdout.npz")
        regression = {g["gate"]: g for g in v2.validation["gates"]}["holdout_regression"]
        assert v2.stage == Stage.VALIDATED and v2.validation["compared_with"] == "1"
        assert not regression["skipped"] and "production 1" in regression["detail"]
        mixed = registry.register("tabular", "3", model_repo / "mixed" / "1" / "model.onnx", actor="ci")
        assert mixed.stage == Stage.REJECTED
        assert {g["gate"]: g for g in mixed.validation["gates"]}["signature"]["passed"] is False
        breaking = registry.register("tabular", "4", model_repo / "mixed" / "1" / "model.onnx", actor="ci",
                                     breaking=True)
        assert breaking.stage == Stage.VALIDATED
        corrupt = tmp_path / "corrupt.onnx"
        corrupt.write_bytes(b"\x08\x01 not a model")
        bad = registry.register("tabular", "5", corrupt, actor="ci")
        loads = bad.validation["gates"][0]
        assert bad.stage == Stage.REJECTED and loads["gate"] == "loads" and loads["passed"] is False
    finally:
        store.close()
