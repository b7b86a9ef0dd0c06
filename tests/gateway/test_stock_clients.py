"""Stock clients against the running gateway: outputs equal in-process ONNX Runtime on the same inputs.

tritonclient over gRPC (raw contents) and HTTP (binary extension and JSON), and the KServe SDK's V2
REST and gRPC clients, for a float tabular model, an MLP and a model with an FP32 and an INT64 input.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp

from gateway.demo import models
from tests.gateway.harness import GatewayThread

pytestmark = pytest.mark.integration

Inputs = dict[str, np.ndarray]


def cases(repo: Path) -> list[tuple[str, str, Inputs]]:
    x, _ = models.tabular_data(seed=3)
    return [
        ("tabular", "2", {"features": x[:5]}),
        ("mlp", "1", {"input": models.mlp_inputs(4, seed=9)}),
        ("mixed", "1", models.two_input_batch(6, seed=4)),
    ]


def expected(repo: Path, model: str, version: str, inputs: Inputs) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(repo / model / version / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))


def dtype_name(a: np.ndarray) -> str:
    return {"float32": "FP32", "int64": "INT64"}[str(a.dtype)]


def check(got: dict[str, Any], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(want)
    for name, value in want.items():
        np.testing.assert_allclose(np.asarray(got[name]).reshape(value.shape), value, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("index", [0, 1, 2], ids=["tabular", "mlp", "mixed"])
def test_tritonclient_grpc(served: GatewayThread, model_repo: Path, index: int) -> None:
    model, version, inputs = cases(model_repo)[index]
    want = expected(model_repo, model, version, inputs)
    assert served.endpoints is not None
    client = tgrpc.InferenceServerClient(served.endpoints.grpc)
    try:
        infer_inputs = []
        for name, array in inputs.items():
            item = tgrpc.InferInput(name, list(array.shape), dtype_name(array))
            item.set_data_from_numpy(array)
            infer_inputs.append(item)
        result = client.infer(model, infer_inputs, model_version=version)
        check({n: result.as_numpy(n) for n in want}, want)
        assert result.get_response().model_version == version
    finally:
        client.close()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("index", [0, 1, 2], ids=["tabular", "mlp", "mixed"])
def test_tritonclient_http(served: GatewayThread, model_repo: Path, index: int, binary: bool) -> None:
    model, version, inputs = cases(model_repo)[index]
    want = expected(model_repo, model, version, inputs)
    assert served.endpoints is not None
    client = thttp.InferenceServerClient(served.endpoints.http)
    try:
        infer_inputs = []
        for name, array in inputs.items():
            item = thttp.InferInput(name, list(array.shape), dtype_name(array))
            item.set_data_from_numpy(array, binary_data=binary)
            infer_inputs.append(item)
        outputs = [thttp.InferRequestedOutput(n, binary_data=binary) for n in want]
        result = client.infer(model, infer_inputs, model_version=version, outputs=outputs)
        check({n: result.as_numpy(n) for n in want}, want)
        assert result.get_response()["model_version"] == version
    finally:
        client.close()


def test_tritonclient_metadata_and_config_agree(served: GatewayThread) -> None:
    assert served.endpoints is not None
    client = tgrpc.InferenceServerClient(served.endpoints.grpc)
    try:
        assert client.is_server_live() and client.is_server_ready()
        meta = client.get_model_metadata("mlp")
        config = client.get_model_config("mlp").config
        assert list(meta.inputs[0].shape) == [-1, 784]
        assert config.max_batch_size > 0
        assert list(config.input[0].dims) == [784]  # batch dimension dropped when max_batch_size > 0
        assert "model_configuration" in client.get_server_metadata().extensions
        stats = client.get_inference_statistics("mlp")
        assert stats.model_stats[0].name == "mlp"
    finally:
        client.close()


# The KServe SDK and tritonclient both register `inference.*` protobuf messages, so they cannot share
# a process: the SDK runs in a child process and hands its outputs back through an .npz file.
KSERVE_CALL = """
import asyncio, sys
import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

http, grpc_addr, model, version, src, dst = sys.argv[1:7]
inputs = dict(np.load(src))
names = {"float32": "FP32", "int64": "INT64"}

def request():
    items = []
    for name, array in inputs.items():
        item = InferInput(name, list(array.shape), names[str(array.dtype)])
        item.set_data_from_numpy(array, binary_data=True)
        items.append(item)
    return InferRequest(model_name=model, infer_inputs=items, model_version=version)

async def main():
    rest = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
    grpc_client = InferenceGRPCClient(grpc_addr, retries=0)
    try:
        live = await rest.is_server_live(f"http://{http}")
        ready = await rest.is_server_ready(f"http://{http}")
        rest_result = await rest.infer(f"http://{http}", request(), model_name=model)
        grpc_result = await grpc_client.infer(request())
    finally:
        await rest.close()
        await grpc_client.close()
    out = {"live": np.array(live), "ready": np.array(ready)}
    out.update({"rest_" + o.name: o.as_numpy() for o in rest_result.outputs})
    out.update({"grpc_" + o.name: o.as_numpy() for o in grpc_result.outputs})
    np.savez(dst, **out)

asyncio.run(main())
"""


@pytest.mark.parametrize("index", [0, 1, 2], ids=["tabular", "mlp", "mixed"])
def test_kserve_sdk_v2_clients(served: GatewayThread, model_repo: Path, index: int, tmp_path: Path) -> None:
    model, version, inputs = cases(model_repo)[index]
    want = expected(model_repo, model, version, inputs)
    assert served.endpoints is not None
    src, dst = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(src, **inputs)
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", KSERVE_CALL, served.endpoints.http, served.endpoints.grpc,
         model, version, str(src), str(dst)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    got = dict(np.load(dst))
    assert bool(got["live"]) and bool(got["ready"])
    for prefix in ("rest_", "grpc_"):
        check({k[len(prefix):]: v for k, v in got.items() if k.startswith(prefix)}, want)
