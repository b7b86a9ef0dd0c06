"""Chooses the execution provider: CUDA when the runtime has it and a GPU answers, CPU otherwise.

The probe asks the CUDA driver directly (libcuda), so a machine without a GPU is recognised before
ONNX Runtime is asked for CUDA and prints its own error stack.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

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


def choose(preference: str, available: Sequence[str], devices: int | None = None) -> ProviderChoice:
    """`preference` is auto | cpu | cuda; `available` is what the installed runtime was built with."""
    if preference == "cpu":
        return ProviderChoice((CPU,), "CPU requested in the model config")
    has_ep = CUDA in available
    gpus = cuda_device_count() if devices is None else devices
    if has_ep and gpus > 0:
        return ProviderChoice((CUDA, CPU), f"CUDA device available ({gpus} found)")
    why = ("the installed onnxruntime has no CUDA execution provider" if not has_ep
           else "no CUDA device found")
    if preference == "cuda":
        raise ProviderUnavailable(f"provider 'cuda' is required by the model config but {why}")
    return ProviderChoice((CPU,), f"CPU: {why}")
