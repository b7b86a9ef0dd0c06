"""Which version answered: counts of replies per `model_version` in 100 ms bins of their send time.

A rollout game day needs to know how many requests a bad version answered and whether it answered any
sent after the rollback decision; bins of a tenth of a second make both exact enough to compare with
the controller's timestamps. Answers without a version (failed requests) are counted under `NONE`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

BIN_S = 0.1
NONE = "none"


@dataclass
class VersionCounts:
    """One version's answers: counts per 100 ms bin, and its first and last send time."""

    bins: dict[int, int] = field(default_factory=dict)
    first_s: float = math.inf
    last_s: float = -math.inf

    @property
    def answered(self) -> int:
        return sum(self.bins.values())


class VersionTally:
    """Counts replies by version; times are seconds since the start of the measured window."""

    def __init__(self) -> None:
        self.versions: dict[str, VersionCounts] = {}

    def record(self, offset_s: float, version: str) -> None:
        counts = self.versions.setdefault(version or NONE, VersionCounts())
        index = int(offset_s / BIN_S)
        counts.bins[index] = counts.bins.get(index, 0) + 1
        counts.first_s = min(counts.first_s, offset_s)
        counts.last_s = max(counts.last_s, offset_s)

    def to_partial(self) -> dict[str, Any]:
        return {v: {"bins": dict(c.bins), "first_s": c.first_s, "last_s": c.last_s}
                for v, c in self.versions.items()}

    def merge_partial(self, partial: Mapping[str, Any]) -> None:
        for version, data in partial.items():
            counts = self.versions.setdefault(version, VersionCounts())
            for index, count in data["bins"].items():
                counts.bins[int(index)] = counts.bins.get(int(index), 0) + int(count)
            counts.first_s = min(counts.first_s, float(data["first_s"]))
            counts.last_s = max(counts.last_s, float(data["last_s"]))

    def to_result(self) -> dict[str, Any]:
        """The result's `versions` block: per version `answered`, `first_sent_s`, `last_sent_s`, `per_100ms`."""
        return {v: {"answered": c.answered, "first_sent_s": c.first_s, "last_sent_s": c.last_s,
                    "per_100ms": {str(k): n for k, n in sorted(c.bins.items())}}
                for v, c in sorted(self.versions.items())}

    def per_second(self, second: int) -> dict[str, int]:
        """Answers per version among requests sent in one whole second of the window."""
        lo, hi = round(second / BIN_S), round((second + 1) / BIN_S)
        out = {}
        for version, counts in sorted(self.versions.items()):
            n = sum(counts.bins.get(i, 0) for i in range(lo, hi))
            if n:
                out[version] = n
        return out


def merged(partials: Sequence[Mapping[str, Any]]) -> VersionTally | None:
    """The workers' tallies added up; None when the run did not tally versions."""
    found = [p["versions"] for p in partials if p.get("versions") is not None]
    if not found:
        return None
    tally = VersionTally()
    for part in found:
        tally.merge_partial(part)
    return tally


def answered_between(versions: Mapping[str, Any], version: str, start_s: float, end_s: float) -> int:
    """Answers by `version` (from a result's `versions` block) sent in [start_s, end_s) of the window."""
    data = versions.get(version)
    if data is None:
        return 0
    lo = math.floor(start_s / BIN_S)
    hi = math.ceil(end_s / BIN_S) if math.isfinite(end_s) else math.inf
    return sum(n for k, n in data["per_100ms"].items() if lo <= int(k) < hi)
