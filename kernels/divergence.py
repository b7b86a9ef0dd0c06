"""Per-feature drift statistics from two count arrays [F, S]: PSI, Jensen-Shannon distance, binned KS.

`expected` is the baseline (reference or stable arm), `actual` the window under test. A feature with
no observations on either side scores NaN: there is nothing to compare.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

# Floor for a bin's proportion in PSI: an empty bin would otherwise give log(0). 1e-4 keeps one
# empty bin against a 5% bin at about 0.3, alarming but finite.
PSI_EPSILON = 1e-4


@njit(cache=True, nogil=True)
def _check(expected: Any, actual: Any) -> None:
    if expected.shape[0] != actual.shape[0] or expected.shape[1] != actual.shape[1]:
        raise ValueError("drift statistics: expected and actual counts must have the same shape [F, S]")


@njit(cache=True, nogil=True)
def psi(expected: Any, actual: Any, epsilon: float) -> Any:
    """Population stability index per feature: sum over slots of (a - e) * ln(a / e).

    e and a are the slot proportions, each floored at `epsilon` (not renormalised).
    """
    _check(expected, actual)
    features, slots = expected.shape
    out = np.empty(features)
    for f in range(features):
        te = expected[f].sum()
        ta = actual[f].sum()
        if te == 0 or ta == 0:
            out[f] = np.nan
            continue
        s = 0.0
        for k in range(slots):
            e = max(expected[f, k] / te, epsilon)
            a = max(actual[f, k] / ta, epsilon)
            s += (a - e) * np.log(a / e)
        out[f] = s
    return out


@njit(cache=True, nogil=True)
def js_distance(expected: Any, actual: Any) -> Any:
    """Jensen-Shannon distance per feature in base 2 (0 = same distribution, 1 = disjoint)."""
    _check(expected, actual)
    features, slots = expected.shape
    out = np.empty(features)
    for f in range(features):
        te = expected[f].sum()
        ta = actual[f].sum()
        if te == 0 or ta == 0:
            out[f] = np.nan
            continue
        s = 0.0
        for k in range(slots):
            p = expected[f, k] / te
            q = actual[f, k] / ta
            m = 0.5 * (p + q)
            if p > 0.0:
                s += 0.5 * p * np.log(p / m)
            if q > 0.0:
                s += 0.5 * q * np.log(q / m)
        out[f] = np.sqrt(max(s, 0.0) / np.log(2.0))
    return out


@njit(cache=True, nogil=True)
def ks_binned(expected: Any, actual: Any) -> Any:
    """Largest gap between the two cumulative distributions over the ordered slots, per feature.

    The ordered slots are -inf, the finite bins, +inf; the NaN slot (last) has no place in an order
    and is left out, so both CDFs are over the non-NaN observations.
    """
    _check(expected, actual)
    features, slots = expected.shape
    out = np.empty(features)
    for f in range(features):
        te = expected[f, : slots - 1].sum()
        ta = actual[f, : slots - 1].sum()
        if te == 0 or ta == 0:
            out[f] = np.nan
            continue
        ce = 0.0
        ca = 0.0
        gap = 0.0
        for k in range(slots - 1):
            ce += expected[f, k]
            ca += actual[f, k]
            gap = max(gap, abs(ce / te - ca / ta))
        out[f] = gap
    return out
