"""Checks a started peer: health, then one real inference over gRPC (raw contents) and REST (JSON).

Answers are compared with onnxruntime's, computed in the peer's own venv by `runtimes/reference.py`.
Uses only grpcio, numpy and the standard library (no peer package, no onnxruntime here).
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from gateway.protocol.pb import grpc_service_pb2 as pb

DATATYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32, "BOOL": np.bool_}
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


class PeerCheckFailed(Exception):
    """The peer answered, but not as onnxruntime does; the message says how."""


@dataclass(frozen=True)
class Reference:
    """A seeded request and onnxruntime's answer, plus the model's signature."""

    signature: dict[str, Any]
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]


def compute_reference(python: Path, runtimes: Path, model_path: Path, out: Path, timeout: float) -> Reference:
    """Runs reference.py with the peer's Python and loads what it wrote."""
    done = subprocess.run([str(python), str(runtimes / "reference.py"), str(model_path), str(out)],
                          capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise PeerCheckFailed(f"reference run failed: {tail}")
    with np.load(out) as data:
        return Reference(
            signature=json.loads(str(data["signature"])),
            inputs={k[3:]: data[k] for k in data.files if k.startswith("in:")},
            outputs={k[4:]: data[k] for k in data.files if k.startswith("out:")},
        )


def http_status(url: str, timeout: float = 1.0) -> int:
    """The status code of a GET, or 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return 0


def grpc_infer(target: str, model: str, inputs: dict[str, np.ndarray], timeout: float = 10.0
               ) -> dict[str, np.ndarray]:
    """One ModelInfer with raw_input_contents; decodes raw_output_contents (what tritonclient reads)."""
    request = pb.ModelInferRequest(model_name=model)
    for name, array in inputs.items():
        request.inputs.add(name=name, datatype=_datatype(array), shape=list(array.shape))
        request.raw_input_contents.append(np.ascontiguousarray(array).tobytes())
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(MODEL_INFER, request_serializer=pb.ModelInferRequest.SerializeToString,
                                   response_deserializer=pb.ModelInferResponse.FromString)
        reply = call(request, timeout=timeout)
    if len(reply.raw_output_contents) != len(reply.outputs):
        raise PeerCheckFailed("gRPC reply did not use raw_output_contents for every output")
    return {o.name: np.frombuffer(raw, DATATYPES[o.datatype]).reshape(tuple(o.shape))
            for o, raw in zip(reply.outputs, reply.raw_output_contents, strict=True)}


def rest_json_infer(http: str, model: str, inputs: dict[str, np.ndarray], timeout: float = 10.0
                    ) -> dict[str, np.ndarray]:
    """One POST /v2/models/{model}/infer with JSON tensors."""
    body = {"inputs": [{"name": n, "datatype": _datatype(a), "shape": list(a.shape), "data": a.ravel().tolist()}
                       for n, a in inputs.items()]}
    request = urllib.request.Request(f"http://{http}/v2/models/{model}/infer", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        answer = json.loads(reply.read())
    return {o["name"]: np.asarray(o["data"], DATATYPES[o["datatype"]]).reshape(o["shape"])
            for o in answer["outputs"]}


def _datatype(array: np.ndarray) -> str:
    return next(k for k, v in DATATYPES.items() if np.dtype(v) == array.dtype)


def problem(expected: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> str | None:
    """Why `got` differs from `expected` (names, shapes, dtypes, values), or None when they agree."""
    if set(got) != set(expected):
        return f"outputs {sorted(got)} != {sorted(expected)}"
    for name, want in expected.items():
        have = got[name]
        if have.shape != want.shape or have.dtype != want.dtype:
            return f"{name}: {have.dtype}{list(have.shape)} != {want.dtype}{list(want.shape)}"
        if not np.allclose(have, want, rtol=1e-5, atol=1e-6):
            return f"{name}: values differ by up to {np.max(np.abs(have - want))}"
    return None


def check_infer(grpc_target: str, http: str, model: str, ref: Reference) -> None:
    """Raises PeerCheckFailed unless both gRPC and REST JSON return onnxruntime's outputs."""
    for label, infer in (("gRPC", lambda: grpc_infer(grpc_target, model, ref.inputs)),
                         ("REST JSON", lambda: rest_json_infer(http, model, ref.inputs))):
        try:
            why = problem(ref.outputs, infer())
        except (grpc.RpcError, OSError, KeyError, ValueError) as exc:
            why = f"{type(exc).__name__}: {exc}"
        if why:
            raise PeerCheckFailed(f"{label} infer: {why}")
