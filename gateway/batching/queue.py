"""Bounded batching queue of one model version: requests wait here and worker threads run them in batches.

Default policy: a free worker takes what is queued at once (no waiting when idle); while a batch runs,
arrivals accumulate and leave together. With `max_queue_delay` a worker waits, from the oldest
request's arrival, for a fuller batch. The queue is bounded: when full, `submit` raises `Overloaded`
at once. Requests past their deadline are dropped before inference. Every future is resolved: with
outputs, or with the error that stopped it. A failing batch of several requests is re-run one by one
so a request that makes the runtime fail (a bad value, not a bad shape) fails alone.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.batching import collate
from gateway.errors import DeadlineExceeded, InferenceFailed, Overloaded, ServerNotReady, ServingError

log = logging.getLogger(__name__)

Tensor = collate.Tensor
Runner = Callable[[dict[str, Tensor]], dict[str, Tensor]]
# (rows, requests, compute seconds), on the event loop after the batch's replies: the worker thread,
# the serial part of a busy version, keeps to the batch itself.
BatchObserver = Callable[[int, int, float], None]
# Read-only look at a finished batch (drift binning), called on the worker after the replies are posted.
OutputObserver = Callable[[dict[str, Tensor], dict[str, Tensor]], None]


@dataclass(slots=True)
class BatchResult:
    """What a request's future resolves to."""

    outputs: dict[str, Tensor]
    queue_s: float
    compute_s: float
    batch_rows: int


class _Item:
    __slots__ = ("deadline", "enqueued", "future", "inputs", "key", "rows")

    def __init__(self, inputs: Mapping[str, Tensor], rows: int, deadline: float | None,
                 future: asyncio.Future[BatchResult]) -> None:
        self.inputs = inputs
        self.rows = rows
        self.key = collate.batch_key(inputs)
        self.deadline = deadline
        self.future = future
        self.enqueued = time.monotonic()


class BatchQueue:
    """One per loaded version. `submit` runs on the event loop; batches run on `instances` threads."""

    def __init__(self, name: str, runner: Runner, *, max_batch_size: int, capacity: int,
                 instances: int = 1, max_queue_delay_s: float = 0.0,
                 on_batch: BatchObserver | None = None, observe: OutputObserver | None = None) -> None:
        self.name = name
        self._runner = runner
        self._max_rows = max_batch_size  # 0: the model is not batchable, one request per run
        self._capacity = capacity
        self._instances = instances
        self._delay = max_queue_delay_s
        self._on_batch = on_batch
        self._observe = observe
        self._items: deque[_Item] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._running = 0
        self._sleeping = 0  # workers waiting on the condition; a submit wakes one only if there is one
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scan_limit = max(64, 4 * max(1, max_batch_size))

    @property
    def depth(self) -> int:
        """Requests waiting (not counting the ones in a running batch)."""
        return len(self._items)

    @property
    def busy(self) -> int:
        """Requests queued or running."""
        return len(self._items) + self._running

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for i in range(self._instances):
            thread = threading.Thread(target=self._work, name=f"batch-{self.name}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, inputs: Mapping[str, Tensor], rows: int,
               deadline: float | None = None) -> asyncio.Future[BatchResult]:
        """Queues one request (inputs already validated); `deadline` is on `time.monotonic()`."""
        loop = self._loop
        if loop is None or self._closed:
            raise ServerNotReady(f"{self.name} is not accepting requests (stopping)")
        future: asyncio.Future[BatchResult] = loop.create_future()
        item = _Item(inputs, rows, deadline, future)
        with self._cond:
            if len(self._items) >= self._capacity:
                raise Overloaded(f"{self.name}: queue is full ({self._capacity} requests waiting); "
                                 "retry later or add capacity")
            self._items.append(item)
            if self._sleeping:
                self._cond.notify()
        return future

    async def drain(self, timeout: float) -> bool:
        """Waits until nothing is queued or running; False when `timeout` passed first."""
        deadline = time.monotonic() + timeout
        while self.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self.busy == 0

    async def stop(self) -> None:
        """Stops the workers; anything still queued fails with ServerNotReady."""
        with self._cond:
            self._closed = True
            left = list(self._items)
            self._items.clear()
            self._cond.notify_all()
        for item in left:
            if not item.future.done():
                item.future.set_exception(ServerNotReady(f"{self.name}: gateway is shutting down"))
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 5.0)
        self._threads.clear()

    # --- worker thread ---------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            batch, expired = self._take()
            if expired:
                self._post_errors(expired, lambda: DeadlineExceeded(
                    "deadline exceeded while queued; the request was dropped before inference"))
            if batch is None:
                return
            if batch:
                self._execute(batch)

    def _take(self) -> tuple[list[_Item] | None, list[_Item]]:
        with self._cond:
            while not self._items:
                if self._closed:
                    return None, []
                self._sleeping += 1
                try:
                    self._cond.wait()
                finally:
                    self._sleeping -= 1
            if self._delay > 0:
                self._wait_for_fuller_batch()
            batch, expired = self._pick()
            self._running += len(batch)
            return batch, expired

    def _wait_for_fuller_batch(self) -> None:
        """Holds the batch open until it is full or the oldest request has waited `max_queue_delay`."""
        until = self._items[0].enqueued + self._delay
        while not self._closed and self._items:
            if sum(i.rows for i in self._items) >= max(1, self._max_rows):
                return
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            self._sleeping += 1  # arrivals must wake it: the batch may fill before the delay ends
            try:
                self._cond.wait(remaining)
            finally:
                self._sleeping -= 1

    def _pick(self) -> tuple[list[_Item], list[_Item]]:
        """Takes compatible requests from the head, in arrival order, up to the row limit."""
        items, now = self._items, time.monotonic()
        chosen: list[_Item] = []
        expired: list[_Item] = []
        skipped: list[_Item] = []
        rows, key, scanned = 0, None, 0
        while items and scanned < self._scan_limit:
            item = items.popleft()
            scanned += 1
            if item.future.cancelled():
                continue
            if item.deadline is not None and now >= item.deadline:
                expired.append(item)
                continue
            if key is None:
                key = item.key
                chosen.append(item)
                rows = item.rows
                if self._max_rows == 0:
                    break
            elif item.key == key and rows + item.rows <= self._max_rows:
                chosen.append(item)
                rows += item.rows
            else:
                skipped.append(item)
                if item.key == key:
                    break  # the batch is full: later requests keep their place
            if rows >= self._max_rows:
                break
        items.extendleft(reversed(skipped))
        return chosen, expired

    def _execute(self, batch: list[_Item]) -> None:
        started = time.monotonic()
        try:
            feeds = collate.stack([item.inputs for item in batch])
            outputs = self._runner(feeds)
            parts = collate.split(outputs, [item.rows for item in batch])
        except Exception as exc:
            if len(batch) > 1:
                # Each single re-run posts its own result, which settles its share of `_running`.
                for item in batch:
                    self._execute([item])
                return
            self._fail(batch, exc)
            return
        self._post(batch, parts, started, time.monotonic() - started)
        if self._observe is not None:  # after the replies: measurements never delay an answer
            try:
                self._observe(feeds, outputs)
            except Exception:
                log.exception("%s: batch observer failed", self.name)

    def _fail(self, batch: list[_Item], exc: Exception) -> None:
        if isinstance(exc, ServingError):
            error: ServingError = exc
        else:
            log.warning("%s: inference failed: %s", self.name, exc)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            error = InferenceFailed(f"{self.name}: inference failed: {first}")
        self._post_errors(batch, lambda: type(error)(error.message), running=True)

    # --- back to the event loop ------------------------------------------------------------------

    def _post(self, batch: list[_Item], parts: list[dict[str, Tensor]], started: float, compute: float) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._deliver, batch, parts, started, compute)

    def _deliver(self, batch: list[_Item], parts: list[dict[str, Tensor]], started: float, compute: float) -> None:
        with self._cond:
            self._running -= len(batch)
        rows = sum(item.rows for item in batch)
        for item, out in zip(batch, parts, strict=True):
            if not item.future.done():
                item.future.set_result(BatchResult(out, started - item.enqueued, compute, rows))
        if self._on_batch is not None and self._loop is not None:  # after the woken handlers have replied
            self._loop.call_soon(self._on_batch, rows, len(batch), compute)

    def _post_errors(self, batch: list[_Item], make: Callable[[], ServingError],
                     running: bool = False) -> None:
        if self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._deliver_errors, batch, make, running)

    def _deliver_errors(self, batch: list[_Item], make: Callable[[], ServingError], running: bool) -> None:
        if running:
            with self._cond:
                self._running -= len(batch)
        for item in batch:
            if not item.future.done():
                item.future.set_exception(make())
