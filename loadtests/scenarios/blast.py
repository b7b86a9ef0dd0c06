"""What a bad version cost: how many requests it handled after it turned bad, their share of the traffic,
how long until the rollback, and whether it answered anything sent after the rollback.

Two sources agree on the blast radius: the gateway's request counters for the candidate (every request
it handled, including failures that were retried on stable) and the client's tally of the
`model_version` named in replies (what clients actually got from it), exact to 100 ms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from loadtests.scenarios.context import epoch_of
from loadtests.scenarios.scrape import total_requests
from loadtests.tally import BIN_S, answered_between

# The decision is stamped when the controller decides; the route table changes after it is written and
# the gateway has read it back (about 20 ms in one process, longer when the host stalls). Requests sent
# within this allowance after the decision may still reach the candidate; the exact lag is reported.
PROPAGATION_S = 0.25


@dataclass(frozen=True)
class Exposure:
    """The candidate's bad spell: from the fault to the decision (epoch seconds), with counter scrapes."""

    candidate: str
    fault_at: float
    decided_at: float | None  # the rollout's finished_at: the controller's decision instant
    recorded_at: float | None  # when the decision was written with its route table (its audit entry)
    counters_before: dict[str, Any]
    counters_after: dict[str, Any]


def rollout_figures(result: dict[str, Any], status: dict[str, Any], candidate: str) -> dict[str, Any]:
    decided = status.get("finished_at")
    return {
        "candidate": candidate, "phase": status.get("phase"), "windows": status.get("windows"),
        "rollout_time_s": decided - status["started_at"] if decided else None,
        "client_errors": result["requests"]["errors"], "client_requests": result["requests"]["answered"],
        "client_unsent": result["requests"]["unsent"],
        "candidate_answers": (result["versions"] or {}).get(candidate, {}).get("answered", 0),
    }


def answers_after(versions: dict[str, Any], candidate: str, at_s: float) -> int:
    """Candidate answers to requests sent after `at_s` (seconds into the load): 0 exactly when none was;
    otherwise the count of the 100 ms bins after the one holding `at_s` (at least 1)."""
    last = versions.get(candidate, {}).get("last_sent_s", -math.inf)
    if last <= at_s:
        return 0
    return max(1, answered_between(versions, candidate, (math.floor(at_s / BIN_S) + 1) * BIN_S, math.inf))


def measure(result: dict[str, Any], e: Exposure, window_s: float) -> dict[str, Any]:
    versions = result["versions"] or {}
    origin = epoch_of(result["started_at"])
    fault_s = e.fault_at - origin
    decided_s = (e.decided_at - origin) if e.decided_at else math.inf
    handled = total_requests(e.counters_after, e.candidate) - total_requests(e.counters_before, e.candidate)
    exposed = sum(answered_between(versions, v, fault_s, decided_s) for v in versions) if e.decided_at else 0
    last = versions.get(e.candidate, {}).get("last_sent_s", -math.inf) + origin
    took = e.decided_at - e.fault_at if e.decided_at else None
    return {
        "time_to_rollback_s": took,
        "time_to_rollback_windows": took / window_s if took is not None else None,
        "blast_radius_requests": handled,
        "blast_radius_failed": _failures(e.counters_after, e.candidate) - _failures(e.counters_before, e.candidate),
        "blast_radius_answered": answered_between(versions, e.candidate, fault_s, math.inf),
        "requests_between_fault_and_decision": exposed,
        "blast_radius_share": handled / exposed if exposed else None,
        "candidate_answers_after_decision":
            answers_after(versions, e.candidate, decided_s) if e.decided_at else None,
        "candidate_answers_after_propagation":
            answers_after(versions, e.candidate, decided_s + PROPAGATION_S) if e.decided_at else None,
        "candidate_last_answer_minus_decision_s": last - e.decided_at if e.decided_at else None,
        "decision_recorded_lag_s": e.recorded_at - e.decided_at if e.recorded_at and e.decided_at else None,
    }


def _failures(figures: dict[str, Any], version: str) -> float:
    """Requests that failed on `version`; "withdrawn" ones succeeded there but were answered by stable."""
    by_outcome: dict[str, float] = figures.get("requests", {}).get(version, {})
    return sum(n for outcome, n in by_outcome.items() if outcome not in ("success", "withdrawn"))
