"""A lease in the state store: at most one holder at a time may act (the promotion controller), for a
TTL that the holder renews. Expiry is judged on each contender's own monotonic clock - how long the lease
document has gone unchanged - so wall clocks of different machines are never compared.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rollout.errors import InvalidSpec, RolloutError, StaleWrite, StoreUnavailable
from rollout.store.base import KIND_LEASE, StateStore

log = logging.getLogger(__name__)

CONTROLLER_LEASE = "controller"
# The holder stops acting this long before a contender may take over: room for a renewal write that
# is slow to return, and for monotonic clocks that tick at slightly different rates.
SAFETY_FRACTION = 0.1


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The stored lease. `holder` "" = released; `term` grows by one with every change of holder."""

    holder: str
    term: int
    ttl_s: float
    renewed_at: float  # wall clock, for people reading the document; never used to judge expiry

    def to_dict(self) -> dict[str, Any]:
        return {"holder": self.holder, "term": self.term, "ttl_s": self.ttl_s, "renewed_at": self.renewed_at}

    @staticmethod
    def from_dict(body: Mapping[str, Any]) -> LeaseRecord:
        try:
            record = LeaseRecord(str(body["holder"]), int(body["term"]), float(body["ttl_s"]),
                                 float(body["renewed_at"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidSpec("lease", f"expected holder, term, ttl_s and renewed_at: {exc}") from exc
        if not (math.isfinite(record.ttl_s) and record.ttl_s > 0):
            raise InvalidSpec("lease.ttl_s", f"expected seconds > 0, got {record.ttl_s!r}")
        return record


class Lease:
    """One contender for the lease `name`. `acquire()` (store I/O) takes a free or expired lease and
    renews a held one; `held()` (no I/O) says whether this contender may act at this instant.

    A contender takes over a lease whose document it has seen unchanged for the lease's TTL. The holder
    counts its own TTL from before its renewal write, minus a safety margin, so it stops acting before
    any contender can have started."""

    def __init__(self, store: StateStore, holder: str, *, name: str = CONTROLLER_LEASE, ttl_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        if not holder:
            raise InvalidSpec("holder", "expected a non-empty holder id")
        if not (isinstance(ttl_s, int | float) and math.isfinite(ttl_s) and ttl_s > 0):
            raise InvalidSpec("ttl_s", f"expected seconds > 0, got {ttl_s!r}")
        self.store, self.holder, self.name, self.ttl_s = store, holder, name, float(ttl_s)
        self._clock, self._wall = clock, wall
        self.term = 0
        self._revision = 0  # of the document this contender last wrote
        self._held_until = -math.inf
        self._seen: tuple[int, float] = (0, 0.0)  # (revision, monotonic time first seen)

    def held(self) -> bool:
        return self._clock() < self._held_until

    def acquire(self) -> bool:
        """Takes or renews the lease; False when another holder's lease is live, when a racing contender
        won, or when the store cannot be reached (no one may act on a store it cannot see)."""
        started = self._clock()
        try:
            return self._acquire(started)
        except StaleWrite:
            log.info("lease %s: another contender wrote first", self.name)
        except StoreUnavailable as exc:
            log.warning("lease %s: store unreachable, not acting: %s", self.name, exc)
        except RolloutError as exc:
            log.error("lease %s: unreadable lease document, not acting: %s", self.name, exc)
        self._held_until = -math.inf
        return False

    def _acquire(self, started: float) -> bool:
        doc = self.store.get(KIND_LEASE, self.name)
        if doc is None:
            return self._write(started, 1, 0)
        current = LeaseRecord.from_dict(doc.value)
        if self._seen[0] != doc.revision:
            self._seen = (doc.revision, started)
        if current.holder == self.holder:
            return self._write(started, current.term, doc.revision)
        if current.holder and started - self._seen[1] < current.ttl_s:
            self._held_until = -math.inf
            return False
        if current.holder:
            log.warning("lease %s: holder %s (term %d) silent for %.1f s; taking over", self.name,
                        current.holder, current.term, started - self._seen[1])
        return self._write(started, current.term + 1, doc.revision)

    def _write(self, started: float, term: int, expected: int) -> bool:
        record = LeaseRecord(self.holder, term, self.ttl_s, self._wall())
        self._revision = self.store.put(KIND_LEASE, self.name, record.to_dict(), expected)
        if term != self.term:
            log.info("lease %s: held by %s, term %d", self.name, self.holder, term)
        self.term = term
        self._seen = (self._revision, started)
        self._held_until = started + self.ttl_s * (1.0 - SAFETY_FRACTION)
        return True

    def release(self) -> None:
        """Gives a held lease back at once, so a successor need not wait out the TTL (best effort)."""
        if self._revision == 0 or not self.held():
            return
        self._held_until = -math.inf
        released = LeaseRecord("", self.term, self.ttl_s, self._wall())
        try:
            self.store.put(KIND_LEASE, self.name, released.to_dict(), self._revision)
        except (StaleWrite, StoreUnavailable) as exc:
            log.info("lease %s: not released (%s); it expires by itself", self.name, exc)
