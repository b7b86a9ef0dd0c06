"""The `inference.GRPCInferenceService` methods: convert, call the data plane, convert back.

Errors are not handled here: the server wraps every method in one guard that maps them to status
codes (gateway/protocol/grpc_server.py).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeAlias

from gateway.dataplane import DataPlane
from gateway.errors import ServingError
from gateway.protocol import grpc_convert as convert
from gateway.protocol.pb import grpc_service_pb2 as pb

# grpc ships no type information; this names what handlers receive (a grpc.aio.ServicerContext).
Context: TypeAlias = Any


class RepositoryControl(Protocol):
    """Explicit load/unload of a model's versions (the model-repository extension)."""

    async def load_model(self, name: str) -> None: ...

    async def unload_model(self, name: str) -> None: ...


def routing_of(context: Context) -> dict[str, str]:
    """Request metadata usable for routing (sticky keys, forced version), lower-case keys."""
    metadata = context.invocation_metadata()
    if not metadata:
        return {}
    return {k: v for k, v in metadata if isinstance(v, str)}


def deadline_of(context: Context) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class GrpcServicer:
    def __init__(self, plane: DataPlane, repository: RepositoryControl | None = None) -> None:
        self.plane = plane
        self.repository = repository

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.plane.live)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.plane.ready())

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Context) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.plane.model_ready(request.name, request.version))

    async def ServerMetadata(self, request: pb.ServerMetadataRequest,
                             context: Context) -> pb.ServerMetadataResponse:
        d = self.plane.server_metadata()
        return pb.ServerMetadataResponse(name=d["name"], version=d["version"], extensions=d["extensions"])

    async def ModelMetadata(self, request: pb.ModelMetadataRequest,
                            context: Context) -> pb.ModelMetadataResponse:
        return convert.model_metadata(self.plane.model_metadata(request.name, request.version))

    async def ModelInfer(self, request: pb.ModelInferRequest | convert.InferMessage,
                         context: Context) -> pb.ModelInferResponse:
        if isinstance(request, convert.InferMessage):  # the native engine kept the raw contents as views
            infer_request = convert.to_request(request.msg, routing_of(context), deadline_of(context), request.raw)
        else:
            infer_request = convert.to_request(request, routing_of(context), deadline_of(context))
        return convert.to_response(await self.plane.infer(infer_request))

    async def ModelStreamInfer(self, requests: AsyncIterator[pb.ModelInferRequest],
                               context: Context) -> AsyncIterator[pb.ModelStreamInferResponse]:
        routing = routing_of(context)
        async for request in requests:
            try:
                infer_request = convert.to_request(request, routing, deadline_of(context))
                response = convert.to_response(await self.plane.infer(infer_request))
            except ServingError as exc:  # one bad message fails alone; the stream goes on
                yield pb.ModelStreamInferResponse(error_message=exc.message, infer_response=pb.ModelInferResponse(
                    model_name=request.model_name, model_version=request.model_version, id=request.id))
                continue
            yield pb.ModelStreamInferResponse(infer_response=response)

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Context) -> pb.ModelConfigResponse:
        return convert.model_config(self.plane.model_config(request.name, request.version))

    async def ModelStatistics(self, request: pb.ModelStatisticsRequest,
                              context: Context) -> pb.ModelStatisticsResponse:
        return convert.model_statistics(self.plane.model_statistics(request.name, request.version))

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest,
                              context: Context) -> pb.RepositoryIndexResponse:
        return convert.repository_index(self.plane.repository_index(request.ready))

    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest,
                                  context: Context) -> pb.RepositoryModelLoadResponse:
        if self.repository is not None:
            await self.repository.load_model(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest,
                                    context: Context) -> pb.RepositoryModelUnloadResponse:
        if self.repository is not None:
            await self.repository.unload_model(request.model_name)
        return pb.RepositoryModelUnloadResponse()


Unary = Callable[[Any, Context], Awaitable[Any]]

# (method, request type, response type, streaming)
METHODS: tuple[tuple[str, Any, Any, bool], ...] = (
    ("ServerLive", pb.ServerLiveRequest, pb.ServerLiveResponse, False),
    ("ServerReady", pb.ServerReadyRequest, pb.ServerReadyResponse, False),
    ("ModelReady", pb.ModelReadyRequest, pb.ModelReadyResponse, False),
    ("ServerMetadata", pb.ServerMetadataRequest, pb.ServerMetadataResponse, False),
    ("ModelMetadata", pb.ModelMetadataRequest, pb.ModelMetadataResponse, False),
    ("ModelInfer", pb.ModelInferRequest, pb.ModelInferResponse, False),
    ("ModelStreamInfer", pb.ModelInferRequest, pb.ModelStreamInferResponse, True),
    ("ModelConfig", pb.ModelConfigRequest, pb.ModelConfigResponse, False),
    ("ModelStatistics", pb.ModelStatisticsRequest, pb.ModelStatisticsResponse, False),
    ("RepositoryIndex", pb.RepositoryIndexRequest, pb.RepositoryIndexResponse, False),
    ("RepositoryModelLoad", pb.RepositoryModelLoadRequest, pb.RepositoryModelLoadResponse, False),
    ("RepositoryModelUnload", pb.RepositoryModelUnloadRequest, pb.RepositoryModelUnloadResponse, False),
)
