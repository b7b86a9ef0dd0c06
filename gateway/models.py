"""The model versions this gateway holds: loading (verified, warmed up), state, unloading with drain.

A version that fails to load stays listed as UNAVAILABLE with its reason, and every other version
keeps serving. Loading runs in a thread so the event loop keeps answering while a model warms up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from gateway.admission import Admitter
from gateway.batching.queue import BatchQueue
from gateway.errors import ModelNotFound, ModelNotReady
from gateway.inference.session import ModelLoadError, OrtSession
from gateway.observability.metrics import Metrics, VersionMetrics
from gateway.observability.statistics import VersionStatistics
from gateway.observability.windows import WindowRecorder
from gateway.repository import ModelConfig, version_key
from gateway.types import Signature

log = logging.getLogger(__name__)

Tensors = dict[str, Any]
RunHook = Callable[[Mapping[str, Any], Mapping[str, Any]], None]


class VersionState(StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    UNLOADING = "UNLOADING"


@dataclass(eq=False)
class LoadedVersion:
    """One version of one model and everything the request path needs to serve it."""

    model: str
    version: str
    path: Path
    config: ModelConfig
    metrics: VersionMetrics
    windows: WindowRecorder
    stats: VersionStatistics
    state: VersionState = VersionState.LOADING
    reason: str = ""
    session: OrtSession | None = None
    queue: BatchQueue | None = None
    admitter: Admitter | None = None
    output_types: dict[str, str] = field(default_factory=dict)  # output name -> datatype
    run_hooks: list[RunHook] = field(default_factory=list)  # may change outputs; before the reply
    observers: list[RunHook] = field(default_factory=list)  # read-only (drift); after the reply

    @property
    def signature(self) -> Signature:
        if self.session is None:
            raise ModelNotReady(f"model '{self.model}' version '{self.version}' is not loaded")
        return self.session.signature

    @property
    def max_batch_size(self) -> int:
        return self.config.max_batch_size if self.signature.batchable else 0

    @property
    def provider(self) -> str:
        return self.session.provider if self.session is not None else ""

    def run(self, feeds: Tensors) -> Tensors:
        """Worker thread: one batch through ONNX Runtime, then the hooks (drift binning) on the same thread."""
        session = self.session
        if session is None:
            raise ModelNotReady(f"model '{self.model}' version '{self.version}' was unloaded")
        outputs = session.run(feeds)
        for hook in self.run_hooks:
            try:
                hook(feeds, outputs)
            except Exception:  # a measurement must never fail a request
                log.exception("%s/%s: run hook failed", self.model, self.version)
        return outputs

    def observe(self, feeds: Tensors, outputs: Tensors) -> None:
        """Worker thread, after the batch's replies are posted."""
        for observer in self.observers:
            try:
                observer(feeds, outputs)
            except Exception:  # a measurement must never fail serving
                log.exception("%s/%s: observer failed", self.model, self.version)

    def on_batch(self, rows: int, requests: int, compute_s: float) -> None:
        self.stats.batch(rows, compute_s)
        self.metrics.batch(rows, requests, compute_s)


class ModelManager:
    """Holds every known version by model; the data plane asks it for a READY one."""

    def __init__(self, metrics: Metrics, *, window_keep_seconds: int = 600) -> None:
        self._metrics = metrics
        self._versions: dict[str, dict[str, LoadedVersion]] = {}
        self._keep = window_keep_seconds
        self.on_ready: list[Callable[[LoadedVersion], None]] = []

    def models(self) -> list[str]:
        return sorted(self._versions)

    def versions(self, model: str) -> list[LoadedVersion]:
        found = self._versions.get(model, {})
        return [found[v] for v in sorted(found, key=version_key)]

    def find(self, model: str, version: str) -> LoadedVersion | None:
        return self._versions.get(model, {}).get(version)

    def get(self, model: str, version: str) -> LoadedVersion:
        """The READY version, or ModelNotFound / ModelNotReady naming what is wrong."""
        versions = self._versions.get(model)
        if versions is None:
            raise ModelNotFound(f"unknown model '{model}'; served models: {self.models()}")
        loaded = versions.get(version)
        if loaded is None:
            known = sorted(versions, key=version_key)
            raise ModelNotFound(f"model '{model}' has no version '{version}'; versions: {known}")
        if loaded.state is not VersionState.READY:
            detail = f": {loaded.reason}" if loaded.reason else ""
            raise ModelNotReady(f"model '{model}' version '{version}' is {loaded.state.value.lower()}{detail}")
        return loaded

    def declare(self, model: str, version: str, path: Path, config: ModelConfig,
                state: VersionState = VersionState.UNAVAILABLE, reason: str = "not loaded") -> LoadedVersion:
        """Lists a version without loading it (e.g. archived in the registry)."""
        existing = self.find(model, version)
        if existing is not None:
            return existing
        loaded = LoadedVersion(model, version, path, config, self._metrics.for_version(model, version),
                               WindowRecorder(self._keep), VersionStatistics(model, version),
                               state=state, reason=reason)
        self._versions.setdefault(model, {})[version] = loaded
        self._metrics.model_ready.labels(model, version).set(0)
        return loaded

    async def load(self, model: str, version: str, path: Path, config: ModelConfig, *,
                   sha256: str | None = None) -> LoadedVersion:
        """Loads, warms up and starts serving a version; a failure leaves it UNAVAILABLE with the reason."""
        loaded = self.declare(model, version, path, config)
        if loaded.state in (VersionState.READY, VersionState.LOADING) and loaded.session is not None:
            return loaded
        loaded.state, loaded.reason, loaded.config, loaded.path = VersionState.LOADING, "", config, path
        try:
            session = await asyncio.to_thread(_open_session, path, config, sha256)
        except ModelLoadError as exc:
            loaded.state, loaded.reason = VersionState.UNAVAILABLE, str(exc)
            log.error("model %s version %s is not served: %s", model, version, exc)
            return loaded
        loaded.session = session
        loaded.admitter = Admitter(session.signature, loaded.max_batch_size)
        loaded.output_types = {t.name: t.datatype for t in session.signature.outputs}
        queue = BatchQueue(f"{model}/{version}", loaded.run, max_batch_size=loaded.max_batch_size,
                           capacity=config.queue_capacity, instances=config.instances,
                           max_queue_delay_s=config.max_queue_delay_us / 1e6, on_batch=loaded.on_batch,
                           observe=loaded.observe)
        await queue.start()
        loaded.queue = queue
        loaded.state = VersionState.READY
        self._metrics.bind_gauges(model, version, lambda: float(queue.depth), lambda: float(queue.busy))
        self._metrics.model_ready.labels(model, version).set(1)
        self._metrics.model_provider.labels(model, version, session.provider).set(1)
        log.info("model %s version %s ready on %s (%s)", model, version, session.provider,
                 session.provider_reason)
        for callback in self.on_ready:
            callback(loaded)
        return loaded

    async def unload(self, model: str, version: str, drain_seconds: float = 30.0) -> None:
        """Stops routing to the version, finishes what it has queued, then frees the session."""
        loaded = self.find(model, version)
        if loaded is None or loaded.state is VersionState.UNAVAILABLE:
            return
        loaded.state, loaded.reason = VersionState.UNLOADING, "unloading"
        if loaded.queue is not None:
            await loaded.queue.drain(drain_seconds)
            await loaded.queue.stop()
        loaded.queue, loaded.session = None, None
        loaded.state, loaded.reason = VersionState.UNAVAILABLE, "unloaded"
        self._metrics.model_ready.labels(model, version).set(0)

    async def drain(self, timeout: float) -> bool:
        """Waits for every queue to empty (shutdown)."""
        queues = [v.queue for vs in self._versions.values() for v in vs.values() if v.queue is not None]
        results = await asyncio.gather(*(q.drain(timeout) for q in queues))
        return all(results)

    async def stop(self) -> None:
        for versions in self._versions.values():
            for loaded in versions.values():
                if loaded.queue is not None:
                    await loaded.queue.stop()
                    loaded.queue = None


def _open_session(path: Path, config: ModelConfig, sha256: str | None) -> OrtSession:
    session = OrtSession(path, provider=config.provider, intra_op_threads=config.intra_op_threads,
                         instances=config.instances, expected_sha256=sha256, input_overrides=config.inputs,
                         device_id=config.device_id, tf32=config.tf32)
    batch = config.max_batch_size if session.signature.batchable else 0
    try:
        session.warm_up([1, batch] if batch > 1 else [1])
    except Exception as exc:
        raise ModelLoadError(f"{path}: warm-up run failed: {str(exc).splitlines()[0] if str(exc) else exc}") from exc
    return session
