"""Chooses the execution provider: CUDA when the runtime has it and a GPU answers, CPU otherwise.

The probe asks the CUDA driver directly (libcuda), so a machine without a GPU is recognised before
ONNX Runtime is asked for CUDA and prints its own error stack. On a machine with a GPU, the CUDA
provider's own library is then loaded once: when a CUDA library it needs (cuBLAS, the CUDA runtime)
is missing, the reason is the loader's one line, not ONNX Runtime's "EP Error" banner.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class ProviderUnavailable(RuntimeError):
    """A provider was required explicitly but cannot be used here."""


@dataclass(frozen=True, slots=True)
class ProviderChoice:
    providers: tuple[str, ...]  # in ONNX Runtime's order of preference
    reason: str  # why: for the one log line and the model's metadata

    @property
    def wants_cuda(self) -> bool:
        return self.providers[0] == CUDA


@lru_cache(maxsize=1)
def cuda_device_count() -> int:
    """Number of CUDA devices the driver reports; 0 when there is no driver or no device."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    try:
        if libcuda.cuInit(0) != 0 or libcuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
    except AttributeError:
        return 0
    return int(count.value)


CUDA_PROVIDER_LIBRARY = "libonnxruntime_providers_cuda.so"
SHARED_PROVIDER_LIBRARY = "libonnxruntime_providers_shared.so"


def provider_library_problem(capi_dir: Path) -> str | None:
    """Loads ONNX Runtime's CUDA provider library from `capi_dir` (the runtime's `capi` folder) the way
    the runtime will; returns why it cannot load (its first missing library, say), or None when it loads.

    Loading it here is harmless: the runtime's own load later finds the library already mapped."""
    library = capi_dir / CUDA_PROVIDER_LIBRARY
    if not library.is_file():
        return f"{CUDA_PROVIDER_LIBRARY} is not in {capi_dir}"
    try:
        shared = capi_dir / SHARED_PROVIDER_LIBRARY
        if shared.is_file():
            ctypes.CDLL(str(shared), mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(str(library))
    except OSError as exc:  # the loader's message names the library it could not open
        return str(exc).strip() or type(exc).__name__
    return None


def choose(preference: str, available: Sequence[str], devices: int | None = None,
           library_problem: Callable[[], str | None] | None = None, device_id: int = 0) -> ProviderChoice:
    """`preference` is auto | cpu | cuda; `available` is what the installed runtime was built with;
    `library_problem` says why the CUDA provider's library cannot load (asked only when a GPU is there);
    `device_id` is the CUDA device the model asks for."""
    if preference == "cpu":
        return ProviderChoice((CPU,), "CPU requested in the model config")
    has_ep = CUDA in available
    gpus = cuda_device_count() if devices is None else devices
    usable = has_ep and 0 <= device_id < gpus
    problem = library_problem() if usable and library_problem is not None else None
    if usable and problem is None:
        return ProviderChoice((CUDA, CPU), f"CUDA device {device_id} ({gpus} found)")
    why = ("the installed onnxruntime has no CUDA execution provider" if not has_ep
           else "no CUDA device found" if gpus <= 0
           else f"device_id {device_id} does not exist ({gpus} CUDA device{'s' if gpus > 1 else ''} found)"
           if device_id >= gpus
           else f"the CUDA execution provider cannot load ({problem})")
    if preference == "cuda":
        raise ProviderUnavailable(f"provider 'cuda' is required by the model config but {why}")
    return ProviderChoice((CPU,), f"CPU: {why}")
