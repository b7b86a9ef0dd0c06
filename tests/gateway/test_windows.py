"""Window slices: quantiles from the histogram match the raw data; slices merge; old ones expire."""

from __future__ import annotations

import numpy as np

from gateway.observability.windows import Slice, WindowRecorder, bucket_upper, summarise


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_quantiles_match_numpy_within_bucket_width() -> None:
    clock = Clock(1000.0)
    rec = WindowRecorder(clock=clock)
    latencies = np.random.default_rng(1).lognormal(mean=-6.0, sigma=0.8, size=20_000)
    for i, x in enumerate(latencies):
        clock.t = 1000.0 + i / 4000
        rec.record(float(x), ok=i % 50 != 0)
    summary = rec.summary(1000, 1010)
    assert summary.requests == 20_000
    assert summary.errors == 400
    assert summary.p99_ms is not None and summary.p50_ms is not None
    assert abs(summary.p99_ms / (np.percentile(latencies, 99) * 1000) - 1) < 0.06
    assert abs(summary.p50_ms / (np.percentile(latencies, 50) * 1000) - 1) < 0.06


def test_slices_from_several_processes_merge() -> None:
    a, b = Slice(5, 10, 1, {3: 10}), Slice(5, 30, 0, {3: 25, 40: 5})
    merged = summarise([a, b])  # 35 fast and 5 slow requests
    assert (merged.requests, merged.errors) == (40, 1)
    assert merged.p50_ms == bucket_upper(3) * 1000
    assert merged.p99_ms == bucket_upper(40) * 1000
    assert Slice.from_dict(b.to_dict()) == b


def test_old_slices_expire_and_windows_select_by_time() -> None:
    clock = Clock(100.0)
    rec = WindowRecorder(keep_seconds=10, clock=clock)
    rec.record(0.01, True)
    clock.t = 105.0
    rec.record(0.01, False)
    assert rec.summary(100, 106).requests == 2
    assert rec.summary(105, 106).requests == 1
    clock.t = 200.0
    rec.record(0.01, True)
    assert rec.summary(0, 300).requests == 1  # the slices of 100 and 105 are gone
