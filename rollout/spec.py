"""The declarative rollout spec: parsed from YAML, JSON or a mapping, validated on submit, and
written back by `to_dict` in a form `parse_spec` reads again."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from rollout.errors import InvalidSpec
from rollout.policy import AB, BLUE_GREEN, CANARY, POLICIES, parse_percent, parse_sticky_key

STRATEGIES = POLICIES
MANUAL = "manual"
AUTO = "auto"
PAUSE = "pause"
ROLLBACK = "rollback"

_SPEC_FIELDS = ("candidate", "strategy", "steps", "window", "analysis", "sticky_key", "shadow_percent",
                "retry_on_stable", "approval", "rollback_window")
_ANALYSIS_FIELDS = ("min_requests", "max_error_rate", "max_p99_latency_ms", "max_p99_latency_ratio",
                    "max_input_psi", "max_prediction_psi", "failure_limit", "error_limit",
                    "on_inconclusive")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class WeightStep:
    """Send `weight` percent of live traffic to the candidate and judge it for one window."""

    weight: int

    def to_dict(self) -> dict[str, Any]:
        return {"weight": self.weight}


@dataclass(frozen=True, slots=True)
class PauseStep:
    """Hold the current traffic: `seconds` long, or until `resume` when `seconds` is None (manual)."""

    seconds: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"pause": MANUAL if self.seconds is None else format_duration(self.seconds)}


Step = WeightStep | PauseStep


@dataclass(frozen=True, slots=True)
class AnalysisSpec:
    """Thresholds for one window; None switches a check off. See docs/rollouts.md for each field."""

    min_requests: int = 100
    max_error_rate: float | None = 0.01
    max_p99_latency_ms: float | None = None
    max_p99_latency_ratio: float | None = None
    max_input_psi: float | None = None
    max_prediction_psi: float | None = None
    failure_limit: int = 1
    error_limit: int = 4
    on_inconclusive: str = PAUSE

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _ANALYSIS_FIELDS}


@dataclass(frozen=True, slots=True)
class RolloutSpec:
    """What to roll out and how; strategy-specific rules are checked by `parse_spec`."""

    candidate: str
    strategy: str = CANARY
    steps: tuple[Step, ...] = ()
    window_s: float = 60.0
    analysis: AnalysisSpec = field(default_factory=AnalysisSpec)
    sticky_key: str | None = None
    shadow_percent: int = 0
    retry_on_stable: bool = True
    approval: str = AUTO
    rollback_window_s: float = 300.0

    def plan(self) -> tuple[Step, ...]:
        """The steps the rollout walks. Blue-green wraps the user's pauses between a preview window
        (candidate weight 0: shadow and explicit-version traffic only) and the switch (weight 100)."""
        if self.strategy == BLUE_GREEN:
            return (WeightStep(0), *self.steps, WeightStep(100))
        return self.steps

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate, "strategy": self.strategy,
            "steps": [s.to_dict() for s in self.steps], "window": format_duration(self.window_s),
            "analysis": self.analysis.to_dict(), "sticky_key": self.sticky_key,
            "shadow_percent": self.shadow_percent, "retry_on_stable": self.retry_on_stable,
            "approval": self.approval, "rollback_window": format_duration(self.rollback_window_s),
        }


def parse_spec(source: str | bytes | Mapping[str, Any]) -> RolloutSpec:
    """Reads a spec from YAML or JSON text or an already decoded mapping; raises `InvalidSpec`."""
    raw = _load(source) if isinstance(source, str | bytes) else source
    if not isinstance(raw, Mapping):
        raise InvalidSpec("", "a rollout spec must be an object (mapping)")
    _reject_unknown("", raw, _SPEC_FIELDS)
    strategy = _choice(raw, "strategy", STRATEGIES, CANARY)
    return RolloutSpec(
        candidate=_version(raw.get("candidate")), strategy=strategy,
        steps=_steps(raw.get("steps"), strategy),
        window_s=_duration("window", raw.get("window", 60.0), positive=True),
        analysis=_analysis(raw.get("analysis", {})),
        sticky_key=_sticky_key(raw.get("sticky_key"), strategy),
        shadow_percent=_int(raw, "shadow_percent", 0, 0, 100),
        retry_on_stable=_bool(raw, "retry_on_stable", True),
        approval=_choice(raw, "approval", (AUTO, MANUAL), AUTO),
        rollback_window_s=_duration("rollback_window", raw.get("rollback_window", 300.0), positive=False),
    )


def parse_duration(name: str, value: object) -> float:
    """'500ms', '30s', '5m', '1h' or a number of seconds -> seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise InvalidSpec(name, f"expected a duration like 500ms, 30s, 5m, 1h or seconds, got {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidSpec(name, f"expected a finite duration >= 0, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str | float:
    """The shortest exact text for a duration; a plain number when no unit is exact."""
    if seconds == 0:
        return "0s"
    for unit, size in (("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 0.001)):
        count = seconds / size
        if count == int(count) and int(count) * size == seconds:
            return f"{int(count)}{unit}"
    return seconds


def _load(text: str | bytes) -> object:
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidSpec("", f"not valid YAML or JSON: {exc}") from exc


def _reject_unknown(prefix: str, raw: Mapping[str, Any], known: tuple[str, ...]) -> None:
    unknown = sorted(str(k) for k in raw if k not in known)
    if unknown:
        raise InvalidSpec(prefix + unknown[0], f"unknown field; expected some of {', '.join(known)}")


def _version(value: object) -> str:
    # YAML reads `candidate: 3` as an integer; versions are strings everywhere else.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise InvalidSpec("candidate", f"required: the version to roll out, got {value!r}")
    return value


def _steps(raw: object, strategy: str) -> tuple[Step, ...]:
    if raw is None:
        return _default_steps(strategy)
    if not isinstance(raw, list):
        raise InvalidSpec("steps", "expected a list of {weight: N} or {pause: manual|<duration>}")
    steps = tuple(_step(f"steps[{i}]", item, strategy) for i, item in enumerate(raw))
    if strategy != BLUE_GREEN and not any(isinstance(s, WeightStep) for s in steps):
        raise InvalidSpec("steps", f"{strategy} needs at least one {{weight: N}} step")
    return steps


def _default_steps(strategy: str) -> tuple[Step, ...]:
    if strategy == CANARY:
        return (WeightStep(10), WeightStep(50), WeightStep(100))
    if strategy == AB:
        return (WeightStep(50),)
    return ()


def _step(name: str, item: object, strategy: str) -> Step:
    if not isinstance(item, Mapping) or len(item) != 1:
        raise InvalidSpec(name, "expected exactly one of {weight: N} or {pause: manual|<duration>}")
    key, value = next(iter(item.items()))
    if key == "weight":
        if strategy == BLUE_GREEN:
            raise InvalidSpec(f"{name}.weight", "blue_green has no weight steps: it previews, then "
                                                "switches all traffic at once; only pauses are allowed")
        return WeightStep(parse_percent(f"{name}.weight", value))
    if key == "pause":
        if value == MANUAL:
            return PauseStep(None)
        seconds = _duration(f"{name}.pause", value, positive=True)
        return PauseStep(seconds)
    raise InvalidSpec(f"{name}.{key}", "unknown step; expected weight or pause")


def _analysis(raw: object) -> AnalysisSpec:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise InvalidSpec("analysis", "expected an object of thresholds")
    _reject_unknown("analysis.", raw, _ANALYSIS_FIELDS)
    defaults = AnalysisSpec()
    return AnalysisSpec(
        min_requests=_int(raw, "min_requests", defaults.min_requests, 0, None, "analysis."),
        max_error_rate=_threshold(raw, "max_error_rate", defaults.max_error_rate, upper=1.0),
        max_p99_latency_ms=_threshold(raw, "max_p99_latency_ms", defaults.max_p99_latency_ms),
        max_p99_latency_ratio=_threshold(raw, "max_p99_latency_ratio", defaults.max_p99_latency_ratio),
        max_input_psi=_threshold(raw, "max_input_psi", defaults.max_input_psi),
        max_prediction_psi=_threshold(raw, "max_prediction_psi", defaults.max_prediction_psi),
        failure_limit=_int(raw, "failure_limit", defaults.failure_limit, 1, None, "analysis."),
        error_limit=_int(raw, "error_limit", defaults.error_limit, 1, None, "analysis."),
        on_inconclusive=_choice(raw, "on_inconclusive", (PAUSE, ROLLBACK), PAUSE, "analysis."),
    )


def _threshold(raw: Mapping[str, Any], key: str, default: float | None,
               upper: float | None = None) -> float | None:
    if key not in raw:
        return default
    value = raw[key]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value < 0 or (upper is not None and value > upper):
        bound = f"0..{upper:g}" if upper is not None else ">= 0"
        raise InvalidSpec(f"analysis.{key}", f"expected a number {bound} or null, got {value!r}")
    return float(value)


def _sticky_key(value: object, strategy: str) -> str | None:
    if value is None:
        if strategy == AB:
            raise InvalidSpec("sticky_key", "ab needs a sticky key: the header or metadata name "
                                            "that keeps a user on one arm")
        return None
    if strategy == BLUE_GREEN:
        raise InvalidSpec("sticky_key", "blue_green sends all live traffic to one version; remove it")
    return parse_sticky_key(value)


def _duration(name: str, value: object, *, positive: bool) -> float:
    seconds = parse_duration(name, value)
    if positive and seconds <= 0:
        raise InvalidSpec(name, f"expected a duration > 0, got {value!r}")
    return seconds


def _int(raw: Mapping[str, Any], key: str, default: int, low: int, high: int | None,
         prefix: str = "") -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low \
            or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise InvalidSpec(prefix + key, f"expected an integer {bound}, got {value!r}")
    return value


def _bool(raw: Mapping[str, Any], key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise InvalidSpec(key, f"expected true or false, got {value!r}")
    return value


def _choice(raw: Mapping[str, Any], key: str, choices: tuple[str, ...], default: str,
            prefix: str = "") -> str:
    value = raw.get(key, default)
    if value not in choices:
        raise InvalidSpec(prefix + key, f"expected one of {', '.join(choices)}, got {value!r}")
    return str(value)
