"""The data plane: the use cases both protocols call (infer, readiness, metadata, config, statistics).

`infer` routes the call to a version, admits it against the signature, queues it for batching, waits
for its slice of the batch's outputs, and records latency and outcome for that version. A request
routed to a candidate that fails can be re-run on the stable version (retry on stable); a share of
requests can be mirrored to a shadow version whose answers are compared, never returned.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

from gateway.admission import check_outputs
from gateway.batching.queue import BatchResult
from gateway.errors import (
    DeadlineExceeded,
    InferenceFailed,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    ServerNotReady,
    ServingError,
)
from gateway.models import LoadedVersion, ModelManager, VersionState
from gateway.routing import RouteChoice, TrafficRouter
from gateway.types import DATATYPES, InferOutput, InferRequest, InferResponse

log = logging.getLogger(__name__)

SERVER_NAME = "servegate"
EXTENSIONS = ("binary_tensor_data", "model_configuration", "statistics", "model_repository",
              "schedule_policy", "parameters")
PLATFORM = "onnxruntime_onnx"

# Client mistakes do not count against a version in the rollout windows; these do.
_VERSION_FAULTS = (InferenceFailed, Overloaded, DeadlineExceeded, ModelNotReady)
_OUTCOME = {InvalidInput: "invalid_input", ModelNotFound: "not_found", ModelNotReady: "not_ready",
            Overloaded: "overloaded", DeadlineExceeded: "deadline_exceeded", InferenceFailed: "failed"}


class RequestFaults(Protocol):
    def check_request(self, model: str, version: str) -> None: ...


class ShadowSink(Protocol):
    def mirror(self, request: InferRequest, feeds: Mapping[str, Any], primary: LoadedVersion,
               result: BatchResult, shadow: str) -> None: ...


class DataPlane:
    """Transport-neutral; protocol adapters convert, call one method, convert back."""

    def __init__(self, manager: ModelManager, router: TrafficRouter, *, version: str = "0.1.0",
                 shadow: ShadowSink | None = None, faults: RequestFaults | None = None) -> None:
        self.manager = manager
        self.faults = faults
        self.router = router
        self.server_version = version
        self.shadow = shadow
        self.accepting = False  # set by the app once models are loaded; cleared on drain
        self.live = True

    # --- health and metadata ---------------------------------------------------------------------

    def ready(self) -> bool:
        return self.accepting

    def model_ready(self, model: str, version: str = "") -> bool:
        try:
            self._resolve(model, version)
        except ServingError:
            return False
        return True

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": self.server_version, "extensions": list(EXTENSIONS)}

    def model_metadata(self, model: str, version: str = "") -> dict[str, Any]:
        loaded = self._resolve(model, version)
        sig = loaded.signature
        return {
            "name": model,
            "versions": [v.version for v in self.manager.versions(model) if v.state is VersionState.READY],
            "platform": PLATFORM,
            "inputs": [t.to_dict() for t in sig.inputs],
            "outputs": [t.to_dict() for t in sig.outputs],
            "parameters": {"version": loaded.version, "execution_provider": loaded.provider},
        }

    def model_config(self, model: str, version: str = "") -> dict[str, Any]:
        """Triton's ModelConfig in its JSON form (proto field names)."""
        loaded = self._resolve(model, version)
        sig, cfg = loaded.signature, loaded.config
        batch = loaded.max_batch_size
        strip = 1 if batch > 0 else 0  # with batching, dims exclude the batch dimension

        def dims(shape: tuple[int, ...]) -> list[int]:
            return list(shape[strip:])

        return {
            "name": model,
            "platform": PLATFORM,
            "backend": "onnxruntime",
            "version_policy": {"latest": {"num_versions": 1}},
            "max_batch_size": batch,
            "input": [{"name": t.name, "data_type": DATATYPES[t.datatype].config, "dims": dims(t.shape)}
                      for t in sig.inputs],
            "output": [{"name": t.name, "data_type": DATATYPES[t.datatype].config, "dims": dims(t.shape)}
                       for t in sig.outputs],
            "dynamic_batching": {
                "max_queue_delay_microseconds": cfg.max_queue_delay_us,
                "default_queue_policy": {"max_queue_size": cfg.queue_capacity,
                                         "default_timeout_microseconds": cfg.default_timeout_us,
                                         "allow_timeout_override": True},
            } if batch > 0 else {},
            "instance_group": [{"name": f"{model}_0", "count": cfg.instances,
                                **({"kind": "KIND_GPU", "gpus": [cfg.device_id]} if loaded.provider.startswith("CUDA")
                                   else {"kind": "KIND_CPU"})}],
            "default_model_filename": "model.onnx",
            "parameters": {"execution_provider": {"string_value": loaded.provider}},
        }

    def model_statistics(self, model: str = "", version: str = "") -> list[dict[str, Any]]:
        if model and model not in self.manager.models():
            raise ModelNotFound(f"unknown model '{model}'; served models: {self.manager.models()}")
        out = []
        for name in ([model] if model else self.manager.models()):
            for loaded in self.manager.versions(name):
                if (not version or loaded.version == version) and loaded.state is VersionState.READY:
                    out.append(loaded.stats.to_dict())
        if model and version and not out:
            self._resolve(model, version)
        return out

    def repository_index(self, ready_only: bool = False) -> list[dict[str, str]]:
        index = []
        for name in self.manager.models():
            for loaded in self.manager.versions(name):
                if ready_only and loaded.state is not VersionState.READY:
                    continue
                index.append({"name": name, "version": loaded.version, "state": loaded.state.value,
                              "reason": loaded.reason})
        return index

    def _resolve(self, model: str, version: str) -> LoadedVersion:
        if version:
            return self.manager.get(model, version)
        return self.manager.get(model, self.router.choose(model, {}).version)

    # --- inference -------------------------------------------------------------------------------

    async def infer(self, request: InferRequest) -> InferResponse:
        if not self.accepting:
            raise ServerNotReady("the gateway is not ready (starting or draining)")
        started = time.perf_counter()
        if request.version:
            choice = RouteChoice(request.version)
        else:
            choice = self.router.choose(request.model, request.routing)
        loaded = self.manager.get(request.model, choice.version)
        try:
            feeds, result = await self._run(loaded, request)
        except ServingError as exc:
            self._record_failure(loaded, request, exc, started)
            if choice.fallback and choice.fallback != choice.version and isinstance(exc, _VERSION_FAULTS):
                return await self._retry_on_stable(request, choice.fallback, started)
            raise
        except asyncio.CancelledError:
            loaded.metrics.request(request.protocol, "cancelled", time.perf_counter() - started)
            raise
        elapsed = time.perf_counter() - started
        if choice.fallback and self.router.withdrawn(request.model, choice.version):
            # The route took this version out while the call ran (a rollback decision): its answer is
            # dropped and the stable version answers, so a rolled-back candidate answers nothing after it.
            self._record_success(loaded, request.protocol, elapsed, result.queue_s, outcome="withdrawn")
            return await self._retry_on_stable(request, choice.fallback, started)
        self._record_success(loaded, request.protocol, elapsed, result.queue_s)
        if choice.shadow and self.shadow is not None and choice.shadow != loaded.version:
            self.shadow.mirror(request, feeds, loaded, result, choice.shadow)
        return self._response(loaded, request, result)

    async def _run(self, loaded: LoadedVersion, request: InferRequest) -> tuple[Mapping[str, Any], BatchResult]:
        queue, admitter = loaded.queue, loaded.admitter
        if queue is None or admitter is None:
            raise ModelNotReady(f"model '{loaded.model}' version '{loaded.version}' is not loaded")
        feeds, rows = admitter(request)
        if request.outputs:
            check_outputs(loaded.signature, request.outputs, request.model)
        deadline = request.deadline
        if deadline is None and loaded.config.default_timeout_us:
            deadline = time.monotonic() + loaded.config.default_timeout_us / 1e6
        future = queue.submit(feeds, rows, deadline)
        if deadline is None:
            result = await future
        else:
            timer = asyncio.get_running_loop().call_later(max(0.0, deadline - time.monotonic()), _expire, future)
            try:
                result = await future
            finally:
                timer.cancel()
        if self.faults is not None:
            self.faults.check_request(loaded.model, loaded.version)
        return feeds, result

    async def _retry_on_stable(self, request: InferRequest, stable: str, started: float) -> InferResponse:
        loaded = self.manager.get(request.model, stable)
        _, result = await self._run(loaded, request)
        self._record_success(loaded, request.protocol, time.perf_counter() - started, result.queue_s,
                             outcome="retried_on_stable")
        return self._response(loaded, request, result)

    def _response(self, loaded: LoadedVersion, request: InferRequest, result: BatchResult) -> InferResponse:
        specs = loaded.output_types
        names = [o.name for o in request.outputs] if request.outputs else list(specs)
        outputs = [InferOutput(n, specs[n], tuple(result.outputs[n].shape), result.outputs[n]) for n in names]
        return InferResponse(request.model, loaded.version, outputs, request.id)

    def _record_success(self, loaded: LoadedVersion, protocol: str, elapsed: float, queue_s: float,
                        outcome: str = "success") -> None:
        loaded.metrics.request(protocol, outcome, elapsed)
        loaded.windows.record(elapsed, True)
        loaded.stats.request(True, elapsed, queue_s)

    def _record_failure(self, loaded: LoadedVersion, request: InferRequest, exc: ServingError,
                        started: float) -> None:
        elapsed = time.perf_counter() - started
        loaded.metrics.request(request.protocol, _OUTCOME.get(type(exc), "failed"), elapsed)
        if isinstance(exc, _VERSION_FAULTS):
            loaded.windows.record(elapsed, False)
            loaded.stats.request(False, elapsed, 0.0)


def _expire(future: asyncio.Future[BatchResult]) -> None:
    if not future.done():
        future.set_exception(DeadlineExceeded("deadline exceeded before the inference finished"))

