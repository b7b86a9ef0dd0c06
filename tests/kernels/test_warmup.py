"""warm_up compiles every kernel for every dtype and writability the gateway passes."""

from __future__ import annotations

import numpy as np

from kernels import warm_up
from kernels.binning import bin_batch
from kernels.divergence import js_distance, ks_binned, psi
from kernels.moments import merge_moments, update_moments


def test_warm_up_compiles_every_signature_used() -> None:
    warm_up()
    binned = {(s[0].dtype.name, s[0].mutable, s[1].dtype.name) for s in bin_batch.signatures}
    for dtype in ("float32", "float64", "int32", "int64"):
        edges = "float32" if dtype == "float32" else "float64"
        assert {(dtype, True, edges), (dtype, False, edges)} <= binned
    moments = {(s[0].dtype.name, s[0].mutable) for s in update_moments.signatures}
    assert {(d, w) for d in ("float32", "float64", "int32", "int64") for w in (True, False)} <= moments
    for kernel in (merge_moments, psi, js_distance, ks_binned):
        assert kernel.signatures, kernel


def test_warmed_kernels_take_a_request_without_compiling_again() -> None:
    warm_up()
    before = len(bin_batch.signatures)
    values = np.frombuffer(np.arange(12, dtype=np.float32).tobytes(), dtype=np.float32).reshape(3, 4)
    counts = np.zeros((4, 5), np.int64)
    bin_batch(values, np.full((1, 8), 0.5, np.float32), counts)
    assert len(bin_batch.signatures) == before
    assert counts[:, 2].sum() == 11 and counts[:, 1].sum() == 1
