"""The rest of the gRPC surface against a running gateway: streaming, statistics, the repository RPCs,
the standard health service, and message limits well above gRPC's 4 MiB default."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from gateway.protocol.pb import grpc_service_pb2 as pb
from tests.gateway.harness import GatewayThread, gateway_settings

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory, model_repo: Path) -> Iterator[GatewayThread]:
    """A gateway whose MLP takes 4096-row batches (12.8 MiB requests) and a 16 MiB message limit."""
    import shutil

    repo = tmp_path_factory.mktemp("wide") / "repo"
    shutil.copytree(model_repo, repo)
    (repo / "mlp" / "config.yaml").write_text("max_batch_size: 4096\n")
    settings = gateway_settings(repo)
    settings = replace(settings, server=replace(settings.server, max_request_bytes=16 * MiB))
    with GatewayThread(settings) as gw:
        yield gw


def mlp_request(rows: int) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="mlp", id=f"r{rows}")
    msg.inputs.add(name="input", datatype="FP32", shape=[rows, 784])
    msg.raw_input_contents.append(np.zeros((rows, 784), np.float32).tobytes())
    return msg


def call(endpoint: str, msg: pb.ModelInferRequest) -> pb.ModelInferResponse:
    options = [("grpc.max_send_message_length", 64 * MiB), ("grpc.max_receive_message_length", 64 * MiB)]
    with grpc.insecure_channel(endpoint, options=options) as channel:
        stub = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                   request_serializer=pb.ModelInferRequest.SerializeToString,
                                   response_deserializer=pb.ModelInferResponse.FromString)
        return stub(msg, timeout=60)


def test_messages_far_above_four_mib_are_served(wide: GatewayThread) -> None:
    assert wide.endpoints is not None
    reply = call(wide.endpoints.grpc, mlp_request(4096))  # 12.8 MiB in
    assert reply.outputs[0].shape == [4096, 10]


def test_a_message_over_the_limit_is_refused(wide: GatewayThread) -> None:
    assert wide.endpoints is not None
    msg = mlp_request(4096)
    msg.raw_input_contents[0] = msg.raw_input_contents[0] + b"\0" * (4 * MiB)  # 16.8 MiB > 16 MiB
    with pytest.raises(grpc.RpcError) as err:
        call(wide.endpoints.grpc, msg)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_stream_infer_answers_each_message_and_survives_a_bad_one(served: GatewayThread) -> None:
    assert served.endpoints is not None
    client = tgrpc.InferenceServerClient(served.endpoints.grpc)
    replies: queue.Queue[tuple[object, object]] = queue.Queue()
    client.start_stream(callback=lambda result, error: replies.put((result, error)))
    try:
        for i, width in enumerate((784, 783, 784)):
            item = tgrpc.InferInput("input", [1, width], "FP32")
            item.set_data_from_numpy(np.zeros((1, width), np.float32))
            client.async_stream_infer("mlp", [item], request_id=str(i))
        got = [replies.get(timeout=30) for _ in range(3)]
    finally:
        client.stop_stream()
        client.close()
    ok = {result.get_response().id: result for result, error in got if error is None}  # type: ignore[attr-defined]
    errors = [error for _, error in got if error is not None]
    assert sorted(ok) == ["0", "2"]
    assert len(errors) == 1 and "does not match" in str(errors[0])


def test_statistics_repository_index_load_and_unload(served: GatewayThread) -> None:
    assert served.endpoints is not None
    client = tgrpc.InferenceServerClient(served.endpoints.grpc)
    try:
        item = tgrpc.InferInput("input", [3, 784], "FP32")
        item.set_data_from_numpy(np.zeros((3, 784), np.float32))
        before = client.get_inference_statistics("mlp").model_stats[0].inference_count
        client.infer("mlp", [item])
        after = client.get_inference_statistics("mlp").model_stats[0]
        assert after.inference_count == before + 3
        assert after.execution_count >= 1 and after.inference_stats.success.count >= 1
        index = {(m.name, m.version): m.state for m in client.get_model_repository_index().models}
        assert index[("mlp", "1")] == "READY" and index[("tabular", "1")] == "UNAVAILABLE"
        client.unload_model("mixed")
        assert not client.is_model_ready("mixed")
        client.load_model("mixed")
        assert client.is_model_ready("mixed")
        with pytest.raises(InferenceServerException) as err:
            client.load_model("no-such-model")
        assert "not in the repository" in str(err.value)
    finally:
        client.close()


def test_standard_health_service(served: GatewayThread) -> None:
    assert served.endpoints is not None
    with grpc.insecure_channel(served.endpoints.grpc) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
