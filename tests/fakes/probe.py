"""A `ModelProbe` whose models are scripted: fixed signatures, outputs computed by a function, and
given latency samples, for unit tests of the validation gates without an inference runtime."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Arrays = dict[str, np.ndarray[Any, Any]]


def tensor(name: str, datatype: str, shape: list[int]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape}


def signature(inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"inputs": inputs, "outputs": outputs, "batchable": True}


@dataclass
class FakeModel:
    signature: dict[str, Any]
    outputs: Callable[[Arrays], Arrays] = lambda inputs: {}
    latencies: list[float] = field(default_factory=lambda: [1.0] * 20)
    fail_predict: Exception | None = None
    latency_calls: list[tuple[int, int]] = field(default_factory=list)
    seen: list[Arrays] = field(default_factory=list)

    def predict(self, inputs: Arrays) -> Arrays:
        self.seen.append(inputs)
        if self.fail_predict is not None:
            raise self.fail_predict
        return self.outputs(inputs)

    def latency_ms(self, batch_rows: int, runs: int) -> list[float]:
        self.latency_calls.append((batch_rows, runs))
        return list(self.latencies)


class FakeProbe:
    """Artifacts are looked up by resolved path; an Exception registered for a path is raised on load."""

    def __init__(self) -> None:
        self._models: dict[str, FakeModel | Exception] = {}
        self.loaded: list[str] = []

    def add(self, path: str | Path, model: FakeModel | Exception) -> None:
        self._models[str(Path(path).resolve())] = model

    def load(self, artifact_path: str) -> FakeModel:
        key = str(Path(artifact_path).resolve())
        self.loaded.append(key)
        found = self._models.get(key)
        if found is None:
            raise FileNotFoundError(f"no scripted model for {artifact_path}")
        if isinstance(found, Exception):
            raise found
        return found
