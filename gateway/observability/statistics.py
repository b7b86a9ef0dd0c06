"""Triton-style cumulative statistics per model version (the ModelStatistics RPC and `/stats`).

Durations are kept in nanoseconds with counts, as Triton's tools expect; batch statistics are kept
per executed batch size.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)

    def to_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass(slots=True)
class VersionStatistics:
    model: str
    version: str
    inference_count: int = 0  # rows inferred
    execution_count: int = 0  # batches run
    last_inference_ms: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    batches: dict[int, Duration] = field(default_factory=dict)  # batch rows -> compute time
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def batch(self, rows: int, compute_s: float) -> None:
        """Event loop, once per executed batch, after its replies."""
        with self._lock:
            self.execution_count += 1
            self.inference_count += rows
            self.compute_infer.add(compute_s)
            self.batches.setdefault(rows, Duration()).add(compute_s)
            self.last_inference_ms = int(time.time() * 1000)

    def request(self, ok: bool, seconds: float, queue_s: float) -> None:
        """Event loop, once per request."""
        with self._lock:
            (self.success if ok else self.fail).add(seconds)
            if ok:
                self.queue.add(queue_s)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of Triton's ModelStatistics message (proto field names)."""
        with self._lock:
            zero = Duration().to_dict()
            return {
                "name": self.model,
                "version": self.version,
                "last_inference": self.last_inference_ms,
                "inference_count": self.inference_count,
                "execution_count": self.execution_count,
                "inference_stats": {
                    "success": self.success.to_dict(), "fail": self.fail.to_dict(),
                    "queue": self.queue.to_dict(), "compute_input": zero,
                    "compute_infer": self.compute_infer.to_dict(), "compute_output": zero,
                    "cache_hit": zero, "cache_miss": zero,
                },
                "batch_stats": [
                    {"batch_size": rows, "compute_input": zero, "compute_infer": d.to_dict(),
                     "compute_output": zero}
                    for rows, d in sorted(self.batches.items())
                ],
            }
