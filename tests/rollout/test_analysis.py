"""Window analysis: each check, the four verdicts, and the evidence they carry."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from rollout.analysis import (
    ArmWindow,
    Assessment,
    Check,
    Observation,
    Outcome,
    ShadowComparison,
    Verdict,
    assess,
)
from rollout.spec import AnalysisSpec

STRICT = AnalysisSpec(min_requests=100, max_error_rate=0.01, max_p99_latency_ms=50.0,
                      max_p99_latency_ratio=1.5, max_input_psi=0.2, max_prediction_psi=0.25)


def window(cand: ArmWindow | None, stable: ArmWindow | None = None, prediction_psi: float | None = None,
           shadow: ShadowComparison | None = None) -> Observation:
    stable = stable or ArmWindow("1", 1000, 0, 4.0, 20.0, 0.01)
    return Observation(0.0, 30.0, cand, stable, prediction_psi=prediction_psi, shadow=shadow)


def check(result: Assessment, name: str) -> Check:
    return next(c for c in result.checks if c.name == name)


def test_a_healthy_candidate_is_successful_with_every_check_recorded() -> None:
    result = assess(STRICT, window(ArmWindow("2", 500, 2, 5.0, 25.0, 0.05), prediction_psi=0.1))
    assert result.verdict is Verdict.SUCCESSFUL
    names = [c.name for c in result.checks]
    assert names == ["min_requests", "max_error_rate", "max_p99_latency_ms", "max_p99_latency_ratio",
                     "max_prediction_psi", "max_input_psi"]
    assert all(c.outcome is Outcome.PASSED for c in result.checks)
    assert result.measurements["candidate_error_rate"] == 2 / 500
    assert result.measurements["stable_requests"] == 1000


def test_too_few_requests_is_inconclusive_even_when_a_threshold_breaches() -> None:
    result = assess(STRICT, window(ArmWindow("2", 99, 99, 5.0, 500.0)))
    assert result.verdict is Verdict.INCONCLUSIVE
    assert "fewer than min_requests 100" in result.reason
    assert result.checks[0].outcome is Outcome.TOO_FEW


def test_error_rate_breach_fails_and_names_threshold_and_value() -> None:
    result = assess(STRICT, window(ArmWindow("2", 200, 10, 5.0, 25.0)))
    assert result.verdict is Verdict.FAILED
    [breach] = result.breached
    assert (breach.name, breach.threshold, breach.value) == ("max_error_rate", 0.01, 0.05)
    assert "max_error_rate: 0.05 > 0.01" in result.reason


def test_error_rate_at_the_threshold_passes() -> None:
    assert assess(STRICT, window(ArmWindow("2", 200, 2, 5.0, 25.0))).verdict is Verdict.SUCCESSFUL


def test_absolute_p99_breach_fails() -> None:
    result = assess(STRICT, window(ArmWindow("2", 200, 0, 5.0, 51.0)))
    assert [c.name for c in result.breached] == ["max_p99_latency_ms", "max_p99_latency_ratio"]


def test_latency_ratio_compares_with_stable_in_the_same_window() -> None:
    spec = AnalysisSpec(min_requests=100, max_p99_latency_ratio=1.5)
    result = assess(spec, window(ArmWindow("2", 200, 0, 5.0, 40.0), ArmWindow("1", 200, 0, 5.0, 20.0)))
    assert result.verdict is Verdict.FAILED
    assert result.breached[0].value == 2.0


def test_latency_ratio_is_not_checked_when_stable_served_too_little() -> None:
    spec = AnalysisSpec(min_requests=100, max_p99_latency_ratio=1.5)
    result = assess(spec, window(ArmWindow("2", 200, 0, 5.0, 40.0), ArmWindow("1", 10, 0, 5.0, 20.0)))
    assert result.verdict is Verdict.SUCCESSFUL
    assert check(result, "max_p99_latency_ratio").outcome is Outcome.NO_DATA


def test_a_drift_threshold_without_its_figure_is_recorded_as_no_data() -> None:
    result = assess(STRICT, window(ArmWindow("2", 200, 0, 5.0, 25.0), ArmWindow("1", 200, 0, 5.0, 20.0)))
    assert result.verdict is Verdict.SUCCESSFUL
    for name in ("max_prediction_psi", "max_input_psi"):
        found = check(result, name)
        assert found.outcome is Outcome.NO_DATA
        assert found.value is None
    assert result.measurements["prediction_psi"] is None


def test_prediction_drift_between_arms_fails() -> None:
    result = assess(STRICT, window(ArmWindow("2", 200, 0, 5.0, 25.0), prediction_psi=0.4))
    assert [c.name for c in result.breached] == ["max_prediction_psi"]


def test_input_drift_on_the_candidate_alone_fails() -> None:
    result = assess(STRICT, window(ArmWindow("2", 200, 0, 5.0, 25.0, 0.5), ArmWindow("1", 500, 0, 5.0, 20.0, 0.05)))
    assert result.verdict is Verdict.FAILED
    assert result.breached[0].name == "max_input_psi"


def test_input_drift_on_both_arms_is_a_population_shift_not_a_failure() -> None:
    result = assess(STRICT, window(ArmWindow("2", 200, 0, 5.0, 25.0, 0.5), ArmWindow("1", 500, 0, 5.0, 20.0, 0.4)))
    assert result.verdict is Verdict.INCONCLUSIVE
    assert check(result, "max_input_psi").outcome is Outcome.POPULATION_SHIFT


def test_no_data_is_an_error() -> None:
    assert assess(STRICT, None).verdict is Verdict.ERROR
    assert assess(STRICT, window(None)).verdict is Verdict.ERROR


def test_nan_latency_means_not_measured() -> None:
    result = assess(STRICT, window(ArmWindow("2", 200, 0, float("nan"), float("nan"))))
    assert result.verdict is Verdict.SUCCESSFUL
    assert check(result, "max_p99_latency_ms").outcome is Outcome.NO_DATA


def test_shadow_figures_travel_in_the_measurements() -> None:
    result = assess(STRICT, window(ArmWindow("2", 200, 0, 5.0, 25.0),
                                   shadow=ShadowComparison(150, 1, 0.97, 0.02)))
    assert result.measurements["shadow_agreement_rate"] == 0.97
    assert result.measurements["shadow_requests"] == 150


arms = st.builds(
    ArmWindow, version=st.just("v"), requests=st.integers(0, 2000), errors=st.integers(0, 50),
    p50_ms=st.one_of(st.none(), st.floats(0, 100)), p99_ms=st.one_of(st.none(), st.floats(0, 500)),
    input_psi_max=st.one_of(st.none(), st.floats(0, 2)))
limits = st.one_of(st.none(), st.floats(0, 2))


@settings(max_examples=150, deadline=None)
@given(cand=arms, stable=st.one_of(st.none(), arms), psi=st.one_of(st.none(), st.floats(0, 2)),
       min_requests=st.integers(0, 1000), err=st.one_of(st.none(), st.floats(0, 1)), p99=limits,
       ratio=limits, in_psi=limits, pred_psi=limits)
def test_verdicts_follow_the_checks(cand: ArmWindow, stable: ArmWindow | None, psi: float | None,
                                    min_requests: int, err: float | None, p99: float | None,
                                    ratio: float | None, in_psi: float | None, pred_psi: float | None) -> None:
    spec = AnalysisSpec(min_requests=min_requests, max_error_rate=err, max_p99_latency_ms=p99,
                        max_p99_latency_ratio=ratio, max_input_psi=in_psi, max_prediction_psi=pred_psi)
    result = assess(spec, Observation(0.0, 1.0, cand, stable, prediction_psi=psi))
    if result.verdict is Verdict.FAILED:
        assert cand.requests >= min_requests
        assert result.breached
    if result.verdict is Verdict.SUCCESSFUL:
        assert all(c.outcome in (Outcome.PASSED, Outcome.NO_DATA) for c in result.checks)
    for breach in result.breached:
        assert breach.value is not None and breach.threshold is not None and breach.value > breach.threshold
    json.dumps(result.to_dict(), allow_nan=False)


def _histogram(fast_ms: float, fast: int, slow_ms: float, slow: int) -> tuple[tuple[float, int], ...]:
    return tuple(sorted(((fast_ms, fast), (slow_ms, slow))))


def test_a_latency_ratio_resting_on_a_few_slow_requests_is_noise() -> None:
    """500 candidate requests, 4 of them caught in a hiccup: p99 reads 4x the stable's, but 4 of 500
    above the limit is what equal latency produces (about 1 %), so the check passes."""
    spec = AnalysisSpec(min_requests=100, max_error_rate=0.01, max_p99_latency_ratio=3.0)
    cand = ArmWindow("2", 500, 0, 2.0, 40.0, latency_histogram=_histogram(2.0, 496, 40.0, 4))
    result = assess(spec, window(cand, ArmWindow("1", 1000, 0, 2.0, 10.0)))
    assert result.verdict is Verdict.SUCCESSFUL
    assert check(result, "max_p99_latency_ratio").value == 4.0


def test_a_slower_model_breaches_the_latency_ratio() -> None:
    spec = AnalysisSpec(min_requests=100, max_error_rate=0.01, max_p99_latency_ratio=3.0)
    cand = ArmWindow("2", 500, 0, 30.0, 40.0, latency_histogram=_histogram(30.0, 400, 40.0, 100))
    result = assess(spec, window(cand, ArmWindow("1", 1000, 0, 2.0, 10.0)))
    assert result.verdict is Verdict.FAILED
    assert [c.name for c in result.breached] == ["max_p99_latency_ratio"]


def test_binomial_tail_matches_a_direct_sum() -> None:
    import math

    from rollout.analysis import binomial_tail

    def direct(k: int, n: int, p: float) -> float:
        return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))

    for k, n in ((0, 10), (3, 50), (11, 500), (40, 500), (501, 500)):
        assert abs(binomial_tail(k, n, 0.01) - direct(k, n, 0.01)) < 1e-12
