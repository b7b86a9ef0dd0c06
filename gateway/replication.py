"""Shared measurements: ships this replica's per-second window slices (and registered extra payloads,
such as drift counts) to the store every second, and reads every replica's slices back, merged, for
the controller's windows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import orjson

from gateway.models import ModelManager
from gateway.observability.windows import Slice
from rollout.errors import InvalidSpec, StoreUnavailable
from rollout.store.base import WINDOW_SLICE, SliceRecord, SliceStore

log = logging.getLogger(__name__)

SHIP_INTERVAL_S = 1.0
# A slice is final once its second is over and is shipped at the next push, so every replica's data
# for a window is in the store this long after the window ends; a controller reading merged slices
# judges the window that ended this long ago (its clock runs behind by SETTLE_S).
SETTLE_S = 2 * SHIP_INTERVAL_S + 0.5
# How long shipped slices live: the longest analysis window that can be judged on merged data,
# plus room for the settle delay and a controller hand-over.
DEFAULT_TTL_S = 900.0

SLICE_SCHEMA = 1  # of the shipped window slice: {"schema": 1, "slice": Slice.to_dict()}

# provider(model, version, second) -> this replica's payload for that second, or None when it has none
PayloadProvider = Callable[[str, str, int], bytes | None]


class Replication:
    """Owns this replica's id, its slice shipping and the merged reads. `run` ships every
    `interval_s` until stopped, then flushes once more; a failed push is retried (with everything
    since the last good one) at the next."""

    def __init__(self, store: SliceStore, manager: ModelManager | None, *, replica: str,
                 interval_s: float = SHIP_INTERVAL_S, ttl_s: float = DEFAULT_TTL_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.manager, self.replica = store, manager, replica
        self.interval_s, self.ttl_s, self._clock = interval_s, ttl_s, clock
        self._payloads: dict[str, PayloadProvider] = {}
        self._pending_from: int | None = None  # earliest second that may still need shipping
        self.failing = False

    # --- writing ---------------------------------------------------------------------------------

    def register_payload(self, name: str, provider: PayloadProvider) -> None:
        """Ships `provider`'s bytes for every loaded version and second beside the window slices;
        read them back, from every replica, with `payloads(name, ...)`."""
        if not name or name == WINDOW_SLICE or any(c in name for c in ":|"):
            raise InvalidSpec("payload name", f"expected a name other than {WINDOW_SLICE!r}, without ':' "
                                              f"or '|', got {name!r}")
        self._payloads[name] = provider

    def collect(self, now: float) -> tuple[list[SliceRecord], int]:
        """The records from the last second not yet known to be final up to the current second, and
        the second the next push must start from if this one succeeds."""
        current = int(now)
        oldest = current - int(self.ttl_s) + 1  # older seconds would expire on arrival
        first = max(oldest, current - 1 if self._pending_from is None else self._pending_from)
        records: list[SliceRecord] = []
        manager = self.manager
        if manager is None:  # a controller without traffic of its own ships nothing
            return records, current - 1
        for model in manager.models():
            for loaded in manager.versions(model):
                for s in loaded.windows.slices(first, current + 1):
                    records.append(SliceRecord(model, loaded.version, s.second, WINDOW_SLICE, self.replica,
                                               orjson.dumps({"schema": SLICE_SCHEMA, "slice": s.to_dict()})))
                records += self._extra(model, loaded.version, first, current + 1)
        # The second before the current one is re-sent next time too: a request finishing right at
        # the turn of a second may be recorded just after this push read it.
        return records, current - 1

    def _extra(self, model: str, version: str, first: int, end: int) -> list[SliceRecord]:
        out = []
        for name, provider in self._payloads.items():
            for second in range(first, end):
                try:
                    data = provider(model, version, second)
                except Exception:  # a payload's bug must not stop the window slices
                    log.exception("payload %s failed for %s/%s", name, model, version)
                    break
                if data is not None:
                    out.append(SliceRecord(model, version, second, name, self.replica, data))
        return out

    async def push(self) -> bool:
        """One push; returns whether it reached the store."""
        records, next_from = self.collect(self._clock())
        try:
            if records:
                await asyncio.to_thread(self.store.put_slices, records, self.ttl_s)
        except StoreUnavailable as exc:
            if not self.failing:
                log.warning("cannot ship window slices, will catch up when the store answers: %s", exc)
            self.failing = True
            return False
        if self.failing:
            log.info("window slices shipping again")
        self.failing = False
        self._pending_from = next_from
        return True

    async def run(self, stop: asyncio.Event) -> None:
        self._pending_from = int(self._clock()) - 1
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
            await self.push()  # the last one, after stop, flushes the final seconds

    # --- reading ---------------------------------------------------------------------------------

    def slices(self, model: str, version: str, start: float, end: float) -> list[Slice]:
        """Every replica's window slices of `version` for start <= second < end: a `SliceSource`
        for `LiveMetrics`. Raises `StoreUnavailable` when the store cannot be read: a window must
        not be judged on part of the traffic."""
        records = self.store.read_slices(model, version, math.floor(start), math.ceil(end), {WINDOW_SLICE})
        return [_slice(r) for r in records]

    def payloads(self, name: str, model: str, version: str, start: float,
                 end: float) -> list[SliceRecord]:
        """Every replica's payloads `name` of `version` for start <= second < end (this one's too)."""
        return self.store.read_slices(model, version, math.floor(start), math.ceil(end), {name})


def _slice(record: SliceRecord) -> Slice:
    """A shipped window slice; one from a newer build than this one is refused rather than misread."""
    body: Any = orjson.loads(record.data)
    schema = body.get("schema") if isinstance(body, dict) else None
    if not isinstance(schema, int) or schema > SLICE_SCHEMA or not isinstance(body.get("slice"), dict):
        raise StoreUnavailable(f"slice of {record.model}/{record.version} from {record.replica} has schema "
                               f"{schema!r}; this build reads up to {SLICE_SCHEMA}")
    return Slice.from_dict(body["slice"])


def lagged_clock(settle_s: float = SETTLE_S) -> Callable[[], float]:
    """The wall clock, `settle_s` behind: the controller's clock when it reads merged slices."""
    return lambda: time.time() - settle_s
