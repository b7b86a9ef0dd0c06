"""Watches the state store's identity: notices a store that came back empty (its epoch changed), says so
loudly, holds this replica's state until an admin restores it, and tells readiness how the store is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from gateway.observability.metrics import Metrics
from rollout.errors import StoreUnavailable
from rollout.store.base import EpochStore, StateStore

log = logging.getLogger(__name__)

OK, DEGRADED, RESET = "ok", "degraded", "reset"
CHECK_INTERVAL_S = 1.0


class StoreWatch:
    """`state` is "ok", "degraded" (unreachable, or a part of this replica cannot use it) or "reset"
    (the store lost its data: nothing from it is applied, and no controller acts here, until
    `servegate state restore` clears the store's reset mark)."""

    def __init__(self, store: StateStore, metrics: Metrics, *,
                 degraded: Callable[[], bool] = lambda: False, interval_s: float = CHECK_INTERVAL_S) -> None:
        self.store, self.metrics = store, metrics
        self._degraded = degraded
        self.interval_s = interval_s
        self.epoch: str | None = None  # the epoch whose data this replica holds
        self.reset = False
        self.unreachable = False
        self.on_restored: list[Callable[[], Awaitable[None]]] = []

    @property
    def state(self) -> str:
        if self.reset:
            return RESET
        return DEGRADED if self.unreachable or self._degraded() else OK

    def details(self) -> dict[str, str]:
        """The readiness body's store field."""
        return {"store": self.state}

    def check(self) -> bool:
        """One look at the store (blocking I/O); returns True when the store was just restored."""
        if not isinstance(self.store, EpochStore):
            return False
        try:
            seen = self.store.epoch_state()
        except StoreUnavailable:
            self.unreachable = True
            return False
        self.unreachable = False
        if self.reset:
            return self._maybe_restored(seen.epoch, seen.reset_of)
        if seen.reset_of is not None:
            self._enter_reset(seen.reset_of, "another replica found it emptied")
        elif self.epoch is None:
            self.epoch = seen.epoch
        elif seen.epoch != self.epoch:
            self._enter_reset(self.epoch, "its epoch changed" if seen.epoch else "it is empty")
            with contextlib.suppress(StoreUnavailable):  # the next check marks it again
                self.store.mark_reset(self.epoch)
        return False

    def _enter_reset(self, lost: str, why: str) -> None:
        self.reset = True
        self.metrics.store_reset.set(1)
        log.error("STATE STORE %s LOST ITS DATA (%s; the data was epoch %s). Serving on with the last "
                  "route tables; nothing is written or applied from the store and no rollout moves until "
                  "an admin runs `servegate state restore`.", self.store.url, why, lost)

    def _maybe_restored(self, epoch: str | None, reset_of: str | None) -> bool:
        if reset_of is not None or epoch is None:
            return False
        log.warning("state store %s was restored (epoch %s); resuming", self.store.url, epoch)
        self.reset, self.epoch = False, epoch
        self.metrics.store_reset.set(0)
        return True

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if await asyncio.to_thread(self.check):
                for hook in self.on_restored:
                    try:
                        await hook()
                    except Exception:  # a failing hook must not end the watch; the resync retries
                        log.exception("after-restore hook failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
