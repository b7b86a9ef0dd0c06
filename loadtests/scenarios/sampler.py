"""What the gateway looked like during a run, second by second: a background thread scrapes `/metrics`,
reads the rollout status and the processes' memory and file descriptors; events mark what was done.

Everything is wall-clock time (epoch seconds), the clock the gateway stamps rollout decisions with.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import psutil

from loadtests.game import AdminApi, AdminError
from loadtests.scenarios.scrape import model_figures, total_requests

MB = 1024 * 1024


@dataclass
class Watched:
    """One gateway process to sample; `pid` is asked each time (a replica restarts with a new one)."""

    name: str
    admin: AdminApi
    pid: Callable[[], int | None] = lambda: None


@dataclass
class Timeline:
    """Samples and events of one run; appends come from several threads."""

    t0: float = field(default_factory=time.time)
    samples: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def event(self, kind: str, detail: str = "", t: float | None = None, **extra: Any) -> dict[str, Any]:
        entry = {"t": time.time() if t is None else t, "kind": kind, "detail": detail, **extra}
        with self._lock:
            self.events.append(entry)
        return entry

    def add_sample(self, sample: dict[str, Any]) -> None:
        with self._lock:
            self.samples.append(sample)


def process_stats(pid: int | None) -> dict[str, float] | None:
    """RSS (MB), open file descriptors and CPU seconds of a process and its children; None if gone."""
    if pid is None:
        return None
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
        rss = sum(p.memory_info().rss for p in procs)
        fds = sum(p.num_fds() for p in procs)
        cpu = sum(p.cpu_times().user + p.cpu_times().system for p in procs)
    except psutil.Error:
        return None
    return {"rss_mb": rss / MB, "fds": float(fds), "cpu_s": float(cpu)}


def drift_scores(doc: dict[str, Any] | None, version: str) -> dict[str, float]:
    """`version/tensor/role/psi_max` from an admin drift reply, wherever its tensor summaries sit."""
    found: dict[str, float] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "tensor" in node and isinstance(node.get("psi_max"), int | float):
                found[f"{version}/{node['tensor']}/{node.get('role', '')}/psi_max"] = float(node["psi_max"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(doc)
    return found


class Sampler:
    """Samples every `interval_s` on its own thread until stopped (a `with` block bounds it)."""

    def __init__(self, timeline: Timeline, gateways: Sequence[Watched], model: str, *,
                 interval_s: float = 1.0, rollout: bool = False, drift_window_s: float = 5.0) -> None:
        self.timeline, self.gateways, self.model = timeline, list(gateways), model
        self.interval_s, self.rollout, self.drift_window_s = interval_s, rollout, drift_window_s
        self._drift_endpoint = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scenario-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        start = time.monotonic()
        tick = 0
        while not self._stop.is_set():
            self.timeline.add_sample(self.sample_once())
            tick += 1
            # Ticks on a fixed grid, so a slow scrape does not shift every later sample.
            self._stop.wait(max(0.0, start + tick * self.interval_s - time.monotonic()))

    def sample_once(self) -> dict[str, Any]:
        sample: dict[str, Any] = {"t": time.time(), "weights": {}, "requests": {}, "queue_depth": {},
                                  "inflight": {}, "drift": {}, "gateways": {}}
        for gw in self.gateways:
            sample["gateways"][gw.name] = self._gateway(gw, sample)
        _add_process_totals(sample)
        if self.rollout:
            sample.update(self._rollout())
        return sample

    def _gateway(self, gw: Watched, sample: dict[str, Any]) -> dict[str, Any]:
        entry: dict[str, Any] = {"up": False, **(process_stats(gw.pid()) or {})}
        try:
            figures = model_figures(gw.admin.metrics(), self.model)
        except AdminError:
            return entry
        entry["up"] = True
        entry["requests"] = total_requests(figures)
        first = not sample["weights"]
        for key in ("requests", "queue_depth", "inflight"):
            _add(sample[key], figures[key])
        if first:
            sample["weights"] = figures["weights"]
            sample["drift"] = figures["drift"] or self._drift(gw.admin, figures["weights"])
        return entry

    def _drift(self, admin: AdminApi, weights: dict[str, float]) -> dict[str, float]:
        """Drift from the admin API when the gateway exports no `servegate_drift` gauges."""
        if not self._drift_endpoint:
            return {}
        scores: dict[str, float] = {}
        for version, weight in weights.items():
            if weight <= 0:
                continue
            try:
                doc = admin.drift(self.model, version, self.drift_window_s)
            except AdminError:
                doc = None
            if doc is None:
                self._drift_endpoint = False  # not offered by this gateway: stop asking
                return {}
            scores.update(drift_scores(doc, version))
        return scores

    def _rollout(self) -> dict[str, Any]:
        try:
            doc = self.gateways[0].admin.rollout(self.model) if self.gateways else None
        except AdminError:
            return {}
        if doc is None:
            return {}
        status = doc["status"]
        return {"phase": status.get("phase"), "step": status.get("step_index"),
                "rollout_weights": status.get("weights"), "windows": status.get("windows")}


def _add(into: dict[str, Any], more: dict[str, Any]) -> None:
    for key, value in more.items():
        if isinstance(value, dict):
            _add(into.setdefault(key, {}), value)
        else:
            into[key] = into.get(key, 0.0) + value


def _add_process_totals(sample: dict[str, Any]) -> None:
    gateways = [g for g in sample["gateways"].values() if "rss_mb" in g]
    if gateways:
        sample["rss_mb"] = sum(g["rss_mb"] for g in gateways)
        sample["fds"] = sum(g["fds"] for g in gateways)
        sample["cpu_s"] = sum(g["cpu_s"] for g in gateways)
