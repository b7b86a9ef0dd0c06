"""Keeps what this process serves in step with the store: registry stages and route tables -> loaded
versions and the hot-path router.

Bootstrap registers the versions found on disk, makes the highest one production when the store has
none, writes a route table for models without one, and loads what the tables use. Afterwards the
store's change notifications trigger a refresh of the model that changed, and a full resync runs
every few seconds so a missed notification heals. When the store cannot be reached the last route
tables stay in force: serving continues, only changes wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from gateway.errors import ModelNotReady
from gateway.inference.probe import OrtProbe
from gateway.models import LoadedVersion, ModelManager, VersionState
from gateway.observability.metrics import Metrics
from gateway.repository import ModelConfig, ModelSource, version_key
from gateway.routing import TrafficRouter
from kernels.profile import build_profile
from rollout.errors import Conflict, RolloutError, StaleWrite, StoreUnavailable
from rollout.policy import RouteTable, parse_traffic, single
from rollout.registry import ModelVersion, Registry, Stage
from rollout.store.base import KIND_ROUTE, Change, StateStore

log = logging.getLogger(__name__)

SERVABLE = (Stage.VALIDATED, Stage.CANARY, Stage.PRODUCTION)
NOT_LOADED = "not loaded"
WATCH = "\x00watch:"  # queue entries for watched document kinds (not model names)
WAKE = "\x00wake"  # queue entry that only wakes the loop (to see that it must stop)
LoadHook = Callable[[LoadedVersion, ModelVersion], None]


class StateSync:
    def __init__(self, store: StateStore, registry: Registry, manager: ModelManager, router: TrafficRouter,
                 metrics: Metrics, *, sources: dict[str, ModelSource], defaults: ModelConfig,
                 drain_seconds: float = 30.0, resync_seconds: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.registry, self.manager, self.router = store, registry, manager, router
        self.metrics = metrics
        self.sources, self.defaults = sources, defaults
        self.drain_seconds, self.resync_seconds, self.clock = drain_seconds, resync_seconds, clock
        self.on_load: list[LoadHook] = []
        self.watchers: dict[str, Callable[[], Awaitable[None]]] = {}  # document kind -> reload
        self.degraded = False
        # True while the store must not be followed (it lost its data): the last tables stay in force.
        self.hold: Callable[[], bool] = lambda: False
        self._revisions: dict[str, int] = {}
        self._weighted: dict[str, set[str]] = {}  # versions whose weight gauge is set, per model
        self._locks: dict[str, asyncio.Lock] = {}
        self._changes: asyncio.Queue[str] | None = None
        self._background: set[asyncio.Task[Any]] = set()

    def config_for(self, model: str) -> ModelConfig:
        source = self.sources.get(model)
        return source.config if source is not None else self.defaults

    # --- bootstrap -------------------------------------------------------------------------------

    async def bootstrap(self, actor: str = "repository") -> None:
        for source in self.sources.values():
            for found in source.versions:
                await self._register_found(source.name, found.version, found.path, actor)
        for model in await asyncio.to_thread(self.registry.models):
            await self._ensure_production(model, actor)
            await self._ensure_route(model)
        await self.refresh_all()

    async def _register_found(self, model: str, version: str, path: Path, actor: str) -> None:
        try:
            await asyncio.to_thread(self.registry.get, model, version)
            return
        except RolloutError:
            pass
        holdout = path.parent / "holdout.npz"
        profile = await asyncio.to_thread(reference_profile, path.parent / "reference.npz", path,
                                          self.config_for(model).drift_bins)
        try:
            record = await asyncio.to_thread(
                self.registry.register, model, version, path, actor=actor,
                reason=f"found in the model repository at {path}",
                holdout=holdout if holdout.is_file() else None, reference_profile=profile)
        except Conflict:
            return  # another replica registered it first
        log.info("registered %s/%s from disk: %s", model, version, record.stage.value)

    async def _ensure_production(self, model: str, actor: str) -> None:
        if await asyncio.to_thread(self.registry.production, model) is not None:
            return
        versions = await asyncio.to_thread(self.registry.versions, model)
        candidates = [v for v in versions if v.stage is Stage.VALIDATED]
        if not candidates:
            log.warning("model %s has no validated version to serve", model)
            return
        chosen = max(candidates, key=lambda v: version_key(v.version))
        with contextlib.suppress(Conflict):
            await asyncio.to_thread(self.registry.promote, model, chosen.version, actor=actor,
                                    reason="first production version: the highest validated version on disk")

    async def _ensure_route(self, model: str) -> None:
        if await asyncio.to_thread(self.store.get, KIND_ROUTE, model) is not None:
            return
        production = await asyncio.to_thread(self.registry.production, model)
        if production is None:
            return
        with contextlib.suppress(StaleWrite):
            await asyncio.to_thread(self.store.put, KIND_ROUTE, model,
                                    single(model, production.version).to_dict(), 0)

    # --- refresh ---------------------------------------------------------------------------------

    async def refresh_all(self) -> None:
        if self.hold():
            return
        try:
            models = set(await asyncio.to_thread(self.registry.models))
            models |= {key for key, _ in await asyncio.to_thread(self.store.list, KIND_ROUTE)}
        except StoreUnavailable as exc:
            self._set_degraded(True, exc)
            return
        for model in sorted(models):
            await self.refresh(model)
        self._set_degraded(False)

    async def refresh(self, model: str) -> None:
        """Loads what the model's route table uses, swaps the table in, unloads what nothing uses."""
        lock = self._locks.setdefault(model, asyncio.Lock())
        async with lock:
            if self.hold():
                return
            try:
                await self._refresh(model)
            except StoreUnavailable as exc:
                self._set_degraded(True, exc)
            except RolloutError as exc:
                log.error("cannot apply the route table of %s: %s", model, exc)

    async def _refresh(self, model: str) -> None:
        doc = await asyncio.to_thread(self.store.get, KIND_ROUTE, model)
        versions = {v.version: v for v in await asyncio.to_thread(self.registry.versions, model)}
        for record in versions.values():
            self._declare(record)
        if doc is None:
            return
        table = parse_traffic(model, dict(doc.value))
        in_use = table.versions_in_use(self.clock())
        for version in sorted(in_use):
            used = versions.get(version)
            if used is None:
                log.error("route table of %s names unknown version %s", model, version)
                continue
            await self.ensure_loaded(used)
        if self._revisions.get(model) != doc.revision or self.router.table(model) != table:
            self.router.set_table(table)
            self._revisions[model] = doc.revision
            self._publish_weights(table)
        self._unload_unused(model, in_use)

    def apply_local(self, table: RouteTable, revision: int) -> None:
        """Swaps a table this process just wrote (so the caller's next request sees it at once)."""
        self.router.set_table(table)
        self._revisions[table.model] = revision
        self._publish_weights(table)

    async def ensure_loaded(self, record: ModelVersion) -> LoadedVersion:
        loaded = self.manager.find(record.model, record.version)
        if loaded is not None and loaded.state is VersionState.READY:
            return loaded
        loaded = await self.manager.load(record.model, record.version, Path(record.artifact),
                                         self.config_for(record.model), sha256=record.sha256)
        if loaded.state is not VersionState.READY:
            raise ModelNotReady(f"model '{record.model}' version '{record.version}' cannot be served: "
                                f"{loaded.reason}")
        for hook in self.on_load:
            hook(loaded, record)
        return loaded

    def _declare(self, record: ModelVersion) -> None:
        reason = _not_loaded_reason(record)
        existing = self.manager.find(record.model, record.version)
        if existing is None:
            self.manager.declare(record.model, record.version, Path(record.artifact),
                                 self.config_for(record.model), reason=reason)
        elif existing.state is VersionState.UNAVAILABLE and existing.reason.endswith(NOT_LOADED):
            existing.reason = reason

    def _unload_unused(self, model: str, in_use: frozenset[str]) -> None:
        for loaded in self.manager.versions(model):
            if loaded.version not in in_use and loaded.state is VersionState.READY:
                task = asyncio.ensure_future(self.manager.unload(model, loaded.version, self.drain_seconds))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    def _publish_weights(self, table: RouteTable) -> None:
        """Every version the table routes to gets its weight; one that left the table drops to 0."""
        for version in self._weighted.get(table.model, set()) - set(table.weights):
            self.metrics.traffic_weight.labels(table.model, version).set(0)
        for version, weight in table.weights.items():
            self.metrics.traffic_weight.labels(table.model, version).set(weight)
        self._weighted[table.model] = set(table.weights)

    async def _reload_watched(self, kinds: list[str]) -> None:
        if self.hold():
            return
        for kind in kinds:
            try:
                await self.watchers[kind]()
            except StoreUnavailable as exc:
                self._set_degraded(True, exc)

    def _set_degraded(self, degraded: bool, exc: Exception | None = None) -> None:
        if degraded and not self.degraded:
            log.error("state store unreachable; serving with the last route tables: %s", exc)
        elif not degraded and self.degraded:
            log.warning("state store reachable again; resuming synchronisation")
        self.degraded = degraded
        self.metrics.store_degraded.set(1 if degraded else 0)

    # --- background ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Follows change notifications; resyncs everything every `resync_seconds`."""
        loop = asyncio.get_running_loop()
        self._changes = asyncio.Queue()
        queue = self._changes

        def notify(change: Change) -> None:
            if change.kind == KIND_ROUTE or change.kind == "version":
                loop.call_soon_threadsafe(queue.put_nowait, change.key.split("/", 1)[0])
            elif change.kind in self.watchers:
                loop.call_soon_threadsafe(queue.put_nowait, WATCH + change.kind)

        # A store that does not answer must not block the event loop while subscribing.
        unsubscribe = await asyncio.to_thread(self.store.subscribe, notify)
        # Wakes the wait below as soon as `stop` is set, so shutdown need not wait for the next resync.
        waker = asyncio.ensure_future(stop.wait())
        waker.add_done_callback(lambda _: queue.put_nowait(WAKE))
        try:
            while not stop.is_set():
                try:
                    model = await asyncio.wait_for(queue.get(), timeout=self.resync_seconds)
                except TimeoutError:
                    await self.refresh_all()
                    await self._reload_watched(list(self.watchers))
                    continue
                if model == WAKE:
                    continue
                if model.startswith(WATCH):
                    await self._reload_watched([model[len(WATCH):]])
                else:
                    await self.refresh(model)
        finally:
            waker.cancel()
            unsubscribe()
            for task in list(self._background):
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def _not_loaded_reason(record: ModelVersion) -> str:
    """Why a registered version is not served, with the failing gate's detail for a rejected one."""
    if record.stage is Stage.REJECTED:
        failed = [f"{g.get('gate')}: {g.get('detail')}" for g in record.validation.get("gates", [])
                  if g.get("passed") is False]
        return f"rejected by validation ({'; '.join(failed) or 'see the report'}); {NOT_LOADED}"
    return f"{record.stage.value} in the registry; {NOT_LOADED}"


def reference_profile(path: Path, artifact: Path, bins: int) -> dict[str, Any] | None:
    """The drift reference from `reference.npz`: its inputs, and the model's outputs on them."""
    if not path.is_file():
        return None
    with np.load(path) as data:
        inputs = {name: data[name] for name in data.files}
    outputs = OrtProbe().load(str(artifact)).predict(inputs)
    return build_profile(inputs=inputs, outputs=outputs, bins=bins).to_dict()
