"""The right of this process's promotion controller to act: the controller lease, withheld while the
store is known to have lost its data, and shown as the `servegate_controller_leader` gauge.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.observability.metrics import Metrics
from gateway.store_watch import StoreWatch
from rollout.lease import Lease


class Leadership:
    """Implements rollout.controller.Leadership over a `Lease` and a `StoreWatch`.

    With `settle_s`, a controller that has just gained (or regained) the lease waits that long before
    acting: the windows it judges must hold every replica's slices, and after a store outage the
    replicas need a push or two to ship what they recorded meanwhile."""

    def __init__(self, lease: Lease, watch: StoreWatch, metrics: Metrics, *, settle_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.lease, self.watch, self.metrics = lease, watch, metrics
        self.settle_s, self._clock = settle_s, clock
        self._acting_from: float | None = None

    def acquire(self) -> bool:
        if self.watch.reset:
            # A store that lost its data has no rollouts to drive; taking the lease there would only
            # write into it before an admin restores it.
            self.lease.release()
            held = False
        else:
            held = self.lease.acquire()
        self.metrics.controller_leader.set(1 if held else 0)
        if not held:
            self._acting_from = None
        elif self._acting_from is None:
            self._acting_from = self._clock() + self.settle_s
        return self.held()

    def held(self) -> bool:
        return (not self.watch.reset and self.lease.held() and self._acting_from is not None
                and self._clock() >= self._acting_from)

    def release(self) -> None:
        self.lease.release()
        self._acting_from = None
        self.metrics.controller_leader.set(0)
