"""ONNX Runtime session wrapper: verified load, provider choice, signature, warm-up, batched run.

The only module that imports onnxruntime. A load failure becomes `ModelLoadError` with a reason a
human can act on; the CUDA path uses I/O binding so inputs go to the device once per batch.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from gateway.inference import providers
from gateway.repository import InputOverride
from gateway.types import DATATYPE_BY_ORT, DATATYPES, Signature, TensorSpec

log = logging.getLogger(__name__)

# ORT prints warnings (e.g. about unused initializers) at severity 2; servegate logs its own lines.
ort.set_default_logger_severity(3)


class ModelLoadError(RuntimeError):
    """The artifact cannot be served; the message says why."""


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@lru_cache(maxsize=1)
def cuda_library_problem() -> str | None:
    """Why the CUDA provider cannot load in this process, or None. Asked once, and only on a GPU machine.

    `onnxruntime.preload_dlls` first maps the CUDA libraries that pip's `nvidia-*` wheels put beside
    the runtime (`onnxruntime-gpu[cuda,cudnn]`); it prints what it cannot find, so that goes to the
    debug log instead of stdout."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                preload()
        except Exception as exc:  # a preload failure is reported by the load below
            log.debug("onnxruntime.preload_dlls failed: %s", exc)
        if printed.getvalue().strip():
            log.debug("onnxruntime.preload_dlls: %s", printed.getvalue().strip())
    return providers.provider_library_problem(Path(ort.__file__).parent / "capi")


def default_intra_op_threads(instances: int) -> int:
    """Leave one core to the event loop: ORT threads x instances should not oversubscribe the CPUs."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, (cores - 1) // max(1, instances)) if cores > 1 else 1


class OrtSession:
    """One loaded model version. `run` is thread-safe (ORT sessions allow concurrent runs)."""

    def __init__(self, path: Path, *, provider: str = "auto", intra_op_threads: int = 0,
                 instances: int = 1, expected_sha256: str | None = None,
                 input_overrides: Mapping[str, InputOverride] | None = None, device_id: int = 0,
                 tf32: bool = True) -> None:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ModelLoadError(f"cannot read {path}: {exc.strerror or exc}") from exc
        self.sha256 = sha256_of(data)
        if expected_sha256 and expected_sha256 != self.sha256:
            raise ModelLoadError(
                f"{path}: sha256 {self.sha256[:12]}… differs from the registered {expected_sha256[:12]}…; "
                "the artifact changed after registration")
        try:
            choice = providers.choose(provider, ort.get_available_providers(),
                                      library_problem=cuda_library_problem, device_id=device_id)
        except providers.ProviderUnavailable as exc:
            raise ModelLoadError(str(exc)) from exc
        self.intra_op_threads = intra_op_threads or default_intra_op_threads(instances)
        self._cuda_options = {"device_id": str(device_id), "use_tf32": "1" if tf32 else "0"}
        self._session = self._open(data, choice, path)
        self.provider = self._session.get_providers()[0]
        if choice.wants_cuda and self.provider != providers.CUDA:
            log.warning("%s: CUDA was available but the session fell back to %s", path, self.provider)
            self.provider_reason = "CPU: CUDA provider failed to initialise; see the runtime's log"
        else:
            self.provider_reason = choice.reason
        self.signature = _signature(self._session, input_overrides or {})
        self._output_names = [o.name for o in self.signature.outputs]
        self._binding = self.provider == providers.CUDA

    def _open(self, data: bytes, choice: providers.ProviderChoice, path: Path) -> ort.InferenceSession:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning worker threads burn a core between batches; on small machines the event loop needs it.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        chosen = [(name, self._cuda_options) if name == providers.CUDA else name for name in choice.providers]
        try:
            return ort.InferenceSession(data, sess_options=opts, providers=chosen)
        except Exception as exc:  # ORT raises several private exception types
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"{path}: ONNX Runtime cannot load the model: {first_line}") from exc

    @property
    def output_names(self) -> list[str]:
        return self._output_names

    def run(self, feeds: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        """Runs one batch; returns every output by name."""
        if self._binding:
            return self._run_bound(feeds)
        results = self._session.run(self._output_names, dict(feeds))
        return dict(zip(self._output_names, results, strict=True))

    def _run_bound(self, feeds: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        binding = self._session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name in self._output_names:
            binding.bind_output(name, "cpu")
        self._session.run_with_iobinding(binding)
        return dict(zip(self._output_names, binding.copy_outputs_to_cpu(), strict=True))

    def warm_up(self, batch_sizes: Sequence[int]) -> None:
        """Runs zero-filled batches so allocation and kernel selection happen before traffic."""
        for rows in batch_sizes:
            self.run(zero_feeds(self.signature, rows))


def zero_feeds(signature: Signature, rows: int) -> dict[str, np.ndarray[Any, Any]]:
    feeds: dict[str, np.ndarray[Any, Any]] = {}
    for spec in signature.inputs:
        shape = [rows if i == 0 and signature.batchable else max(d, 1) for i, d in enumerate(spec.shape)]
        dtype = DATATYPES[spec.datatype].numpy
        if spec.datatype == "BYTES":
            feeds[spec.name] = np.full(shape, "", dtype=object)
        else:
            feeds[spec.name] = np.zeros(shape, dtype=dtype)
    return feeds


def _signature(session: ort.InferenceSession, overrides: Mapping[str, InputOverride]) -> Signature:
    inputs = tuple(_tensor(i, "input", overrides.get(i.name)) for i in session.get_inputs())
    outputs = tuple(_tensor(o, "output", None) for o in session.get_outputs())
    unknown = sorted(set(overrides) - {t.name for t in inputs})
    if unknown:
        raise ModelLoadError(f"config.yaml names inputs {unknown} that the model does not have; "
                             f"its inputs are {[t.name for t in inputs]}")
    batchable = all(t.shape and t.shape[0] == -1 for t in (*inputs, *outputs))
    return Signature(inputs, outputs, batchable)


def _tensor(arg: Any, role: str, override: InputOverride | None) -> TensorSpec:
    datatype = DATATYPE_BY_ORT.get(arg.type)
    if datatype is None:
        hint = " (convert classifiers with zipmap disabled)" if "map" in str(arg.type) else ""
        raise ModelLoadError(f"{role} '{arg.name}' has type {arg.type}, which the Open Inference "
                             f"Protocol cannot carry{hint}")
    shape = [d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or [])]
    if override is not None and override.dims is not None:
        if len(override.dims) != max(len(shape) - 1, 0):
            raise ModelLoadError(f"config.yaml inputs.{arg.name}.dims has {len(override.dims)} dims; "
                                 f"the model's input has {len(shape) - 1} besides the batch dimension")
        shape = shape[:1] + list(override.dims)
    return TensorSpec(arg.name, datatype.name, tuple(shape))
