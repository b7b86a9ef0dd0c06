"""`ramp`: open-loop steps of geometrically rising rate until p99 breaks its target; the sustainable rate
is the highest step that held before two steps in a row broke (one noisy step does not end the ramp).

A step holds when its p99 and error rate meet their targets and the generator sent what it was asked to
(unsent requests mean every in-flight slot was waiting on the gateway). Its p99 is the median of its
seconds' p99s: a gateway past its limit queues and every second shows it, while one stalled second of a
busy host does not end the ramp. The p99 of the whole step is reported beside it.
"""

from __future__ import annotations

from statistics import median
from typing import Any

from loadtests.scenarios.context import Outcome, Run
from loadtests.scenarios.verdict import at_least, error_rate, unsent_share

DEFAULTS = {"duration_s": 120.0, "model": "tabular", "start_rate": 50.0, "max_rate": 4000.0, "step_s": 5.0,
            "p99_ms": 50.0, "max_error_rate": 0.001, "workers": 2}
BREAKS_TO_STOP = 2
STEP_WARMUP_S = 0.5
MAX_UNSENT = 0.01


def rates(start: float, end: float, steps: int) -> list[float]:
    """`steps` rates from `start` to `end`, each the same factor above the last."""
    if steps < 2 or start <= 0 or end <= start:
        raise ValueError("a ramp needs at least 2 steps and 0 < start rate < max rate")
    factor = (end / start) ** (1 / (steps - 1))
    return [round(start * factor**i, 1) for i in range(steps)]


def seconds_p99_ms(result: dict[str, Any]) -> float | None:
    """The median over the step's seconds of each second's p99 (seconds with OK answers only)."""
    values = [s["p99_s"] * 1e3 for s in result["series"] if s["count"] > s["errors"]]
    return median(values) if values else None


def step_figures(rate: float, result: dict[str, Any], p99_ms: float, max_error_rate: float) -> dict[str, Any]:
    p99 = seconds_p99_ms(result)
    errors, unsent = error_rate(result), unsent_share(result)
    held = (p99 is not None and p99 <= p99_ms and errors is not None and errors <= max_error_rate
            and unsent <= MAX_UNSENT)
    return {"rate": rate, "achieved_rps": result["throughput"]["requests_per_s"],
            "p50_ms": result["latency_s"]["p50"] * 1e3, "p99_ms": p99,
            "step_p99_ms": result["latency_s"]["p99"] * 1e3 if result["requests"]["ok"] else None,
            "error_rate": errors, "unsent_share": unsent, "client_busy": result.get("client", {}).get("busy"),
            "held": held}


def sustainable(steps: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    """(highest held rate before the final run of breaking steps, the first rate of that run)."""
    best: float | None = None
    breaking: float | None = None
    run = 0
    for step in steps:
        if step["held"]:
            run, breaking = 0, None
            best = step["rate"]
        else:
            run += 1
            breaking = step["rate"] if run == 1 else breaking
    return best, breaking


def play(run: Run) -> Outcome:
    o = run.opts
    count = max(2, int(o.duration_s // o.step_s))
    steps: list[dict[str, Any]] = []
    sc = run.scenario()
    with run.sampler():
        for rate in rates(o.start_rate, o.max_rate, count):
            run.event("ramp.step", f"{rate:g} requests/s")
            result = run.load(f"{rate:g}/s", sc, run.plan(o.step_s, rate=rate, warmup_s=STEP_WARMUP_S))
            steps.append(step_figures(rate, result, o.p99_ms, o.max_error_rate))
            if len(_trailing_breaks(steps)) >= BREAKS_TO_STOP:
                break
    best, breaking = sustainable(steps)
    figures = {"sustainable_rate": best, "breaking_rate": breaking, "p99_target_ms": o.p99_ms,
               "max_rate_reached": breaking is None, "steps": steps}
    detail = "highest step whose p99, error rate and sends met their targets"
    return Outcome([at_least("sustainable_rate", best, o.start_rate, " req/s", detail)], figures)


def _trailing_breaks(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for step in reversed(steps):
        if step["held"]:
            break
        out.append(step)
    return out
