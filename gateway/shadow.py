"""Shadow traffic: a copy of the request goes to the shadow version; its answer is measured and compared
with the primary's (agreement rate, mean absolute score delta), never returned.

A mirror never slows or fails the primary request: it is queued after the answer is ready, it is
dropped when the shadow's queue is full, and its outcome lands only in the shadow's statistics.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from gateway.admission import admit
from gateway.batching.queue import BatchResult
from gateway.errors import ServingError
from gateway.models import LoadedVersion, ModelManager, VersionState
from gateway.observability.metrics import Metrics
from gateway.types import InferRequest

log = logging.getLogger(__name__)

Tensor = np.ndarray[Any, Any]


@dataclass(slots=True)
class _Second:
    compared: int = 0
    agreed: int = 0
    delta_sum: float = 0.0
    delta_rows: int = 0
    errors: int = 0


@dataclass(frozen=True, slots=True)
class ShadowFigures:
    requests: int
    errors: int
    agreement_rate: float | None
    mean_abs_delta: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "agreement_rate": self.agreement_rate,
                "mean_abs_delta": self.mean_abs_delta}


def compare(primary: Mapping[str, Tensor], shadow: Mapping[str, Tensor]) -> tuple[int, int, float, int]:
    """(rows compared, rows agreeing, sum of |score delta|, rows with scores) over the common outputs.

    Integer outputs (labels) agree when equal; float outputs of shape [rows, k>1] agree on argmax and
    contribute their mean absolute difference; [rows] or [rows, 1] floats contribute their delta only.
    """
    rows = agreed = delta_rows = 0
    delta = 0.0
    for name in sorted(set(primary) & set(shadow)):
        a, b = np.asarray(primary[name]), np.asarray(shadow[name])
        if a.shape != b.shape or a.ndim == 0:
            continue
        n = a.shape[0]
        if np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_:
            same = (a.reshape(n, -1) == b.reshape(n, -1)).all(axis=1)
        elif a.ndim == 2 and a.shape[1] > 1:
            same = a.argmax(axis=1) == b.argmax(axis=1)
            delta += float(np.abs(a.astype(np.float64) - b).mean(axis=1).sum())
            delta_rows += n
        elif np.issubdtype(a.dtype, np.floating):
            delta += float(np.abs(a.astype(np.float64) - b).reshape(n, -1).mean(axis=1).sum())
            delta_rows += n
            continue
        else:
            continue
        if rows == 0:  # the first comparable output decides agreement
            rows, agreed = n, int(same.sum())
    return rows, agreed, delta, delta_rows


def summed(seconds: Iterable[_Second]) -> ShadowFigures:
    total = _Second()
    for s in seconds:
        total.compared += s.compared
        total.agreed += s.agreed
        total.delta_sum += s.delta_sum
        total.delta_rows += s.delta_rows
        total.errors += s.errors
    agreement = total.agreed / total.compared if total.compared else None
    delta = total.delta_sum / total.delta_rows if total.delta_rows else None
    return ShadowFigures(total.compared, total.errors, agreement, delta)


class SharedShadow:
    """Shadow figures from every replica's shipped per-second comparison counts."""

    PAYLOAD = "shadow"

    def __init__(self, payloads: Callable[[str, str, str, float, float], list[Any]]) -> None:
        self._payloads = payloads

    def figures(self, model: str, version: str, start: float, end: float) -> ShadowFigures:
        seconds = []
        for record in self._payloads(self.PAYLOAD, model, version, start, end):
            compared, agreed, delta_sum, delta_rows, errors = orjson.loads(record.data)
            seconds.append(_Second(int(compared), int(agreed), float(delta_sum), int(delta_rows), int(errors)))
        return summed(seconds)


class ShadowMirror:
    """Implements the data plane's ShadowSink; keeps comparison slices per (model, shadow version)."""

    def __init__(self, manager: ModelManager, metrics: Metrics, *, keep_seconds: int = 600,
                 clock: Callable[[], float] = time.time) -> None:
        self._manager = manager
        self._metrics = metrics
        self._keep = keep_seconds
        self._clock = clock
        self._slices: dict[tuple[str, str], dict[int, _Second]] = {}
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def mirror(self, request: InferRequest, feeds: Mapping[str, Any], primary: LoadedVersion,
               result: BatchResult, shadow: str) -> None:
        target = self._manager.find(request.model, shadow)
        if target is None or target.state is not VersionState.READY or target.queue is None:
            self._metrics.shadow_requests.labels(request.model, shadow, "dropped").inc()
            return
        try:
            shadow_feeds, rows = admit(target.signature, target.max_batch_size, request)
            future = target.queue.submit(shadow_feeds, rows)
        except ServingError:
            self._metrics.shadow_requests.labels(request.model, shadow, "dropped").inc()
            return
        task = asyncio.ensure_future(self._compare(request.model, target, result.outputs, future))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _compare(self, model: str, target: LoadedVersion, primary: Mapping[str, Tensor],
                       future: asyncio.Future[BatchResult]) -> None:
        started = time.perf_counter()
        try:
            answer = await future
        except ServingError:
            target.windows.record(time.perf_counter() - started, False)
            self._metrics.shadow_requests.labels(model, target.version, "failed").inc()
            self.record(model, target.version, errors=1)
            return
        target.windows.record(time.perf_counter() - started, True)
        self._metrics.shadow_requests.labels(model, target.version, "compared").inc()
        rows, agreed, delta, delta_rows = compare(primary, answer.outputs)
        self.record(model, target.version, rows, agreed, delta, delta_rows)

    def record(self, model: str, version: str, rows: int = 0, agreed: int = 0, delta: float = 0.0,
             delta_rows: int = 0, errors: int = 0) -> None:
        second = int(self._clock())
        with self._lock:
            slices = self._slices.setdefault((model, version), {})
            s = slices.get(second)
            if s is None:
                s = slices[second] = _Second()
                for old in [k for k in slices if k < second - self._keep]:
                    del slices[old]
            s.compared += rows
            s.agreed += agreed
            s.delta_sum += delta
            s.delta_rows += delta_rows
            s.errors += errors

    def figures(self, model: str, version: str, start: float, end: float) -> ShadowFigures:
        lo, hi = math.floor(start), math.ceil(end)
        with self._lock:
            picked = [s for sec, s in self._slices.get((model, version), {}).items() if lo <= sec < hi]
        result = summed(picked)
        if result.agreement_rate is not None:
            self._metrics.shadow_agreement.labels(model, version).set(result.agreement_rate)
        return result

    def second(self, model: str, version: str, second: int) -> bytes | None:
        """This replica's comparison counts of one second (the shipped payload), or None."""
        with self._lock:
            s = self._slices.get((model, version), {}).get(second)
            if s is None:
                return None
            return orjson.dumps([s.compared, s.agreed, s.delta_sum, s.delta_rows, s.errors])

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
