"""Fake batch runners for queue tests: record each batch, optionally block, fail, or fail on a marker value."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

Tensor = np.ndarray[Any, Any]


class RecordingRunner:
    """Doubles the input `x`; remembers every batch's row count. `gate` can hold a batch until released."""

    def __init__(self, fail_on: float | None = None, fail_all: bool = False) -> None:
        self.batches: list[int] = []
        self.fail_on = fail_on
        self.fail_all = fail_all
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, feeds: dict[str, Tensor]) -> dict[str, Tensor]:
        self.started.set()
        self.gate.wait(10)
        x = feeds["x"]
        with self._lock:
            self.batches.append(int(x.shape[0]))
        if self.fail_all:
            raise RuntimeError("runtime exploded")
        if self.fail_on is not None and np.any(x == self.fail_on):
            raise RuntimeError(f"value {self.fail_on} is out of range")
        return {"y": x * 2}
