"""Writes a model's signature, a seeded request and onnxruntime's answer to it (runs in a peer's venv).

Usage: python reference.py MODEL.onnx OUT.npz [--rows N] [--seed S]
OUT.npz holds `in:<name>` and `out:<name>` arrays and `signature`, a JSON string of inputs and outputs.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
from onnx_session import ORT_TYPES, open_session, signature


def sample_inputs(session: Any, rows: int, seed: int) -> dict[str, np.ndarray]:
    """Values like the demo traffic: floats in [0, 1), small non-negative integers; -1 dims become `rows`."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for arg in session.get_inputs():
        shape = tuple(d if isinstance(d, int) else rows for d in arg.shape)
        dtype = ORT_TYPES[arg.type][1]
        if np.issubdtype(dtype, np.floating):
            feeds[arg.name] = rng.random(shape).astype(dtype)
        else:
            feeds[arg.name] = rng.integers(0, 4, size=shape).astype(dtype)
    return feeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("out")
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    session = open_session(args.model)
    feeds = sample_inputs(session, args.rows, args.seed)
    names = [o.name for o in session.get_outputs()]
    results = session.run(names, feeds)
    arrays = {f"in:{k}": v for k, v in feeds.items()}
    arrays |= {f"out:{k}": v for k, v in zip(names, results, strict=True)}
    np.savez(args.out, signature=np.array(json.dumps(signature(session))), **arrays)


if __name__ == "__main__":
    main()
