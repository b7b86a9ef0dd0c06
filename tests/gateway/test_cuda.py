"""The CUDA execution provider on a machine with a GPU: sessions bind I/O and agree with the CPU, and a
gateway serving on CUDA reports it in metadata, ModelConfig and metrics while it answers over gRPC and
REST. Skipped where no GPU, no CUDA-enabled onnxruntime or no CUDA libraries are present (the reason
says which); the device check in `scripts/gpu-check` runs this module on a GPU machine.

Outputs are compared with the CPU provider within TF32 tolerance: the CUDA provider runs FP32 matrix
products in TF32 on Ampere and later, as ONNX Runtime does by default.
"""

from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from gateway.demo import models
from gateway.inference import providers
from gateway.inference.session import OrtSession, cuda_library_problem
from gateway.protocol.pb import grpc_service_pb2 as pb
from gateway.protocol.pb import grpc_service_pb2_grpc as pb_grpc
from tests.gateway.harness import GatewayThread, gateway_settings


def _why_not() -> str | None:
    if providers.CUDA not in ort.get_available_providers():
        return f"onnxruntime {ort.__version__} has no CUDA execution provider"
    if providers.cuda_device_count() == 0:
        return "no CUDA device"
    problem = cuda_library_problem()
    return f"the CUDA provider cannot load: {problem}" if problem else None


WHY_NOT = _why_not()
pytestmark = [pytest.mark.integration, pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")]

RTOL, ATOL = 1e-2, 1e-3  # TF32 products
Arrays = dict[str, np.ndarray]


def cases() -> list[tuple[str, str, Arrays]]:
    x, _ = models.tabular_data(seed=3)
    return [
        ("tabular", "1", {"features": x[:64]}),
        ("mlp", "1", {"input": models.mlp_inputs(64, seed=9)}),
        ("mixed", "1", models.two_input_batch(64, seed=4)),
    ]


def cpu_outputs(path: Path, feeds: Arrays) -> Arrays:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def assert_close(got: Arrays, want: Arrays) -> None:
    assert set(got) == set(want)
    for name, value in want.items():
        if value.dtype.kind in "iu":  # class labels: equal wherever the CPU's probabilities are not a tie
            assert np.array_equal(np.asarray(got[name]).reshape(value.shape), value), name
        else:
            np.testing.assert_allclose(np.asarray(got[name]).reshape(value.shape), value, rtol=RTOL, atol=ATOL,
                                       err_msg=name)


@pytest.mark.parametrize("index", [0, 1, 2], ids=["tabular", "mlp", "mixed"])
def test_session_runs_on_cuda_with_io_binding(model_repo: Path, index: int) -> None:
    model, version, feeds = cases()[index]
    path = model_repo / model / version / "model.onnx"
    session = OrtSession(path, provider="cuda")
    assert session.provider == providers.CUDA
    assert session.provider_reason.startswith("CUDA device 0 (")
    session.warm_up([1, 64])
    got = session.run(feeds)
    assert_close(got, cpu_outputs(path, feeds))
    # one row through the same bound path: a batch of 1 must not be confused with its neighbours
    single = session.run({k: v[:1] for k, v in feeds.items()})
    for name, value in got.items():
        np.testing.assert_allclose(single[name], value[:1], rtol=RTOL, atol=ATOL, err_msg=name)


def test_tf32_off_gives_fp32_results(model_repo: Path) -> None:
    """With `tf32: false` the MLP's products run in full FP32: CUDA then agrees with the CPU to float
    rounding, far inside the TF32 tolerance above."""
    path = model_repo / "mlp" / "1" / "model.onnx"
    feeds = {"input": models.mlp_inputs(64, seed=21)}
    got = OrtSession(path, provider="cuda", tf32=False).run(feeds)
    want = cpu_outputs(path, feeds)
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=1e-5, atol=1e-6)


def test_a_device_that_does_not_exist_fails_the_load_by_name(model_repo: Path) -> None:
    from gateway.inference.session import ModelLoadError

    beyond = providers.cuda_device_count()
    with pytest.raises(ModelLoadError, match=rf"device_id {beyond} does not exist"):
        OrtSession(model_repo / "mlp" / "1" / "model.onnx", provider="cuda", device_id=beyond)
    fallback = OrtSession(model_repo / "mlp" / "1" / "model.onnx", provider="auto", device_id=beyond)
    assert fallback.provider == providers.CPU and "does not exist" in fallback.provider_reason


@pytest.fixture(scope="module")
def cuda_gateway(tmp_path_factory: pytest.TempPathFactory) -> Any:
    repo = tmp_path_factory.mktemp("cuda-repo")
    models.build_mlp(repo, "mlp", "1")
    models.build_two_input(repo, "mixed", "1")
    for model in ("mlp", "mixed"):
        (repo / model / "config.yaml").write_text("provider: cuda\nmax_batch_size: 64\n")
    with GatewayThread(gateway_settings(repo)) as gw:
        yield gw, repo


def _grpc_infer(stub: Any, model: str, feeds: Arrays) -> Arrays:
    request = pb.ModelInferRequest(model_name=model)
    for name, array in feeds.items():
        request.inputs.add(name=name, datatype={"float32": "FP32", "int64": "INT64"}[str(array.dtype)],
                           shape=list(array.shape))
        request.raw_input_contents.append(np.ascontiguousarray(array).tobytes())
    reply = stub.ModelInfer(request, timeout=30)
    out: Arrays = {}
    for spec, raw in zip(reply.outputs, reply.raw_output_contents, strict=True):
        dtype = {"FP32": np.float32, "INT64": np.int64}[spec.datatype]
        out[spec.name] = np.frombuffer(raw, dtype=dtype).reshape(tuple(spec.shape))
    return out


def test_gateway_serves_on_cuda_and_says_so(cuda_gateway: Any) -> None:
    gw, repo = cuda_gateway
    with grpc.insecure_channel(gw.endpoints.grpc) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for model in ("mlp", "mixed"):
            config = stub.ModelConfig(pb.ModelConfigRequest(name=model), timeout=10).config
            assert config.parameters["execution_provider"].string_value == providers.CUDA
            assert [g.kind for g in config.instance_group] == [config.instance_group[0].KIND_GPU]
            assert list(config.instance_group[0].gpus) == [0]
        feeds = models.two_input_batch(48, seed=11)
        assert_close(_grpc_infer(stub, "mixed", feeds), cpu_outputs(repo / "mixed" / "1" / "model.onnx", feeds))

    host, port = gw.endpoints.http.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", "/v2/models/mlp")
        resp = conn.getresponse()
        meta = json.loads(resp.read())
        assert resp.status == 200 and meta["parameters"]["execution_provider"] == providers.CUDA, meta
        rows = models.mlp_inputs(8, seed=5)
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(rows.shape),
                            "data": rows.ravel().tolist()}]}
        conn.request("POST", "/v2/models/mlp/infer", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        reply = json.loads(resp.read())
        assert resp.status == 200, reply
    finally:
        conn.close()
    want = cpu_outputs(repo / "mlp" / "1" / "model.onnx", {"input": rows})
    got = {o["name"]: np.asarray(o["data"], dtype=np.float32).reshape(o["shape"]) for o in reply["outputs"]}
    assert_close(got, want)

    metrics = gw.gateway.metrics.render().decode()
    assert f'servegate_model_provider{{model="mlp",provider="{providers.CUDA}",version="1"}} 1.0' in metrics


def _batches(gw: GatewayThread) -> float:
    metrics = gw.gateway.metrics.render().decode()
    return float(metrics.split('servegate_batch_size_count{model="mlp",version="1"} ')[1].split()[0])


def test_concurrent_callers_batch_on_cuda(cuda_gateway: Any) -> None:
    """32 callers at once: every answer equals the CPU's for its own rows, and requests shared batches."""
    gw, repo = cuda_gateway
    before = _batches(gw)
    path = repo / "mlp" / "1" / "model.onnx"
    inputs = [models.mlp_inputs(1 + i % 4, seed=100 + i) for i in range(32)]
    results: list[Arrays | BaseException] = [RuntimeError("no answer")] * len(inputs)
    start = threading.Barrier(len(inputs))

    def call(i: int) -> None:
        try:
            with grpc.insecure_channel(gw.endpoints.grpc) as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                start.wait(timeout=30)
                for _ in range(10):
                    results[i] = _grpc_infer(stub, "mlp", {"input": inputs[i]})
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for i, got in enumerate(results):
        assert not isinstance(got, BaseException), f"caller {i}: {got!r}"
        assert_close(got, cpu_outputs(path, {"input": inputs[i]}))
    batches = _batches(gw) - before
    assert 0 < batches < 10 * len(inputs), batches
