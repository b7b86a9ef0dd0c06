"""The gRPC listener: inference service, standard health service, limits, TLS, one error guard.

Two engines serve the same methods: `native` (gateway/protocol/h2, HTTP/2 written for this hot path;
the default) and `grpcio` (grpc.aio). Every method is wrapped once, here, so a domain error becomes its
status code from the table in gateway/protocol/status.py and an unexpected one becomes INTERNAL with
its details only in the log.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from gateway.protocol import grpc_convert, grpc_health, status
from gateway.protocol.grpc_servicer import METHODS, Context, GrpcServicer
from gateway.protocol.h2 import calls
from gateway.protocol.h2.server import KEEPALIVE_TIME, KEEPALIVE_TIMEOUT, H2GrpcServer, tls_context

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
ENGINES = ("native", "grpcio")
Authorize = Callable[[Context], None]
# (service, method, request type, response type, streaming kind, guarded handler)
Route = tuple[str, str, Any, Any, str, Callable[..., Any]]


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
    if isinstance(exc, grpc.aio.AbortError | calls.Aborted):
        raise exc
    if status.is_known(exc):
        await context.abort(status.grpc_code(exc), str(exc))
    log.exception("unexpected error in a gRPC call")
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the gateway's log")


def routes(servicer: GrpcServicer, health: grpc_health.HealthService, authorize: Authorize | None) -> list[Route]:
    """Every method both engines serve, each wrapped in the guard."""
    out: list[Route] = []
    for name, req_type, resp_type, streaming in METHODS:
        # Health-style probes stay open even when the data plane requires a token.
        auth = None if name in ("ServerLive", "ServerReady") else authorize
        fn = getattr(servicer, name)
        out.append((SERVICE, name, req_type, resp_type, calls.BIDI if streaming else calls.UNARY,
                    _guard_stream(fn, auth) if streaming else _guard_unary(fn, auth)))
    for name, req_type, resp_type, streaming in grpc_health.METHODS:
        fn = getattr(health, name)
        out.append((grpc_health.SERVICE, name, req_type, resp_type,
                    calls.SERVER_STREAM if streaming else calls.UNARY,
                    _guard_stream(fn, None) if streaming else _guard_unary(fn, None)))
    return out


# Decoders the native engine uses instead of protobuf's, by method: a large ModelInfer keeps its raw
# contents as views of the received bytes (grpc.aio hands over a parsed message, so it cannot).
NATIVE_DECODERS: dict[str, Callable[[bytes | memoryview], Any]] = {
    f"/{SERVICE}/ModelInfer": grpc_convert.parse_infer}


def native_methods(table: list[Route]) -> dict[str, calls.Method]:
    methods = {}
    for service, name, req, resp, kind, fn in table:
        path = f"/{service}/{name}"
        methods[path] = calls.Method(kind, NATIVE_DECODERS.get(path, req.FromString), resp.SerializeToString, fn)
    return methods


def grpcio_handlers(table: list[Route]) -> list[grpc.GenericRpcHandler]:
    by_service: dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]] = {}
    make = {calls.UNARY: grpc.unary_unary_rpc_method_handler, calls.BIDI: grpc.stream_stream_rpc_method_handler,
            calls.SERVER_STREAM: grpc.unary_stream_rpc_method_handler}
    for service, name, req, resp, kind, fn in table:
        by_service.setdefault(service, {})[name] = make[kind](fn, req.FromString, resp.SerializeToString)
    return [grpc.method_handlers_generic_handler(s, handlers) for s, handlers in by_service.items()]


class GrpcServer:
    """Owns the listener of the chosen engine; `start` returns the bound port (0 picks a free one)."""

    def __init__(self, servicer: GrpcServicer, *, host: str, port: int, max_message_bytes: int,
                 tls: tuple[Path, Path] | None = None, reuse_port: bool = False,
                 authorize: Authorize | None = None, engine: str = "native", max_connection_age: float = 0.0,
                 max_connection_age_grace: float = 30.0,
                 keepalive: tuple[float, float] = (KEEPALIVE_TIME, KEEPALIVE_TIMEOUT)) -> None:
        if engine not in ENGINES:
            raise ValueError(f"gRPC engine: expected one of {ENGINES}, got {engine!r}")
        self.engine = engine
        self._servicer = servicer
        self._host, self._port = host, port
        self._tls = tls
        self._max_message = max_message_bytes
        self._reuse_port = reuse_port
        self._authorize = authorize
        self._max_age, self._max_age_grace = max_connection_age, max_connection_age_grace
        self._keepalive = keepalive  # (seconds of client silence before a PING, seconds to answer it)
        self._native: H2GrpcServer | None = None
        self._grpcio: grpc.aio.Server | None = None
        self.health = grpc_health.HealthService()
        self.port = 0

    async def start(self) -> int:
        table = routes(self._servicer, self.health, self._authorize)
        if self.engine == "native":
            ssl_context = None if self._tls is None else tls_context(str(self._tls[0]), str(self._tls[1]))
            self._native = H2GrpcServer(native_methods(table), host=self._host, port=self._port,
                                        max_message_bytes=self._max_message, ssl_context=ssl_context,
                                        reuse_port=self._reuse_port, max_connection_age=self._max_age,
                                        max_connection_age_grace=self._max_age_grace,
                                        keepalive_time=self._keepalive[0], keepalive_timeout=self._keepalive[1])
            self.port = await self._native.start()
        else:
            self.port = await self._start_grpcio(table)
        await self.set_serving(False)
        return self.port

    async def _start_grpcio(self, table: list[Route]) -> int:
        options: Sequence[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", self._max_message),
            ("grpc.max_send_message_length", self._max_message),
            ("grpc.so_reuseport", 1 if self._reuse_port else 0),
        ]
        # keepalive time 0 = never: grpc-core's way to say it is the largest int
        every_ms = max(1, round(self._keepalive[0] * 1000)) if self._keepalive[0] > 0 else (1 << 31) - 1
        options = [*options, ("grpc.keepalive_time_ms", every_ms),
                   ("grpc.keepalive_timeout_ms", max(1, round(self._keepalive[1] * 1000)))]
        if self._max_age > 0:  # grpc-core adds its own +-10% jitter, as the native engine does
            options = [*options, ("grpc.max_connection_age_ms", max(1, round(self._max_age * 1000))),
                       ("grpc.max_connection_age_grace_ms", round(self._max_age_grace * 1000))]
        server = grpc.aio.server(options=options)
        server.add_generic_rpc_handlers(grpcio_handlers(table))
        address = f"{self._host}:{self._port}"
        if self._tls is not None:
            cert, key = (p.read_bytes() for p in self._tls)
            port = server.add_secure_port(address, grpc.ssl_server_credentials([(key, cert)]))
        else:
            port = server.add_insecure_port(address)
        await server.start()
        self._grpcio = server
        return int(port)

    async def set_serving(self, serving: bool) -> None:
        state = grpc_health.SERVING if serving else grpc_health.NOT_SERVING
        for service in ("", SERVICE):
            self.health.set(service, state)

    async def stop(self, grace: float) -> None:
        """Refuses new calls at once and lets calls in flight finish within `grace` seconds."""
        if self._native is not None:
            await self._native.stop(grace)
            self._native = None
        if self._grpcio is not None:
            await self._grpcio.stop(grace)
            self._grpcio = None
