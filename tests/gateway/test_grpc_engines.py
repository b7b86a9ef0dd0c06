"""Both gRPC engines serve the same surface: stock-client calls, streaming, health, errors and deadlines
give the same answers on `native` (the default) and on `grpcio` (grpc.aio)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tgrpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from gateway.demo import models
from gateway.settings import Settings, SettingsError, load
from tests.gateway.harness import GatewayThread, gateway_settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["native", "grpcio"])
def engine_gateway(request: pytest.FixtureRequest, model_repo: Path) -> Iterator[GatewayThread]:
    with GatewayThread(gateway_settings(model_repo, grpc_engine=request.param)) as gw:
        yield gw


def _client(gw: GatewayThread) -> tgrpc.InferenceServerClient:
    assert gw.endpoints is not None
    return tgrpc.InferenceServerClient(gw.endpoints.grpc)


def _mlp_input(rows: int, width: int = 784) -> tuple[tgrpc.InferInput, np.ndarray]:
    x = models.mlp_inputs(rows, seed=rows) if width == 784 else np.zeros((rows, width), np.float32)
    item = tgrpc.InferInput("input", [rows, width], "FP32")
    item.set_data_from_numpy(x)
    return item, x


def test_infer_matches_onnx_runtime(engine_gateway: GatewayThread, model_repo: Path) -> None:
    item, x = _mlp_input(5)
    session = ort.InferenceSession(str(model_repo / "mlp" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    want = session.run(["probabilities"], {"input": x})[0]
    client = _client(engine_gateway)
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("mlp")
        result = client.infer("mlp", [item], request_id="r-1", headers={"x-trace": "abc"})
        np.testing.assert_allclose(result.as_numpy("probabilities"), want, rtol=1e-6, atol=1e-7)
        assert result.get_response().id == "r-1"
    finally:
        client.close()


def test_errors_carry_status_and_message(engine_gateway: GatewayThread) -> None:
    item, _ = _mlp_input(1, width=783)
    client = _client(engine_gateway)
    try:
        with pytest.raises(InferenceServerException) as bad:
            client.infer("mlp", [item])
        assert bad.value.status() == "StatusCode.INVALID_ARGUMENT" and "784" in str(bad.value)
        with pytest.raises(InferenceServerException) as missing:
            client.infer("no-such-model", [item])
        assert missing.value.status() == "StatusCode.NOT_FOUND"
    finally:
        client.close()


def test_a_passed_deadline_is_deadline_exceeded(engine_gateway: GatewayThread) -> None:
    """The batch is held past the call's deadline, so the answer cannot come in time on any host (a
    deadline of microseconds is rounded up to a millisecond by grpc-core, which a fast host can beat)."""
    assert engine_gateway.gateway is not None
    loaded = engine_gateway.gateway.manager.find("mlp", "1")
    assert loaded is not None
    release = threading.Event()

    def held(feeds: object, outputs: object) -> None:
        release.wait(10)

    item, _ = _mlp_input(1)
    client = _client(engine_gateway)
    loaded.run_hooks.append(held)
    try:
        with pytest.raises(InferenceServerException) as err:
            client.infer("mlp", [item], client_timeout=0.2)
        assert err.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    finally:
        release.set()
        loaded.run_hooks.remove(held)
    try:
        assert client.infer("mlp", [item]).as_numpy("probabilities").shape == (1, 10)  # nothing else harmed
    finally:
        client.close()


def test_stream_infer(engine_gateway: GatewayThread) -> None:
    client = _client(engine_gateway)
    replies: queue.Queue[tuple[object, object]] = queue.Queue()
    client.start_stream(callback=lambda result, error: replies.put((result, error)))
    try:
        for i in range(4):
            item, _ = _mlp_input(1 + i)
            client.async_stream_infer("mlp", [item], request_id=str(i))
        got = [replies.get(timeout=30) for _ in range(4)]
    finally:
        client.stop_stream()
        client.close()
    assert all(error is None for _, error in got)
    shapes = {r.get_response().id: r.as_numpy("probabilities").shape for r, _ in got}  # type: ignore[attr-defined]
    assert shapes == {str(i): (1 + i, 10) for i in range(4)}


def test_health_check_and_unknown_service(engine_gateway: GatewayThread) -> None:
    assert engine_gateway.endpoints is not None
    with grpc.insecure_channel(engine_gateway.endpoints.grpc) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        assert stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as err:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        watch = stub.Watch(health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService"), timeout=10)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()


def test_unknown_method_is_unimplemented(engine_gateway: GatewayThread) -> None:
    assert engine_gateway.endpoints is not None
    with grpc.insecure_channel(engine_gateway.endpoints.grpc) as channel:
        method = channel.unary_unary("/inference.GRPCInferenceService/NoSuchMethod",
                                     request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as err:
            method(b"", timeout=10)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_metadata_over_16_kib_fails_only_that_call(engine_gateway: GatewayThread) -> None:
    assert engine_gateway.endpoints is not None
    with grpc.insecure_channel(engine_gateway.endpoints.grpc) as channel:
        live = channel.unary_unary("/inference.GRPCInferenceService/ServerLive",
                                   request_serializer=lambda _: b"", response_deserializer=bytes)
        assert live(None, metadata=[("x-token", "t" * 6_000)], timeout=10) is not None
        with pytest.raises(grpc.RpcError) as err:
            live(None, metadata=[("x-token", "t" * 20_000)], timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "16384" in (err.value.details() or "")
        assert live(None, timeout=10) is not None  # the channel's connection still serves


@contextmanager
def _watched_live_call(settings: Settings) -> Iterator[tuple[Callable[[], object], list[grpc.ChannelConnectivity]]]:
    """A gateway and a grpcio channel to it: yields ServerLive as a call, and the channel's connectivity
    states, complete once the block ends (each READY is one connection)."""
    seen: list[grpc.ChannelConnectivity] = []
    with GatewayThread(settings) as gw:
        assert gw.endpoints is not None
        channel = grpc.insecure_channel(gw.endpoints.grpc)
        states: queue.Queue[grpc.ChannelConnectivity] = queue.Queue()
        channel.subscribe(states.put, try_to_connect=True)
        live = channel.unary_unary("/inference.GRPCInferenceService/ServerLive",
                                   request_serializer=lambda _: b"", response_deserializer=bytes)
        try:
            yield (lambda: live(None, timeout=10)), seen
        finally:
            channel.unsubscribe(states.put)
            channel.close()
            seen.extend(states.get() for _ in range(states.qsize()))


@pytest.mark.parametrize("engine", ["native", "grpcio"])
def test_max_connection_age_reconnects_the_client_without_failing_a_call(model_repo: Path, engine: str) -> None:
    settings = gateway_settings(model_repo, grpc_engine=engine, grpc_max_connection_age=0.3)
    with _watched_live_call(settings) as (live, seen):
        calls, end = 0, time.monotonic() + 2.0
        while time.monotonic() < end:
            live()
            calls += 1
            time.sleep(0.01)
    assert calls > 20
    assert seen.count(grpc.ChannelConnectivity.READY) >= 3, seen  # one connection after another


@pytest.mark.parametrize("engine", ["native", "grpcio"])
def test_keepalive_pings_leave_an_answering_client_connected(model_repo: Path, engine: str) -> None:
    """The server pings every 0.2 s of silence; grpcio answers, so one connection serves throughout."""
    settings = gateway_settings(model_repo, grpc_engine=engine, grpc_keepalive_time=0.2,
                                grpc_keepalive_timeout=1.0)
    with _watched_live_call(settings) as (live, seen):
        for _ in range(3):
            live()
            time.sleep(0.8)  # several keepalive periods of silence
    assert seen.count(grpc.ChannelConnectivity.READY) == 1, seen


def test_the_engine_is_a_validated_setting() -> None:
    assert load({}, {}).server.grpc_engine == "native"
    assert load({"grpc_engine": "grpcio"}, {}).server.grpc_engine == "grpcio"
    assert load({}, {"SERVEGATE_GRPC_ENGINE": "grpcio"}).server.grpc_engine == "grpcio"
    with pytest.raises(SettingsError, match=r"grpc-engine.*expected native or grpcio"):
        load({"grpc_engine": "fast"}, {})


def test_max_connection_age_is_a_validated_setting() -> None:
    assert load({}, {}).server.grpc_max_connection_age == 0.0
    assert load({}, {"SERVEGATE_GRPC_MAX_CONNECTION_AGE": "300"}).server.grpc_max_connection_age == 300.0
    with pytest.raises(SettingsError, match=r"grpc-max-connection-age.*must not be negative"):
        load({"grpc_max_connection_age": "-5"}, {})
    server = load({"grpc_keepalive_time": "60", "grpc_keepalive_timeout": "5"}, {}).server
    assert (server.grpc_keepalive_time, server.grpc_keepalive_timeout) == (60.0, 5.0)
    assert (load({}, {}).server.grpc_keepalive_time, load({}, {}).server.grpc_keepalive_timeout) == (7200.0, 20.0)
