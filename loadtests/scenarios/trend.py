"""Growth over time, robust to noise: medians of fixed windows, then a least-squares line through them.

A soak fails on *growth*, not on a high value: the fitted slope over the second half of the run (after
start-up and warm-up have settled) times that half's length says how much a series grew there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import median


def window_medians(points: Sequence[tuple[float, float]], window_s: float) -> list[tuple[float, float]]:
    """(window centre, median value) for each `window_s` slice that holds points; NaNs are dropped."""
    buckets: dict[int, list[float]] = {}
    for t, v in points:
        if not math.isnan(v):
            buckets.setdefault(math.floor(t / window_s), []).append(v)
    return [((k + 0.5) * window_s, median(vs)) for k, vs in sorted(buckets.items())]


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope (value per second); None with fewer than 3 points or no time spread."""
    if len(points) < 3:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return None
    return sum((t - mt) * (v - mv) for t, v in points) / var


def second_half_growth(points: Sequence[tuple[float, float]], window_s: float) -> float | None:
    """Fitted growth over the second half of the time span, from window medians; None when too short."""
    if not points:
        return None
    start, end = min(t for t, _ in points), max(t for t, _ in points)
    middle = (start + end) / 2
    late = [(t, v) for t, v in window_medians(points, window_s) if t >= middle]
    rate = slope(late)
    return None if rate is None else rate * (end - middle)
