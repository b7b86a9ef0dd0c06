"""Log-linear latency histogram in the HDR style: <0.4% bucket error from 1 µs to 60 s, mergeable.

Each power of two is split into `SUB_BUCKETS` equal slices, so a bucket's width is at most 1/128 of
its lower edge; counts are kept sparse so that one histogram per second stays cheap to keep and ship.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

LOWEST_S = 1e-6
HIGHEST_S = 60.0
SUB_BUCKETS = 128
_MIN_EXP = math.frexp(LOWEST_S)[1]
_MAX_EXP = math.frexp(HIGHEST_S)[1]
BUCKETS = (_MAX_EXP - _MIN_EXP + 1) * SUB_BUCKETS


def bucket_of(seconds: float) -> int:
    """Index of the bucket holding `seconds`; values outside 1 µs..60 s land in the edge buckets."""
    if seconds <= LOWEST_S:
        seconds = LOWEST_S
    elif seconds >= HIGHEST_S:
        seconds = HIGHEST_S
    mantissa, exponent = math.frexp(seconds)
    # mantissa is in [0.5, 1): the slice within the octave is linear in it.
    return (exponent - _MIN_EXP) * SUB_BUCKETS + int((mantissa - 0.5) * 2 * SUB_BUCKETS)


def bucket_bounds(index: int) -> tuple[float, float]:
    """Lower and upper edge of a bucket, in seconds."""
    if not 0 <= index < BUCKETS:
        raise ValueError(f"bucket index {index} is outside 0..{BUCKETS - 1}")
    octave, slot = divmod(index, SUB_BUCKETS)
    base = math.ldexp(0.5, octave + _MIN_EXP)
    width = base / SUB_BUCKETS
    return base + slot * width, base + (slot + 1) * width


@dataclass
class Histogram:
    """Counts of latencies by bucket, with exact count, sum, min and max alongside."""

    counts: dict[int, int] = field(default_factory=dict)
    total: int = 0
    sum_s: float = 0.0
    min_s: float = math.inf
    max_s: float = 0.0

    def record(self, seconds: float) -> None:
        index = bucket_of(seconds)
        self.counts[index] = self.counts.get(index, 0) + 1
        self.total += 1
        self.sum_s += seconds
        if seconds < self.min_s:
            self.min_s = seconds
        if seconds > self.max_s:
            self.max_s = seconds

    def merge(self, other: Histogram) -> None:
        """Adds `other`'s counts into this one (histograms from other processes or seconds)."""
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count
        self.total += other.total
        self.sum_s += other.sum_s
        self.min_s = min(self.min_s, other.min_s)
        self.max_s = max(self.max_s, other.max_s)

    def percentile(self, pct: float) -> float:
        """The smallest recorded value v with at least pct% of values <= v, to bucket precision.

        Returns the middle of the bucket, clamped to the exact min and max; 0.0 when empty.
        """
        if not 0.0 <= pct <= 100.0:
            raise ValueError(f"percentile must be within 0..100, got {pct}")
        if self.total == 0:
            return 0.0
        rank = max(1, math.ceil(pct / 100.0 * self.total))
        if rank >= self.total:
            return self.max_s  # the top rank is known exactly
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                low, high = bucket_bounds(index)
                return min(max((low + high) / 2, self.min_s), self.max_s)
        return self.max_s

    def mean(self) -> float:
        return self.sum_s / self.total if self.total else 0.0

    def summary(self, percentiles: Iterable[float] = (50, 90, 99, 99.9)) -> dict[str, float]:
        """Percentiles, mean, min and max in seconds, keyed p50, p90, p99, p99.9, mean, min, max."""
        out = {f"p{_label(p)}": self.percentile(p) for p in percentiles}
        out["mean"] = self.mean()
        out["min"] = self.min_s if self.total else 0.0
        out["max"] = self.max_s
        return out

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready form; `counts` maps the bucket index (as text) to its count."""
        return {
            "lowest_s": LOWEST_S, "highest_s": HIGHEST_S, "sub_buckets": SUB_BUCKETS,
            "total": self.total, "sum_s": self.sum_s,
            "min_s": self.min_s if self.total else 0.0, "max_s": self.max_s,
            "counts": {str(k): v for k, v in sorted(self.counts.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Histogram:
        """Rebuilds a histogram written by `to_dict`; refuses one with another bucket layout."""
        if data.get("sub_buckets") != SUB_BUCKETS or data.get("lowest_s") != LOWEST_S:
            raise ValueError("histogram was written with a different bucket layout")
        counts = data.get("counts")
        if not isinstance(counts, Mapping):
            raise ValueError("histogram has no counts mapping")
        hist = cls(counts={int(k): int(v) for k, v in counts.items()})
        hist.total = _as_int(data.get("total"))
        hist.sum_s = _as_float(data.get("sum_s"))
        hist.min_s = _as_float(data.get("min_s")) if hist.total else math.inf
        hist.max_s = _as_float(data.get("max_s"))
        if hist.total != sum(hist.counts.values()):
            raise ValueError("histogram total does not match its counts")
        return hist


def _label(pct: float) -> str:
    return str(int(pct)) if float(pct).is_integer() else str(pct)


def _as_int(value: object) -> int:
    if not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    return int(value)


def _as_float(value: object) -> float:
    if not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)
