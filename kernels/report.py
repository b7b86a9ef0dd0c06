"""Drift reports: per-feature PSI / JS / KS of every tensor over one window, and their JSON summaries.

Plain values, so that the rollout analysis can read them without knowing the gateway.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Array = np.ndarray[Any, np.dtype[Any]]


@dataclass(frozen=True, eq=False)
class TensorDrift:
    """Per-feature drift of one tensor over a window; NaN where a side had no observations."""

    name: str
    role: str
    rows: int  # rows of this tensor binned in the window (after sampling)
    feature_names: tuple[str, ...]
    psi: Array
    js: Array
    ks: Array
    mean_shift: Array  # (window mean - baseline mean) / baseline standard deviation
    top: int = 5

    @property
    def psi_max(self) -> float:
        return _nan_stat(np.nanmax, self.psi)

    @property
    def psi_mean(self) -> float:
        return _nan_stat(np.nanmean, self.psi)

    @property
    def js_max(self) -> float:
        return _nan_stat(np.nanmax, self.js)

    @property
    def ks_max(self) -> float:
        return _nan_stat(np.nanmax, self.ks)

    def top_features(self, n: int | None = None) -> list[tuple[str, float]]:
        """The `n` (default: the configured number) features with the largest PSI, largest first."""
        order = [i for i in np.argsort(-self.psi, kind="stable") if not np.isnan(self.psi[i])]
        return [(self.feature_names[i], float(self.psi[i])) for i in order[: self.top if n is None else n]]

    def summary(self) -> dict[str, Any]:
        """JSON-safe summary: the maxima, the mean PSI and the top features (null = no data)."""
        return {
            "tensor": self.name,
            "role": self.role,
            "rows": self.rows,
            "psi_max": _json(self.psi_max),
            "psi_mean": _json(self.psi_mean),
            "js_max": _json(self.js_max),
            "ks_max": _json(self.ks_max),
            "top": [{"feature": f, "psi": v} for f, v in self.top_features()],
        }


@dataclass(frozen=True, eq=False)
class DriftReport:
    """Drift of every tensor of a version over one window, against `baseline` ("reference" or a monitor)."""

    baseline: str
    seconds: float
    rows: int
    ready: bool
    tensors: tuple[TensorDrift, ...] = ()

    @property
    def inputs(self) -> tuple[TensorDrift, ...]:
        return tuple(t for t in self.tensors if t.role == "input")

    @property
    def outputs(self) -> tuple[TensorDrift, ...]:
        return tuple(t for t in self.tensors if t.role == "output")

    def tensor(self, name: str, role: str = "input") -> TensorDrift:
        for t in self.tensors:
            if t.name == name and t.role == role:
                return t
        raise KeyError(f"no {role} tensor {name!r} in this report")

    def summary(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "seconds": self.seconds,
            "rows": self.rows,
            "ready": self.ready,
            "tensors": [t.summary() for t in self.tensors],
        }


def _nan_stat(fn: Callable[[Array], Any], values: Array) -> float:
    finite = values[~np.isnan(values)]
    return float(fn(finite)) if finite.size else math.nan


def _json(v: float) -> float | None:
    return v if math.isfinite(v) else None
