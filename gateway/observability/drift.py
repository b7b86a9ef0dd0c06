"""Per-version drift monitor: bins every batch into one-second slices on the inference worker thread,
and compares a window of slices with the reference profile, or with another version, off the request path.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from kernels.binning import BLOCK, EdgeTable, copy_rows
from kernels.divergence import PSI_EPSILON, js_distance, ks_binned, psi
from kernels.moments import MEAN, merge_moments, new_state, update_moments, variance
from kernels.profile import DEFAULT_BINS, Profile, ProfileBuilder, TensorProfile
from kernels.report import DriftReport, TensorDrift

log = logging.getLogger(__name__)

Array = np.ndarray[Any, np.dtype[Any]]
KERNEL_DTYPES = frozenset(np.dtype(t) for t in (np.float32, np.float64, np.int32, np.int64))
ROLES = ("input", "output")


def _positive(name: str, value: float, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name}: expected a positive {'integer' if integer else 'number'}, got {value!r}")


@dataclass(frozen=True, slots=True)
class DriftConfig:
    """Settings of a drift monitor; validated on construction."""

    slice_seconds: float = 1.0  # resolution of windows
    keep_seconds: float = 300.0  # longest window that can be asked for
    live_reference_rows: int = 1000  # rows that become the reference when no profile is given
    bins: int = DEFAULT_BINS  # quantile bins of a live reference
    sample_rows: int = 0  # bin at most this many rows of each batch (0 = all rows)
    cpu_budget: float = 0.0  # share of one core binning may take; batches over it are left out (0 = no limit)
    seed: int = 0  # of the row sampler, so that runs repeat
    epsilon: float = PSI_EPSILON  # floor of a bin's proportion in PSI
    top_features: int = 5  # how many drifting features a report names

    def __post_init__(self) -> None:
        _positive("slice_seconds", self.slice_seconds)
        _positive("keep_seconds", self.keep_seconds)
        _positive("live_reference_rows", self.live_reference_rows, integer=True)
        _positive("top_features", self.top_features, integer=True)
        _positive("epsilon", self.epsilon)
        if isinstance(self.bins, bool) or not isinstance(self.bins, int) or self.bins < 2:
            raise ValueError(f"bins: expected an integer >= 2, got {self.bins!r}")
        if isinstance(self.sample_rows, bool) or not isinstance(self.sample_rows, int) or self.sample_rows < 0:
            raise ValueError(f"sample_rows: expected an integer >= 0 (0 = every row), got {self.sample_rows!r}")
        budget = self.cpu_budget
        if isinstance(budget, bool) or not isinstance(budget, int | float) or not 0 <= budget <= 1:
            raise ValueError(f"cpu_budget: expected a share of one core from 0 to 1 (0 = no limit), got {budget!r}")
        if self.keep_seconds < self.slice_seconds:
            raise ValueError("keep_seconds: expected at least slice_seconds")


@dataclass(frozen=True, slots=True, eq=False)
class _Plan:
    role: str
    tensor: TensorProfile
    table: EdgeTable
    reference: Array  # the profile's counts, C-contiguous int64


class _Slice:
    """Counts and moments of one slice of time; its lock serialises writers and readers of this slice."""

    __slots__ = ("counts", "lock", "moments", "rows", "tick")

    def __init__(self, plans: tuple[_Plan, ...]) -> None:
        self.lock = threading.Lock()
        self.tick = -(2**62)
        self.rows = 0
        self.counts = [p.table.new_counts() for p in plans]
        self.moments = [new_state(p.tensor.features) for p in plans]

    def reset(self, tick: int) -> None:
        self.tick = tick
        self.rows = 0
        for c in self.counts:
            c.fill(0)
        for m in self.moments:
            m[:] = new_state(m.shape[1])


PENDING_ROWS = 64  # small batches wait here until this many rows can be binned at once


class _Pending:
    """Rows of batches smaller than a kernel block, held until PENDING_ROWS of them (or the end of
    their slice of time, or a reader) make binning them worth its fixed cost. Under `lock`."""

    __slots__ = ("buffers", "lock", "rows", "seen", "tick")

    def __init__(self, plans: tuple[_Plan, ...]) -> None:
        self.lock = threading.Lock()
        self.tick = 0
        self.rows = 0  # rows held (sampled rows, where the monitor samples)
        self.seen = 0  # rows of the batches they came from
        self.buffers: list[Array | None] = [None] * len(plans)


@dataclass(frozen=True, slots=True)
class _State:
    plans: tuple[_Plan, ...]
    slices: tuple[_Slice, ...]
    pending: _Pending


@dataclass(frozen=True, slots=True)
class WindowCounts:
    """Sums over the slices of one window, aligned with the monitor's tensors (inputs, then outputs)."""

    seconds: float
    rows: int
    counts: tuple[Array, ...]
    moments: tuple[Array, ...]


class _Budget:
    """A token bucket of time: binning may spend `share` of one core, in bursts of up to one second's
    worth. Batches that find it empty are not binned; as it refills at a steady rate, the batches
    binned under load are spread evenly over time. Time is measured on the wall clock, so a thread
    descheduled while binning is charged for the wait: under contention the monitor backs off more."""

    __slots__ = ("capacity", "last", "lock", "share", "tokens")

    def __init__(self, share: float, now: float | None = None) -> None:
        self.share = share
        self.capacity = share  # seconds of binning: one second at the budget
        self.tokens = self.capacity
        self.last = time.perf_counter() if now is None else now
        self.lock = threading.Lock()

    def admit(self, now: float) -> bool:
        with self.lock:
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.share)
            self.last = now
            return self.tokens > 0.0

    def charge(self, seconds: float) -> None:
        with self.lock:
            self.tokens -= seconds


class DriftMonitor:
    """Drift of one model version. `record` runs on worker threads; everything else off the hot path.

    With a profile the reference is the profile (`reference_source == "profile"`). Without one, the
    first `config.live_reference_rows` recorded rows become the reference (`"live"`); until then
    `ready` is False and `reference_rows_needed` says how many rows are still missing.
    """

    def __init__(
        self,
        profile: Profile | None = None,
        config: DriftConfig | None = None,
        *,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or DriftConfig()
        self.name = name
        self._clock = clock
        self._state: _State | None = None
        self._builder: ProfileBuilder | None = None
        self._profile: Profile | None = None
        self._build_lock = threading.Lock()
        self._random = random.Random(self.config.seed)
        self._budget = _Budget(self.config.cpu_budget) if self.config.cpu_budget > 0 else None
        self.over_budget = 0  # batches left out by the CPU budget
        self.busy_s = 0.0  # wall time spent in `record` (under a race between workers an addition may be lost)
        self._skips: dict[str, int] = {}
        self._skip_lock = threading.Lock()
        self.reference_source = "profile" if profile is not None else "live"
        if profile is None:
            self._builder = ProfileBuilder(self.config.live_reference_rows, bins=self.config.bins)
        else:
            self._install(profile)

    @property
    def ready(self) -> bool:
        return self._state is not None

    @property
    def profile(self) -> Profile | None:
        return self._profile

    @property
    def reference_rows_needed(self) -> int:
        builder = self._builder
        if self.ready:
            return 0
        return self.config.live_reference_rows if builder is None else builder.rows_needed - builder.rows_seen

    def tensor_keys(self) -> list[tuple[str, str]]:
        """(role, tensor name) of each count array a window returns, in the same order."""
        state = self._state
        return [] if state is None else [(p.role, p.tensor.name) for p in state.plans]

    @property
    def skipped(self) -> dict[str, int]:
        """Tensors left out of the counts, by "<tensor>: <reason>"."""
        with self._skip_lock:
            return dict(self._skips)

    def record(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> None:
        """Count one batch. Never raises: a tensor that cannot be binned is skipped, counted and logged once."""
        start = time.perf_counter()
        try:
            state = self._state
            if state is None:
                state, inputs, outputs = self._feed_reference(inputs, outputs)
            if state is None:
                return
            budget = self._budget
            if budget is None:
                self._count(state, inputs, outputs)
            elif not budget.admit(start):
                self.over_budget += 1  # as busy_s: a lost increment under a race is harmless
            else:
                self._count(state, inputs, outputs)
                budget.charge(time.perf_counter() - start)
        except Exception as exc:  # the request path must never fail because of drift accounting
            self._skip("*", f"unexpected error {type(exc).__name__}: {exc}")
        finally:
            self.busy_s += time.perf_counter() - start

    def window(self, seconds: float, now: float | None = None) -> WindowCounts:
        """Sum of the slices covering the last `seconds` up to `now` (default: the clock)."""
        _positive("seconds", seconds)
        if seconds > self.config.keep_seconds:
            raise ValueError(f"seconds: expected at most keep_seconds={self.config.keep_seconds}, got {seconds}")
        state = self._state
        if state is None:
            return WindowCounts(seconds, 0, (), ())
        self._flush(state)
        last = self._tick(self._clock() if now is None else now)
        first = last - math.ceil(seconds / self.config.slice_seconds - 1e-9) + 1
        counts = [p.table.new_counts() for p in state.plans]
        moments = [new_state(p.tensor.features) for p in state.plans]
        rows = 0
        for s in state.slices:
            with s.lock:
                if first <= s.tick <= last:
                    rows += s.rows
                    for i in range(len(counts)):
                        counts[i] += s.counts[i]
                        merge_moments(moments[i], s.moments[i])
        return WindowCounts(seconds, rows, tuple(counts), tuple(moments))

    def drift(self, seconds: float, now: float | None = None) -> DriftReport:
        """Drift of the last `seconds` against the reference profile, per feature of every tensor."""
        state = self._state
        w = self.window(seconds, now)
        if state is None:
            return DriftReport("reference", seconds, 0, ready=False)
        baselines = [(p.reference, p.tensor.moments) for p in state.plans]
        return self._report("reference", state.plans, baselines, w)

    def compare(self, baseline: DriftMonitor, seconds: float, now: float | None = None) -> DriftReport:
        """Drift of this monitor's window against `baseline`'s window over the same `seconds`.

        Both must bin a tensor with the same edges (give the candidate the stable version's profile);
        tensors only one side knows are left out.
        """
        at = self._clock() if now is None else now
        mine, theirs = self._state, baseline._state
        if mine is None or theirs is None:
            return DriftReport(baseline.name or "baseline", seconds, 0, ready=False)
        index = {(p.role, p.tensor.name): j for j, p in enumerate(theirs.plans)}
        pairs = [(i, index[(p.role, p.tensor.name)]) for i, p in enumerate(mine.plans) if (p.role, p.tensor.name) in index]
        for i, j in pairs:
            if not np.array_equal(mine.plans[i].table.edges64, theirs.plans[j].table.edges64):
                raise ValueError(
                    f"compare: {mine.plans[i].role} {mine.plans[i].tensor.name!r} is binned with different "
                    "edges in the two monitors; give both the same reference profile"
                )
        wb, wm = baseline.window(seconds, at), self.window(seconds, at)
        plans = tuple(mine.plans[i] for i, _ in pairs)
        current = WindowCounts(seconds, wm.rows, tuple(wm.counts[i] for i, _ in pairs), tuple(wm.moments[i] for i, _ in pairs))
        bases = [(wb.counts[j], wb.moments[j]) for _, j in pairs]
        return self._report(baseline.name or "baseline", plans, bases, current)

    # -- the hot path ---------------------------------------------------------------------------

    def _count(self, state: _State, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> None:
        batch = self._prepare(state.plans, inputs, outputs)
        if not batch:
            return
        rows = batch[0][1].shape[0]
        batch = self._sample(batch, rows)
        tick = self._tick(self._clock())
        binned = sum(v.shape[0] for i, v in batch if i == batch[0][0])
        if binned > PENDING_ROWS - BLOCK or len({i for i, _ in batch}) != len(state.plans):
            self._add(state, tick, batch, rows)
            return
        # A batch smaller than a block would cost the kernels as much as a whole block, plus their
        # fixed costs: single-row traffic makes every batch that small. Such rows wait in `pending`, and
        # so do the few sampled rows of a wide model's batch: binning them 64 at a time sweeps the
        # counts (features x bins) through the cache a quarter as often, which measured cheaper.
        p = state.pending
        with p.lock:
            if p.rows and (p.tick != tick or p.rows + binned > PENDING_ROWS or not self._fits(p, batch)):
                self._flush_locked(state)
            p.tick = tick
            for i, values in batch:
                buffer = p.buffers[i]
                if buffer is None or buffer.dtype != values.dtype:
                    buffer = p.buffers[i] = np.empty((PENDING_ROWS, values.shape[1]), values.dtype)
                copy_rows(buffer, p.rows + _offset(batch, i, values), values)
            p.rows += binned
            p.seen += rows
            if p.rows + BLOCK > PENDING_ROWS:
                self._flush_locked(state)

    @staticmethod
    def _fits(p: _Pending, batch: list[tuple[int, Array]]) -> bool:
        return all(p.buffers[i] is None or p.buffers[i].dtype == v.dtype for i, v in batch)  # type: ignore[union-attr]

    def _flush(self, state: _State) -> None:
        p = state.pending
        with p.lock:
            if p.rows:
                self._flush_locked(state)

    def _flush_locked(self, state: _State) -> None:
        p = state.pending
        held = [(i, b[: p.rows]) for i, b in enumerate(p.buffers) if b is not None]
        self._add(state, p.tick, held, p.seen)
        p.rows = p.seen = 0

    def _add(self, state: _State, tick: int, batch: list[tuple[int, Array]], rows: int) -> None:
        s = state.slices[tick % len(state.slices)]
        with s.lock:
            if s.tick != tick:
                if s.tick > tick:  # a thread stalled for longer than the ring: its slice is gone
                    return
                s.reset(tick)
            for i, values in batch:
                state.plans[i].table.bin_into(values, s.counts[i])
                update_moments(values, s.moments[i])
            s.rows += rows

    def _prepare(self, plans: tuple[_Plan, ...], inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> list[tuple[int, Array]]:
        batch: list[tuple[int, Array]] = []
        for i, plan in enumerate(plans):
            data = (inputs if plan.role == "input" else outputs).get(plan.tensor.name)
            values = None if data is None else self._as_rows(plan, data)
            if values is None:
                continue
            if batch and values.shape[0] != batch[0][1].shape[0]:
                self._skip(plan.tensor.name, f"{values.shape[0]} rows where the batch has {batch[0][1].shape[0]}")
                continue
            batch.append((i, values))
        return batch

    def _as_rows(self, plan: _Plan, data: Any) -> Array | None:
        a = data if isinstance(data, np.ndarray) else np.asarray(data)
        if a.dtype.kind not in "biuf":
            self._skip(plan.tensor.name, f"dtype {a.dtype} (expected a numeric tensor)")
            return None
        if a.dtype not in KERNEL_DTYPES:
            a = a.astype(np.float32 if a.dtype == np.float16 else np.float64 if a.dtype == np.uint64 else np.int64)
        values = a if a.ndim == 2 else a.reshape(a.shape[0], -1) if a.ndim else a.reshape(1, 1)
        if a.ndim == 0 or values.shape[1] != plan.tensor.features:
            self._skip(plan.tensor.name, f"shape {a.shape} (expected [rows, ...] with {plan.tensor.features} features per row)")
            return None
        return values if values.flags.c_contiguous else np.ascontiguousarray(values)

    def _sample(self, batch: list[tuple[int, Array]], rows: int) -> list[tuple[int, Array]]:
        k = self.config.sample_rows
        if not k or rows <= k:
            return batch
        # k consecutive rows from a random start, wrapping round the end of the batch: every row is
        # binned with probability k / rows, with one random draw and no copy (the pieces are views).
        start = self._random.randrange(rows)
        end = start + k
        if end <= rows:
            return [(i, v[start:end]) for i, v in batch]
        return [(i, piece) for i, v in batch for piece in (v[start:], v[: end - rows])]

    def _tick(self, now: float) -> int:
        return math.floor(now / self.config.slice_seconds)

    def _skip(self, tensor: str, reason: str) -> None:
        key = f"{tensor}: {reason}"
        with self._skip_lock:
            seen = self._skips.get(key, 0)
            self._skips[key] = seen + 1
        if not seen:
            log.warning("drift monitor %s: skipped %s (logged once)", self.name or "-", key)

    # -- the reference ------------------------------------------------------------------------------

    def _feed_reference(
        self, inputs: Mapping[str, Any], outputs: Mapping[str, Any]
    ) -> tuple[_State | None, Mapping[str, Any], Mapping[str, Any]]:
        # Only numeric tensors can be profiled; anything else is left out of the live reference.
        ins, outs = _numeric(inputs), _numeric(outputs)
        with self._build_lock:
            builder = self._builder
            if self._state is not None or builder is None:
                return self._state, ins, outs
            taken = builder.add(ins, outs)
            if not builder.done:
                return None, ins, outs
            self._builder = None  # built once, whether or not it succeeds
            self._install(builder.build())
        rest_in = {n: a[taken:] for n, a in ins.items()}
        rest_out = {n: a[taken:] for n, a in outs.items()}
        left = min((a.shape[0] for a in (*rest_in.values(), *rest_out.values())), default=0)
        return (self._state if left else None), rest_in, rest_out

    def _install(self, profile: Profile) -> None:
        plans = tuple(
            _Plan(role, t, EdgeTable(t.edges), np.ascontiguousarray(t.counts, dtype=np.int64))
            for role, tensors in zip(ROLES, (profile.inputs, profile.outputs), strict=True)
            for t in tensors
        )
        ring = math.ceil(self.config.keep_seconds / self.config.slice_seconds) + 1
        self._profile = profile
        self._state = _State(plans, tuple(_Slice(plans) for _ in range(ring)), _Pending(plans))

    def _report(self, baseline: str, plans: tuple[_Plan, ...], bases: list[tuple[Array, Array]], w: WindowCounts) -> DriftReport:
        eps, top = self.config.epsilon, self.config.top_features
        tensors = tuple(
            TensorDrift(
                p.tensor.name, p.role, int(cur[0].sum()) if len(cur) else 0, p.tensor.feature_names,
                psi(ref, cur, eps), js_distance(ref, cur), ks_binned(ref, cur), _mean_shift(ref_m, cur_m), top,
            )
            for p, (ref, ref_m), cur, cur_m in zip(plans, bases, w.counts, w.moments, strict=True)
        )
        return DriftReport(baseline, w.seconds, w.rows, True, tensors)


def _offset(batch: list[tuple[int, Array]], i: int, values: Array) -> int:
    """Rows of tensor `i` in `batch` before the piece `values` (a sample can come in two pieces)."""
    before = 0
    for j, v in batch:
        if v is values:
            return before
        if j == i:
            before += v.shape[0]
    return before


def _numeric(tensors: Mapping[str, Any]) -> dict[str, Array]:
    arrays = {n: np.asarray(a) for n, a in tensors.items()}
    return {n: a for n, a in arrays.items() if a.dtype.kind in "biuf" and a.ndim > 0}


def _mean_shift(base: Array, current: Array) -> Array:
    std = np.sqrt(variance(base))
    with np.errstate(invalid="ignore", divide="ignore"):
        shift = (current[MEAN] - base[MEAN]) / std
    return np.asarray(np.where((std > 0) & (current[0] > 0), shift, np.nan), dtype=np.float64)
