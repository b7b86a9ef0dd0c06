"""Which request forms each peer accepts, asked with stock tritonclient (gRPC, HTTP) and raw protobuf.

Run from the main venv: python -m loadtests.peers.check [--peers mlserver,kserve] [--log-dir DIR]
Serves the demo `mlp` and `tabular` models, sends one single-row request in each form and compares
the answer with onnxruntime's (computed in the peer's venv). Prints one line per peer, model and form.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from gateway.demo.models import build_mlp, build_tabular
from gateway.protocol.pb import grpc_service_pb2 as pb
from loadtests.peers import PEERS, start_peer
from loadtests.peers.config import RUNTIMES_DIR, SPECS, python_of
from loadtests.peers.verify import DATATYPES, MODEL_INFER, compute_reference, problem

FORMS = ("grpc-raw", "grpc-typed", "rest-binary", "rest-json", "rest-json+ct")
TYPED_FIELDS = {"FP32": "fp32_contents", "FP64": "fp64_contents", "INT64": "int64_contents",
                "INT32": "int_contents", "BOOL": "bool_contents"}
Arrays = dict[str, np.ndarray]


def _datatype(array: np.ndarray) -> str:
    return next(k for k, v in DATATYPES.items() if np.dtype(v) == array.dtype)


def triton_grpc(target: str, model: str, inputs: Arrays, outputs: list[str]) -> Arrays:
    """tritonclient.grpc: inputs go as raw_input_contents; as_numpy reads raw_output_contents only."""
    client = grpcclient.InferenceServerClient(target)
    tensors = []
    for name, array in inputs.items():
        tensor = grpcclient.InferInput(name, list(array.shape), _datatype(array))
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    result = client.infer(model, tensors, client_timeout=10.0)
    client.close()
    return {name: result.as_numpy(name) for name in outputs}


def typed_grpc(target: str, model: str, inputs: Arrays, outputs: list[str]) -> Arrays:
    """Raw protobuf with typed `contents` (fp32_contents, ...); reads typed or raw replies."""
    request = pb.ModelInferRequest(model_name=model)
    for name, array in inputs.items():
        tensor = request.inputs.add(name=name, datatype=_datatype(array), shape=list(array.shape))
        getattr(tensor.contents, TYPED_FIELDS[tensor.datatype]).extend(array.ravel().tolist())
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(MODEL_INFER, request_serializer=pb.ModelInferRequest.SerializeToString,
                                   response_deserializer=pb.ModelInferResponse.FromString)
        reply = call(request, timeout=10.0)
    got = {}
    for i, out in enumerate(reply.outputs):
        dtype = DATATYPES[out.datatype]
        if reply.raw_output_contents:
            flat = np.frombuffer(reply.raw_output_contents[i], dtype)
        else:
            flat = np.asarray(getattr(out.contents, TYPED_FIELDS[out.datatype]), dtype)
        got[out.name] = flat.reshape(tuple(out.shape))
    return got


def triton_http(binary: bool, headers: dict[str, str] | None = None
                ) -> Callable[[str, str, Arrays, list[str]], Arrays]:
    """tritonclient.http with the binary tensor extension (its default) or plain JSON, both directions.

    tritonclient sends pure JSON without a Content-Type header; `headers` can add one.
    """
    def call(target: str, model: str, inputs: Arrays, outputs: list[str]) -> Arrays:
        client = httpclient.InferenceServerClient(target, network_timeout=10.0)
        tensors = []
        for name, array in inputs.items():
            tensor = httpclient.InferInput(name, list(array.shape), _datatype(array))
            tensor.set_data_from_numpy(array, binary_data=binary)
            tensors.append(tensor)
        wanted = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in outputs]
        result = client.infer(model, tensors, outputs=wanted, headers=headers)
        client.close()
        return {name: result.as_numpy(name) for name in outputs}
    return call


CALLERS = {"grpc-raw": triton_grpc, "grpc-typed": typed_grpc,
           "rest-binary": triton_http(True), "rest-json": triton_http(False),
           "rest-json+ct": triton_http(False, {"Content-Type": "application/json"})}


def verdict(form: str, grpc_target: str, http: str, model: str, inputs: Arrays, expected: Arrays) -> str:
    target = http if form.startswith("rest") else grpc_target
    try:
        got = CALLERS[form](target, model, inputs, list(expected))
    except (InferenceServerException, grpc.RpcError, OSError, ValueError, KeyError, TypeError) as exc:
        return "rejected: " + " ".join(str(exc).split())[:160]
    if any(v is None for v in got.values()):
        return "unreadable: the client found no data for an output"
    why = problem(expected, {k: np.asarray(v) for k, v in got.items()})
    return f"wrong: {why}" if why else "ok"


def check_peer(peer: str, models: dict[str, Path], log_dir: Path | None, ports: tuple[int, int]) -> list[str]:
    lines = []
    for model, path in models.items():
        with tempfile.TemporaryDirectory() as tmp:
            ref = compute_reference(python_of(SPECS[peer]), RUNTIMES_DIR, path, Path(tmp) / "r.npz", 120.0)
        with start_peer(peer, path, model, http_port=ports[0], grpc_port=ports[1], log_dir=log_dir) as ep:
            for form in FORMS:
                lines.append(f"{peer:18} {model:8} {form:13} "
                             f"{verdict(form, ep.grpc, ep.http, model, ref.inputs, ref.outputs)}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--log-dir", type=Path)
    parser.add_argument("--http-port", type=int, default=18080)
    parser.add_argument("--grpc-port", type=int, default=18081)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as repo:
        models = {"mlp": build_mlp(Path(repo)), "tabular": build_tabular(Path(repo))}
        for peer in args.peers.split(","):
            for line in check_peer(peer, models, args.log_dir, (args.http_port, args.grpc_port)):
                print(line, flush=True)


if __name__ == "__main__":
    main()
