"""Overload, deadlines, broken models and batching, against a real gateway.

A run hook that waits on an event holds the model's worker busy, so the queue fills and deadlines
pass deterministically while the gateway itself runs unmodified.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from gateway.protocol.pb import grpc_service_pb2 as pb
from tests.gateway.harness import GatewayThread, gateway_settings

pytestmark = pytest.mark.integration

METHOD = "/inference.GRPCInferenceService/ModelInfer"


def mlp_request(rows: int = 1, timeout_us: int = 0) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="mlp")
    msg.inputs.add(name="input", datatype="FP32", shape=[rows, 784])
    msg.raw_input_contents.append(np.random.default_rng(rows).random((rows, 784), dtype=np.float32).tobytes())
    if timeout_us:
        msg.parameters["timeout"].int64_param = timeout_us
    return msg


def hold(gw: GatewayThread, model: str = "mlp", version: str = "1") -> tuple[threading.Event, threading.Event]:
    """Makes every batch of `model` wait until `release` is set; `entered` fires when one is held."""
    assert gw.gateway is not None
    loaded = gw.gateway.manager.find(model, version)
    assert loaded is not None
    release, entered = threading.Event(), threading.Event()

    def blocking(feeds: Any, outputs: Any) -> None:
        entered.set()
        release.wait(20)

    loaded.run_hooks.append(blocking)
    return release, entered


def inference_count(gw: GatewayThread, model: str = "mlp") -> int:
    assert gw.gateway is not None
    return sum(s["inference_count"] for s in gw.gateway.plane.model_statistics(model))


@pytest.fixture
def small_queue(repo_copy: Path) -> Path:
    (repo_copy / "mlp" / "config.yaml").write_text("queue_capacity: 2\nmax_batch_size: 8\n")
    return repo_copy


def test_full_queue_fails_fast_and_nothing_is_lost(small_queue: Path) -> None:
    with GatewayThread(gateway_settings(small_queue)) as gw:
        release, entered = hold(gw)
        assert gw.endpoints is not None
        endpoint = gw.endpoints.grpc

        async def scenario() -> list[Any]:
            async with grpc.aio.insecure_channel(endpoint) as channel:
                call = channel.unary_unary(METHOD, request_serializer=pb.ModelInferRequest.SerializeToString,
                                           response_deserializer=pb.ModelInferResponse.FromString)
                first = asyncio.ensure_future(call(mlp_request(), timeout=30))
                await asyncio.to_thread(entered.wait, 10)
                rest = [asyncio.ensure_future(call(mlp_request(), timeout=30)) for _ in range(6)]
                for _ in range(500):  # rejections come back at once; the rest wait in the queue
                    if sum(f.done() for f in rest) >= 4:
                        break
                    await asyncio.sleep(0.01)
                release.set()
                return await asyncio.gather(first, *rest, return_exceptions=True)

        outcomes = asyncio.run(scenario())
    codes = [o.code() if isinstance(o, grpc.aio.AioRpcError) else "OK" for o in outcomes]
    assert codes.count("OK") == 3  # the running one and the two queued
    rejected = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(rejected) == 4
    assert all(o.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for o in rejected)
    assert all("queue is full" in (o.details() or "") for o in rejected)


def test_expired_deadlines_are_dropped_before_inference(repo_copy: Path) -> None:
    with GatewayThread(gateway_settings(repo_copy)) as gw:
        release, entered = hold(gw)
        assert gw.endpoints is not None
        host, port = gw.endpoints.http.split(":")
        with grpc.insecure_channel(gw.endpoints.grpc) as channel:
            call = channel.unary_unary(METHOD, request_serializer=pb.ModelInferRequest.SerializeToString,
                                       response_deserializer=pb.ModelInferResponse.FromString)
            running = call.future(mlp_request(), timeout=30)
            assert entered.wait(10)
            before = inference_count(gw)
            with pytest.raises(grpc.RpcError) as err:
                call(mlp_request(rows=2), timeout=0.3)  # gRPC deadline
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 784],
                                           "data": [0.0] * (3 * 784)}], "parameters": {"timeout": 300_000}})
            conn.request("POST", "/v2/models/mlp/infer", body)  # HTTP `timeout` parameter, in µs
            resp = conn.getresponse()
            status, doc = resp.status, json.loads(resp.read())
            conn.close()
            release.set()
            running.result(timeout=30)
        after = inference_count(gw)
    assert status == 504 and "deadline exceeded" in doc["error"]
    assert after - before == 1  # only the held request ran; the 2-row and 3-row ones never did


def test_a_corrupt_model_is_not_ready_with_its_reason_and_others_serve(repo_copy: Path) -> None:
    broken = repo_copy / "mlp" / "2"
    broken.mkdir()
    (broken / "model.onnx").write_bytes(b"this is not an onnx file")
    with GatewayThread(gateway_settings(repo_copy)) as gw:
        assert gw.gateway is not None
        index = {(m["name"], m["version"]): m for m in gw.gateway.plane.repository_index()}
        assert index[("mlp", "2")]["state"] == "UNAVAILABLE"
        assert "cannot load the model" in index[("mlp", "2")]["reason"]
        assert not gw.gateway.plane.model_ready("mlp", "2")
        assert gw.gateway.plane.model_ready("mlp", "1")
        assert gw.endpoints is not None
        with grpc.insecure_channel(gw.endpoints.grpc) as channel:
            call = channel.unary_unary(METHOD, request_serializer=pb.ModelInferRequest.SerializeToString,
                                       response_deserializer=pb.ModelInferResponse.FromString)
            reply = call(mlp_request(), timeout=10)  # no version: served by the version that loaded
            assert reply.model_version == "1"
            explicit = mlp_request()
            explicit.model_version = "2"
            with pytest.raises(grpc.RpcError) as err:
                call(explicit, timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "cannot load the model" in (err.value.details() or "")


def test_concurrent_callers_are_batched(model_repo: Path) -> None:
    with GatewayThread(gateway_settings(model_repo)) as gw:
        assert gw.endpoints is not None
        endpoint = gw.endpoints.grpc

        async def callers(n: int, each: int) -> int:
            async with grpc.aio.insecure_channel(endpoint) as channel:
                call = channel.unary_unary(METHOD, request_serializer=pb.ModelInferRequest.SerializeToString,
                                           response_deserializer=pb.ModelInferResponse.FromString)

                async def one() -> int:
                    for _ in range(each):
                        await call(mlp_request(), timeout=30)
                    return each
                return sum(await asyncio.gather(*(one() for _ in range(n))))

        served = asyncio.run(callers(32, 20))
        assert gw.gateway is not None
        metrics = gw.gateway.metrics.render().decode()
    count = _sample(metrics, 'servegate_batch_size_count{model="mlp",version="1"}')
    rows = _sample(metrics, 'servegate_batch_size_sum{model="mlp",version="1"}')
    single = _sample(metrics, 'servegate_batch_size_bucket{le="1.0",model="mlp",version="1"}')
    assert served == 640
    assert rows >= 640  # every request's rows went through a batch (plus warm-up-free accounting)
    assert count < rows  # fewer batches than rows: batches were larger than 1
    assert single < count  # and some batch held more than one row


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")
