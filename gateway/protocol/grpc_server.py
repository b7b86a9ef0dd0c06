"""The gRPC listener: inference service, standard health service, limits, TLS, one error guard.

Every method is wrapped once, here, so a domain error becomes its status code from the table in
gateway/protocol/status.py and an unexpected one becomes INTERNAL with its details only in the log.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gateway.protocol import status
from gateway.protocol.grpc_servicer import METHODS, Context, GrpcServicer

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
Authorize = Callable[[Context], None]


def _guard_unary(fn: Callable[[Any, Context], Any], authorize: Authorize | None) -> Callable[[Any, Context], Any]:
    @functools.wraps(fn)
    async def handler(request: Any, context: Context) -> Any:
        try:
            if authorize is not None:
                authorize(context)
            return await fn(request, context)
        except Exception as exc:
            await _abort(context, exc)
    return handler


def _guard_stream(fn: Callable[[Any, Context], AsyncIterator[Any]],
                  authorize: Authorize | None) -> Callable[[Any, Context], AsyncIterator[Any]]:
    @functools.wraps(fn)
    async def handler(requests: Any, context: Context) -> AsyncIterator[Any]:
        try:
            if authorize is not None:
                authorize(context)
            async for item in fn(requests, context):
                yield item
        except Exception as exc:
            await _abort(context, exc)
    return handler


async def _abort(context: Context, exc: Exception) -> None:
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    if status.is_known(exc):
        await context.abort(status.grpc_code(exc), str(exc))
    log.exception("unexpected error in a gRPC call")
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the gateway's log")


def build_handler(servicer: GrpcServicer, authorize: Authorize | None = None) -> grpc.GenericRpcHandler:
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for name, req_type, resp_type, streaming in METHODS:
        fn = getattr(servicer, name)
        # Health-style probes stay open even when the data plane requires a token.
        auth = None if name in ("ServerLive", "ServerReady") else authorize
        if streaming:
            handlers[name] = grpc.stream_stream_rpc_method_handler(
                _guard_stream(fn, auth), req_type.FromString, resp_type.SerializeToString)
        else:
            handlers[name] = grpc.unary_unary_rpc_method_handler(
                _guard_unary(fn, auth), req_type.FromString, resp_type.SerializeToString)
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


class GrpcServer:
    """Owns the grpc.aio server; `start` returns the bound port (0 picks a free one)."""

    def __init__(self, servicer: GrpcServicer, *, host: str, port: int, max_message_bytes: int,
                 tls: tuple[bytes, bytes] | None = None, reuse_port: bool = False,
                 authorize: Authorize | None = None) -> None:
        self._servicer = servicer
        self._host, self._port = host, port
        self._tls = tls
        self._options: Sequence[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ]
        self._authorize = authorize
        self._server: grpc.aio.Server | None = None
        self.health = health.aio.HealthServicer()
        self.port = 0

    async def start(self) -> int:
        server = grpc.aio.server(options=self._options)
        server.add_generic_rpc_handlers((build_handler(self._servicer, self._authorize),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        address = f"{self._host}:{self._port}"
        if self._tls is not None:
            cert, key = self._tls
            self.port = server.add_secure_port(address, grpc.ssl_server_credentials([(key, cert)]))
        else:
            self.port = server.add_insecure_port(address)
        await server.start()
        self._server = server
        await self.set_serving(False)
        return self.port

    async def set_serving(self, serving: bool) -> None:
        state = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", SERVICE):
            await self.health.set(service, state)

    async def stop(self, grace: float) -> None:
        """Refuses new calls at once and lets calls in flight finish within `grace` seconds."""
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
