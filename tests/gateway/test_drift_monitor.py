"""The per-version drift monitor: acceptance on shifted traffic, windows, live reference, arms, safety."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from gateway.observability.drift import DriftConfig, DriftMonitor, _Budget
from kernels import warm_up
from kernels.profile import Profile, build_profile


@pytest.fixture(autouse=True, scope="module")
def warmed_kernels() -> None:
    warm_up()  # as the gateway does at start-up: the monitor runs on the compiled forms it serves with


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def predict(x: np.ndarray[Any, Any]) -> dict[str, Any]:
    """A stand-in model: a score with unit variance on reference inputs, and its sign as a label."""
    score = x.sum(axis=1, keepdims=True) / np.sqrt(x.shape[1])
    return {"label": (score[:, 0] > 0).astype(np.int64), "score": score}


def reference(features: int = 30, rows: int = 20000, seed: int = 0) -> Profile:
    x = np.random.default_rng(seed).normal(size=(rows, features)).astype(np.float32)
    return build_profile({"x": x}, predict(x))


def traffic(rng: np.random.Generator, batch: int, features: int, shift: dict[int, float] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    x = rng.standard_normal((batch, features), dtype=np.float32)
    for f, by in (shift or {}).items():
        x[:, f] += by
    return {"x": x}, predict(x)


def run(monitor: DriftMonitor, clock: Clock, batches: int, features: int, shift: dict[int, float] | None = None, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(batches):
        monitor.record(*traffic(rng, 64, features, shift))
        clock.now += 0.25


def test_acceptance_reference_traffic_stays_calm_and_a_two_sigma_shift_is_found_first() -> None:
    clock = Clock()
    monitor = DriftMonitor(reference(), clock=clock, name="v1")
    run(monitor, clock, 200, 30)
    calm = monitor.drift(60).tensor("x")
    assert calm.rows == 200 * 64  # 50 seconds of traffic, all inside the 60-second window
    assert calm.psi_max < 0.1
    clock.now += 120  # the calm traffic leaves the window
    run(monitor, clock, 200, 30, shift={7: 2.0}, seed=2)
    shifted = monitor.drift(50).tensor("x")
    assert shifted.psi[7] > 0.25
    assert shifted.top_features()[0][0] == "x[7]"
    others = np.delete(shifted.psi, 7)
    assert others.max() < 0.1
    assert shifted.mean_shift[7] == pytest.approx(2.0, abs=0.1)
    assert shifted.ks_max == shifted.ks[7] and shifted.js_max == shifted.js[7]


def test_window_sums_only_the_slices_that_cover_the_last_seconds() -> None:
    clock = Clock()
    monitor = DriftMonitor(reference(features=3, rows=500), DriftConfig(keep_seconds=10), clock=clock)
    rng = np.random.default_rng(0)
    for second in range(20):
        clock.now = 1000.0 + second
        for _ in range(second % 3 + 1):
            monitor.record(*traffic(rng, 4, 3))
    expect = sum(4 * (s % 3 + 1) for s in range(15, 20))
    w = monitor.window(5)
    assert w.rows == expect
    assert (w.counts[0].sum(axis=1) == expect).all() and w.moments[0][0, 0] == expect
    assert monitor.window(5, now=1000.0 + 19 + 4).rows == 4 * (19 % 3 + 1)
    assert monitor.window(10).rows == sum(4 * (s % 3 + 1) for s in range(10, 20))
    with pytest.raises(ValueError, match="seconds: expected at most keep_seconds=10"):
        monitor.window(11)
    with pytest.raises(ValueError, match="seconds: expected a positive number"):
        monitor.window(0)


def test_nan_inputs_and_wrong_dtypes_or_shapes_never_raise() -> None:
    clock = Clock()
    monitor = DriftMonitor(reference(features=4, rows=500), clock=clock, name="v2")
    x = np.full((8, 4), np.nan, dtype=np.float32)
    monitor.record({"x": x}, {"label": np.zeros(8, np.int64)})
    bad: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"x": np.array([["a", "b", "c", "d"]])}, {}),
        ({"x": np.zeros((8, 5), np.float32)}, {}),
        ({"x": np.float32(3.0)}, {}),
        ({"x": [[object()] * 4]}, {}),
        ({"x": np.zeros((8, 4), np.complex64)}, {}),
        ({"x": np.zeros((8, 4), np.float16)}, {"label": np.zeros(5, np.int8)}),
        ({"x": None}, {"score": "text"}),
    ]
    for inputs, outputs in bad:
        monitor.record(inputs, outputs)
    monitor.record({"x": np.ones((2, 4), np.uint8)}, {"label": np.ones(2, bool)})
    w = monitor.window(10)
    x_counts = w.counts[0]
    assert x_counts[:, -1].sum() == 8 * 4  # the NaN batch went to the NaN slots
    assert x_counts.sum() == (8 + 8 + 2) * 4  # float16 and uint8 are widened, not dropped
    skipped = monitor.skipped
    assert any(k.startswith("x: dtype <U1") for k in skipped)
    assert any(k.startswith("x: shape (8, 5)") for k in skipped)
    assert any(k.startswith("label: 5 rows") for k in skipped)
    assert len(skipped) >= 6


def test_a_784_feature_model_works_and_finds_a_shifted_pixel() -> None:
    rng = np.random.default_rng(4)
    clock = Clock()
    profile = build_profile({"image": rng.random((3000, 1, 28, 28)).astype(np.float32)})
    monitor = DriftMonitor(profile, clock=clock)
    for _ in range(40):
        image = rng.random((64, 1, 28, 28)).astype(np.float32)
        image[:, 0, 10, 20] += 0.5
        monitor.record({"image": image}, {})
        clock.now += 0.5
    report = monitor.drift(30).tensor("image")
    assert report.psi.shape == (784,)
    assert report.top_features(1)[0][0] == f"image[{10 * 28 + 20}]"
    assert np.nanmedian(report.psi) < 0.05


def test_row_sampling_keeps_psi_within_002_of_full_binning() -> None:
    # A two-sigma shift leaves the lowest bins nearly empty and PSI is most sensitive there: the
    # sampled estimate's noise shrinks as 1/sqrt(rows binned), so this takes a busy window (100 s of
    # 40 batches/s of 1024 rows, half of them binned). Both monitors see the same rows, so the gap is
    # the sampler's alone, and replaying a pool of batches measures it just as fresh data would.
    profile = reference(features=30)
    clocks = Clock(), Clock()
    full = DriftMonitor(profile, DriftConfig(keep_seconds=120), clock=clocks[0])
    sampled = DriftMonitor(profile, DriftConfig(keep_seconds=120, sample_rows=512, seed=7), clock=clocks[1])
    rng = np.random.default_rng(9)
    pool = [traffic(rng, 1024, 30, shift={3: 2.0}) for _ in range(64)]
    for i in range(4000):
        full.record(*pool[i % 64])
        sampled.record(*pool[i % 64])
        clocks[0].now += 0.025
        clocks[1].now += 0.025
    a, b = full.drift(110).tensor("x"), sampled.drift(110).tensor("x")
    assert a.rows == 2 * b.rows == 4000 * 1024
    assert b.top_features(1)[0][0] == "x[3]" and b.psi[3] > 0.25
    assert abs(a.psi[3] - b.psi[3]) < 0.02
    assert np.abs(a.psi - b.psi).max() < 0.02


def test_live_reference_builds_from_the_first_rows_then_measures() -> None:
    clock = Clock()
    monitor = DriftMonitor(config=DriftConfig(live_reference_rows=1000), clock=clock)
    assert (monitor.reference_source, monitor.ready, monitor.reference_rows_needed) == ("live", False, 1000)
    assert not monitor.drift(10).ready and monitor.drift(10).tensors == ()
    rng = np.random.default_rng(5)
    for _ in range(15):
        monitor.record(*traffic(rng, 64, 5))
    assert not monitor.ready and monitor.reference_rows_needed == 1000 - 15 * 64
    monitor.record(*traffic(rng, 64, 5))
    assert monitor.ready and monitor.reference_rows_needed == 0 and monitor.profile is not None
    assert monitor.profile.inputs[0].rows == 1000
    assert monitor.window(10).rows == 16 * 64 - 1000  # the rest of the last batch is measured
    run(monitor, clock, 40, 5, shift={1: 2.0}, seed=6)
    assert monitor.drift(20).tensor("x").top_features(1)[0][0] == "x[1]"


def test_compare_arms_on_the_same_window() -> None:
    profile = reference(features=6, rows=4000)
    clock = Clock()
    stable = DriftMonitor(profile, clock=clock, name="stable")
    same = DriftMonitor(profile, clock=clock, name="same")
    shifted = DriftMonitor(profile, clock=clock, name="shifted")
    rng = np.random.default_rng(8)
    for _ in range(100):
        stable.record(*traffic(rng, 32, 6))
        same.record(*traffic(rng, 32, 6))
        shifted.record(*traffic(rng, 32, 6, shift={0: 3.0, 1: 3.0}))
        clock.now += 0.2
    calm = same.compare(stable, 30)
    moved = shifted.compare(stable, 30)
    assert calm.baseline == "stable" and calm.ready
    assert calm.tensor("score", "output").psi_max < 0.1
    assert moved.tensor("score", "output").psi_max > 0.25
    assert moved.tensor("x").top_features(2)[0][0] in {"x[0]", "x[1]"}
    other = DriftMonitor(reference(features=6, rows=4000, seed=3), clock=clock)
    other.record(*traffic(rng, 8, 6))
    with pytest.raises(ValueError, match="compare: input 'x' is binned with different edges"):
        other.compare(stable, 30)


def test_concurrent_records_and_reads_lose_nothing() -> None:
    clock = Clock()
    monitor = DriftMonitor(reference(features=10, rows=2000), clock=clock)
    stop = threading.Event()
    seen: list[int] = []

    def write(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(200):
            monitor.record(*traffic(rng, 16, 10))

    def read() -> None:
        while not stop.is_set():
            w = monitor.window(60)
            seen.append(w.rows)
            assert (w.counts[0].sum(axis=1) == w.rows).all()

    reader = threading.Thread(target=read)
    writers = [threading.Thread(target=write, args=(s,)) for s in range(4)]
    reader.start()
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    reader.join()
    assert monitor.window(60).rows == 4 * 200 * 16
    assert seen == sorted(seen)


def test_summary_is_json_safe_and_marks_missing_data_as_null() -> None:
    clock = Clock()
    monitor = DriftMonitor(reference(features=3, rows=500), clock=clock)
    monitor.record(*traffic(np.random.default_rng(0), 32, 3))
    summary = monitor.drift(5).summary()
    assert summary["ready"] and summary["rows"] == 32
    x = summary["tensors"][0]
    assert set(x) >= {"psi_max", "psi_mean", "js_max", "ks_max", "top"} and len(x["top"]) == 3
    clock.now += 100
    empty = monitor.drift(5).summary()["tensors"][0]
    assert empty["psi_max"] is None and empty["top"] == [] and empty["rows"] == 0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("slice_seconds", 0, "slice_seconds: expected a positive number"),
        ("keep_seconds", float("inf"), "keep_seconds: expected a positive number"),
        ("live_reference_rows", 1.5, "live_reference_rows: expected a positive integer"),
        ("bins", 1, "bins: expected an integer >= 2"),
        ("sample_rows", -1, "sample_rows: expected an integer >= 0"),
        ("cpu_budget", 1.5, "cpu_budget: expected a share of one core from 0 to 1"),
        ("epsilon", -1e-4, "epsilon: expected a positive number"),
    ],
)
def test_bad_settings_name_the_field(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DriftConfig(**{field: value})


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_small_batches_wait_then_count_exactly_as_whole_ones(dtype: Any) -> None:
    # Batches under a kernel block are held and binned together: the counts and moments must be
    # those of binning each second's rows at once, across slice boundaries and reads in between.
    rng = np.random.default_rng(3)
    rows = (rng.normal(size=(300, 12)) * 4).astype(dtype)
    profile = build_profile({"x": rows[:200]}, predict(rows[:200].astype(np.float64)))
    clocks = Clock(), Clock()
    small, whole = (DriftMonitor(profile, clock=c) for c in clocks)
    seconds: dict[int, list[int]] = {}
    at, t = 0, 0.0
    while at < rows.shape[0]:
        n = int(rng.integers(1, 4))
        chunk = rows[at:at + n]
        clocks[0].now = 1000.0 + t
        small.record({"x": chunk}, predict(chunk.astype(np.float64)))
        seconds.setdefault(int(t), []).extend(range(at, at + len(chunk)))
        if at % 50 < 3:
            small.window(60)  # a reader in between takes what is held
        at, t = at + n, t + 0.07
    for second, index in seconds.items():
        clocks[1].now = 1000.0 + second
        whole.record({"x": rows[index]}, predict(rows[index].astype(np.float64)))
    clocks[0].now = clocks[1].now = 1000.0 + t
    a, b = small.window(60), whole.window(60)
    assert small.skipped == {} and whole.skipped == {}
    assert a.rows == b.rows == rows.shape[0]
    for ca, cb in zip(a.counts, b.counts, strict=True):
        np.testing.assert_array_equal(ca, cb)
    for ma, mb in zip(a.moments, b.moments, strict=True):
        np.testing.assert_allclose(ma, mb, rtol=1e-9, atol=1e-9)
    for second, index in seconds.items():  # and each row in the slice of the second it came in
        at_second = 1000.0 + second + 0.5
        assert small.window(1, at_second).rows == whole.window(1, at_second).rows == len(index)
        np.testing.assert_array_equal(small.window(1, at_second).counts[0], whole.window(1, at_second).counts[0])


def test_a_small_batch_missing_a_tensor_is_counted_without_the_held_rows() -> None:
    clock = Clock()
    monitor = DriftMonitor(reference(features=10, rows=2000), clock=clock)
    rng = np.random.default_rng(4)
    for _ in range(3):
        monitor.record(*traffic(rng, 2, 10))  # held
    inputs, outputs = traffic(rng, 2, 10)
    monitor.record(inputs, {"label": outputs["label"]})  # no score: binned at once, score skipped
    w = monitor.window(60)
    keys = monitor.tensor_keys()
    sums = {key: int(c.sum(axis=1)[0]) for key, c in zip(keys, w.counts, strict=True)}
    assert sums == {("input", "x"): 8, ("output", "label"): 8, ("output", "score"): 6}


def test_the_cpu_budget_is_a_bucket_of_time_that_refills_at_its_share() -> None:
    budget = _Budget(0.01, now=0.0)  # 1 % of a core: 10 ms of binning per second, in bursts of 10 ms
    assert budget.admit(0.0)
    budget.charge(0.004)
    assert budget.admit(0.0)
    budget.charge(0.007)  # 1 ms overdrawn
    assert not budget.admit(0.05)  # half a millisecond back
    assert budget.admit(0.2)  # 1 ms back: in credit again
    assert budget.admit(1000.0) and budget.tokens == pytest.approx(0.01)  # never more than one burst


def test_batches_over_the_cpu_budget_are_left_out_and_counted() -> None:
    clock = Clock()
    rng = np.random.default_rng(5)
    limited = DriftMonitor(reference(features=30, rows=2000), DriftConfig(cpu_budget=1e-6), clock=clock)
    free = DriftMonitor(reference(features=30, rows=2000), DriftConfig(), clock=clock)
    for _ in range(200):
        batch = traffic(rng, 64, 30)
        limited.record(*batch)
        free.record(*batch)
    assert free.window(60).rows == 200 * 64 and free.over_budget == 0
    binned = limited.window(60).rows
    assert 64 <= binned < 200 * 64 and binned % 64 == 0  # whole batches, the first within the burst
    assert limited.over_budget == 200 - binned // 64
