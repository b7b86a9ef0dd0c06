"""Micro-benchmark of the drift kernels against their numpy baselines, side by side in one run.

    python -m loadtests.kernel_bench [--json out.json] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numba
import numpy as np

from kernels import warm_up
from kernels.binning import EdgeTable
from kernels.divergence import PSI_EPSILON, psi
from kernels.moments import new_state, update_moments
from kernels.profile import quantile_edges

Array = np.ndarray[Any, np.dtype[Any]]
SHAPES = ((64, 30), (64, 784))
BINS = 10


def numpy_binning(values: Array, edges: Array, counts: Array) -> None:
    """The baseline: np.searchsorted + np.bincount, one feature at a time."""
    slots = counts.shape[1]
    for f in range(values.shape[1]):
        counts[f] += np.bincount(np.searchsorted(edges[:, f], values[:, f], side="right") + 1, minlength=slots)


def numpy_moments(values: Array, state: Array) -> None:
    """The baseline: vectorised numpy moments of the batch, merged into the state the same way."""
    x = values.astype(np.float64)
    n = np.isfinite(x).sum(axis=0).astype(np.float64)
    mean = x.mean(axis=0)
    m2 = ((x - mean) ** 2).sum(axis=0)
    total = state[0] + n
    delta = mean - state[1]
    state[1] += delta * n / total
    state[2] += m2 + delta**2 * state[0] * n / total
    state[0] = total
    np.minimum(state[3], x.min(axis=0), out=state[3])
    np.maximum(state[4], x.max(axis=0), out=state[4])


def median_ns(fn: Callable[[], object], calls: int, group: int = 20) -> float:
    """Median time of one call: `calls` calls timed in groups of `group`, on this thread's CPU clock.

    The thread's CPU clock leaves out the time the thread waits for a core, which on a shared machine
    would otherwise dominate; grouping calls keeps the clock's own cost out of the figure.
    """
    fn()
    times = np.empty(max(calls // group, 1))
    for i in range(times.size):
        start = time.thread_time_ns()
        for _ in range(group):
            fn()
        times[i] = (time.thread_time_ns() - start) / group
    return float(np.median(times))


def side_by_side(kernel: Callable[[], object], baseline: Callable[[], object], calls: int, rounds: int = 5) -> tuple[float, float]:
    """Alternate kernel and baseline rounds so that both see the same machine; median of the rounds."""
    k, b = [], []
    for _ in range(rounds):
        k.append(median_ns(kernel, calls))
        b.append(median_ns(baseline, max(calls // 50, 20), group=2))
    return float(np.median(k)), float(np.median(b))


def case(rows: int, features: int, repeat: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    reference = rng.normal(size=(5000, features))
    edges = np.full((BINS - 1, features), np.inf)
    for f in range(features):
        col = quantile_edges(reference[:, f], BINS)
        edges[: len(col), f] = col
    table = EdgeTable(edges)
    values = rng.normal(size=(rows, features)).astype(np.float32)
    counts = table.new_counts()
    state = new_state(features)
    expected, actual = table.new_counts(), table.new_counts()
    numpy_binning(values, edges, expected)
    table.bin_into(values, actual)
    if not np.array_equal(expected, actual):
        raise RuntimeError("kernel and numpy baseline disagree; the timing would be meaningless")
    results = []
    pairs = (
        ("bin float32", lambda: table.bin_into(values, counts), lambda: numpy_binning(values, edges, counts)),
        ("moments float32", lambda: update_moments(values, state), lambda: numpy_moments(values, state)),
    )
    for name, kernel, baseline in pairs:
        k, b = side_by_side(kernel, baseline, repeat)
        results.append(_row(name, rows, features, k, b))
    stat_k = median_ns(lambda: psi(expected, actual, PSI_EPSILON), repeat)
    results.append(_row("psi of a window", features, table.slots, stat_k, None))
    return results


def _row(name: str, rows: int, features: int, kernel_ns: float, baseline_ns: float | None) -> dict[str, Any]:
    values = rows * features
    return {
        "kernel": name,
        "shape": f"{rows}x{features}",
        "kernel_us": kernel_ns / 1e3,
        "kernel_ns_per_value": kernel_ns / values,
        "numpy_us": None if baseline_ns is None else baseline_ns / 1e3,
        "numpy_ns_per_value": None if baseline_ns is None else baseline_ns / values,
        "speedup": None if baseline_ns is None else baseline_ns / kernel_ns,
    }


def table_markdown(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| kernel | shape | kernel µs/batch | kernel ns/value | numpy µs/batch | numpy ns/value | speed-up |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        baseline = "| - | - | - |" if r["speedup"] is None else (
            f"| {r['numpy_us']:.1f} | {r['numpy_ns_per_value']:.1f} | {r['speedup']:.1f}x |"
        )
        lines.append(f"| {r['kernel']} | {r['shape']} | {r['kernel_us']:.2f} | {r['kernel_ns_per_value']:.2f} " + baseline)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--repeat", type=int, default=4000, help="timed calls of a kernel per round (5 rounds)")
    parser.add_argument("--md", type=Path, help="also write a Markdown section (e.g. docs/bench/kernels.md)")
    args = parser.parse_args(argv)
    if args.repeat < 20:
        parser.error("--repeat: expected at least 20")
    warm_up()
    rng = np.random.default_rng(0)
    rows = [r for shape in SHAPES for r in case(*shape, args.repeat, rng)]
    table = table_markdown(rows)
    print(table)
    if args.md:
        command = "python -m loadtests.kernel_bench " + " ".join(argv if argv is not None else sys.argv[1:])
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(f"## Drift kernels\n\nMeasured by `{command.strip()}` (load average {load}): each "
                           "kernel against its numpy baseline, side by side in one process, medians of timed "
                           f"rounds.\n\n{table}\n")
    if args.json:
        meta = {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
                "machine": platform.machine(), "processor": platform.processor()}
        args.json.write_text(json.dumps({"meta": meta, "results": rows}, indent=2, allow_nan=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
