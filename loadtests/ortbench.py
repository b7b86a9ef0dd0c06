"""In-process ONNX Runtime baseline: latency per run and rows/s at a fixed batch, with no serving around it.

onnxruntime is imported inside `measure`, so importing loadtests never loads it; the benchmark runner
calls this through `python -m loadtests ort` in a subprocess of its own.
"""

from __future__ import annotations

import time
from typing import Any

from loadtests.histogram import Histogram
from loadtests.payload import TensorSpec, concrete_shape, random_tensors

PROVIDERS = {"cpu": ("CPUExecutionProvider",), "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider")}

_DATATYPE_OF_ORT = {
    "tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(float16)": "FP16", "tensor(int64)": "INT64",
    "tensor(int32)": "INT32", "tensor(int16)": "INT16", "tensor(int8)": "INT8", "tensor(uint8)": "UINT8",
    "tensor(bool)": "BOOL",
}


def measure(onnx_path: str, *, rows: int, duration_s: float, warmup_s: float = 1.0, intra_threads: int = 0,
            providers: tuple[str, ...] = ("CPUExecutionProvider",)) -> dict[str, Any]:
    """Runs the model back to back on one thread for `duration_s` after `warmup_s`; returns figures."""
    import onnxruntime as ort

    if rows < 1 or duration_s <= 0 or warmup_s < 0 or intra_threads < 0:
        raise ValueError("rows >= 1, duration > 0, warm-up >= 0 and threads >= 0 are required")
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_threads
    if "CUDAExecutionProvider" in providers and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # the CUDA libraries of pip's nvidia-* wheels, as the gateway loads them
    session = ort.InferenceSession(onnx_path, sess_options=options, providers=list(providers))
    if session.get_providers()[0] != providers[0]:
        raise RuntimeError(f"{providers[0]} was asked for but the session runs on {session.get_providers()[0]}")
    specs = [TensorSpec(i.name, _DATATYPE_OF_ORT.get(i.type, "FP32"),
                        tuple(d if isinstance(d, int) else -1 for d in i.shape)) for i in session.get_inputs()]
    feeds = {t.name: t.array for t in random_tensors(specs, rows)}
    hist = Histogram()
    runs = 0
    warm_end = time.monotonic() + warmup_s
    while time.monotonic() < warm_end:
        session.run(None, feeds)
    end = time.monotonic() + duration_s
    started = time.monotonic()
    while (t := time.monotonic()) < end:
        session.run(None, feeds)
        hist.record(time.monotonic() - t)
        runs += 1
    elapsed = time.monotonic() - started
    return {
        "onnx": onnx_path, "rows": rows, "input_shapes": {s.name: list(concrete_shape(s.shape, rows)) for s in specs},
        "intra_threads": intra_threads, "providers": session.get_providers(), "onnxruntime": ort.__version__,
        "runs": runs, "duration_s": elapsed, "runs_per_s": runs / elapsed, "rows_per_s": runs * rows / elapsed,
        "latency_s": hist.summary(),
    }
