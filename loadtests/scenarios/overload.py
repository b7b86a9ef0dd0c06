"""`overload`: twice the sustainable rate. The gateway must shed the excess with RESOURCE_EXHAUSTED / 503
quickly, keep accepted requests within their latency target, keep its memory bounded, and recover.

The sustainable rate is `--rate`, or measured first with a closed loop that never overfills the queue.
The model's config caps the queue (`queue_capacity`, default 8) and runs one request per batch, and a
latency fault pins the service time of each batch (`--service-ms`, default 8 ms): the model, not the
host's CPU, is the bottleneck, so excess arrives at a full queue and is refused, and 8 queued requests
of 8 ms bound the queueing delay of accepted ones to about 70 ms. `--service-ms 0 --model wide` makes
the model's own compute (about 8 ms per row on one thread) the bottleneck instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from loadtests.game import GameGateway
from loadtests.scenarios.context import Outcome, Run
from loadtests.scenarios.sampler import process_stats
from loadtests.scenarios.scrape import model_figures
from loadtests.scenarios.trend import second_half_growth
from loadtests.scenarios.verdict import Check, at_least, at_most, equals, unsent_share

# p99 target: the bounded queue keeps accepted requests near queue_capacity x service time (about 70 ms);
# 500 ms leaves room for a noisy host's stalls yet fails a queue that grows instead of shedding (the
# default capacity of 1024 would hold requests for seconds).
DEFAULTS = {"duration_s": 30.0, "model": "tabular", "queue_capacity": 8, "max_batch_size": 1, "p99_ms": 500.0,
            "workers": 1, "service_ms": 8.0}
SHED = ("grpc:RESOURCE_EXHAUSTED", "http:503")
MEASURE_S = 5.0
MIN_SHED_SHARE = 0.2  # at 2x, about half is refused; a fifth proves the refusal path is what acts
MAX_SHED_P50_MS = 20.0  # a refusal does not wait for service
MIN_GOODPUT = 0.7
MAX_RSS_GROWTH_MB = 32.0
MAX_RSS_RISE_MB = 256.0


def model_config(o: Any) -> dict[str, Any]:
    return {"queue_capacity": o.queue_capacity, "max_batch_size": o.max_batch_size, "intra_op_threads": 1,
            "instances": 1}


def measure_capacity(run: Run) -> float:
    """OK requests/s of a closed loop whose callers never overfill the queue: what the gateway sustains."""
    callers = max(2, run.opts.queue_capacity // 2)
    result = run.load("capacity", run.scenario(), run.plan(MEASURE_S, concurrency=callers, workers=1))
    rate = float(result["throughput"]["requests_per_s"])
    if rate <= 0:
        raise RuntimeError(f"the capacity run answered nothing OK: {result['outcomes']}")
    return rate


@contextmanager
def service_time(run: Run) -> Iterator[list[str]]:
    """Pins the serving versions' service time with a latency fault for the whole scenario, then clears it."""
    o, gw = run.opts, run.gateway
    versions = serving_versions(gw, o.model) if o.service_ms > 0 else []
    lasting = f"{math.ceil(MEASURE_S + o.duration_s + 120)}s"
    try:
        for version in versions:
            gw.admin.set_faults(o.model, version, {"latency_ms": o.service_ms, "duration": lasting})
            run.event("service.pinned", f"v{version}: {o.service_ms:g} ms per batch")
        yield versions
    finally:
        for version in versions:
            gw.admin.clear_faults(o.model, version)


def serving_versions(gw: GameGateway, model: str) -> list[str]:
    weights = (gw.admin.model(model).get("traffic") or {}).get("weights") or {}
    return sorted(str(v) for v, w in weights.items() if w > 0)


def play(run: Run) -> Outcome:
    with service_time(run):
        return _play(run)


def _play(run: Run) -> Outcome:
    o = run.opts
    capacity = o.rate or measure_capacity(run)
    run.event("capacity", f"{capacity:.0f} requests/s {'(given)' if o.rate else '(measured)'}")
    before = process_stats(run.gateway.pid)
    with run.sampler():
        start = run.event("load.overload", f"{2 * capacity:.0f} requests/s")["t"]
        result = run.load("overload", run.scenario(), run.plan(o.duration_s, rate=2 * capacity))
        end = run.event("load.end", "overload over")["t"]
    probe = run.load("recovery", run.scenario(), run.plan(1.0, concurrency=1, warmup_s=0.2, workers=1))
    depth = sum(model_figures(run.gateway.admin.metrics(), o.model)["queue_depth"].values())
    rss = [(s["t"] - start, s["rss_mb"]) for s in run.timeline.samples if "rss_mb" in s and s["t"] >= start]
    figures = _figures(result, capacity, before, rss)
    checks = _checks(result, capacity, figures, o.p99_ms, run.gateway.local)
    checks += [equals("recovered", probe["requests"]["ok"] > 0 and probe["requests"]["errors"] == 0, True,
                      "one caller right after the overload: answered, no errors"),
               equals("queue_drained", depth, 0.0, "queue depth after the overload")]
    config = {"capacity_source": "given" if o.rate else "measured", "overload_rate": 2 * capacity,
              "service_ms": o.service_ms,
              "model_config": model_config(o), "overload_window_s": [start - run.timeline.t0,
                                                                     end - run.timeline.t0]}
    return Outcome(checks, figures, config)


def _figures(result: dict[str, Any], capacity: float, before: dict[str, float] | None,
             rss: list[tuple[float, float]]) -> dict[str, Any]:
    answered = result["requests"]["answered"]
    shed = sum(result["outcomes"].get(k, 0) for k in SHED)
    errors_lat = result.get("error_latency_s") or {}
    return {
        "sustainable_rate": capacity, "offered_rate": 2 * capacity,
        "goodput_rps": result["throughput"]["requests_per_s"],
        "shed": shed, "shed_share": shed / answered if answered else None,
        "shed_p50_ms": errors_lat["p50"] * 1e3 if shed and errors_lat else None,
        "shed_p99_ms": errors_lat["p99"] * 1e3 if shed and errors_lat else None,
        "accepted_p50_ms": result["latency_s"]["p50"] * 1e3, "accepted_p99_ms": result["latency_s"]["p99"] * 1e3,
        "other_errors": result["requests"]["errors"] - shed,
        "rss_before_mb": before["rss_mb"] if before else None,
        "rss_peak_mb": max((v for _, v in rss), default=None),
        "rss_second_half_growth_mb": second_half_growth(rss, 1.0),
    }


def _checks(result: dict[str, Any], capacity: float, f: dict[str, Any], p99_ms: float, local: bool) -> list[Check]:
    ok = result["requests"]["ok"] > 0
    checks = [
        at_least("shed_share", f["shed_share"], MIN_SHED_SHARE, detail="answers refused as overloaded"),
        at_most("shed_p50_ms", f["shed_p50_ms"], MAX_SHED_P50_MS, " ms", "refusals do not wait for service"),
        at_most("shed_p99_ms", f["shed_p99_ms"], p99_ms, " ms", "no refusal waits longer than the latency target"),
        at_most("accepted_p99_ms", f["accepted_p99_ms"] if ok else None, p99_ms, " ms"),
        at_least("goodput_share", f["goodput_rps"] / capacity, MIN_GOODPUT, detail="OK/s over the sustainable rate"),
        equals("other_errors", f["other_errors"], 0, "timeouts, connection or internal errors"),
        at_most("unsent_share", unsent_share(result), 0.01, detail="requests stuck waiting for a slot"),
    ]
    if local:
        rise = f["rss_peak_mb"] - f["rss_before_mb"] if f["rss_peak_mb"] and f["rss_before_mb"] else None
        checks += [at_most("rss_second_half_growth_mb", f["rss_second_half_growth_mb"], MAX_RSS_GROWTH_MB, " MB"),
                   at_most("rss_rise_mb", rise, MAX_RSS_RISE_MB, " MB", "peak during overload over before")]
    return checks
