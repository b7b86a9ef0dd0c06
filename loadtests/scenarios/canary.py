"""Canary game days: a candidate rolls out under steady load; in the bad ones it turns bad partway (fault
injection: latency x3, 20% errors, or shifted predictions) and must be rolled back, fast and without
client-visible errors; in `good-canary` it must be promoted through every step.

Blast radius is measured twice: the gateway's request counters for the candidate (every request it
handled after the fault, failed ones included) and the client's tally of `model_version` in replies.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loadtests.scenarios import blast
from loadtests.scenarios import rollout as ro
from loadtests.scenarios.context import Outcome, Run
from loadtests.scenarios.scrape import model_figures
from loadtests.scenarios.verdict import Check, at_most, equals

SCENARIOS = {
    "bad-canary-latency": "the candidate's latency triples mid-rollout; rolled back within 2 windows",
    "bad-canary-errors": "the candidate fails 20% of requests mid-rollout; rolled back within 2 windows",
    "bad-canary-drift": "the candidate's predictions shift mid-rollout; rolled back on prediction PSI",
    "good-canary": "a healthy candidate is promoted through every step",
}
DEFAULTS: dict[str, Any] = {"duration_s": 45.0, "model": "tabular", "rate": 200.0, "window_s": 5.0}
GOOD_DEFAULTS: dict[str, Any] = {**DEFAULTS, "duration_s": 40.0}
FAULT_STEP = 1  # the fault strikes half a window into this step (25 %)
MAX_ROLLBACK_WINDOWS = 2.0


@dataclass
class Fault:
    body: dict[str, Any]
    t: float
    counters: dict[str, Any]


def fault_body(name: str, history: list[dict[str, Any]], duration_s: float) -> dict[str, Any]:
    """What turns the candidate bad; the latency fault adds twice the current p99, so p99 triples."""
    lasting = {"duration": f"{math.ceil(duration_s)}s"}
    if name == "bad-canary-errors":
        return {"error_rate": 0.2, **lasting}
    if name == "bad-canary-drift":
        return {"output_shift": 0.3, **lasting}
    if name == "bad-canary-latency":
        return {"latency_ms": round(2 * max(ro.baseline_p99_ms(history), 0.5), 2), **lasting}
    raise ValueError(f"no fault for scenario {name!r}")


def player(name: str) -> Callable[[Run], Outcome]:
    def play(run: Run) -> Outcome:
        return play_canary(run, name)
    return play


def play_canary(run: Run, name: str) -> Outcome:
    o, admin = run.opts, run.gateway.admin
    candidate = ro.prepare_candidate(run)
    spec = ro.canary_spec(candidate, o.window_s, o.rate)
    with ro.left_clean(admin, o.model) as faulted:
        load = run.background("canary", run.scenario(tally=True), run.plan(o.duration_s, rate=o.rate))
        fault: Fault | None = None
        with run.sampler(rollout=True):
            run.wait(ro.LEAD_S)
            started = admin.start_rollout(o.model, spec)["status"]
            run.event("rollout.start", f"candidate {candidate}: steps {ro.STEPS}", t=started["started_at"])
            if name != "good-canary":
                fault = _inject_partway(run, name, candidate)
                faulted.update([candidate] if fault else [])
            final = ro.wait_terminal(admin, o.model, deadline=time.monotonic() + o.duration_s + ro.LEAD_S)
            result = load.result(timeout_s=o.duration_s + 120)
        after = model_figures(admin.metrics(), o.model)
    doc = admin.rollout(o.model)
    status = (doc or {}).get("status") or final
    ro.mark_end(run, status)
    figures = blast.rollout_figures(result, status, candidate)
    if fault is not None:
        exposure = blast.Exposure(candidate, fault.t, status.get("finished_at"),
                                  ro.recorded_at(admin, o.model, status), fault.counters, after)
        figures |= blast.measure(result, exposure, o.window_s)
    checks = _good_checks(status, result, o.window_s) if name == "good-canary" else _bad_checks(figures, fault)
    return Outcome(checks, figures, {"rollout_spec": spec, "fault": fault.body if fault else None}, doc)


def _inject_partway(run: Run, name: str, candidate: str) -> Fault | None:
    o, admin = run.opts, run.gateway.admin
    status = ro.wait_step(admin, o.model, FAULT_STEP, deadline=time.monotonic() + o.duration_s)
    if status is None or status["phase"] in ro.TERMINAL:
        return None
    run.wait(o.window_s / 2)
    history = (admin.rollout(o.model) or {}).get("status", {}).get("history", [])
    body = fault_body(name, history, o.duration_s + 60)
    counters = model_figures(admin.metrics(), o.model)
    admin.set_faults(o.model, candidate, body)
    fault = Fault(body, time.time(), counters)
    run.event("fault.inject", f"v{candidate}: {json.dumps(body)}", t=fault.t)
    return fault


def _bad_checks(f: dict[str, Any], fault: Fault | None) -> list[Check]:
    return [
        equals("fault_injected", fault is not None, True, "the rollout reached the fault step"),
        equals("phase", f["phase"], "rolled_back"),
        at_most("time_to_rollback_windows", f.get("time_to_rollback_windows"), MAX_ROLLBACK_WINDOWS,
                " windows", "from the fault to the controller's rollback decision"),
        equals("client_errors", f["client_errors"], 0, "retry_on_stable: failures cost latency only"),
        equals("candidate_answers_after_rollback", f.get("candidate_answers_after_propagation"), 0,
               f"candidate replies to requests sent over {blast.PROPAGATION_S * 1e3:.0f} ms after the decision"),
    ]


def _good_checks(status: dict[str, Any], result: dict[str, Any], window_s: float) -> list[Check]:
    passed_steps = {w["step"] for w in status.get("history", []) if w.get("verdict") == "successful"}
    took = status["finished_at"] - status["started_at"] if status.get("finished_at") else None
    budget = len(ro.STEPS) * window_s * 1.5 + 5.0
    return [
        equals("phase", status.get("phase"), "promoted"),
        equals("steps_passed", len(passed_steps), len(ro.STEPS), "steps with a successful window"),
        equals("client_errors", result["requests"]["errors"], 0),
        at_most("rollout_time_s", took, budget, " s", "start to promotion"),
    ]


def defaults(name: str) -> dict[str, Any]:
    return GOOD_DEFAULTS if name == "good-canary" else DEFAULTS
