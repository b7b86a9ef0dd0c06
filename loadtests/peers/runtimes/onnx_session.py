"""Opens an ONNX file the same way for every peer: CPU provider, fixed thread counts, no spinning.

Imported by the peer runtimes inside the peers' own venvs (it needs onnxruntime and numpy there).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnxruntime as ort

THREADS_ENV = "PEER_INTRA_OP_THREADS"
DEFAULT_INTRA_OP_THREADS = 1

# ONNX element types the demo models use, as Open Inference Protocol datatypes and numpy dtypes.
ORT_TYPES: dict[str, tuple[str, Any]] = {
    "tensor(float)": ("FP32", np.float32),
    "tensor(double)": ("FP64", np.float64),
    "tensor(int64)": ("INT64", np.int64),
    "tensor(int32)": ("INT32", np.int32),
    "tensor(bool)": ("BOOL", np.bool_),
}
NUMPY_TO_DATATYPE = {np.dtype(dt): name for name, dt in ORT_TYPES.values()}


def intra_op_threads() -> int:
    """The thread count the launcher chose (env var), else one: the event loop keeps the other core."""
    return int(os.environ.get(THREADS_ENV, DEFAULT_INTRA_OP_THREADS))


def open_session(path: str, threads: int | None = None) -> ort.InferenceSession:
    """The same options as servegate's own session on a 2-core machine: 1 intra-op thread, sequential."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or intra_op_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def input_dtypes(session: ort.InferenceSession) -> dict[str, Any]:
    """Input name -> numpy dtype, so JSON numbers are cast to what the graph wants."""
    return {i.name: ORT_TYPES[i.type][1] for i in session.get_inputs()}


def datatype_of(array: np.ndarray) -> str:
    """The protocol datatype of an output array (FP32, INT64, ...)."""
    return NUMPY_TO_DATATYPE[array.dtype]


def tensor_metadata(args: list[Any]) -> list[dict[str, Any]]:
    """ORT NodeArgs as protocol tensor metadata; symbolic or unknown dims become -1."""
    return [{"name": a.name, "datatype": ORT_TYPES[a.type][0],
             "shape": [d if isinstance(d, int) else -1 for d in a.shape]} for a in args]


def signature(session: ort.InferenceSession) -> dict[str, list[dict[str, Any]]]:
    """The model's inputs and outputs as the metadata endpoints report them."""
    return {"inputs": tensor_metadata(session.get_inputs()),
            "outputs": tensor_metadata(session.get_outputs())}
