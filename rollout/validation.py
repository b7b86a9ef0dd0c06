"""Registration gates: the model loads, keeps production's signature, holds up on a holdout set, meets
its latency budget and comes from an allowed region. Models are run through a `ModelProbe` port so
that the registry never imports an inference runtime; the gateway implements it with ONNX Runtime.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rollout.errors import InvalidSpec

METRICS = {"accuracy": True, "auc": True, "rmse": False}  # metric -> higher is better
# Protocol datatypes -> numpy, to feed holdout arrays in the type the model declares.
NUMPY_TYPES: Mapping[str, Any] = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
    "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
}


class LoadedModel(Protocol):
    """A model ready to run. `signature` has the shape of `gateway.types.Signature.to_dict()`."""

    signature: dict[str, Any]

    def predict(self, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]: ...

    def latency_ms(self, batch_rows: int, runs: int) -> list[float]: ...


class ModelProbe(Protocol):
    """Loads an artifact; raises (any exception) when the file is corrupt or cannot be loaded."""

    def load(self, artifact_path: str) -> LoadedModel: ...


@dataclass(frozen=True, slots=True)
class GatePolicy:
    """Per-model gate settings, stored under `gates` in the model's KIND_MODEL document.

    `threshold` None = no absolute floor (ceiling for rmse); the regression check against production
    still applies. Output names None = defaults: `label` then `probabilities` then the first output."""

    metric: str = "accuracy"
    threshold: float | None = None
    max_regression: float = 0.01
    latency_budget_ms: float = 100.0
    latency_runs: int = 50
    allowed_regions: tuple[str, ...] = ()
    label_output: str | None = None
    probability_output: str | None = None
    prediction_output: str | None = None
    positive_class: int = 1

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise InvalidSpec("gates.metric", f"expected one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.max_regression < 0:
            raise InvalidSpec("gates.max_regression", f"expected >= 0, got {self.max_regression}")
        if self.latency_budget_ms <= 0:
            raise InvalidSpec("gates.latency_budget_ms", f"expected > 0, got {self.latency_budget_ms}")
        if self.latency_runs < 1:
            raise InvalidSpec("gates.latency_runs", f"expected >= 1, got {self.latency_runs}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["allowed_regions"] = list(self.allowed_regions)
        return out

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> GatePolicy:
        """Builds a policy from JSON; unknown or mistyped fields raise `InvalidSpec` naming them."""
        known = {f.name: f for f in fields(GatePolicy)}
        for name in data:
            if name not in known:
                raise InvalidSpec(f"gates.{name}", f"unknown setting; expected one of {', '.join(known)}")
        values = {name: _coerce(name, value) for name, value in data.items()}
        return GatePolicy(**values)


def _coerce(name: str, value: Any) -> Any:
    numbers = {"threshold", "max_regression", "latency_budget_ms"}
    if name in numbers and value is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidSpec(f"gates.{name}", f"expected a number, got {value!r}")
        return float(value)
    if name in ("latency_runs", "positive_class"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidSpec(f"gates.{name}", f"expected an integer, got {value!r}")
        return value
    if name == "allowed_regions":
        if isinstance(value, str) or not all(isinstance(r, str) for r in value):
            raise InvalidSpec("gates.allowed_regions", f"expected a list of region names, got {value!r}")
        return tuple(value)
    if name != "threshold" and value is not None and not isinstance(value, str):
        raise InvalidSpec(f"gates.{name}", f"expected a string, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Production:
    """What the gates compare against: the model's current production version."""

    version: str
    artifact: str
    signature: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Validation:
    """The report written onto the version, and the signature read from the loaded artifact."""

    report: dict[str, Any]
    signature: dict[str, Any] | None


def gate(name: str, passed: bool, value: Any = None, threshold: Any = None, detail: str = "",
         *, skipped: bool = False) -> dict[str, Any]:
    """One report entry; a skipped gate passes and says why it did not run."""
    return {"gate": name, "passed": passed, "value": value, "threshold": threshold, "detail": detail,
            "skipped": skipped}


class Validator:
    """Runs the gates for one candidate and builds the report."""

    def __init__(self, probe: ModelProbe) -> None:
        self._probe = probe

    def validate(self, artifact: str, *, policy: GatePolicy, production: Production | None,
                 metadata: Mapping[str, Any], breaking: bool = False,
                 holdout: str | Path | Mapping[str, Any] | None = None,
                 declared_signature: Mapping[str, Any] | None = None) -> Validation:
        data = Holdout.read(holdout) if holdout is not None else None
        gates: list[dict[str, Any]] = []
        loaded, load_gate = self._load(artifact)
        gates.append(load_gate)
        if loaded is None:
            skipped = ["signature", "holdout", "holdout_regression", "latency"]
            gates += [gate(n, False, detail="not run: the model did not load") for n in skipped]
        else:
            if declared_signature:
                gates.append(declared_gate(declared_signature, loaded.signature))
            gates.append(signature_gate(loaded.signature, production, breaking))
            gates += self._holdout_gates(loaded, data, policy, production)
            gates.append(latency_gate(loaded, policy))
        gates.append(region_gate(metadata, policy))
        report = {"passed": all(g["passed"] for g in gates), "gates": gates, "policy": policy.to_dict(),
                  "breaking": breaking, "compared_with": production.version if production else None}
        return Validation(report, dict(loaded.signature) if loaded is not None else None)

    def _load(self, artifact: str) -> tuple[LoadedModel | None, dict[str, Any]]:
        try:
            loaded = self._probe.load(artifact)
        except Exception as exc:  # the runtime's own error types are unknown here; any means "no"
            return None, gate("loads", False, detail=f"{type(exc).__name__}: {exc}")
        return loaded, gate("loads", True, detail="the artifact loads")

    def _holdout_gates(self, loaded: LoadedModel, data: Holdout | None, policy: GatePolicy,
                       production: Production | None) -> list[dict[str, Any]]:
        if data is None:
            return [gate("holdout", True, detail="skipped: no holdout given", skipped=True),
                    gate("holdout_regression", True, detail="skipped: no holdout given", skipped=True)]
        missing = [t["name"] for t in loaded.signature.get("inputs", []) if t["name"] not in data.arrays]
        if missing:
            raise InvalidSpec("holdout", f"expected arrays for the model's inputs; missing {', '.join(missing)}")
        score, error = evaluate(loaded, data, policy)
        if score is None:
            return [gate("holdout", False, threshold=policy.threshold, detail=error),
                    gate("holdout_regression", False, detail="not run: the candidate was not scored")]
        return [threshold_gate(score, policy), self._regression_gate(score, data, policy, production)]

    def _regression_gate(self, score: float, data: Holdout, policy: GatePolicy,
                         production: Production | None) -> dict[str, Any]:
        if production is None:
            return gate("holdout_regression", True, detail="skipped: no production version", skipped=True)
        loaded, load_gate = self._load(production.artifact)
        if loaded is None:
            return gate("holdout_regression", False, detail=f"production did not load: {load_gate['detail']}")
        baseline, error = evaluate(loaded, data, policy)
        if baseline is None:
            return gate("holdout_regression", False, detail=f"production was not scored: {error}")
        worse = (baseline - score) if METRICS[policy.metric] else (score - baseline)
        return gate("holdout_regression", worse <= policy.max_regression, round(worse, 6),
                    policy.max_regression,
                    f"{policy.metric}: candidate {score:.6g}, production {production.version} {baseline:.6g}")


def threshold_gate(score: float, policy: GatePolicy) -> dict[str, Any]:
    if policy.threshold is None:
        return gate("holdout", True, round(score, 6), None, f"{policy.metric} {score:.6g}; no threshold set")
    higher = METRICS[policy.metric]
    passed = score >= policy.threshold if higher else score <= policy.threshold
    side = "at least" if higher else "at most"
    return gate("holdout", passed, round(score, 6), policy.threshold,
                f"{policy.metric} {score:.6g}, must be {side} {policy.threshold}")


def latency_gate(loaded: LoadedModel, policy: GatePolicy) -> dict[str, Any]:
    try:
        samples = loaded.latency_ms(1, policy.latency_runs)
    except Exception as exc:  # a model that fails to run fails the smoke test, whatever the error
        return gate("latency", False, threshold=policy.latency_budget_ms, detail=f"run failed: {exc}")
    if not samples:
        return gate("latency", False, threshold=policy.latency_budget_ms, detail="no latency samples")
    p99 = float(np.percentile(np.asarray(samples, dtype=np.float64), 99))
    return gate("latency", p99 <= policy.latency_budget_ms, round(p99, 3), policy.latency_budget_ms,
                f"p99 at batch 1 over {len(samples)} runs, in ms")


def region_gate(metadata: Mapping[str, Any], policy: GatePolicy) -> dict[str, Any]:
    if not policy.allowed_regions:
        return gate("region", True, metadata.get("region"), None, "skipped: no region restriction",
                    skipped=True)
    region = metadata.get("region")
    allowed = list(policy.allowed_regions)
    if region is None:
        return gate("region", False, None, allowed, "metadata.region is missing")
    return gate("region", region in policy.allowed_regions, region, allowed,
                f"region {region!r} must be one of {', '.join(allowed)}")


def signature_gate(candidate: Mapping[str, Any], production: Production | None,
                   breaking: bool) -> dict[str, Any]:
    if production is None or not production.signature:
        return gate("signature", True, detail="skipped: no production signature to compare with",
                    skipped=True)
    changes = signature_changes(production.signature, candidate)
    if not changes:
        return gate("signature", True, detail=f"same as production {production.version}")
    listed = "; ".join(changes)
    if breaking:
        return gate("signature", True, changes, detail=f"breaking change declared: {listed}")
    return gate("signature", False, changes, detail=f"differs from production {production.version}: {listed}")


def declared_gate(declared: Mapping[str, Any], loaded: Mapping[str, Any]) -> dict[str, Any]:
    """The signature a package declares (e.g. MLflow's) must describe the artifact; -1 matches any size."""
    changes = signature_changes(declared, loaded, wildcard=True)
    detail = "; ".join(changes) if changes else "the declared signature matches the artifact"
    return gate("declared_signature", not changes, changes or None, detail=detail)


def signature_changes(old: Mapping[str, Any], new: Mapping[str, Any], *, wildcard: bool = False) -> list[str]:
    """Human-readable differences in tensor names, datatypes and shapes between two signatures."""
    changes: list[str] = []
    for side in ("inputs", "outputs"):
        before = {t["name"]: t for t in old.get(side, [])}
        after = {t["name"]: t for t in new.get(side, [])}
        changes += [f"{side[:-1]} {n!r} removed" for n in before if n not in after]
        changes += [f"{side[:-1]} {n!r} added" for n in after if n not in before]
        for name in before.keys() & after.keys():
            changes += _tensor_changes(side[:-1], before[name], after[name], wildcard)
    return sorted(changes)


def _tensor_changes(what: str, old: Mapping[str, Any], new: Mapping[str, Any], wildcard: bool) -> list[str]:
    out = []
    if old["datatype"] != new["datatype"]:
        out.append(f"{what} {old['name']!r} datatype {old['datatype']} -> {new['datatype']}")
    a, b = list(old["shape"]), list(new["shape"])
    same = len(a) == len(b) and all(x == y or (wildcard and -1 in (x, y)) for x, y in zip(a, b, strict=True))
    if not same:
        out.append(f"{what} {old['name']!r} shape {a} -> {b}")
    return out


@dataclass(frozen=True, slots=True)
class Holdout:
    """Labelled evaluation data: input arrays by name plus `y`, one row each."""

    arrays: dict[str, np.ndarray[Any, Any]]
    y: np.ndarray[Any, Any]

    @staticmethod
    def read(source: str | Path | Mapping[str, Any]) -> Holdout:
        """From a `.npz` path or a mapping of arrays; problems raise `InvalidSpec` on `holdout`."""
        if isinstance(source, (str, Path)):
            if not Path(source).is_file():
                raise InvalidSpec("holdout", f"expected a .npz file, found nothing at {source}")
            with np.load(source, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        elif isinstance(source, Mapping):
            arrays = {str(k): np.asarray(v) for k, v in source.items()}
        else:
            raise InvalidSpec("holdout", f"expected a .npz path or a mapping of arrays, got {type(source).__name__}")
        if "y" not in arrays:
            raise InvalidSpec("holdout", f"expected an array named 'y'; found {', '.join(arrays) or 'none'}")
        y = arrays.pop("y")
        bad = [n for n, a in arrays.items() if a.ndim == 0 or a.shape[0] != y.shape[0]]
        if bad or y.shape[0] == 0:
            raise InvalidSpec("holdout", f"expected every array to have {y.shape[0]} > 0 rows like 'y'; "
                                         f"these differ: {', '.join(bad)}")
        return Holdout(arrays, y)


def evaluate(loaded: LoadedModel, data: Holdout, policy: GatePolicy) -> tuple[float | None, str]:
    """Runs the model on the holdout and scores it; returns (score, "") or (None, why not)."""
    feeds = {}
    for spec in loaded.signature.get("inputs", []):
        if spec["name"] not in data.arrays:
            return None, f"holdout has no array for input {spec['name']!r}"
        array, dtype = data.arrays[spec["name"]], NUMPY_TYPES.get(spec["datatype"])
        feeds[spec["name"]] = array if dtype is None else array.astype(dtype, copy=False)
    try:
        outputs = loaded.predict(feeds)
    except Exception as exc:  # whatever the runtime raises, the model failed on the holdout
        return None, f"predict failed on the holdout: {type(exc).__name__}: {exc}"
    try:
        return score(policy, outputs, data.y), ""
    except ValueError as exc:
        return None, str(exc)


def score(policy: GatePolicy, outputs: Mapping[str, np.ndarray[Any, Any]], y: np.ndarray[Any, Any]) -> float:
    """The policy's metric from the model's outputs; ValueError says what is missing or unusable."""
    if policy.metric == "rmse":
        predicted = _output(outputs, policy.prediction_output, ()).astype(np.float64).reshape(len(y), -1)
        return float(np.sqrt(np.mean((predicted[:, 0] - y.astype(np.float64).ravel()) ** 2)))
    if policy.metric == "auc":
        return auc(_positive_scores(outputs, policy), y.ravel() == policy.positive_class)
    return float(np.mean(_labels(outputs, policy) == y.ravel()))


def _output(outputs: Mapping[str, np.ndarray[Any, Any]], configured: str | None,
            preferred: tuple[str, ...]) -> np.ndarray[Any, Any]:
    if configured is not None:
        if configured not in outputs:
            raise ValueError(f"output {configured!r} is not among the model's outputs {sorted(outputs)}")
        return outputs[configured]
    for name in preferred:
        if name in outputs:
            return outputs[name]
    if not outputs:
        raise ValueError("the model returned no outputs")
    return next(iter(outputs.values()))


def _labels(outputs: Mapping[str, np.ndarray[Any, Any]], policy: GatePolicy) -> np.ndarray[Any, Any]:
    if policy.label_output is not None or "label" in outputs:
        return _output(outputs, policy.label_output, ("label",)).ravel()
    probs = _output(outputs, policy.probability_output, ("probabilities",))
    if probs.ndim == 2 and probs.shape[1] > 1:
        return np.asarray(np.argmax(probs, axis=1))
    return (probs.ravel() >= 0.5).astype(np.int64)


def _positive_scores(outputs: Mapping[str, np.ndarray[Any, Any]], policy: GatePolicy) -> np.ndarray[Any, Any]:
    probs = _output(outputs, policy.probability_output, ("probabilities",))
    if probs.ndim == 2 and probs.shape[1] > 1:
        if not 0 <= policy.positive_class < probs.shape[1]:
            raise ValueError(f"positive_class {policy.positive_class} is outside the {probs.shape[1]} columns")
        return probs[:, policy.positive_class]
    return probs.ravel()


def auc(scores: np.ndarray[Any, Any], positive: np.ndarray[Any, Any]) -> float:
    """ROC AUC as the Mann-Whitney statistic, ties counted half (average ranks)."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both classes in the holdout's y")
    order = np.argsort(scores, kind="mergesort")
    _, first, counts = np.unique(scores[order], return_index=True, return_counts=True)
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
