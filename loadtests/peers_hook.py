"""The seam to peer servers (MLServer, KServe): finds `start_peer` in loadtests.peers when it is there.

The peers package is looked up at run time, so the benchmark works (and says why it skipped peers)
whether or not that package is present; a peer starts in its own venv and serves the same ONNX file.
"""

from __future__ import annotations

import importlib
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_PEERS = ("mlserver", "mlserver-batching", "kserve")
ALL_PROTOCOLS = ("grpc", "rest-binary", "rest-json")


@dataclass(frozen=True)
class PeerApi:
    """`start_peer(name, model_path, model_name, *, http_port, grpc_port, ...)` and the names it knows."""

    start: Callable[..., AbstractContextManager[Any]]
    names: tuple[str, ...]


@dataclass(frozen=True)
class PeerTarget:
    name: str
    grpc: str | None
    http: str | None
    protocols: tuple[str, ...]
    pid: int | None = None


def peer_api() -> PeerApi | str:
    """The peers package's entry points, or why they are unavailable (a reason to print and skip)."""
    try:
        module = importlib.import_module("loadtests.peers")
    except ImportError as exc:
        return f"loadtests.peers cannot be imported ({exc})"
    start = getattr(module, "start_peer", None)
    if not callable(start):
        return "loadtests.peers provides no start_peer(name, model_path, model_name, ...) yet"
    names = getattr(module, "PEERS", DEFAULT_PEERS)
    return PeerApi(start, tuple(names))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def peer_targets(api: PeerApi, name: str, model_file: Path, model_name: str,
                 intra_op_threads: int) -> Iterator[PeerTarget]:
    """Starts one peer serving `model_file` as `model_name` on free ports; stops it on exit."""
    extra = {"intra_op_threads": intra_op_threads} if intra_op_threads > 0 else {}
    with api.start(name, model_file, model_name, http_port=_free_port(), grpc_port=_free_port(),
                   **extra) as ends:
        protocols = tuple(getattr(ends, "protocols", ALL_PROTOCOLS))
        pid = getattr(ends, "pid", None)
        yield PeerTarget(f"peer-{name}", str(ends.grpc), str(ends.http), protocols,
                         pid if isinstance(pid, int) else None)
