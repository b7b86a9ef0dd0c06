"""Pure analysis: one window of measurements per arm plus the spec's thresholds -> a verdict
(Successful, Failed, Inconclusive, Error) with every check's threshold and measured value."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from rollout.spec import AnalysisSpec


class Verdict(StrEnum):
    SUCCESSFUL = "successful"
    FAILED = "failed"  # a threshold was breached with enough requests to trust it
    INCONCLUSIVE = "inconclusive"  # too few requests, or drift that hit both arms alike
    ERROR = "error"  # no measurements at all for the window


class Outcome(StrEnum):
    PASSED = "passed"
    BREACHED = "breached"
    TOO_FEW = "too_few"
    NO_DATA = "no_data"  # threshold set but the figure was not measured: not checked
    POPULATION_SHIFT = "population_shift"  # inputs drifted on the stable arm too: not the candidate's doing


@dataclass(frozen=True, slots=True)
class ArmWindow:
    """What one version served in the window. Latencies and drift are None when not measured."""

    version: str
    requests: int
    errors: int
    p50_ms: float | None = None
    p99_ms: float | None = None
    input_psi_max: float | None = None  # the largest per-feature input PSI against the training reference

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests > 0 else None


@dataclass(frozen=True, slots=True)
class ShadowComparison:
    """Mirrored requests paired with the primary's answer (figures are None when not computed)."""

    requests: int
    errors: int = 0
    agreement_rate: float | None = None
    mean_abs_delta: float | None = None


@dataclass(frozen=True, slots=True)
class Observation:
    """One window [window_start, window_end) in wall-clock seconds, per arm."""

    window_start: float
    window_end: float
    candidate: ArmWindow | None
    stable: ArmWindow | None
    prediction_psi: float | None = None  # candidate vs stable prediction distributions, same window
    shadow: ShadowComparison | None = None


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    threshold: float | None
    value: float | None
    outcome: Outcome

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "threshold": self.threshold, "value": self.value,
                "outcome": str(self.outcome)}


@dataclass(frozen=True)
class Assessment:
    """The verdict for one window, why, and the evidence behind it."""

    verdict: Verdict
    reason: str
    measurements: Mapping[str, Any]
    checks: tuple[Check, ...] = ()

    @property
    def breached(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.outcome is Outcome.BREACHED)

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": str(self.verdict), "reason": self.reason,
                "measurements": dict(self.measurements), "checks": [c.to_dict() for c in self.checks]}


def assess(spec: AnalysisSpec, observation: Observation | None) -> Assessment:
    """Judges one window. Fewer candidate requests than `min_requests` is never Failed, so that a
    verdict of Failed on a partial window is already trustworthy (the caller may act on it early)."""
    if observation is None or observation.candidate is None:
        return Assessment(Verdict.ERROR, "no measurements for the candidate in this window",
                          _measurements(observation))
    measurements = _measurements(observation)
    checks = _checks(spec, observation)
    too_few = [c for c in checks if c.outcome is Outcome.TOO_FEW]
    breached = [c for c in checks if c.outcome is Outcome.BREACHED]
    shifted = [c for c in checks if c.outcome is Outcome.POPULATION_SHIFT]
    if too_few:
        reason = (f"candidate served {observation.candidate.requests} requests, fewer than "
                  f"min_requests {spec.min_requests}")
        return Assessment(Verdict.INCONCLUSIVE, reason, measurements, checks)
    if breached:
        reason = "; ".join(f"{c.name}: {_fmt(c.value)} > {_fmt(c.threshold)}" for c in breached)
        return Assessment(Verdict.FAILED, reason, measurements, checks)
    if shifted:
        return Assessment(Verdict.INCONCLUSIVE, "input drift on both arms: the population shifted",
                          measurements, checks)
    return Assessment(Verdict.SUCCESSFUL, "all checks passed", measurements, checks)


def _checks(spec: AnalysisSpec, obs: Observation) -> tuple[Check, ...]:
    cand = obs.candidate
    if cand is None:
        return ()
    enough = cand.requests >= spec.min_requests
    checks = [Check("min_requests", float(spec.min_requests), float(cand.requests),
                    Outcome.PASSED if enough else Outcome.TOO_FEW)]
    limits = (("max_error_rate", spec.max_error_rate, cand.error_rate),
              ("max_p99_latency_ms", spec.max_p99_latency_ms, _finite(cand.p99_ms)),
              ("max_p99_latency_ratio", spec.max_p99_latency_ratio, _latency_ratio(spec, obs)),
              ("max_prediction_psi", spec.max_prediction_psi, _finite(obs.prediction_psi)))
    for name, threshold, value in limits:
        if threshold is not None:
            checks.append(_upper_limit(name, threshold, value))
    if spec.max_input_psi is not None:
        checks.append(_input_drift(spec.max_input_psi, obs))
    return tuple(checks)


def _upper_limit(name: str, threshold: float, value: float | None) -> Check:
    if value is None:
        return Check(name, threshold, None, Outcome.NO_DATA)
    return Check(name, threshold, value, Outcome.BREACHED if value > threshold else Outcome.PASSED)


def _input_drift(threshold: float, obs: Observation) -> Check:
    value = _finite(obs.candidate.input_psi_max) if obs.candidate else None
    check = _upper_limit("max_input_psi", threshold, value)
    stable = _finite(obs.stable.input_psi_max) if obs.stable else None
    # Both arms see one population; drift on both is a shift in the world, not a fault of the model.
    if check.outcome is Outcome.BREACHED and stable is not None and stable > threshold:
        return Check(check.name, threshold, value, Outcome.POPULATION_SHIFT)
    return check


def _latency_ratio(spec: AnalysisSpec, obs: Observation) -> float | None:
    """Candidate p99 / stable p99, only when the stable arm served enough requests to compare."""
    cand, stable = obs.candidate, obs.stable
    if cand is None or stable is None or stable.requests < max(spec.min_requests, 1):
        return None
    cand_p99, stable_p99 = _finite(cand.p99_ms), _finite(stable.p99_ms)
    if cand_p99 is None or stable_p99 is None or stable_p99 <= 0:
        return None
    return cand_p99 / stable_p99


def _measurements(obs: Observation | None) -> dict[str, Any]:
    if obs is None:
        return {}
    figures: dict[str, Any] = {"window_start": obs.window_start, "window_end": obs.window_end,
                               "prediction_psi": _finite(obs.prediction_psi)}
    for arm_name, arm in (("candidate", obs.candidate), ("stable", obs.stable)):
        if arm is not None:
            figures |= {f"{arm_name}_version": arm.version, f"{arm_name}_requests": arm.requests,
                        f"{arm_name}_errors": arm.errors, f"{arm_name}_error_rate": arm.error_rate,
                        f"{arm_name}_p50_ms": _finite(arm.p50_ms), f"{arm_name}_p99_ms": _finite(arm.p99_ms),
                        f"{arm_name}_input_psi_max": _finite(arm.input_psi_max)}
    if obs.shadow is not None:
        figures |= {"shadow_requests": obs.shadow.requests, "shadow_errors": obs.shadow.errors,
                    "shadow_agreement_rate": _finite(obs.shadow.agreement_rate),
                    "shadow_mean_abs_delta": _finite(obs.shadow.mean_abs_delta)}
    return figures


def _finite(value: float | None) -> float | None:
    # An empty histogram yields NaN percentiles; NaN means "not measured", never a breach.
    return value if value is not None and math.isfinite(value) else None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"
