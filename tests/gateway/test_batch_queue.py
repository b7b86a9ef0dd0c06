"""The batching queue: coalescing, bounds, deadlines, failure isolation, and that every future resolves."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from gateway.batching.queue import BatchQueue
from gateway.errors import DeadlineExceeded, InferenceFailed, Overloaded, ServerNotReady
from tests.fakes.runner import RecordingRunner


def rows(n: int, value: float = 1.0) -> dict[str, np.ndarray]:
    return {"x": np.full((n, 2), value, dtype=np.float32)}


async def make(runner: RecordingRunner, **kw: object) -> BatchQueue:
    options: dict[str, object] = {"max_batch_size": 8, "capacity": 64, "instances": 1}
    options.update(kw)
    queue = BatchQueue("m/1", runner, **options)  # type: ignore[arg-type]
    await queue.start()
    return queue


def test_arrivals_during_a_running_batch_leave_together() -> None:
    async def scenario() -> list[int]:
        runner = RecordingRunner()
        runner.gate.clear()
        queue = await make(runner)
        first = queue.submit(rows(1), 1)
        await asyncio.to_thread(runner.started.wait, 5)
        others = [queue.submit(rows(1, float(i)), 1) for i in range(5)]
        runner.gate.set()
        results = await asyncio.gather(first, *others)
        for i, result in enumerate(results[1:]):
            np.testing.assert_array_equal(result.outputs["y"], np.full((1, 2), 2.0 * i, np.float32))
        await queue.stop()
        return runner.batches

    assert asyncio.run(scenario()) == [1, 5]


def test_each_request_counts_its_own_rows_against_the_limit() -> None:
    async def scenario() -> list[int]:
        runner = RecordingRunner()
        runner.gate.clear()
        queue = await make(runner, max_batch_size=8)
        first = queue.submit(rows(1), 1)
        await asyncio.to_thread(runner.started.wait, 5)
        pending = [queue.submit(rows(3), 3) for _ in range(4)]  # 12 rows: 6 fit, then 6
        runner.gate.set()
        await asyncio.gather(first, *pending)
        await queue.stop()
        return runner.batches

    assert asyncio.run(scenario()) == [1, 6, 6]


def test_full_queue_fails_fast_with_overloaded() -> None:
    async def scenario() -> None:
        runner = RecordingRunner()
        runner.gate.clear()
        queue = await make(runner, capacity=3)
        running = queue.submit(rows(1), 1)
        await asyncio.to_thread(runner.started.wait, 5)
        queued = [queue.submit(rows(1), 1) for _ in range(3)]
        with pytest.raises(Overloaded, match="queue is full"):
            queue.submit(rows(1), 1)
        runner.gate.set()
        await asyncio.gather(running, *queued)
        await queue.stop()

    asyncio.run(scenario())


def test_expired_requests_are_dropped_before_inference() -> None:
    async def scenario() -> tuple[list[int], BaseException | None]:
        runner = RecordingRunner()
        runner.gate.clear()
        queue = await make(runner)
        running = queue.submit(rows(1), 1)
        await asyncio.to_thread(runner.started.wait, 5)
        doomed = queue.submit(rows(1), 1, deadline=time.monotonic() + 0.01)
        await asyncio.sleep(0.05)
        runner.gate.set()
        await running
        error: BaseException | None = None
        try:
            await doomed
        except DeadlineExceeded as exc:
            error = exc
        await queue.stop()
        return runner.batches, error

    batches, error = asyncio.run(scenario())
    assert batches == [1]  # the expired request never reached the runner
    assert isinstance(error, DeadlineExceeded)


def test_a_failing_batch_resolves_every_future_with_an_error() -> None:
    async def scenario() -> list[BaseException | object]:
        queue = await make(RecordingRunner(fail_all=True))
        futures = [queue.submit(rows(1), 1) for _ in range(4)]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        await queue.stop()
        return outcomes

    outcomes = asyncio.run(scenario())
    assert len(outcomes) == 4
    assert all(isinstance(o, InferenceFailed) and "runtime exploded" in str(o) for o in outcomes)


def test_a_bad_value_fails_only_its_own_request() -> None:
    async def scenario() -> list[BaseException | object]:
        runner = RecordingRunner(fail_on=-1.0)
        runner.gate.clear()
        queue = await make(runner)
        first = queue.submit(rows(1), 1)
        await asyncio.to_thread(runner.started.wait, 5)
        burst = [queue.submit(rows(1, -1.0 if i == 2 else 1.0), 1) for i in range(5)]
        runner.gate.set()
        await first
        outcomes = await asyncio.gather(*burst, return_exceptions=True)
        await queue.stop()
        return outcomes

    outcomes = asyncio.run(scenario())
    assert isinstance(outcomes[2], InferenceFailed)
    assert "out of range" in str(outcomes[2])
    assert all(not isinstance(o, BaseException) for i, o in enumerate(outcomes) if i != 2)


def test_max_queue_delay_holds_the_batch_open_for_late_arrivals() -> None:
    async def scenario() -> list[int]:
        runner = RecordingRunner()
        queue = await make(runner, max_queue_delay_s=0.2)
        futures = [queue.submit(rows(1), 1)]
        for _ in range(3):
            await asyncio.sleep(0.01)
            futures.append(queue.submit(rows(1), 1))
        await asyncio.gather(*futures)
        await queue.stop()
        return runner.batches

    assert asyncio.run(scenario()) == [4]


def test_incompatible_shapes_run_in_separate_batches() -> None:
    async def scenario() -> list[int]:
        runner = RecordingRunner()
        runner.gate.clear()
        queue = await make(runner)
        first = queue.submit(rows(1), 1)
        await asyncio.to_thread(runner.started.wait, 5)
        wide = {"x": np.ones((1, 3), np.float32)}
        futures = [queue.submit(rows(1), 1), queue.submit(wide, 1), queue.submit(rows(1), 1)]
        runner.gate.set()
        await asyncio.gather(first, *futures)
        await queue.stop()
        return runner.batches

    assert asyncio.run(scenario()) == [1, 2, 1]


def test_stop_fails_whatever_is_still_queued() -> None:
    async def scenario() -> BaseException | object:
        runner = RecordingRunner()
        runner.gate.clear()
        queue = await make(runner)
        queue.submit(rows(1), 1)
        await asyncio.to_thread(runner.started.wait, 5)
        waiting = queue.submit(rows(1), 1)
        stopping = asyncio.ensure_future(queue.stop())
        await asyncio.sleep(0.01)
        runner.gate.set()
        await stopping
        outcome = (await asyncio.gather(waiting, return_exceptions=True))[0]
        with pytest.raises(ServerNotReady):
            queue.submit(rows(1), 1)
        return outcome

    assert isinstance(asyncio.run(scenario()), ServerNotReady)


def test_a_full_batch_leaves_without_waiting_out_the_delay() -> None:
    """With a 30 s max_queue_delay, four requests that fill the batch still leave together at once."""
    async def scenario() -> list[int]:
        runner = RecordingRunner()
        queue = await make(runner, max_batch_size=4, max_queue_delay_s=30.0)
        futures = [queue.submit(rows(1), 1)]
        await asyncio.sleep(0.2)  # the worker now holds the batch open, waiting for more
        futures += [queue.submit(rows(1), 1) for _ in range(3)]
        await asyncio.wait_for(asyncio.gather(*futures), timeout=10)
        await queue.stop()
        return runner.batches

    assert asyncio.run(scenario()) == [4]


def test_batch_observer_runs_on_the_event_loop_after_the_replies() -> None:
    """The worker thread is the serial part of a busy version: metrics and statistics of a batch are
    recorded on the event loop, once each batch's futures hold their results."""
    import threading

    seen: list[tuple[int, int, bool, int]] = []
    futures: list[asyncio.Future[object]] = []

    def on_batch(batch_rows: int, requests: int, compute_s: float) -> None:
        assert compute_s > 0
        seen.append((batch_rows, requests, threading.current_thread() is threading.main_thread(),
                     sum(f.done() for f in futures)))

    async def scenario() -> None:
        runner = RecordingRunner()
        runner.gate.clear()
        queue = await make(runner, on_batch=on_batch)
        futures.append(queue.submit(rows(1), 1))
        await asyncio.to_thread(runner.started.wait, 5)
        futures.extend(queue.submit(rows(2), 2) for _ in range(3))
        runner.gate.set()
        results = await asyncio.gather(*futures)
        assert [r.batch_rows for r in results] == [1, 6, 6, 6]
        await queue.stop()

    asyncio.run(scenario())
    # Each call comes after its own batch's futures resolved (the first's, at least; all four for the second).
    assert [entry[:3] for entry in seen] == [(1, 1, True), (6, 3, True)]
    assert seen[0][3] >= 1 and seen[1][3] == 4
