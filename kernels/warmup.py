"""Compiles every kernel signature the gateway uses at start-up, then freezes the kernels.

Batches arrive as float32/float64/int32/int64 arrays, writable (after a collate) or read-only (views
over request bytes). Only the read-only forms are compiled: numba runs a writable array on them too
once compiling is switched off, which halves start-up compilation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kernels.binning import EdgeTable, bin_batch, copy_rows
from kernels.divergence import PSI_EPSILON, js_distance, ks_binned, psi
from kernels.moments import merge_moments, new_state, update_moments

DTYPES = (np.float32, np.float64, np.int32, np.int64)
KERNELS: tuple[Any, ...] = (bin_batch, copy_rows, update_moments, merge_moments, new_state, psi, js_distance, ks_binned)


def warm_up() -> None:
    """Compile (or load from numba's disk cache) every kernel, then switch compiling off.

    Afterwards a call with a type nobody warmed up raises TypeError instead of compiling on a request.
    """
    table = EdgeTable(np.array([[0.0, 1.0], [1.0, 2.0]]))
    for dtype in DTYPES:
        values = np.ones((9, 2), dtype=dtype)
        values.flags.writeable = False
        table.bin_into(values, table.new_counts())
        update_moments(values, new_state(2))
        copy_rows(np.empty((9, 2), dtype=dtype), 0, values)
    merge_moments(new_state(2), new_state(2))
    counts = table.new_counts()
    psi(counts, counts, PSI_EPSILON)
    js_distance(counts, counts)
    ks_binned(counts, counts)
    for kernel in KERNELS:
        kernel.disable_compile()
