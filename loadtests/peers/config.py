"""Each peer's launch: its venv, the request forms it accepts, its command line and settings files.

Pure apart from writing MLServer's `settings.json` and `model-settings.json` into a given folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests.peers.setup import VENVS

RUNTIMES_DIR = Path(__file__).resolve().parent / "runtimes"
LOOPBACK = "127.0.0.1"
MAX_GRPC_MESSAGE = 2**31 - 1  # as servegate and Triton; stock limits: gRPC 4 MiB, KServe 8 MiB
# 0: inference runs in the process that serves gRPC and REST, so every peer (and servegate) is one
# process on the 2-core machine. MLServer's default, 1, adds one inference worker process fed over
# multiprocessing queues; it was slower here (see docs/peers.md) and stays available as an option.
MLSERVER_PARALLEL_WORKERS = 0


@dataclass(frozen=True)
class Batching:
    """MLServer adaptive batching: at most `max_batch_size` requests, waiting at most `max_batch_time` s."""

    max_batch_size: int = 64
    max_batch_time: float = 0.005


@dataclass(frozen=True)
class PeerSpec:
    """A peer the benchmark can start. `protocols` uses the load generator's names."""

    name: str
    venv: str
    protocols: tuple[str, ...]
    batching: Batching | None = None


SPECS: dict[str, PeerSpec] = {
    # MLServer has no HTTP binary tensor extension (SeldonIO/MLServer#324): REST is JSON only.
    "mlserver": PeerSpec("mlserver", "mlserver", ("grpc", "rest-json")),
    "mlserver-batching": PeerSpec("mlserver-batching", "mlserver", ("grpc", "rest-json"), Batching()),
    "kserve": PeerSpec("kserve", "kserve", ("grpc", "rest-binary", "rest-json")),
}


@dataclass(frozen=True)
class Ports:
    http: int
    grpc: int
    metrics: int = 0  # MLServer only; 0 turns its metrics server off


@dataclass(frozen=True)
class Launch:
    """What to run: argv, extra environment and working directory."""

    argv: list[str]
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)

    def environment(self) -> dict[str, str]:
        return {**os.environ, **self.env}


def python_of(spec: PeerSpec) -> Path:
    return VENVS[spec.venv].python


def runtime_env(threads: int) -> dict[str, str]:
    """The runtimes import each other from RUNTIMES_DIR; ORT's thread count travels as an env var."""
    return {"PYTHONPATH": str(RUNTIMES_DIR), "PEER_INTRA_OP_THREADS": str(threads),
            "PYTHONUNBUFFERED": "1"}


def mlserver_settings(ports: Ports, workdir: Path, parallel_workers: int) -> dict[str, Any]:
    """Server-wide settings: loopback only, no access log, metrics on their own port or off."""
    return {
        "debug": False,  # MLServer's access log follows `debug`
        "host": LOOPBACK,
        "http_port": ports.http,
        "grpc_port": ports.grpc,
        "grpc_max_message_length": MAX_GRPC_MESSAGE,
        "metrics_port": ports.metrics,
        "metrics_endpoint": "/metrics" if ports.metrics else None,
        "metrics_dir": str(workdir / ".metrics"),
        "environments_dir": str(workdir / ".envs"),
        "parallel_workers": parallel_workers,
        "load_models_at_startup": True,
    }


def mlserver_model_settings(model_name: str, model_path: Path, signature: dict[str, Any],
                            batching: Batching | None) -> dict[str, Any]:
    """Per-model settings: our runtime, the ONNX file, its metadata, and batching when asked."""
    out: dict[str, Any] = {
        "name": model_name,
        "implementation": "mlserver_runtime.OnnxRuntime",
        "parameters": {"uri": str(model_path)},
        "inputs": signature["inputs"],
        "outputs": signature["outputs"],
    }
    if batching is not None:
        out |= {"max_batch_size": batching.max_batch_size, "max_batch_time": batching.max_batch_time}
    return out


def mlserver_launch(spec: PeerSpec, workdir: Path, model_name: str, model_path: Path,
                    signature: dict[str, Any], ports: Ports, threads: int,
                    parallel_workers: int = MLSERVER_PARALLEL_WORKERS) -> Launch:
    """Writes the settings files under `workdir` and returns `mlserver start workdir`."""
    model_dir = workdir / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    settings = mlserver_settings(ports, workdir, parallel_workers)
    model_settings = mlserver_model_settings(model_name, model_path, signature, spec.batching)
    (workdir / "settings.json").write_text(json.dumps(settings, indent=2))
    (model_dir / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    mlserver = VENVS[spec.venv].path / "bin" / "mlserver"
    return Launch([str(mlserver), "start", str(workdir)], workdir, runtime_env(threads))


def kserve_launch(spec: PeerSpec, workdir: Path, model_name: str, model_path: Path,
                  ports: Ports, threads: int) -> Launch:
    """KServe's ModelServer with our Model; it binds 0.0.0.0 / [::] (not configurable), we call loopback."""
    argv = [str(python_of(spec)), str(RUNTIMES_DIR / "kserve_server.py"),
            "--model_name", model_name, "--model_path", str(model_path),
            "--http_port", str(ports.http), "--grpc_port", str(ports.grpc),
            "--grpc_max_send_message_length", str(MAX_GRPC_MESSAGE),
            "--grpc_max_receive_message_length", str(MAX_GRPC_MESSAGE)]
    return Launch(argv, workdir, runtime_env(threads))


def launch_for(spec: PeerSpec, workdir: Path, model_name: str, model_path: Path,
               signature: dict[str, Any], ports: Ports, threads: int,
               parallel_workers: int = MLSERVER_PARALLEL_WORKERS) -> Launch:
    if spec.venv == "mlserver":
        return mlserver_launch(spec, workdir, model_name, model_path, signature, ports, threads,
                               parallel_workers)
    return kserve_launch(spec, workdir, model_name, model_path, ports, threads)
