"""Closed and open load loops, run in this process or spread over worker processes, each with its own loop.

Closed loop: N callers, each sends its next request when the previous answer arrives. Open loop: a
fixed schedule of R requests/s; latency counts from the intended send time, and a request that finds
every in-flight slot taken is counted unsent rather than delayed out of sight or dropped silently.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import queue
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any

from loadtests.clients import Caller, CallerPool, Workload
from loadtests.report import Recorder

START_DELAY_S = 0.1
MAX_DURATION_S = 24 * 3600.0


@dataclass(frozen=True)
class LoadPlan:
    """How much load and for how long; `concurrency` for a closed loop or `rate` for an open one."""

    duration_s: float
    warmup_s: float = 0.0
    concurrency: int = 0
    rate: float = 0.0
    max_in_flight: int = 256
    workers: int = 1
    max_requests: int = 0
    late_after_s: float = 0.002
    event_loop: str = "uvloop"
    phase_s: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.duration_s <= MAX_DURATION_S or self.warmup_s < 0:
            raise ValueError(f"duration must be within (0, {MAX_DURATION_S}] s and warm-up >= 0")
        if (self.concurrency > 0) == (self.rate > 0):
            raise ValueError("give exactly one of concurrency (closed loop) or rate (open loop)")
        if self.workers < 1 or self.max_requests < 0 or self.max_in_flight < 1:
            raise ValueError("workers and max in-flight must be >= 1, max requests >= 0")
        if self.workers > self.share_base:
            raise ValueError(f"{self.workers} workers need at least as many callers / in-flight slots")
        if self.event_loop not in ("uvloop", "asyncio"):
            raise ValueError(f"event loop must be uvloop or asyncio, got {self.event_loop!r}")

    @property
    def open_loop(self) -> bool:
        return self.rate > 0

    @property
    def share_base(self) -> int:
        return self.max_in_flight if self.open_loop else self.concurrency

    def share(self, index: int) -> LoadPlan:
        """This worker's part: callers, in-flight slots, rate and request budget split evenly."""
        def part(total: int) -> int:
            return total // self.workers + (1 if index < total % self.workers else 0)
        # Worker k's schedule starts k/R later, so the merged schedule stays evenly spaced.
        phase = index / self.rate if self.open_loop else 0.0
        return replace(self, concurrency=part(self.concurrency), max_in_flight=part(self.max_in_flight),
                       rate=self.rate / self.workers, max_requests=part(self.max_requests), workers=1,
                       phase_s=phase)


class _Budget:
    """Stops the loops after `limit` measured requests (0 = no count limit; the duration still applies).

    Warm-up requests (meant to start before `counted_from`) do not use up the budget.
    """

    def __init__(self, limit: int, counted_from: float = 0.0) -> None:
        self.limit = limit
        self.counted_from = counted_from
        self.used = 0

    def take(self, start: float) -> bool:
        if start < self.counted_from:
            return True
        if self.limit and self.used >= self.limit:
            return False
        self.used += 1
        return True


def _answered_by(caller: Caller) -> str:
    """The version named in the caller's last reply ("" for callers that do not read it)."""
    return str(getattr(caller, "last_version", ""))


async def closed_loop(callers: Sequence[Caller], rec: Recorder, end: float, budget: _Budget) -> None:
    async def one(caller: Caller) -> None:
        while True:
            start = time.monotonic()
            if start >= end or not budget.take(start):
                return
            outcome = await caller.call()
            rec.record(start, time.monotonic(), outcome, _answered_by(caller))
    await asyncio.gather(*(one(c) for c in callers))


async def open_loop(callers: Sequence[Caller], rec: Recorder, first: float, end: float, rate: float,
                    budget: _Budget) -> None:
    """Sends at first + i/rate; a caller is an in-flight slot, and with none free the request is unsent."""
    free = list(callers)
    tasks: set[asyncio.Task[None]] = set()

    async def fire(caller: Caller, intended: float) -> None:
        try:
            # The reply first, then the clock: arguments are evaluated left to right.
            outcome = await caller.call()
            rec.record(intended, time.monotonic(), outcome, _answered_by(caller))
        finally:
            free.append(caller)

    i = 0
    while (intended := first + i / rate) < end and budget.take(intended):
        i += 1
        now = time.monotonic()
        if intended > now:
            await asyncio.sleep(intended - now)
            now = time.monotonic()
        else:
            # Behind schedule: still let finished calls free their slots, or every slot looks busy.
            await asyncio.sleep(0)
            now = time.monotonic()
        if not free:
            rec.unsent(intended)
            continue
        rec.sent(intended, now)
        task = asyncio.create_task(fire(free.pop(), intended))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)


async def run_share(work: Workload, plan: LoadPlan,
                    wait_start: Callable[[], float]) -> dict[str, Any]:
    """One worker's whole run: open callers, wait for the common start time, loop, return a partial."""
    pool = CallerPool(work)
    try:
        callers = await pool.open(plan.max_in_flight if plan.open_loop else plan.concurrency)
        t0 = wait_start()
        measure_start = t0 + plan.warmup_s
        end = measure_start + plan.duration_s
        rec = Recorder(measure_start, end, plan.late_after_s, tally_versions=work.tally_versions)
        budget = _Budget(plan.max_requests, measure_start)
        await asyncio.sleep(max(0.0, t0 - time.monotonic()))
        # The generator's own CPU use tells whether it, rather than the server, was the bottleneck.
        cpu0, wall0 = time.process_time(), time.monotonic()
        if plan.open_loop:
            await open_loop(callers, rec, t0 + plan.phase_s, end, plan.rate, budget)
        else:
            await closed_loop(callers, rec, end, budget)
        samples = {"checked": pool.samples.checked, "failed": pool.samples.failed,
                   "reasons": pool.samples.reasons}
        partial = rec.to_partial(samples)
        partial["measure_start_epoch"] = time.time() - (time.monotonic() - measure_start)
        partial["cpu_s"] = time.process_time() - cpu0
        partial["wall_s"] = time.monotonic() - wall0
        return partial
    finally:
        await pool.close()


def run_async(coro: Coroutine[Any, Any, dict[str, Any]], event_loop: str) -> dict[str, Any]:
    """Runs a coroutine on uvloop when asked for and installed, else on asyncio's own loop."""
    if event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            return asyncio.run(coro)
        result: dict[str, Any] = uvloop.run(coro)
        return result
    return asyncio.run(coro)


def _worker_main(index: int, work: Workload, plan: LoadPlan, ready: Any, start: Any, results: Any) -> None:
    def wait_start() -> float:
        ready.put((index, None))
        return float(start.get(timeout=120))
    try:
        partial = run_async(run_share(work, plan, wait_start), plan.event_loop)
    except Exception as exc:  # the parent must hear about every failure, not wait for a timeout
        ready.put((index, f"{type(exc).__name__}: {exc}"))
        results.put((index, None))
        return
    results.put((index, partial))


def run_load(work: Workload, plan: LoadPlan) -> list[dict[str, Any]]:
    """Runs the plan and returns one partial result per worker."""
    if plan.workers == 1:
        def start_now() -> float:
            return time.monotonic() + START_DELAY_S
        return [run_async(run_share(work, plan, start_now), plan.event_loop)]
    return _run_processes(work, plan)


def _run_processes(work: Workload, plan: LoadPlan) -> list[dict[str, Any]]:
    # spawn, not fork: grpc's threads do not survive a fork.
    ctx = mp.get_context("spawn")
    ready, start, results = ctx.Queue(), ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_worker_main, args=(i, work, plan.share(i), ready, start, results), daemon=True)
             for i in range(plan.workers)]
    try:
        for p in procs:
            p.start()
        _await_ready(ready, plan.workers)
        t0 = time.monotonic() + START_DELAY_S
        for _ in procs:
            start.put(t0)
        deadline = plan.warmup_s + plan.duration_s + work.timeout_s + 60
        try:
            partials = [results.get(timeout=deadline) for _ in procs]
        except queue.Empty:
            raise RuntimeError(f"workers sent no result within {deadline:.0f} s") from None
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join()
            p.close()
        for q in (ready, start, results):
            q.close()
            q.join_thread()
    failed = [i for i, part in partials if part is None]
    if failed:
        raise RuntimeError(f"worker(s) {failed} failed")
    return [part for _, part in sorted(partials, key=lambda item: item[0])]


def _await_ready(ready: Any, count: int) -> None:
    for _ in range(count):
        try:
            index, error = ready.get(timeout=120)
        except queue.Empty:
            raise RuntimeError("workers did not become ready within 120 s") from None
        if error is not None:
            raise RuntimeError(f"worker {index} failed to start: {error}")
