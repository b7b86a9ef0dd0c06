"""Composition root: builds every part of a gateway from its settings and owns the start/stop order.

Start: listeners first (so liveness answers while models warm up), then models, then ready.
Stop (graceful drain): not ready -> stop accepting -> finish in-flight work -> flush state -> exit.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from gateway.dataplane import DataPlane
from gateway.models import ModelManager
from gateway.observability.metrics import CONTENT_TYPE, Metrics
from gateway.protocol import http_app
from gateway.protocol.grpc_server import GrpcServer
from gateway.protocol.grpc_servicer import GrpcServicer
from gateway.protocol.http_server import HttpServer, Request, Response, Route, Router
from gateway.repository import ModelSource, scan
from gateway.routing import TrafficRouter
from gateway.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Endpoints:
    http: str
    grpc: str
    admin: str

    def line(self) -> str:
        return f"servegate ready http={self.http} grpc={self.grpc} admin={self.admin}"


class Gateway:
    """One gateway process. `start` returns the bound endpoints; `stop` drains and releases everything."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.manager = ModelManager(self.metrics)
        self.router = TrafficRouter(self.manager)
        self.plane = DataPlane(self.manager, self.router)
        self._sources: dict[str, ModelSource] = {}
        s = settings.server
        tls = _tls_context(s.tls_cert, s.tls_key)
        reuse = s.workers > 1
        self.grpc = GrpcServer(GrpcServicer(self.plane, self), host=s.host, port=s.grpc_port,
                               max_message_bytes=s.max_request_bytes, reuse_port=reuse,
                               tls=_tls_pair(s.tls_cert, s.tls_key))
        data_http = http_app.DataPlaneHttp(self.plane, max_body_bytes=s.max_request_bytes, repository=self)
        self.http = HttpServer(Router(http_app.routes(data_http)), http_app.error_response, host=s.host,
                               port=s.http_port, max_body_bytes=s.max_request_bytes, tls=tls, reuse_port=reuse)
        self.admin = HttpServer(Router(self._admin_routes()), http_app.error_response, host=s.host,
                                port=s.admin_port, max_body_bytes=16 * 1024 * 1024, tls=tls, reuse_port=reuse)

    def _admin_routes(self) -> list[Route]:
        return [Route("GET", "/metrics", self._metrics)]

    async def _metrics(self, req: Request) -> Response:
        return Response(200, self.metrics.render(), CONTENT_TYPE)

    async def start(self) -> Endpoints:
        host = self.settings.server.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        http_port = await self.http.start()
        grpc_port = await self.grpc.start()
        admin_port = await self.admin.start()
        if self.settings.repository is not None:
            self._sources = scan(self.settings.repository, self.settings.models)
            await self._load_all()
        self.plane.accepting = True
        await self.grpc.set_serving(True)
        return Endpoints(f"{shown}:{http_port}", f"{shown}:{grpc_port}", f"{shown}:{admin_port}")

    async def _load_all(self) -> None:
        for source in self._sources.values():
            for v in source.versions:
                await self.manager.load(source.name, v.version, v.path, source.config)

    async def stop(self) -> None:
        grace = self.settings.server.drain_seconds
        self.plane.accepting = False  # 1. readiness fails, new calls get 503 / UNAVAILABLE
        await self.grpc.set_serving(False)
        await asyncio.gather(self.http.stop(grace), self.grpc.stop(grace))  # 2+3. no new calls; finish
        await self.manager.drain(grace)
        await self.manager.stop()
        await self.admin.stop(1.0)  # last: metrics stay scrapeable during the drain

    # --- model-repository extension (RepositoryControl) ------------------------------------------

    async def load_model(self, name: str) -> None:
        from gateway.errors import ModelNotFound

        if self.settings.repository is None:
            raise ModelNotFound("no model repository is configured")
        self._sources = scan(self.settings.repository, self.settings.models)
        source = self._sources.get(name)
        if source is None:
            raise ModelNotFound(f"model '{name}' is not in the repository {self.settings.repository}")
        for v in source.versions:
            await self.manager.load(name, v.version, v.path, source.config)

    async def unload_model(self, name: str) -> None:
        for loaded in self.manager.versions(name):
            await self.manager.unload(name, loaded.version, self.settings.server.drain_seconds)


def _tls_pair(cert: Path | None, key: Path | None) -> tuple[bytes, bytes] | None:
    if cert is None or key is None:
        return None
    return cert.read_bytes(), key.read_bytes()


def _tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    if cert is None or key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    return context
