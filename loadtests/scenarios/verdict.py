"""A scenario's verdict: named checks of a measured value against its target; it passes when all do.

A value that could not be measured fails its check (a verdict never passes on missing evidence).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    value: Any
    target: str
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "value": self.value, "target": self.target,
                "detail": self.detail}


def at_most(name: str, value: float | None, limit: float, unit: str = "", detail: str = "") -> Check:
    passed = value is not None and value <= limit
    return Check(name, passed, value, f"<= {limit:g}{unit}", detail)


def at_least(name: str, value: float | None, limit: float, unit: str = "", detail: str = "") -> Check:
    passed = value is not None and value >= limit
    return Check(name, passed, value, f">= {limit:g}{unit}", detail)


def equals(name: str, value: Any, expected: Any, detail: str = "") -> Check:
    return Check(name, value == expected, value, f"== {expected}", detail)


def verdict(checks: Sequence[Check]) -> dict[str, Any]:
    """The report's `verdict` block: passed only when there is at least one check and all passed."""
    return {"passed": bool(checks) and all(c.passed for c in checks),
            "failed": [c.name for c in checks if not c.passed],
            "checks": [c.to_dict() for c in checks]}


def error_rate(result: dict[str, Any]) -> float | None:
    answered = result["requests"]["answered"]
    return result["requests"]["errors"] / answered if answered else None


def unsent_share(result: dict[str, Any]) -> float:
    sched = result.get("schedule") or {}
    intended = sched.get("intended", 0)
    return float(sched.get("unsent", 0)) / intended if intended else 0.0


def slo_checks(result: dict[str, Any], *, p50_ms: float, p99_ms: float, max_error_rate: float,
               max_unsent: float = 0.01) -> list[Check]:
    """Latency and error-rate targets of one load, and that the generator sent what it was asked to."""
    lat = result["latency_s"]
    has_ok = result["requests"]["ok"] > 0
    return [
        at_most("p50_ms", lat["p50"] * 1e3 if has_ok else None, p50_ms, " ms"),
        at_most("p99_ms", lat["p99"] * 1e3 if has_ok else None, p99_ms, " ms"),
        at_most("error_rate", error_rate(result), max_error_rate),
        at_most("unsent_share", unsent_share(result), max_unsent,
                detail="requests the generator could not send: every in-flight slot was taken"),
    ]
