"""warm_up compiles every kernel for every dtype, then no call compiles again."""

from __future__ import annotations

import numpy as np
import pytest

from kernels import warm_up
from kernels.binning import bin_batch
from kernels.divergence import js_distance, ks_binned, psi
from kernels.moments import merge_moments, new_state, update_moments

DTYPES = ("float32", "float64", "int32", "int64")


def test_warm_up_compiles_every_dtype_in_its_read_only_form() -> None:
    warm_up()
    binned = {(s[0].dtype.name, s[0].mutable, s[1].dtype.name) for s in bin_batch.signatures}
    for dtype in DTYPES:
        assert (dtype, False, "float32" if dtype == "float32" else "float64") in binned
    moments = {(s[0].dtype.name, s[0].mutable) for s in update_moments.signatures}
    assert {(d, False) for d in DTYPES} <= moments
    for kernel in (merge_moments, new_state, psi, js_distance, ks_binned):
        assert kernel.signatures, kernel


@pytest.mark.parametrize("writable", [True, False])
def test_after_warm_up_requests_run_without_compiling(writable: bool) -> None:
    warm_up()
    before = len(bin_batch.signatures), len(update_moments.signatures)
    values = np.frombuffer(np.arange(12, dtype=np.float32).tobytes(), dtype=np.float32).reshape(3, 4)
    values = values.copy() if writable else values
    counts = np.zeros((4, 5), np.int64)
    bin_batch(values, np.full((1, 8), 0.5, np.float32), counts)
    state = new_state(4)
    update_moments(values, state)
    assert (len(bin_batch.signatures), len(update_moments.signatures)) == before
    assert counts[:, 2].sum() == 11 and counts[:, 1].sum() == 1
    assert state[0].sum() == 12


def test_after_warm_up_an_unknown_type_fails_instead_of_compiling() -> None:
    warm_up()
    with pytest.raises(TypeError):
        update_moments(np.ones((2, 2), np.float16), new_state(2))
