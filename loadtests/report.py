"""Results of a load run: per-worker recording, merging across workers, the JSON result and a summary.

Requests are binned by the second in which they were (meant to be) sent; warm-up requests are not
recorded. Latency histograms hold successful requests only, so fast failures cannot flatter them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from loadtests.clients import OK
from loadtests.histogram import Histogram
from loadtests.tally import VersionTally, merged

SCHEMA = "servegate.loadtest/1"


@dataclass
class Second:
    count: int = 0
    errors: int = 0
    unsent: int = 0
    hist: Histogram = field(default_factory=Histogram)


@dataclass
class Schedule:
    """Open-loop bookkeeping: every intended request is either sent (maybe late) or counted unsent."""

    intended: int = 0
    sent: int = 0
    late: int = 0
    unsent: int = 0
    max_lateness_s: float = 0.0


class Recorder:
    """Collects one worker's measurements for requests meant to start in [measure_start, end)."""

    def __init__(self, measure_start: float, end: float, late_after_s: float = 0.002,
                 tally_versions: bool = False) -> None:
        self.measure_start = measure_start
        self.end = end
        self.late_after_s = late_after_s
        self.outcomes: dict[str, int] = {}
        self.seconds: dict[int, Second] = {}
        self.schedule = Schedule()
        self.error_hist = Histogram()  # how fast failures came back (shedding must be quick)
        self.tally = VersionTally() if tally_versions else None

    def _second(self, start: float) -> Second | None:
        if start < self.measure_start or start >= self.end:
            return None
        index = int(start - self.measure_start)
        sec = self.seconds.get(index)
        if sec is None:
            sec = self.seconds[index] = Second()
        return sec

    def record(self, start: float, done: float, outcome: str, version: str = "") -> None:
        """One answered request; `start` is the intended send time in an open loop, `version` the one
        that answered (tallied only when the recorder was asked to)."""
        sec = self._second(start)
        if sec is None:
            return
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        sec.count += 1
        if outcome == OK:
            sec.hist.record(done - start)
        else:
            sec.errors += 1
            self.error_hist.record(done - start)
        if self.tally is not None:
            self.tally.record(start - self.measure_start, version)

    def sent(self, intended: float, actual: float) -> None:
        if self._second(intended) is None:
            return
        lateness = actual - intended
        self.schedule.intended += 1
        self.schedule.sent += 1
        if lateness > self.late_after_s:
            self.schedule.late += 1
        self.schedule.max_lateness_s = max(self.schedule.max_lateness_s, lateness)

    def unsent(self, intended: float) -> None:
        sec = self._second(intended)
        if sec is None:
            return
        self.schedule.intended += 1
        self.schedule.unsent += 1
        sec.unsent += 1

    def to_partial(self, samples: Mapping[str, Any]) -> dict[str, Any]:
        """A plain-data form that crosses process boundaries."""
        return {
            "outcomes": dict(self.outcomes),
            "seconds": {i: {"count": s.count, "errors": s.errors, "unsent": s.unsent, "hist": s.hist.to_dict()}
                        for i, s in self.seconds.items()},
            "schedule": vars(self.schedule).copy(),
            "samples": dict(samples),
            "error_hist": self.error_hist.to_dict(),
            "versions": self.tally.to_partial() if self.tally is not None else None,
        }


@dataclass
class Merged:
    outcomes: dict[str, int] = field(default_factory=dict)
    seconds: dict[int, Second] = field(default_factory=dict)
    schedule: Schedule = field(default_factory=Schedule)
    checked: int = 0
    failed: int = 0
    reasons: list[str] = field(default_factory=list)
    error_hist: Histogram = field(default_factory=Histogram)
    versions: VersionTally | None = None


def merge(partials: Sequence[Mapping[str, Any]]) -> Merged:
    """Adds up the workers' partial results."""
    out = Merged()
    for part in partials:
        for name, count in part["outcomes"].items():
            out.outcomes[name] = out.outcomes.get(name, 0) + count
        for index, data in part["seconds"].items():
            sec = out.seconds.setdefault(int(index), Second())
            sec.count += data["count"]
            sec.errors += data["errors"]
            sec.unsent += data["unsent"]
            sec.hist.merge(Histogram.from_dict(data["hist"]))
        sched = part["schedule"]
        for key in ("intended", "sent", "late", "unsent"):
            setattr(out.schedule, key, getattr(out.schedule, key) + sched[key])
        out.schedule.max_lateness_s = max(out.schedule.max_lateness_s, sched["max_lateness_s"])
        samples = part["samples"]
        out.checked += samples["checked"]
        out.failed += samples["failed"]
        out.reasons += [r for r in samples["reasons"] if r not in out.reasons][:5]
        if "error_hist" in part:
            out.error_hist.merge(Histogram.from_dict(part["error_hist"]))
    out.versions = merged(partials)
    return out


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def client_usage(partials: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The generator's CPU seconds and how busy its processes were (1.0 = each used a whole core)."""
    cpu = sum(float(p.get("cpu_s", 0.0)) for p in partials)
    wall = sum(float(p.get("wall_s", 0.0)) for p in partials)
    return {"cpu_s": cpu, "busy": cpu / wall if wall else 0.0}


def build_result(merged: Merged, config: Mapping[str, Any], *, rows: int, duration_s: float,
                 started_at: float, ended_at: float, open_loop: bool,
                 client: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The JSON result document (schema `servegate.loadtest/1`)."""
    total = Histogram()
    for sec in merged.seconds.values():
        total.merge(sec.hist)
    answered = sum(merged.outcomes.values())
    ok = merged.outcomes.get(OK, 0)
    return {
        "schema": SCHEMA,
        "config": dict(config),
        "started_at": _iso(started_at),
        "ended_at": _iso(ended_at),
        "duration_s": duration_s,
        "requests": {"answered": answered, "ok": ok, "errors": answered - ok,
                     "unsent": merged.schedule.unsent},
        "outcomes": dict(sorted(merged.outcomes.items())),
        "throughput": {"requests_per_s": ok / duration_s, "rows_per_s": ok * rows / duration_s,
                       "answered_per_s": answered / duration_s},
        "latency_s": total.summary(),
        "error_latency_s": merged.error_hist.summary() if merged.error_hist.total else None,
        "histogram": total.to_dict(),
        "series": _series(merged.seconds, duration_s, merged.versions),
        "versions": merged.versions.to_result() if merged.versions is not None else None,
        "schedule": vars(merged.schedule).copy() if open_loop else None,
        "checks": {"checked": merged.checked, "failed": merged.failed, "reasons": merged.reasons},
        "client": dict(client or {}),
    }


def _series(seconds: Mapping[int, Second], duration_s: float,
            versions: VersionTally | None = None) -> list[dict[str, Any]]:
    out = []
    for index in range(math.ceil(duration_s)):
        sec = seconds.get(index, Second())
        entry: dict[str, Any] = {"second": index, "count": sec.count, "errors": sec.errors,
                                 "unsent": sec.unsent, "p50_s": sec.hist.percentile(50),
                                 "p99_s": sec.hist.percentile(99)}
        if versions is not None:
            entry["versions"] = versions.per_second(index)
        out.append(entry)
    return out


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms"


def summary(result: Mapping[str, Any]) -> str:
    """A few human lines for stdout."""
    cfg, lat, thr, req = result["config"], result["latency_s"], result["throughput"], result["requests"]
    lines = [
        f"{cfg.get('protocol')} {cfg.get('target')} model={cfg.get('model')} rows={cfg.get('rows')} "
        f"{cfg.get('mode')} workers={cfg.get('workers')} duration={result['duration_s']:.1f}s",
        f"requests: {req['answered']} answered, {req['ok']} ok, {req['errors']} errors, {req['unsent']} unsent",
        f"throughput: {thr['requests_per_s']:.1f} req/s, {thr['rows_per_s']:.1f} rows/s",
        "latency: " + ", ".join(f"{k} {_ms(lat[k])}" for k in ("p50", "p90", "p99", "p99.9", "max")),
        "outcomes: " + ", ".join(f"{k}={v}" for k, v in result["outcomes"].items()),
    ]
    sched = result.get("schedule")
    if sched:
        lines.append(f"schedule: {sched['intended']} intended, {sched['sent']} sent, {sched['late']} late, "
                     f"{sched['unsent']} unsent, max lateness {_ms(sched['max_lateness_s'])}")
    client = result.get("client") or {}
    if client:
        lines.append(f"client: {client['cpu_s']:.2f} CPU s, {client['busy']:.0%} of a core per worker")
    checks = result["checks"]
    if checks["failed"]:
        lines.append(f"checks: {checks['failed']} of {checks['checked']} sampled replies bad: {checks['reasons']}")
    return "\n".join(lines)
