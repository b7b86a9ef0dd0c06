"""The controller's view of live traffic: per-arm window figures read from this process's windows.

Implements rollout.controller.MetricsSource. With several replicas, a shared-window source (the
slices every replica pushes to the store) takes its place; the figures and their meaning are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from gateway.models import ModelManager
from gateway.observability.windows import Slice, latency_histogram, summarise
from gateway.shadow import ShadowFigures
from rollout.analysis import ArmWindow, Observation, ShadowComparison


class ShadowSource(Protocol):
    def figures(self, model: str, version: str, start: float, end: float) -> ShadowFigures: ...


class DriftSource(Protocol):
    def input_psi_max(self, model: str, version: str, start: float, end: float) -> float | None: ...

    def prediction_psi(self, model: str, candidate: str, stable: str, start: float, end: float) -> float | None: ...


SliceSource = Callable[[str, str, float, float], Iterable[Slice]]


class LiveMetrics:
    """Window figures per arm from per-version slices (local, or merged from every replica)."""

    def __init__(self, manager: ModelManager, shadow: ShadowSource | None = None,
                 drift: DriftSource | None = None, slices: SliceSource | None = None) -> None:
        self._manager = manager
        self._shadow = shadow
        self._drift = drift
        self._slices = slices or self._local_slices

    def with_slices(self, slices: SliceSource, drift: DriftSource | None = None,
                    shadow: ShadowSource | None = None) -> LiveMetrics:
        """The same figures read from another slice source (e.g. every replica's shipped slices), and
        drift and shadow figures from other sources too when given (every replica's shipped counts)."""
        return LiveMetrics(self._manager, shadow or self._shadow, drift or self._drift, slices)

    def _local_slices(self, model: str, version: str, start: float, end: float) -> list[Slice]:
        loaded = self._manager.find(model, version)
        return loaded.windows.slices(start, end) if loaded is not None else []

    def arm(self, model: str, version: str, start: float, end: float) -> ArmWindow:
        slices = list(self._slices(model, version, start, end))
        summary = summarise(slices)
        psi = self._drift.input_psi_max(model, version, start, end) if self._drift else None
        return ArmWindow(version, summary.requests, summary.errors, summary.p50_ms, summary.p99_ms, psi,
                         latency_histogram(slices))

    def observe(self, model: str, candidate: str, stable: str, window_start: float,
                window_end: float) -> Observation | None:
        cand = self.arm(model, candidate, window_start, window_end)
        base = self.arm(model, stable, window_start, window_end)
        if cand.requests == 0 and base.requests == 0:
            return None
        prediction_psi = (self._drift.prediction_psi(model, candidate, stable, window_start, window_end)
                          if self._drift else None)
        shadow = None
        if self._shadow is not None:
            figures = self._shadow.figures(model, candidate, window_start, window_end)
            if figures.requests or figures.errors:
                shadow = ShadowComparison(figures.requests, figures.errors, figures.agreement_rate,
                                          figures.mean_abs_delta)
        return Observation(window_start, window_end, cand, base, prediction_psi, shadow)
