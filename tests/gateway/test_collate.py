"""Stacking and splitting: split(stack(parts)) gives back every part; incompatible shapes never share a key."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.batching import collate


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.integers(1, 5), min_size=1, max_size=8), width=st.integers(1, 6))
def test_split_of_stack_returns_each_part(rows: list[int], width: int) -> None:
    rng = np.random.default_rng(len(rows) * 31 + width)
    parts = [{"x": rng.random((n, width), dtype=np.float32)} for n in rows]
    stacked = collate.stack(parts)
    assert stacked["x"].shape == (sum(rows), width)
    back = collate.split({"y": stacked["x"]}, rows)
    assert len(back) == len(parts)
    for part, out in zip(parts, back, strict=True):
        np.testing.assert_array_equal(part["x"], out["y"])


def test_keys_differ_for_other_shapes_and_dtypes() -> None:
    a = collate.batch_key({"x": np.zeros((2, 3), np.float32)})
    assert a == collate.batch_key({"x": np.zeros((7, 3), np.float32)})
    assert a != collate.batch_key({"x": np.zeros((2, 4), np.float32)})
    assert a != collate.batch_key({"x": np.zeros((2, 3), np.float64)})


def test_split_refuses_outputs_without_one_row_per_input_row() -> None:
    with pytest.raises(ValueError, match="expected 3 rows"):
        collate.split({"y": np.zeros((2, 1))}, [1, 2])


def test_split_returns_views_not_copies() -> None:
    out = np.arange(6.0).reshape(3, 2)
    parts = collate.split({"y": out}, [1, 2])
    assert np.shares_memory(parts[1]["y"], out)
