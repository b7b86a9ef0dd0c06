"""The registry's validation gates run models through this: ONNX Runtime behind the `ModelProbe` port."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from gateway.inference.session import OrtSession, zero_feeds
from gateway.types import DATATYPES


class OrtLoadedModel:
    """One artifact loaded for gate checks (holdout evaluation, latency smoke test)."""

    def __init__(self, path: str) -> None:
        self._session = OrtSession(Path(path), provider="auto", intra_op_threads=1)
        self.signature: dict[str, Any] = self._session.signature.to_dict()

    def predict(self, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        feeds = {}
        for spec in self._session.signature.inputs:
            if spec.name not in inputs:
                raise ValueError(f"holdout has no input '{spec.name}'; it has {sorted(inputs)}")
            feeds[spec.name] = _cast(inputs[spec.name], spec.datatype)
        return self._session.run(feeds)

    def latency_ms(self, batch_rows: int, runs: int) -> list[float]:
        feeds = zero_feeds(self._session.signature, batch_rows)
        self._session.run(feeds)  # the first run allocates; do not time it
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            self._session.run(feeds)
            samples.append((time.perf_counter() - started) * 1000.0)
        return samples


class OrtProbe:
    def load(self, artifact_path: str) -> OrtLoadedModel:
        return OrtLoadedModel(artifact_path)


def _cast(array: np.ndarray[Any, Any], datatype: str) -> np.ndarray[Any, Any]:
    dtype = DATATYPES[datatype].numpy
    return array if array.dtype == dtype else array.astype(dtype)
