"""Peer servers for the benchmark: MLServer (with and without adaptive batching) and KServe's ModelServer.

Each runs in its own venv (`.venv-mlserver`, `.venv-kserve`) and serves the same ONNX file through
onnxruntime; nothing here imports mlserver, kserve or onnxruntime. See docs/peers.md.
"""

from __future__ import annotations

from loadtests.peers.config import SPECS, Batching
from loadtests.peers.process import PeerEndpoints, PeerStartError, start_peer
from loadtests.peers.setup import ensure_all

PEERS: tuple[str, ...] = tuple(SPECS)


def ensure_peers(*, force: bool = False) -> dict[str, str]:
    """Builds the venvs that are missing or stale; returns peer name -> "ready" or "unavailable: <why>"."""
    by_venv = ensure_all(force=force)
    return {name: by_venv[spec.venv] for name, spec in SPECS.items()}


__all__ = ["PEERS", "Batching", "PeerEndpoints", "PeerStartError", "ensure_peers", "start_peer"]
