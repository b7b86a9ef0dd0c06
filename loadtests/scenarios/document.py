"""The scenario report: `report.json` (schema `servegate.scenario/1`) and its Markdown summary.

Times in `series`, `samples` and `events` are seconds since the run began (`t0`, epoch seconds), so
plots and readers share one axis; rollout timestamps from the gateway are converted the same way.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtests.scenarios.context import Outcome, Run, epoch_of
from loadtests.scenarios.verdict import Check, verdict

SCHEMA = "servegate.scenario/1"
REPORT = "report.json"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def build(run: Run, outcome: Outcome, checks: Sequence[Check], ended: float | None = None) -> dict[str, Any]:
    t0 = run.timeline.t0
    ended = time.time() if ended is None else ended
    return {
        "schema": SCHEMA,
        "scenario": run.opts.name,
        "model": run.opts.model,
        "started_at": _iso(t0),
        "ended_at": _iso(ended),
        "t0": t0,
        "duration_s": ended - t0,
        "config": {**run.opts.to_dict(), **outcome.config},
        "verdict": verdict(checks),
        "figures": outcome.figures,
        "series": list(series(run.loads, t0)),
        "samples": [_relative(s, t0) for s in run.timeline.samples],
        "events": sorted((_relative(e, t0) for e in run.timeline.events), key=lambda e: float(e["t"])),
        "rollout": outcome.rollout,
        "loads": [_without_histogram(r) for r in run.loads],
        "gateways": [{"local": gw.local, "exit_code": gw.exit_code} for gw in run.gateways],
    }


def series(loads: Sequence[Mapping[str, Any]], t0: float) -> Iterator[dict[str, Any]]:
    """Every load's per-second entries on the run's time axis (`t` = start of that second)."""
    for load in loads:
        start = epoch_of(load["started_at"]) - t0
        for entry in load["series"]:
            yield {"t": start + entry["second"], "load": load.get("label", ""), **entry}


def _relative(entry: Mapping[str, Any], t0: float) -> dict[str, Any]:
    return {**entry, "t": float(entry["t"]) - t0}


def _without_histogram(result: Mapping[str, Any]) -> dict[str, Any]:
    # The merged histogram is large and its percentiles are already in `latency_s`.
    return {k: v for k, v in result.items() if k != "histogram"}


def write(out: Path, doc: Mapping[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / REPORT
    path.write_text(json.dumps(doc, indent=1, default=_plain))
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read(out: Path) -> dict[str, Any]:
    path = out / REPORT if out.is_dir() else out
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ValueError(f"{path} is not a scenario report (schema {SCHEMA})")
    return doc


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "not measured"
    return str(value)


def markdown(doc: Mapping[str, Any], plots: Sequence[str] = ()) -> str:
    """A short Markdown summary: verdict, checks, headline figures, loads and plots."""
    v = doc["verdict"]
    lines = [f"## Scenario `{doc['scenario']}`: {'PASS' if v['passed'] else 'FAIL'}", "",
             f"model `{doc['model']}`, {doc['duration_s']:.0f} s from {doc['started_at']}", "",
             "| check | measured | target | result |", "|---|---|---|---|"]
    for c in v["checks"]:
        note = f" ({c['detail']})" if c.get("detail") else ""
        lines.append(f"| {c['name']}{note} | {_value(c['value'])} | {c['target']} | "
                     f"{'pass' if c['passed'] else '**FAIL**'} |")
    if doc.get("figures"):
        lines += ["", "| figure | value |", "|---|---|"]
        lines += [f"| {k} | {_value(val)} |" for k, val in doc["figures"].items() if not isinstance(val, list | dict)]
    if doc.get("loads"):
        lines += ["", "| load | ok | errors | unsent | req/s | p50 ms | p99 ms |", "|---|---|---|---|---|---|---|"]
        for r in doc["loads"]:
            req, lat = r["requests"], r["latency_s"]
            lines.append(f"| {r.get('label', '')} | {req['ok']} | {req['errors']} | {req['unsent']} | "
                         f"{r['throughput']['requests_per_s']:.1f} | {lat['p50'] * 1e3:.2f} | {lat['p99'] * 1e3:.2f} |")
    if plots:
        lines += ["", "plots: " + ", ".join(plots)]
    return "\n".join(lines)
