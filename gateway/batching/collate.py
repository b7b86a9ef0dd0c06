"""Pure batch assembly: which requests can share a batch, stacking them, and splitting outputs back.

No padding: requests batch together only when every input has the same name, dtype and non-batch
shape. Splitting returns views, so a request's outputs cost no copy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Tensor = np.ndarray[Any, Any]
BatchKey = tuple[tuple[str, str, tuple[int, ...]], ...]


def batch_key(inputs: Mapping[str, Tensor]) -> BatchKey:
    """Requests with equal keys can be stacked along axis 0."""
    return tuple((name, arr.dtype.str, arr.shape[1:]) for name, arr in inputs.items())


def stack(parts: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """Concatenates each input along the batch axis; one part is passed through without a copy."""
    if len(parts) == 1:
        return dict(parts[0])
    return {name: np.concatenate([p[name] for p in parts], axis=0) for name in parts[0]}


def split(outputs: Mapping[str, Tensor], rows: Sequence[int]) -> list[dict[str, Tensor]]:
    """Cuts every output back into per-request views, `rows[i]` rows for request i.

    Raises ValueError when an output's first dimension does not match the batch (a model that is not
    really batchable), so the caller can fail the batch clearly instead of mis-assigning rows.
    """
    total = sum(rows)
    for name, arr in outputs.items():
        if arr.ndim == 0 or arr.shape[0] != total:
            raise ValueError(f"output '{name}' has shape {list(arr.shape)}; expected {total} rows "
                             "(one per batched input row)")
    if len(rows) == 1:
        return [dict(outputs)]
    result: list[dict[str, Tensor]] = []
    start = 0
    for n in rows:
        result.append({name: arr[start:start + n] for name, arr in outputs.items()})
        start += n
    return result
