"""Driving a rollout through the admin API for a game day: the candidate, the canary spec, waiting for
steps and outcomes, and leaving the gateway clean (faults cleared, a live rollout aborted)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from loadtests.game import AdminApi, AdminError
from loadtests.scenarios.context import Run
from loadtests.scenarios.models import build_candidate

STEPS = (10, 25, 50, 100)
LEAD_S = 3.0  # stable-only traffic before the rollout starts
TERMINAL = ("promoted", "rolled_back", "aborted")
POLL_S = 0.2


def canary_spec(candidate: str, window_s: float, rate: float) -> dict[str, Any]:
    """A canary that catches all three faults: error rate, p99 ratio to stable, prediction PSI."""
    # Half of what the first step should see in a window, so that windows stay conclusive.
    min_requests = int(min(100, max(10, 0.5 * STEPS[0] / 100 * rate * window_s)))
    return {
        "candidate": candidate, "strategy": "canary", "window": f"{window_s:g}s",
        "steps": [{"weight": w} for w in STEPS],
        "analysis": {"min_requests": min_requests, "max_error_rate": 0.05, "max_p99_latency_ratio": 2.0,
                     "max_prediction_psi": 0.2, "failure_limit": 1, "on_inconclusive": "pause"},
        "retry_on_stable": True, "approval": "auto",
    }


def next_version(admin: AdminApi, model: str) -> str:
    """One above the highest numeric version the gateway knows for the model."""
    versions = [v["version"] for v in admin.model(model).get("versions", [])]
    numbers = [int(v) for v in versions if str(v).isdigit()]
    return str(max(numbers, default=0) + 1)


def prepare_candidate(run: Run) -> str:
    """Builds the candidate's model file and registers it, unless the version is already registered."""
    o, admin = run.opts, run.gateway.admin
    version = o.candidate_version or next_version(admin, o.model)
    known = {str(v["version"]): v for v in admin.model(o.model).get("versions", [])}
    if version in known:
        return version
    # A gateway elsewhere keeps the artifact's path: build it where the report stays, not in a temp dir.
    root = o.out if run.gateway.service is None else run.workdir
    artifact = build_candidate(root, o.model, version)
    registered = admin.register(o.model, version, artifact)
    run.event("candidate.registered", f"v{version}: {registered.get('stage')}")
    return version


def _status(admin: AdminApi, model: str) -> dict[str, Any] | None:
    try:
        doc = admin.rollout(model)
    except AdminError:
        return None  # a missed poll; the next one decides
    return dict(doc["status"]) if doc else None


def wait_step(admin: AdminApi, model: str, step: int, deadline: float) -> dict[str, Any] | None:
    """The status once the rollout reached `step` (or ended); None at the deadline."""
    while time.monotonic() < deadline:
        status = _status(admin, model)
        if status and (status["step_index"] >= step or status["phase"] in TERMINAL):
            return status
        time.sleep(POLL_S)
    return None


def wait_terminal(admin: AdminApi, model: str, deadline: float) -> dict[str, Any]:
    """The status once the rollout is promoted, rolled back or aborted, or the last one seen."""
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = _status(admin, model)
        if status:
            last = status
            if status["phase"] in TERMINAL:
                return status
        time.sleep(POLL_S)
    return last


def baseline_p99_ms(history: list[dict[str, Any]]) -> float:
    """The larger arm p99 of the last judged window: what a latency fault triples."""
    if not history:
        return 0.0
    m = history[-1].get("measurements") or {}
    values = [m.get("candidate_p99_ms"), m.get("stable_p99_ms")]
    return max((float(v) for v in values if isinstance(v, int | float)), default=0.0)


@contextmanager
def left_clean(admin: AdminApi, model: str) -> Iterator[set[str]]:
    """Yields the set to which a scenario adds the versions it sets faults on; on the way out, even after
    an error, those faults are cleared and a rollout still live is aborted: the gateway is left as found."""
    faulted: set[str] = set()
    try:
        yield faulted
    finally:
        try:
            for version in sorted(faulted):
                admin.clear_faults(model, version)
            status = _status(admin, model)
            if status and status["phase"] not in TERMINAL:
                admin.abort_rollout(model)
        except AdminError as exc:  # the gateway may be gone; say so rather than hide the first error
            print(f"warning: could not leave {model} clean: {exc}", file=sys.stderr)


def mark_end(run: Run, status: dict[str, Any]) -> None:
    phase = status.get("phase")
    if phase in TERMINAL and status.get("finished_at"):
        run.event(f"rollout.{phase}", str(status.get("message", "")), t=float(status["finished_at"]))


def recorded_at(admin: AdminApi, model: str, status: dict[str, Any]) -> float | None:
    """When the rollout's final decision was written: the time of its audit entry (after the route table)."""
    if status.get("phase") not in TERMINAL or not status.get("finished_at"):
        return None
    since = float(status["finished_at"]) - 1
    doc = admin.call("GET", f"/admin/v1/audit?model={model}&since={since:.3f}&limit=50")
    actions = {"rolled_back": "rollout.rollback", "promoted": "rollout.promote", "aborted": "rollout.abort"}
    wanted = actions.get(str(status["phase"]))
    stamps = [float(e["ts"]) for e in doc.get("entries", []) if e.get("action") == wanted]
    return min(stamps) if stamps else None
