"""Drift of every loaded version: one DriftMonitor per version, all versions of a model binned with the
same reference (so candidate and stable predictions compare bin for bin), gauges, the controller's
drift figures and the admin report.

The reference is the production version's registered profile (built at registration from
`reference.npz`), else the first version's live one: the first `reference_rows` rows it serves, which
is then stored with that version in the registry and given to the model's other versions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.models import LoadedVersion
from gateway.observability.drift import DriftConfig, DriftMonitor
from gateway.observability.metrics import Metrics
from gateway.repository import ModelConfig
from kernels.binning import BLOCK
from kernels.profile import Profile
from kernels.report import DriftReport, TensorDrift
from rollout.errors import NotFound, RolloutError, StoreUnavailable
from rollout.registry import ModelVersion, Registry, Stage

log = logging.getLogger(__name__)

KEEP_SECONDS = 300.0
# Auto sampling keeps a batch's binning under about this many values (tensor features x rows):
# ~10 µs of kernel time, a few percent of a batch of a wide model's inference at most.
AUTO_SAMPLE_VALUES = 16_384
AUTO_SAMPLE_MIN_ROWS = 8
GAUGE_WINDOW_S = 60.0
STATISTICS = ("psi_max", "psi_mean", "js_max", "ks_max")


class DriftTracker:
    def __init__(self, registry: Registry, metrics: Metrics, *, clock: Callable[[], float] = time.time) -> None:
        self._registry = registry
        self._metrics = metrics
        self._clock = clock
        self._monitors: dict[tuple[str, str], DriftMonitor] = {}
        self._hooks: dict[tuple[str, str], tuple[LoadedVersion, Callable[..., None]]] = {}
        self._saved: set[tuple[str, str]] = set()
        metrics.registry.register(_DriftCost(self._monitors))

    # --- attaching monitors (sync.on_load) -------------------------------------------------------

    def attach(self, loaded: LoadedVersion, record: ModelVersion) -> None:
        """Starts measuring a version that has just loaded (called on the event loop)."""
        config = loaded.config
        if not config.drift:
            return
        profile = self.model_profile(record.model, fallback=record)
        features = _features_per_row(profile, loaded)
        self._install(loaded, DriftMonitor(profile, _drift_config(config, features),
                                           name=f"{record.model}/{record.version}", clock=self._clock))

    def _install(self, loaded: LoadedVersion, monitor: DriftMonitor) -> None:
        key = (loaded.model, loaded.version)
        old = self._hooks.pop(key, None)
        if old is not None:
            with contextlib.suppress(ValueError):
                old[0].observers.remove(old[1])
        loaded.observers.append(monitor.record)
        self._hooks[key] = (loaded, monitor.record)
        self._monitors[key] = monitor

    def model_profile(self, model: str, fallback: ModelVersion | None = None) -> Profile | None:
        """The profile every version of `model` bins with: production's, else any registered one."""
        try:
            versions = self._registry.versions(model)
        except (StoreUnavailable, NotFound):
            versions = [fallback] if fallback is not None else []
        ordered = sorted(versions, key=lambda v: (v.stage is not Stage.PRODUCTION, v.version))
        for v in ordered:
            if v.drift_profile:
                try:
                    return Profile.from_dict(v.drift_profile)
                except ValueError as exc:
                    log.error("drift profile of %s/%s is unreadable: %s", v.model, v.version, exc)
        return None

    def monitor(self, model: str, version: str) -> DriftMonitor | None:
        return self._monitors.get((model, version))

    # --- background: live references and gauges -------------------------------------------------

    async def run(self, stop: asyncio.Event, interval_s: float = 5.0) -> None:
        while not stop.is_set():
            try:
                await self.maintain()
            except Exception:  # drift bookkeeping must never take serving down
                log.exception("drift maintenance failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)

    async def maintain(self) -> None:
        for (model, version), monitor in list(self._monitors.items()):
            if monitor.reference_source == "live" and monitor.ready and (model, version) not in self._saved:
                await self._adopt_live_reference(model, version, monitor)
            self._publish(model, version, monitor)

    async def _adopt_live_reference(self, model: str, version: str, monitor: DriftMonitor) -> None:
        profile = monitor.profile
        if profile is None:
            return
        self._saved.add((model, version))
        try:
            await asyncio.to_thread(self._registry.set_drift_profile, model, version, profile.to_dict(),
                                    actor="drift")
        except RolloutError as exc:
            log.warning("could not store the live drift reference of %s/%s: %s", model, version, exc)
        log.info("drift reference of %s built from the first %d rows of version %s", model, profile.inputs[0].rows
                 if profile.inputs else 0, version)
        for (m, v), (loaded, _) in list(self._hooks.items()):
            other = self._monitors[(m, v)]
            if m == model and v != version and other.reference_source == "live":
                self._install(loaded, DriftMonitor(profile, other.config, name=other.name, clock=self._clock))

    def _publish(self, model: str, version: str, monitor: DriftMonitor) -> None:
        report = monitor.drift(GAUGE_WINDOW_S, self._clock())
        if not report.ready or report.rows == 0:
            return
        for tensor in report.tensors:
            kind = "input" if tensor.role == "input" else "prediction"
            for statistic in STATISTICS:
                value = getattr(tensor, statistic)
                if value is not None and math.isfinite(value):
                    self._metrics.drift.labels(model, version, tensor.name, kind, statistic).set(value)

    # --- the controller's figures (rollout.controller runs these in a thread) --------------------

    def input_psi_max(self, model: str, version: str, start: float, end: float) -> float | None:
        monitor = self._monitors.get((model, version))
        if monitor is None or not monitor.ready:
            return None
        return _max(monitor.drift(_seconds(start, end), end), "input")

    def prediction_psi(self, model: str, candidate: str, stable: str, start: float, end: float) -> float | None:
        cand, base = self._monitors.get((model, candidate)), self._monitors.get((model, stable))
        if cand is None or base is None or not cand.ready or not base.ready:
            return None
        try:
            report = cand.compare(base, _seconds(start, end), end)
        except ValueError as exc:  # binned with different references (one still building live)
            log.debug("no prediction drift for %s %s vs %s: %s", model, candidate, stable, exc)
            return None
        return _max(report, "output")

    # --- the admin report ------------------------------------------------------------------------

    def status(self, model: str, version: str) -> dict[str, Any]:
        """What the version's drift is measured against: a registered profile, or live traffic (and
        how many more rows the live reference needs), or nothing (drift off, not loaded)."""
        monitor = self._monitors.get((model, version))
        if monitor is None:
            return {"reference": "none"}
        out: dict[str, Any] = {"reference": monitor.reference_source, "ready": monitor.ready}
        if not monitor.ready:
            out["reference_rows_needed"] = monitor.reference_rows_needed
        return out

    async def report(self, model: str, version: str, window_s: float) -> dict[str, Any]:
        monitor = self._monitors.get((model, version))
        if monitor is None:
            raise NotFound(f"no drift measured for {model}/{version}: the version is not loaded, or drift is "
                           "off in its config")
        now = self._clock()
        seconds = min(max(window_s, 1.0), KEEP_SECONDS)
        report = monitor.drift(seconds, now)
        out: dict[str, Any] = {
            "model": model, "version": version, "window_s": seconds,
            "reference_source": monitor.reference_source,
            "reference_rows_needed": monitor.reference_rows_needed,
            "against": "reference", **report.summary(),
        }
        for tensor, detail in zip(report.tensors, out["tensors"], strict=True):
            detail["features"] = _features(tensor)
        out["top_features"] = _top_features(report, monitor.config.top_features)
        if monitor.skipped:
            out["skipped"] = monitor.skipped
        out["sampling"] = {"rows_per_batch": monitor.config.sample_rows or "all",
                           "cpu_budget": monitor.config.cpu_budget or "none",
                           "batches_over_budget": monitor.over_budget}
        return out


class _DriftCost(Collector):
    """What drift costs, read from the monitors when scraped: time spent binning, and batches the CPU
    budget left out."""

    def __init__(self, monitors: dict[tuple[str, str], DriftMonitor]) -> None:
        self._monitors = monitors

    def collect(self) -> Iterator[Metric]:
        busy = CounterMetricFamily("servegate_drift_busy_seconds",
                                   "Wall time inference workers spent on drift binning.", labels=["model", "version"])
        over = CounterMetricFamily("servegate_drift_over_budget_batches",
                                   "Batches left out of drift binning by the model's drift_cpu_budget.",
                                   labels=["model", "version"])
        for (model, version), monitor in list(self._monitors.items()):
            busy.add_metric([model, version], monitor.busy_s)
            over.add_metric([model, version], monitor.over_budget)
        yield busy
        yield over


def _features_per_row(profile: Profile | None, loaded: LoadedVersion) -> int:
    if profile is not None:
        return sum(t.features for t in (*profile.inputs, *profile.outputs))
    sig = loaded.signature
    return sum(max(1, math.prod(max(d, 1) for d in t.shape[1:])) for t in (*sig.inputs, *sig.outputs))


def sample_rows(configured: int, features: int) -> int:
    """Rows of each batch to bin: the configured number, all (-1), or auto (0) for the tensor width."""
    if configured > 0:
        return configured
    if configured < 0:
        return 0  # the monitor's "every row"
    limit = AUTO_SAMPLE_VALUES // max(1, features)
    if limit >= 64:
        return 0
    # The kernel compares rows eight at a time: a partial block costs a whole one.
    return max(AUTO_SAMPLE_MIN_ROWS, limit // BLOCK * BLOCK)


def _drift_config(config: ModelConfig, features: int) -> DriftConfig:
    return DriftConfig(keep_seconds=KEEP_SECONDS, live_reference_rows=config.reference_rows,
                       bins=config.drift_bins, sample_rows=sample_rows(config.drift_sample_rows, features),
                       cpu_budget=config.drift_cpu_budget)


def _seconds(start: float, end: float) -> float:
    return min(max(end - start, 1.0), KEEP_SECONDS)


def _max(report: DriftReport, role: str) -> float | None:
    if not report.ready or report.rows == 0:
        return None
    values = [t.psi_max for t in report.tensors if t.role == role]
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return max(finite) if finite else None


def _features(tensor: TensorDrift) -> list[dict[str, Any]]:
    """Every feature's statistics (null where the window or the baseline had no observation)."""
    def num(x: float) -> float | None:
        return float(x) if math.isfinite(x) else None
    return [{"feature": name, "psi": num(tensor.psi[i]), "js": num(tensor.js[i]), "ks": num(tensor.ks[i]),
             "mean_shift": num(tensor.mean_shift[i])} for i, name in enumerate(tensor.feature_names)]


def _top_features(report: DriftReport, n: int) -> list[dict[str, Any]]:
    """The most drifting features across every input tensor, by PSI."""
    ranked = [(name, value, t.name) for t in report.tensors if t.role == "input"
              for name, value in t.top_features(n)]
    ranked.sort(key=lambda item: -item[1])
    return [{"feature": name, "tensor": tensor, "psi": value} for name, value, tensor in ranked[:n]]

