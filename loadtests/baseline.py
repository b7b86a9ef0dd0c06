"""Baseline servers with no model: a grpc.aio and an asyncio + httptools Open Inference Protocol echo.

Each answers inference with the request's own inputs as outputs (same names, shapes and bytes), so a
load run against it measures the floor that protocol handling alone costs on this machine.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from gateway.protocol.pb import grpc_service_pb2 as pb
from loadtests.echo_http import EchoHttp
from loadtests.metadata import CHANNEL_OPTIONS
from loadtests.payload import Signature, TensorSpec, numpy_dtype

SERVICE = "inference.GRPCInferenceService"
SERVER_NAME = "servegate-echo"
EXTENSIONS = ("binary_tensor_data",)


@dataclass(frozen=True)
class EchoModel:
    """The one model an echo server declares: inputs as configured, outputs identical to the inputs."""

    name: str
    version: str
    inputs: tuple[TensorSpec, ...]
    delay_s: float = 0.0

    @property
    def signature(self) -> Signature:
        return Signature(self.inputs, self.inputs)


def parse_shape(text: str) -> TensorSpec:
    """`name:DATATYPE:d1,d2,...`, e.g. `input:FP32:-1,784`."""
    parts = text.split(":")
    if len(parts) != 3 or not parts[0]:
        raise ValueError(f"expected NAME:DATATYPE:DIMS, got {text!r}")
    name, datatype, dims = parts
    numpy_dtype(datatype)
    try:
        shape = tuple(int(d) for d in dims.split(",") if d.strip())
    except ValueError:
        raise ValueError(f"dims must be integers separated by commas, got {dims!r}") from None
    return TensorSpec(name, datatype, shape)


def onnx_inputs(path: str) -> tuple[TensorSpec, ...]:
    """The inputs an ONNX file declares; symbolic or unknown dimensions become -1."""
    import onnx

    names = {1: "FP32", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64",
             9: "BOOL", 10: "FP16", 11: "FP64", 12: "UINT32", 13: "UINT64", 8: "BYTES"}
    graph = onnx.load(path, load_external_data=False).graph
    initialisers = {i.name for i in graph.initializer}
    out = []
    for value in graph.input:
        if value.name in initialisers:
            continue
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
        out.append(TensorSpec(value.name, names.get(tensor.elem_type, "FP32"), dims))
    return tuple(out)


class EchoGrpc:
    """The gRPC side: ModelInfer echoes, plus the health and metadata calls a client needs to discover."""

    def __init__(self, model: EchoModel) -> None:
        self.model = model

    def handler(self) -> grpc.GenericRpcHandler:
        def unary(fn: object, req: Any, resp: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=req.FromString, response_serializer=resp.SerializeToString)
        return grpc.method_handlers_generic_handler(SERVICE, {
            "ModelInfer": unary(self.model_infer, pb.ModelInferRequest, pb.ModelInferResponse),
            "ModelMetadata": unary(self.model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
            "ModelReady": unary(self.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
            "ServerLive": unary(self.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
            "ServerReady": unary(self.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
            "ServerMetadata": unary(self.server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse),
        })

    async def _check_model(self, name: str, context: grpc.aio.ServicerContext) -> None:
        if name != self.model.name:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {name!r}; serving {self.model.name!r}")

    async def model_infer(self, req: pb.ModelInferRequest, context: grpc.aio.ServicerContext) -> object:
        await self._check_model(req.model_name, context)
        if self.model.delay_s:
            await asyncio.sleep(self.model.delay_s)
        reply = pb.ModelInferResponse(model_name=req.model_name, model_version=self.model.version, id=req.id)
        for tensor in req.inputs:
            out = reply.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
            if tensor.HasField("contents"):
                out.contents.CopyFrom(tensor.contents)
        reply.raw_output_contents.extend(req.raw_input_contents)
        return reply

    async def model_metadata(self, req: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext) -> object:
        await self._check_model(req.name, context)
        reply = pb.ModelMetadataResponse(name=self.model.name, versions=[self.model.version],
                                         platform="echo")
        for spec in self.model.inputs:
            reply.inputs.add(name=spec.name, datatype=spec.datatype, shape=spec.shape)
            reply.outputs.add(name=spec.name, datatype=spec.datatype, shape=spec.shape)
        return reply

    async def model_ready(self, req: pb.ModelReadyRequest, context: grpc.aio.ServicerContext) -> object:
        return pb.ModelReadyResponse(ready=req.name == self.model.name)

    async def server_live(self, req: object, context: grpc.aio.ServicerContext) -> object:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, req: object, context: grpc.aio.ServicerContext) -> object:
        return pb.ServerReadyResponse(ready=True)

    async def server_metadata(self, req: object, context: grpc.aio.ServicerContext) -> object:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version="1", extensions=list(EXTENSIONS))


class EchoServers:
    """Both echo servers on one event loop, as a gateway process would run its two listeners."""

    def __init__(self, model: EchoModel, host: str = "127.0.0.1") -> None:
        self.model = model
        self.host = host
        self._grpc: grpc.aio.Server | None = None
        self._http: asyncio.Server | None = None
        self.grpc_port = 0
        self.http_port = 0

    async def start(self, grpc_port: int | None, http_port: int | None) -> None:
        """Listens on the given ports (0 picks a free one; None leaves that protocol off)."""
        if grpc_port is not None:
            self._grpc = grpc.aio.server(options=CHANNEL_OPTIONS)
            self._grpc.add_generic_rpc_handlers((EchoGrpc(self.model).handler(),))
            self.grpc_port = self._grpc.add_insecure_port(f"{self.host}:{grpc_port}")
            await self._grpc.start()
        if http_port is not None:
            app = EchoHttp(self.model.name, self.model.version, self.model.signature, self.model.delay_s,
                           SERVER_NAME, EXTENSIONS)
            self._http = await asyncio.get_running_loop().create_server(app.protocol, self.host, http_port)
            self.http_port = int(self._http.sockets[0].getsockname()[1])

    def ready_line(self) -> str:
        parts = ["echo ready"]
        if self._grpc is not None:
            parts.append(f"grpc={self.host}:{self.grpc_port}")
        if self._http is not None:
            parts.append(f"http={self.host}:{self.http_port}")
        return " ".join(parts)

    async def stop(self) -> None:
        # Stop accepting first, then give in-flight calls a moment to finish.
        if self._http is not None:
            self._http.close()
            await self._http.wait_closed()
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)


async def serve(model: EchoModel, grpc_port: int | None, http_port: int | None, host: str) -> None:
    """Runs until SIGTERM or SIGINT; prints the ready line once both listeners are up."""
    servers = EchoServers(model, host)
    await servers.start(grpc_port, http_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(servers.ready_line(), flush=True)
    try:
        await stop.wait()
    finally:
        await servers.stop()


def model_from_flags(name: str, version: str, shapes: Sequence[str], onnx_path: str | None,
                     delay_ms: float) -> EchoModel:
    if onnx_path and shapes:
        raise ValueError("give either --onnx or --shape, not both")
    inputs = onnx_inputs(onnx_path) if onnx_path else tuple(parse_shape(s) for s in shapes)
    if not inputs:
        inputs = (TensorSpec("input", "FP32", (-1, 784)),)
    if delay_ms < 0:
        raise ValueError("delay must be >= 0")
    return EchoModel(name, version, inputs, delay_ms / 1000.0)


def run(model: EchoModel, grpc_port: int | None, http_port: int | None, host: str, event_loop: str) -> int:
    if event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            print("uvloop is not installed; using asyncio's loop", file=sys.stderr)
        else:
            uvloop.run(serve(model, grpc_port, http_port, host))
            return 0
    asyncio.run(serve(model, grpc_port, http_port, host))
    return 0
