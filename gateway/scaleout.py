"""The scale-out parts of one process, built together: its replica id, slice shipping, the store watch,
the state mirror and the controller lease. The composition roots (`Gateway`, `servegate controller`)
own one and run its tasks.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from gateway.leadership import Leadership
from gateway.mirror import StateMirror
from gateway.models import ModelManager
from gateway.observability.drift_shipping import SharedDrift
from gateway.observability.metrics import Metrics
from gateway.observation import LiveMetrics
from gateway.replication import SETTLE_S, Replication, lagged_clock
from gateway.settings import Settings
from gateway.shadow import SharedShadow
from gateway.store_watch import StoreWatch
from kernels.profile import Profile
from rollout.controller import Controller, RegistryPort
from rollout.decide import Decision
from rollout.errors import InvalidSpec, StoreUnavailable
from rollout.lease import Lease
from rollout.store.base import SliceStore, StateStore


def replica_id(role: str) -> str:
    """Unique per process and readable in the lease document: role, host, pid and a random tail."""
    host = socket.gethostname().replace(":", "-").replace("|", "-") or "host"
    return f"{role}-{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def shared_measurements(settings: Settings) -> bool:
    """Whether other processes serve traffic beside this one, so windows must be read from the store:
    a Redis store (replicas), or several workers on one host."""
    scheme = settings.store_url().split(":", 1)[0].lower()
    return scheme in ("redis", "rediss", "unix") or settings.server.workers > 1


class ScaleOut:
    """`manager` None: a process without traffic of its own (`servegate controller`), which always
    reads the merged windows."""

    def __init__(self, settings: Settings, store: StateStore, metrics: Metrics, manager: ModelManager | None,
                 *, role: str = "gateway", degraded: Callable[[], bool] = lambda: False) -> None:
        if not isinstance(store, SliceStore):
            raise InvalidSpec("store", f"{store.url} cannot hold window slices")
        self.settings = settings
        self.replica = replica_id(role)
        self.serves = manager is not None
        self.shared = not self.serves or shared_measurements(settings)
        self.replication = Replication(store, manager, replica=self.replica)
        self.watch = StoreWatch(store, metrics, degraded=lambda: degraded() or self.replication.failing)
        self.mirror = StateMirror(store, self.watch, source=self.replica)
        self.lease = Lease(store, self.replica, ttl_s=settings.controller.lease_ttl_s)
        self.leadership = Leadership(self.lease, self.watch, metrics, settle_s=SETTLE_S if self.shared else 0.0)

    def controller(self, store: StateStore, registry: RegistryPort, live: LiveMetrics,
                   on_decision: Callable[[Decision], None] | None = None,
                   profiles: Callable[[str], Profile | None] | None = None,
                   on_rollback: Callable[[Decision], None] | None = None) -> Controller:
        """The promotion controller of this process, acting only while it holds the lease. When other
        processes serve too, it reads every replica's shipped slices instead of this process's, and
        judges each window once they are all in the store (its clock runs `SETTLE_S` behind)."""
        clock: Callable[[], float] = time.time
        if self.shared:
            drift = SharedDrift(self.replication.payloads, profiles) if profiles is not None else None
            shadow = SharedShadow(self.replication.payloads)
            live, clock = live.with_slices(self.replication.slices, drift, shadow), lagged_clock()
        return Controller(store, registry, live, interval_s=self.settings.controller.interval_s,
                          clock=clock, leadership=self.leadership, on_decision=on_decision,
                          on_rollback=on_rollback)

    async def start(self) -> None:
        """The first look at the store; raises `StoreUnavailable` when it is marked as having lost its
        data, so that the caller does not bootstrap a fresh state over it."""
        await asyncio.to_thread(self.watch.check)
        if self.watch.reset:
            raise StoreUnavailable("the store lost its data and awaits `servegate state restore`")

    def tasks(self, stop: asyncio.Event) -> list[Coroutine[Any, Any, None]]:
        """Slice shipping, the store watch and (where traffic is served) the state mirror, until `stop`."""
        jobs = [self.replication.run(stop), self.watch.run(stop)]
        return [*jobs, self.mirror.run(stop)] if self.serves else jobs
