"""Compiles every kernel signature the gateway uses, so that no request pays for compilation."""

from __future__ import annotations

import numpy as np

from kernels.binning import EdgeTable
from kernels.divergence import PSI_EPSILON, js_distance, ks_binned, psi
from kernels.moments import merge_moments, new_state, update_moments

# Batches arrive as float32/float64/int32/int64 arrays, writable (after a copy or a collate) or
# read-only (numpy views over request bytes); numba compiles each combination separately.
DTYPES = (np.float32, np.float64, np.int32, np.int64)


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel for every dtype and writability."""
    table = EdgeTable(np.array([[0.0, 1.0], [1.0, 2.0]]))
    for dtype in DTYPES:
        for writable in (True, False):
            values = np.ones((9, 2), dtype=dtype)
            values.flags.writeable = writable
            counts = table.new_counts()
            table.bin_into(values, counts)
            update_moments(values, new_state(2))
    state = new_state(2)
    merge_moments(state, new_state(2))
    counts = table.new_counts()
    psi(counts, counts, PSI_EPSILON)
    js_distance(counts, counts)
    ks_binned(counts, counts)
