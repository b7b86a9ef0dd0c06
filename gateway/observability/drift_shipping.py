"""Drift counts across replicas: each replica ships its per-second bin counts beside its window slices,
and a controller reading merged data sums every replica's counts for its windows.

The counts are small and mostly zero: they travel as int32, zlib-compressed, one array per tensor.
Moments stay local (they describe a window for people, they do not decide a rollout).
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from gateway.observability.drift import DriftMonitor
from kernels.divergence import PSI_EPSILON, psi
from kernels.profile import Profile
from rollout.store.base import SliceRecord

PAYLOAD = "drift"
Array = np.ndarray[Any, np.dtype[Any]]
Counts = dict[tuple[str, str], Array]  # (role, tensor) -> counts [features, slots]
Monitors = Callable[[str, str], DriftMonitor | None]
Payloads = Callable[[str, str, str, float, float], list[SliceRecord]]
Profiles = Callable[[str], Profile | None]


def encode(counts: Counts) -> bytes:
    buffer = io.BytesIO()
    arrays: dict[str, Any] = {f"{role}:{name}": c.astype(np.int32) for (role, name), c in counts.items()}
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def decode(data: bytes) -> Counts:
    out: Counts = {}
    with np.load(io.BytesIO(data)) as arrays:
        for key in arrays.files:
            role, _, name = key.partition(":")
            out[(role, name)] = arrays[key].astype(np.int64)
    return out


def provider(monitors: Monitors) -> Callable[[str, str, int], bytes | None]:
    """The replication payload: this replica's counts of one version for one second (None if empty)."""
    def counts_of(model: str, version: str, second: int) -> bytes | None:
        monitor = monitors(model, version)
        if monitor is None or not monitor.ready:
            return None
        window = monitor.window(1.0, second + 0.5)
        if window.rows == 0:
            return None
        return encode(dict(zip(monitor.tensor_keys(), window.counts, strict=True)))
    return counts_of


class SharedDrift:
    """The controller's drift figures from every replica's shipped counts (a DriftSource)."""

    PROFILE_TTL_S = 30.0  # a model's reference changes rarely; reading it every tick is wasted work

    def __init__(self, payloads: Payloads, profiles: Profiles, clock: Callable[[], float] = time.monotonic) -> None:
        self._payloads = payloads
        self._profiles = profiles
        self._clock = clock
        self._cache: dict[str, tuple[float, Profile | None]] = {}

    def _profile(self, model: str) -> Profile | None:
        now = self._clock()
        cached = self._cache.get(model)
        if cached is None or now - cached[0] > self.PROFILE_TTL_S:
            cached = self._cache[model] = (now, self._profiles(model))
        return cached[1]

    def _summed(self, model: str, version: str, start: float, end: float) -> Counts:
        total: Counts = {}
        for record in self._payloads(PAYLOAD, model, version, start, end):
            for key, counts in decode(record.data).items():
                if key in total and total[key].shape == counts.shape:
                    total[key] += counts
                elif key not in total:
                    total[key] = counts
        return total

    def input_psi_max(self, model: str, version: str, start: float, end: float) -> float | None:
        profile = self._profile(model)
        window = self._summed(model, version, start, end)
        if profile is None or not window:
            return None
        values = [_psi_max(t.counts, window.get(("input", t.name))) for t in profile.inputs]
        return _max(values)

    def prediction_psi(self, model: str, candidate: str, stable: str, start: float, end: float) -> float | None:
        cand, base = self._summed(model, candidate, start, end), self._summed(model, stable, start, end)
        values = [_psi_max(base[key], counts) for key, counts in cand.items()
                  if key[0] == "output" and key in base]
        return _max(values)


def _psi_max(expected: Array | None, actual: Array | None) -> float | None:
    if expected is None or actual is None or expected.shape != actual.shape:
        return None
    values = psi(np.ascontiguousarray(expected, dtype=np.int64), np.ascontiguousarray(actual, dtype=np.int64),
                 PSI_EPSILON)
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size else None


def _max(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return max(finite) if finite else None

