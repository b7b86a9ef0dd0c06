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
    # Latency histogram of the window: (bucket upper bound in ms, count), ascending. Lets the latency
    # ratio be tested for significance instead of trusting one noisy tail value.
    latency_histogram: tuple[tuple[float, int], ...] = ()

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

    @property
    def fails_fast(self) -> bool:
        """Failed on checks that are trustworthy before the window ends (see FAIL_FAST_CHECKS)."""
        return self.verdict is Verdict.FAILED and any(c.name in FAIL_FAST_CHECKS for c in self.breached)

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": str(self.verdict), "reason": self.reason,
                "measurements": dict(self.measurements), "checks": [c.to_dict() for c in self.checks]}


# Checks whose breach on part of a window is already trustworthy: a count-based rate. Tail latency and
# distributions need the whole window (a few slow requests early on are noise, not a verdict).
FAIL_FAST_CHECKS = frozenset({"max_error_rate"})
# A p99 ratio breach must be backed by enough slow candidate requests: under equal latency at most 1%
# of them exceed `ratio x stable p99`; the excess must be significant at this level (one-sided binomial).
TAIL_SHARE = 0.01
TAIL_ALPHA = 0.01


def assess(spec: AnalysisSpec, observation: Observation | None, *, compare_arms: bool = True) -> Assessment:
    """Judges one window. Fewer candidate requests than `min_requests` is never Failed. With
    `compare_arms` False (the candidate takes all traffic, so the stable arm has none to compare
    with) the candidate-vs-stable latency ratio is not checked."""
    if observation is None or observation.candidate is None:
        return Assessment(Verdict.ERROR, "no measurements for the candidate in this window",
                          _measurements(observation))
    measurements = _measurements(observation)
    checks = _checks(spec, observation, compare_arms)
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


def _checks(spec: AnalysisSpec, obs: Observation, compare_arms: bool = True) -> tuple[Check, ...]:
    cand = obs.candidate
    if cand is None:
        return ()
    enough = cand.requests >= spec.min_requests
    checks = [Check("min_requests", float(spec.min_requests), float(cand.requests),
                    Outcome.PASSED if enough else Outcome.TOO_FEW)]
    if spec.max_error_rate is not None:
        checks.append(_upper_limit("max_error_rate", spec.max_error_rate, cand.error_rate))
    if spec.max_p99_latency_ms is not None:
        checks.append(_upper_limit("max_p99_latency_ms", spec.max_p99_latency_ms, _finite(cand.p99_ms)))
    if spec.max_p99_latency_ratio is not None:
        ratio = _latency_ratio(spec, obs) if compare_arms else None
        checks.append(_ratio_check(spec.max_p99_latency_ratio, ratio, obs))
    if spec.max_prediction_psi is not None:
        checks.append(_upper_limit("max_prediction_psi", spec.max_prediction_psi, _finite(obs.prediction_psi)))
    if spec.max_input_psi is not None:
        checks.append(_input_drift(spec.max_input_psi, obs))
    return tuple(checks)


def _upper_limit(name: str, threshold: float, value: float | None) -> Check:
    if value is None:
        return Check(name, threshold, None, Outcome.NO_DATA)
    return Check(name, threshold, value, Outcome.BREACHED if value > threshold else Outcome.PASSED)


def _ratio_check(threshold: float, ratio: float | None, obs: Observation) -> Check:
    check = _upper_limit("max_p99_latency_ratio", threshold, ratio)
    cand, stable = obs.candidate, obs.stable
    if check.outcome is not Outcome.BREACHED or cand is None or stable is None or not cand.latency_histogram:
        return check
    limit_ms = threshold * (stable.p99_ms or 0.0)
    slow = sum(count for upper, count in cand.latency_histogram if upper > limit_ms)
    total = sum(count for _, count in cand.latency_histogram)
    if binomial_tail(slow, total, TAIL_SHARE) < TAIL_ALPHA:
        return check
    # The ratio rests on a handful of slow requests: noise such as a scheduling hiccup, not a slower model.
    return Check(check.name, threshold, ratio, Outcome.PASSED)


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed in log space (terms past the mode shrink fast)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    total = 0.0
    for i in range(k, min(n, k + 5000) + 1):
        term = math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
        total += math.exp(term)
        if term < -50:
            break
    return min(1.0, total)


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
