"""`steady`: a constant open-loop arrival rate for the whole duration; p50, p99 and error rate against
their targets."""

from __future__ import annotations

from loadtests.scenarios.context import Outcome, Run
from loadtests.scenarios.verdict import slo_checks

DEFAULTS = {"duration_s": 60.0, "model": "tabular", "rate": 200.0, "p50_ms": 20.0, "p99_ms": 100.0,
            "max_error_rate": 0.001}


def play(run: Run) -> Outcome:
    o = run.opts
    with run.sampler():
        result = run.load("steady", run.scenario(), run.plan(o.duration_s, rate=o.rate))
    figures = {"rate": o.rate, "achieved_rps": result["throughput"]["requests_per_s"],
               "p50_ms": result["latency_s"]["p50"] * 1e3, "p99_ms": result["latency_s"]["p99"] * 1e3,
               "errors": result["requests"]["errors"]}
    checks = slo_checks(result, p50_ms=o.p50_ms, p99_ms=o.p99_ms, max_error_rate=o.max_error_rate)
    return Outcome(checks, figures)
