"""PNG plots of a scenario report with matplotlib's Agg backend: latency and throughput, traffic per
version with rollout events, drift scores, and the gateway's memory and file descriptors over time.

Figures are built with the object API (no pyplot), so nothing global is touched and nothing leaks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

Doc = Mapping[str, Any]
EVENT_STYLE = {  # kind -> (colour, line style)
    "rollout.start": ("tab:blue", "-"), "fault.inject": ("tab:red", "-"), "fault.clear": ("tab:gray", ":"),
    "rollout.rolled_back": ("tab:red", "--"), "rollout.promoted": ("tab:green", "--"),
    "rollout.aborted": ("tab:orange", "--"), "replica.kill": ("black", "-"), "replica.restart": ("tab:gray", "--"),
    "load.overload": ("tab:purple", "-"),
}
VERDICT_COLOUR = {"successful": "tab:green", "failed": "tab:red", "inconclusive": "tab:orange",
                  "error": "tab:gray"}


def _figure(rows: int, title: str) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(10, 3.2 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, 1, i + 1) for i in range(rows)]
    for ax in axes[1:]:
        ax.sharex(axes[0])
    axes[-1].set_xlabel("seconds since the run began")
    fig.suptitle(title)
    return fig, axes


def _mark_events(ax: Axes, events: Sequence[Mapping[str, Any]], label: bool = False) -> None:
    for e in events:
        colour, style = EVENT_STYLE.get(str(e["kind"]), ("", ""))
        if not colour:
            continue
        ax.axvline(float(e["t"]), color=colour, linestyle=style, linewidth=1.2, alpha=0.8)
        if label:
            ax.annotate(str(e["kind"]), (float(e["t"]), 1.0), xycoords=("data", "axes fraction"),
                        rotation=90, va="top", ha="right", fontsize=7, color=colour)


def _legend(ax: Axes, **style: Any) -> None:
    """A legend only where something is labelled (matplotlib warns about an empty one)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**style)


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="gray")


def _gapped(series: Sequence[Mapping[str, Any]], value: Callable[[Mapping[str, Any]], float | None]
            ) -> tuple[list[float], list[float]]:
    """x and y of one line over the series; a NaN between loads so that separate runs are not joined."""
    xs: list[float] = []
    ys: list[float] = []
    load = None
    for s in series:
        if load is not None and s.get("load") != load:
            xs.append(s["t"])
            ys.append(math.nan)
        load = s.get("load")
        y = value(s)
        xs.append(s["t"])
        ys.append(math.nan if y is None else y)
    return xs, ys


def _milliseconds(key: str) -> Callable[[Mapping[str, Any]], float | None]:
    def value(s: Mapping[str, Any]) -> float | None:
        return float(s[key]) * 1e3 if s[key] > 0 else None  # 0 = no OK request that second
    return value


def latency(doc: Doc, path: Path) -> None:
    fig, (lat, thr) = _figure(2, f"{doc['scenario']} ({doc['model']}): latency and throughput")
    series = [s for s in doc["series"] if s["count"] or s["unsent"]]
    for key, name in (("p50_s", "p50"), ("p99_s", "p99")):
        lat.plot(*_gapped(series, _milliseconds(key)), label=name, linewidth=1)
    if any(s["p99_s"] > 0 for s in series):
        lat.set_yscale("log")
        lat.yaxis.set_major_formatter(ScalarFormatter())
        lat.yaxis.set_minor_formatter(NullFormatter())  # decade labels only: the log scale stays readable
    lat.set_ylabel("latency (ms)")
    thr.plot(*_gapped(series, lambda s: s["count"] - s["errors"]), label="ok / s", linewidth=1)
    thr.plot(*_gapped(series, lambda s: s["errors"]), label="errors / s", color="tab:red", linewidth=1)
    if any(s["unsent"] for s in series):
        thr.plot(*_gapped(series, lambda s: s["unsent"]), label="unsent / s", color="tab:gray", linewidth=1)
    thr.set_ylabel("requests per second sent")
    thr.set_ylim(bottom=0)
    for ax in (lat, thr):
        _mark_events(ax, doc["events"], label=ax is lat)
        _legend(ax, loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100)


def _versions_per_second(doc: Doc) -> dict[str, list[tuple[float, float]]]:
    """Answers per version per second: the client's tally when it has one, else the gateway's counters."""
    out: dict[str, list[tuple[float, float]]] = {}
    if any("versions" in s for s in doc["series"]):
        for s in doc["series"]:
            for version, n in s.get("versions", {}).items():
                out.setdefault(version, []).append((s["t"], float(n)))
        return out
    samples = doc["samples"]
    for before, after in pairwise(samples):
        dt = after["t"] - before["t"]
        for version, outcomes in after.get("requests", {}).items():
            prev = sum(before.get("requests", {}).get(version, {}).values())
            out.setdefault(version, []).append((after["t"], max(0.0, sum(outcomes.values()) - prev) / dt))
    return out


def _gateways_per_second(doc: Doc) -> dict[str, list[tuple[float, float]]]:
    """Requests per second each gateway counted, when there are several (replicas); NaN while one is down."""
    samples = doc["samples"]
    names = sorted({n for s in samples for n in (s.get("gateways") or {})})
    if len(names) < 2:
        return {}
    out: dict[str, list[tuple[float, float]]] = {}
    for before, after in pairwise(samples):
        dt = after["t"] - before["t"]
        for name in names:
            a, b = before["gateways"].get(name, {}), after["gateways"].get(name, {})
            delta = b.get("requests", math.nan) - a.get("requests", math.nan)
            out.setdefault(name, []).append((after["t"], delta / dt if delta >= 0 else math.nan))
    return out


def traffic(doc: Doc, path: Path) -> None:
    fig, (weights, answers) = _figure(2, f"{doc['scenario']} ({doc['model']}): traffic weights and answers")
    per_version: dict[str, list[tuple[float, float]]] = {}
    for s in doc["samples"]:
        # The rollout's own weights when one runs: the gateway's gauge keeps a stale value for a
        # version that left the route table.
        for version, w in (s.get("rollout_weights") or s.get("weights") or {}).items():
            per_version.setdefault(version, []).append((s["t"], w))
    for version, pts in sorted(per_version.items()):
        weights.step([p[0] for p in pts], [p[1] for p in pts], where="post", label=f"v{version}")
    if not per_version:
        _empty(weights, "no traffic weights were sampled")
    weights.set_ylabel("traffic weight (%)")
    weights.set_ylim(-5, 105)
    _mark_windows(weights, doc)
    lines = _gateways_per_second(doc) or {
        (v if v == "none" else f"v{v}"): pts for v, pts in _versions_per_second(doc).items()}
    for name, pts in sorted(lines.items()):
        answers.plot([p[0] for p in pts], [p[1] for p in pts], label=name, linewidth=1)
    answers.set_ylabel("answers per second")
    answers.set_ylim(bottom=0)
    for ax in (weights, answers):
        _mark_events(ax, doc["events"], label=ax is weights)
        _legend(ax, loc="center left", fontsize=8)
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100)


def _mark_windows(ax: Axes, doc: Doc) -> None:
    """Each judged analysis window as a dot at its end, coloured by verdict, at the candidate's weight."""
    for w in _windows(doc):
        ax.scatter([w["end"]], [w.get("candidate_weight", 0)], color=VERDICT_COLOUR.get(w.get("verdict", ""), "k"),
                   s=25, zorder=3)


def _windows(doc: Doc) -> list[dict[str, Any]]:
    rollout = doc.get("rollout") or {}
    history = (rollout.get("status") or {}).get("history") or []
    return [{**w, "end": float(w["end"]) - float(doc["t0"])} for w in history]


def drift(doc: Doc, path: Path) -> None:
    """Top (during a rollout): candidate vs stable prediction PSI per analysis window, the rollout's check.
    Bottom: each version's drift against its training reference, from the `servegate_drift` gauges."""
    windows = _windows(doc)
    fig, axes = _figure(2 if windows else 1, f"{doc['scenario']} ({doc['model']}): drift scores")
    if windows:
        _window_drift(axes[0], doc, windows)
    gauges = axes[-1]
    lines: dict[str, list[tuple[float, float]]] = {}
    for s in doc["samples"]:
        for key, value in (s.get("drift") or {}).items():
            version, tensor, kind, statistic = [*key.split("/"), "", "", "", ""][:4]
            if statistic == "psi_max":  # one statistic per tensor keeps the plot readable
                lines.setdefault(f"v{version} {tensor} ({kind})", []).append((s["t"], value))
    for key, pts in sorted(lines.items())[:12]:
        gauges.plot([p[0] for p in pts], [p[1] for p in pts], label=key, linewidth=1)
    if lines:
        _legend(gauges, loc="upper left", fontsize=7)
    else:
        _empty(gauges, "the gateway exported no drift gauges during this run")
    gauges.set_ylabel("PSI max vs training reference")
    for ax in axes:
        _mark_events(ax, doc["events"], label=ax is axes[0])
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100)


def _window_drift(ax: Axes, doc: Doc, windows: list[dict[str, Any]]) -> None:
    pts = [(w["end"], w["measurements"]["prediction_psi"]) for w in windows
           if isinstance((w.get("measurements") or {}).get("prediction_psi"), int | float)]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", linestyle="--",
                label="prediction PSI, candidate vs stable (per window)")
    threshold = (((doc.get("rollout") or {}).get("spec") or {}).get("analysis") or {}).get("max_prediction_psi")
    if isinstance(threshold, int | float):
        ax.axhline(threshold, color="tab:red", linestyle=":", label=f"max_prediction_psi {threshold:g}")
    if pts or threshold is not None:
        _legend(ax, loc="upper left", fontsize=7)
    else:
        _empty(ax, "no prediction PSI in the rollout's windows")
    ax.set_ylabel("PSI between arms")


def resources(doc: Doc, path: Path) -> None:
    fig, (rss, fds) = _figure(2, f"{doc['scenario']} ({doc['model']}): gateway memory and file descriptors")
    names = sorted({name for s in doc["samples"] for name in (s.get("gateways") or {})})
    for name in names:
        # NaN while a process is gone (a killed replica), so its line breaks instead of bridging the gap.
        ts = [s["t"] for s in doc["samples"]]
        stats = [s["gateways"].get(name, {}) for s in doc["samples"]]
        rss.plot(ts, [g.get("rss_mb", math.nan) for g in stats], label=name, linewidth=1)
        fds.plot(ts, [g.get("fds", math.nan) for g in stats], label=name, linewidth=1)
    rss.set_ylabel("RSS (MB)")
    fds.set_ylabel("open file descriptors")
    for ax in (rss, fds):
        _mark_events(ax, doc["events"], label=ax is rss)
        ax.grid(alpha=0.3)
        if names:
            _legend(ax, loc="upper left", fontsize=8)
    fig.savefig(path, dpi=100)


PLOTS: Mapping[str, Callable[[Doc, Path], None]] = {
    "latency.png": latency, "traffic.png": traffic, "drift.png": drift, "resources.png": resources,
}


def render(doc: Doc, out: Path) -> list[str]:
    """Writes every plot that has data into `out`; returns the file names written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in PLOTS.items():
        if name == "resources.png" and not any("rss_mb" in s for s in doc["samples"]):
            continue  # a gateway elsewhere: its process cannot be read from here
        draw(doc, out / name)
        written.append(name)
    return written
