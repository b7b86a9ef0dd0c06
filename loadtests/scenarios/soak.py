"""`soak`: a steady open-loop load for a long time (an hour by default) with the gateway's memory, open
file descriptors and latency sampled; it fails on growth, not on level.

Growth of a series = least-squares slope through the medians of fixed windows (duration / 60, at least
three sample intervals) over the second half of the run, times that half's length. Medians shrug off a
single GC pause or a noisy neighbour; the second half leaves out start-up and warm-up.
"""

from __future__ import annotations

from statistics import median
from typing import Any

from loadtests.scenarios.context import Outcome, Run
from loadtests.scenarios.trend import second_half_growth
from loadtests.scenarios.verdict import Check, at_most, slo_checks

DEFAULTS = {"duration_s": 3600.0, "model": "tabular", "rate": 100.0, "p50_ms": 20.0, "p99_ms": 100.0,
            "max_error_rate": 0.001}
RSS_GROWTH_MB = 16.0  # or 5 % of the median RSS, whichever is larger
RSS_GROWTH_SHARE = 0.05
FD_GROWTH = 4.0
P99_GROWTH_MS = 2.0  # or half the median p99, whichever is larger
P99_GROWTH_SHARE = 0.5


def play(run: Run) -> Outcome:
    o = run.opts
    with run.sampler():
        result = run.load("soak", run.scenario(), run.plan(o.duration_s, rate=o.rate))
    window = max(3 * o.sample_interval_s, o.duration_s / 60)
    t0 = run.timeline.t0
    rss = [(s["t"] - t0, s["rss_mb"]) for s in run.timeline.samples if "rss_mb" in s]
    fds = [(s["t"] - t0, s["fds"]) for s in run.timeline.samples if "fds" in s]
    p99 = [(float(s["second"]), s["p99_s"] * 1e3) for s in result["series"] if s["count"] > s["errors"]]
    figures = _figures(rss, fds, p99, window)
    checks = slo_checks(result, p50_ms=o.p50_ms, p99_ms=o.p99_ms, max_error_rate=o.max_error_rate)
    checks += _growth_checks(figures, run.gateway.local)
    return Outcome(checks, figures, {"trend_window_s": window})


def _figures(rss: list[tuple[float, float]], fds: list[tuple[float, float]], p99: list[tuple[float, float]],
             window: float) -> dict[str, Any]:
    return {
        "rss_median_mb": median(v for _, v in rss) if rss else None,
        "rss_growth_mb": second_half_growth(rss, window),
        "fds_median": median(v for _, v in fds) if fds else None,
        "fds_growth": second_half_growth(fds, window),
        "p99_median_ms": median(v for _, v in p99) if p99 else None,
        "p99_growth_ms": second_half_growth(p99, window),
    }


def _growth_checks(f: dict[str, Any], local: bool) -> list[Check]:
    p99_limit = max(P99_GROWTH_MS, P99_GROWTH_SHARE * (f["p99_median_ms"] or 0.0))
    checks = [at_most("p99_growth_ms", f["p99_growth_ms"], p99_limit, " ms", "fitted over the second half")]
    if local:
        rss_limit = max(RSS_GROWTH_MB, RSS_GROWTH_SHARE * (f["rss_median_mb"] or 0.0))
        checks += [at_most("rss_growth_mb", f["rss_growth_mb"], rss_limit, " MB", "fitted over the second half"),
                   at_most("fds_growth", f["fds_growth"], FD_GROWTH, "", "fitted over the second half")]
    return checks
