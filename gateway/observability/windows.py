"""Per-version window statistics: 1-second slices of requests, errors and a latency histogram.

The request path adds to the current slice; the controller sums slices into any window and reads
p50/p99 from the summed histogram. Slices are plain values so replicas can ship them elsewhere
(e.g. to a shared store) and a reader can merge slices from many processes.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

# Latency buckets: 50 µs to ~100 s, 5% apart (p99 read to within ±2.5%).
_BASE = 50e-6
_RATIO = 1.05
_LOG_RATIO = math.log(_RATIO)
N_BUCKETS = 300


def bucket_of(seconds: float) -> int:
    if seconds <= _BASE:
        return 0
    return min(N_BUCKETS - 1, int(math.log(seconds / _BASE) / _LOG_RATIO) + 1)


def bucket_upper(index: int) -> float:
    return _BASE * _RATIO ** index


@dataclass(slots=True)
class Slice:
    """One second of one version's traffic. `buckets` maps bucket index -> count (sparse)."""

    second: int
    requests: int = 0
    errors: int = 0
    buckets: dict[int, int] = field(default_factory=dict)

    def add(self, other: Slice) -> None:
        self.requests += other.requests
        self.errors += other.errors
        for k, v in other.buckets.items():
            self.buckets[k] = self.buckets.get(k, 0) + v

    def to_dict(self) -> dict[str, object]:
        return {"s": self.second, "n": self.requests, "e": self.errors,
                "b": {str(k): v for k, v in self.buckets.items()}}

    @staticmethod
    def from_dict(d: dict[str, object]) -> Slice:
        raw = d.get("b", {})
        buckets = {int(k): int(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
        return Slice(int(str(d["s"])), int(str(d["n"])), int(str(d["e"])), buckets)


@dataclass(frozen=True, slots=True)
class WindowSummary:
    requests: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def summarise(slices: Iterable[Slice]) -> WindowSummary:
    total = Slice(0)
    for s in slices:
        total.add(s)
    return WindowSummary(total.requests, total.errors,
                         _quantile_ms(total.buckets, 0.50), _quantile_ms(total.buckets, 0.99))


def latency_histogram(slices: Iterable[Slice]) -> tuple[tuple[float, int], ...]:
    """The slices' latency buckets summed: (upper bound in ms, count), ascending."""
    counts: dict[int, int] = {}
    for s in slices:
        for k, v in s.buckets.items():
            counts[k] = counts.get(k, 0) + v
    return tuple((bucket_upper(k) * 1000.0, counts[k]) for k in sorted(counts))


def _quantile_ms(buckets: dict[int, int], q: float) -> float | None:
    count = sum(buckets.values())
    if count == 0:
        return None
    rank = q * count
    seen = 0
    for index in sorted(buckets):
        seen += buckets[index]
        if seen >= rank:
            return bucket_upper(index) * 1000.0
    return bucket_upper(max(buckets)) * 1000.0


class WindowRecorder:
    """Slices of one version, kept for `keep_seconds`. Thread-safe; `record` is the hot-path call."""

    def __init__(self, keep_seconds: int = 600, clock: Callable[[], float] = time.time) -> None:
        self._keep = keep_seconds
        self._clock = clock
        self._slices: dict[int, Slice] = {}
        self._current: Slice | None = None
        self._lock = threading.Lock()

    def record(self, seconds: float, ok: bool) -> None:
        now = int(self._clock())
        with self._lock:
            current = self._current
            if current is None or current.second != now:
                current = self._slices.get(now)
                if current is None:
                    current = self._slices[now] = Slice(now)
                    self._expire(now)
                self._current = current
            current.requests += 1
            if not ok:
                current.errors += 1
            b = bucket_of(seconds)
            current.buckets[b] = current.buckets.get(b, 0) + 1

    def _expire(self, now: int) -> None:
        oldest = now - self._keep
        for second in [s for s in self._slices if s < oldest]:
            del self._slices[second]

    def slices(self, start: float, end: float) -> list[Slice]:
        """Copies of the slices with start <= second < end (wall-clock seconds)."""
        lo, hi = math.floor(start), math.ceil(end)
        with self._lock:
            return [Slice(s.second, s.requests, s.errors, dict(s.buckets))
                    for s in self._slices.values() if lo <= s.second < hi]

    def summary(self, start: float, end: float) -> WindowSummary:
        return summarise(self.slices(start, end))
