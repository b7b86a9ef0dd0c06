"""The right of this process's promotion controller to act: the controller lease, withheld while the
store is known to have lost its data, and shown as the `servegate_controller_leader` gauge.
"""

from __future__ import annotations

from gateway.observability.metrics import Metrics
from gateway.store_watch import StoreWatch
from rollout.lease import Lease


class Leadership:
    """Implements rollout.controller.Leadership over a `Lease` and a `StoreWatch`."""

    def __init__(self, lease: Lease, watch: StoreWatch, metrics: Metrics) -> None:
        self.lease, self.watch, self.metrics = lease, watch, metrics

    def acquire(self) -> bool:
        if self.watch.reset:
            # A store that lost its data has no rollouts to drive; taking the lease there would only
            # write into it before an admin restores it.
            self.lease.release()
            held = False
        else:
            held = self.lease.acquire()
        self.metrics.controller_leader.set(1 if held else 0)
        return held

    def held(self) -> bool:
        return not self.watch.reset and self.lease.held()

    def release(self) -> None:
        self.lease.release()
        self.metrics.controller_leader.set(0)
