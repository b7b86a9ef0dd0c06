"""Histogram binning of a batch (rows x features) against per-feature bin edges, on the hot path.

Count layout per feature, with E edges: slot 0 = -inf, slots 1..E+1 = finite bins, E+2 = +inf, E+3 = NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit
from numba.extending import overload

# Rows are compared eight at a time so that each edge row is loaded once per block; eight lanes of
# float32 (AVX2) is also why features are padded to a multiple of eight.
BLOCK = 8
LANES = 8
EXTRA_SLOTS = 4  # -inf, the bin below the first edge, +inf, NaN: slots = edges + 4


def slots_for(n_edges: int) -> int:
    """Number of count slots per feature for `n_edges` edges."""
    return n_edges + EXTRA_SLOTS


def padded_features(features: int) -> int:
    """Width of the kernel's edge tables: `features` rounded up to a multiple of LANES."""
    return -(-features // LANES) * LANES


@njit(cache=True, nogil=True)
def _count_non_finite(row: Any, tail: Any) -> None:
    for f in range(row.shape[0]):
        v = row[f]
        if v != v:
            tail[2, f] += 1
        elif v == np.inf:
            tail[1, f] += 1
        elif v == -np.inf:
            tail[0, f] += 1


@njit(cache=True, nogil=True)
def _scan_rows(values: Any, tail: Any) -> None:
    # An integer reduction vectorises (and vanishes for integer dtypes); only rows holding a NaN or
    # an infinity take the slow path.
    for r in range(values.shape[0]):
        row = values[r]
        bad = np.int32(0)
        for f in range(row.shape[0]):
            v = row[f]
            bad += np.int32(v - v != 0)  # NaN for NaN and for +-inf
        if bad:
            _count_non_finite(row, tail)


@njit(cache=True, nogil=True)
def _any_non_finite(flat: Any) -> bool:
    bad = np.int32(0)
    for i in range(flat.shape[0]):
        v = flat[i]
        bad += np.int32(v - v != 0)
    return bool(bad > 0)


@njit(cache=True, nogil=True)
def _stage(flat: Any, start: int, rows: int, features: int, edges: Any) -> Any:
    # Rows from `start` on, flat and converted to the edges' dtype, followed by NaN (never >= an
    # edge) up to a whole block of rows plus one padded width, so that every read stays inside.
    blocks = (rows - start + BLOCK - 1) // BLOCK
    n = (rows - start) * features
    work = np.empty(blocks * BLOCK * features + edges.shape[1], edges.dtype)
    offset = start * features
    for i in range(n):
        work[i] = flat[offset + i]
    work[n:] = np.nan
    return work


@njit(cache=True, nogil=True)
def _count_at_or_above(flat: Any, stride: int, blocks: int, edges: Any, ge: Any) -> None:
    # ge[j, f] += how many rows have value >= edges[j, f], for `blocks` blocks of rows of `flat`
    # (a row every `stride` values). Branchless compares over the full padded width; past a row's
    # own features a read lands in the next row, and only the discarded pad columns see it.
    n_edges, width = edges.shape
    for b in range(blocks):
        o = b * BLOCK * stride
        x0, x1 = flat[o : o + width], flat[o + stride : o + stride + width]
        x2, x3 = flat[o + 2 * stride : o + 2 * stride + width], flat[o + 3 * stride : o + 3 * stride + width]
        x4, x5 = flat[o + 4 * stride : o + 4 * stride + width], flat[o + 5 * stride : o + 5 * stride + width]
        x6, x7 = flat[o + 6 * stride : o + 6 * stride + width], flat[o + 7 * stride : o + 7 * stride + width]
        for j in range(n_edges):
            e = edges[j]
            acc = ge[j]
            for f in range(width):
                ef = e[f]
                acc[f] += (
                    np.int32(x0[f] >= ef) + np.int32(x1[f] >= ef) + np.int32(x2[f] >= ef)
                    + np.int32(x3[f] >= ef) + np.int32(x4[f] >= ef) + np.int32(x5[f] >= ef)
                    + np.int32(x6[f] >= ef) + np.int32(x7[f] >= ef)
                )


def _count_in_place(values: Any, edges: Any, ge: Any, tail: Any) -> int:
    """Count what can be compared without a copy; returns the first row left to stage (typed below)."""
    raise NotImplementedError("only callable from compiled kernels")


@overload(_count_in_place)
def _count_in_place_typed(values: Any, edges: Any, ge: Any, tail: Any) -> Any:
    # Chosen when a kernel is compiled: batches of another dtype than the edges (integers) are
    # staged whole, and the in-place comparison is never compiled for them.
    if values.dtype != edges.dtype:

        def scan_only(values: Any, edges: Any, ge: Any, tail: Any) -> int:
            _scan_rows(values, tail)
            return 0

        return scan_only

    def in_place(values: Any, edges: Any, ge: Any, tail: Any) -> int:
        rows, features = values.shape
        width = edges.shape[1]
        flat = values.reshape(-1)  # C-contiguous, so a view
        if _any_non_finite(flat):
            _scan_rows(values, tail)
        # Whole blocks whose last row's padded read still ends inside the batch.
        start: int = max(0, rows * features - width + features) // features // BLOCK * BLOCK
        start = min(start, rows // BLOCK * BLOCK)
        _count_at_or_above(flat, features, start // BLOCK, edges, ge)
        return start

    return in_place


@njit(cache=True, nogil=True)
def _add_counts(rows: int, ge: Any, tail: Any, counts: Any) -> None:
    # Bin k holds the values with exactly k edges at or below them: the difference of two ge counts.
    # +inf is >= every edge, so it is taken out of the top finite bin; -inf and NaN are >= none.
    n_edges = ge.shape[0]
    for f in range(counts.shape[0]):
        pinf = tail[1, f]
        above = rows - tail[0, f] - tail[2, f]
        counts[f, 0] += tail[0, f]
        for j in range(n_edges):
            g = ge[j, f]
            counts[f, 1 + j] += above - g
            above = g
        counts[f, n_edges + 1] += above - pinf
        counts[f, n_edges + 2] += pinf
        counts[f, n_edges + 3] += tail[2, f]


@njit(cache=True)
def bin_batch(values: Any, edges: Any, counts: Any) -> None:
    """Add the histogram of C-contiguous `values` [rows, F] into `counts` [F, E + 4] (int64).

    `edges` is [E, W] with W >= F, each column sorted ascending (pad columns and unused edges with
    +inf); float32 values take float32 edges, everything else float64 edges.

    It holds the GIL. It runs on an inference worker thread beside the event loop, for tens of
    microseconds: letting the GIL go would make the worker wait for the loop to hand it back (up to
    the interpreter's switch interval) before it can post the next batch.
    """
    rows, features = values.shape
    n_edges, width = edges.shape
    if width < features or counts.shape[0] != features or counts.shape[1] != n_edges + EXTRA_SLOTS:
        raise ValueError("bin_batch: expected edges [E, W >= F] and counts [F, E + 4]")
    if features == 0:
        return
    tail = np.zeros((3, features), np.int64)
    ge = np.zeros((n_edges, width), np.int32)
    start = _count_in_place(values, edges, ge, tail)
    if start < rows:
        work = _stage(values.reshape(-1), start, rows, features, edges)
        _count_at_or_above(work, features, (rows - start + BLOCK - 1) // BLOCK, edges, ge)
    _add_counts(rows, ge, tail, counts)


@njit(cache=True)
def copy_rows(dst: Any, start: int, src: Any) -> None:
    """Copy `src` [rows, F] into `dst` [capacity, F] from row `start` (same dtype, caller checks room).

    Holds the GIL: a few kilobytes copy in less time than a hand-over of the GIL to the event loop
    and back would take (numpy's own copy lets the GIL go from 500 elements on).
    """
    rows, features = src.shape
    for r in range(rows):
        for f in range(features):
            dst[start + r, f] = src[r, f]


def float32_edges(edges: np.ndarray[Any, np.dtype[np.float64]]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """The smallest float32 at or above each float64 edge.

    For a float32 value x, x >= e (in float64) exactly when x >= this rounded-up edge, so float32
    batches bin identically to the float64 reference while comparing twice as many lanes at once.
    """
    near = edges.astype(np.float32)
    low = near.astype(np.float64) < edges
    near[low] = np.nextafter(near[low], np.float32(np.inf))
    return near


class EdgeTable:
    """Kernel-ready edges of one tensor: float64 and float32 tables, padded to the lane width."""

    __slots__ = ("edges32", "edges64", "features", "n_edges", "slots")

    def __init__(self, edges: np.ndarray[Any, np.dtype[Any]]) -> None:
        """`edges` is [E, F], each column ascending; +inf marks unused edges."""
        table = np.asarray(edges, dtype=np.float64)
        if table.ndim != 2:
            raise ValueError(f"edges: expected a 2-D array [edges, features], got shape {table.shape}")
        if np.isnan(table).any() or (table[1:] < table[:-1]).any():
            raise ValueError("edges: expected each feature's edges in ascending order, without NaN")
        self.n_edges, self.features = table.shape
        self.slots = slots_for(self.n_edges)
        wide = np.full((self.n_edges, padded_features(self.features)), np.inf)
        wide[:, : self.features] = table
        self.edges64 = wide
        self.edges32 = float32_edges(wide)

    def new_counts(self) -> np.ndarray[Any, np.dtype[np.int64]]:
        """A zeroed count array [features, slots] for this table."""
        return np.zeros((self.features, self.slots), np.int64)

    def bin_into(self, values: np.ndarray[Any, np.dtype[Any]], counts: np.ndarray[Any, np.dtype[np.int64]]) -> None:
        """Add a [rows, features] float32/float64/int32/int64 batch into `counts`."""
        if not values.flags.c_contiguous:
            values = np.ascontiguousarray(values)
        if values.dtype.char == "f":  # float32; cheaper to test than a dtype comparison
            bin_batch(values, self.edges32, counts)
        else:
            bin_batch(values, self.edges64, counts)
