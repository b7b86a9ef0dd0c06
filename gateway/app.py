"""Composition root: builds every part of a gateway from its settings and owns the start/stop order.

Start: listeners (liveness answers while models warm up) -> state store -> registry sync (register
versions found on disk, load what the route tables use) -> ready -> background sync and controller.
Stop (graceful drain): not ready -> stop accepting -> finish in-flight work -> stop background tasks
-> close the store -> exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.admin.app import admin_server
from gateway.admin.app import error_response as admin_error_response
from gateway.admin.auth import Authenticator, authorize_grpc, authorize_http
from gateway.control_plane import GatewayControl
from gateway.dataplane import DataPlane
from gateway.errors import ModelNotFound
from gateway.faults import FaultControl, FaultInjector, unknown_version
from gateway.inference.probe import OrtProbe
from gateway.models import ModelManager
from gateway.observability import drift_shipping
from gateway.observability.drift_tracker import DriftTracker
from gateway.observability.metrics import CONTENT_TYPE, Metrics
from gateway.observation import LiveMetrics
from gateway.protocol import http_app
from gateway.protocol.grpc_server import GrpcServer
from gateway.protocol.grpc_servicer import GrpcServicer
from gateway.protocol.http_server import HttpServer, Request, Response, Route, Router
from gateway.repository import scan
from gateway.routing import TrafficRouter
from gateway.scaleout import ScaleOut
from gateway.settings import Settings
from gateway.shadow import ShadowMirror, SharedShadow
from gateway.sync import StateSync
from gateway.workers import worker_metrics
from kernels import warm_up
from rollout.decide import Action, Decision, Phase
from rollout.errors import StoreUnavailable
from rollout.registry import Registry
from rollout.store import open_store
from rollout.store.base import KIND_FAULT, StateStore
from rollout.validation import Validator

log = logging.getLogger(__name__)

PHASES = tuple(p.value for p in Phase)


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
        self.worker_metrics = worker_metrics(settings, self.metrics.render)  # None unless one of several
        self.manager = ModelManager(self.metrics)
        self.router = TrafficRouter(self.manager)
        self.shadow = ShadowMirror(self.manager, self.metrics)
        self.faults = FaultInjector(self.manager)
        self.plane = DataPlane(self.manager, self.router, shadow=self.shadow, faults=self.faults)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._build_state()
        self._build_listeners()

    def _build_state(self) -> None:
        """Store, registry, sync and control plane; nothing here talks to the network yet."""
        settings = self.settings
        self.store: StateStore = open_store(settings.store_url())
        self.registry = Registry(self.store, validator=Validator(OrtProbe()))
        sources = scan(settings.repository, settings.models) if settings.repository else {}
        self.sync = StateSync(self.store, self.registry, self.manager, self.router, self.metrics,
                              sources=sources, defaults=settings.models,
                              drain_seconds=settings.server.drain_seconds)
        self.scaleout = ScaleOut(settings, self.store, self.metrics, self.manager,
                                 degraded=lambda: self.sync.degraded)
        self.sync.hold = lambda: self.scaleout.watch.reset  # a store that lost its data is not followed
        self.scaleout.watch.on_restored.append(self.sync.refresh_all)
        self.fault_control = FaultControl(self.store, self.faults, unknown_version(self.manager))
        self.sync.on_load.append(lambda loaded, record: self.faults.attach(loaded))
        self.drift = DriftTracker(self.registry, self.metrics)
        self.sync.on_load.append(self.drift.attach)
        self.live_metrics = LiveMetrics(self.manager, self.shadow, self.drift)
        if self.scaleout.shared:  # other processes serve too: ship drift counts beside the slices
            self.scaleout.replication.register_payload(drift_shipping.PAYLOAD,
                                                       drift_shipping.provider(self.drift.monitor))
            self.scaleout.replication.register_payload(SharedShadow.PAYLOAD, self.shadow.second)
        self.sync.watchers[KIND_FAULT] = self.fault_control.load_all
        fc = self.fault_control
        self.control = GatewayControl(self.store, self.registry, self.sync, self.manager,
                                      repository=settings.repository,
                                      extras={"faults": fc.faults, "set_faults": fc.set_faults,
                                              "clear_faults": fc.clear_faults, "drift": self.drift.report,
                                              "drift_status": self.drift.status},
                                      shadow=self.shadow)
        self.control.on_decision = self.record_decision

    def _build_listeners(self) -> None:
        s, auth = self.settings.server, self.settings.auth
        tls, reuse = _tls_context(s.tls_cert, s.tls_key), s.workers > 1
        self.authenticator = Authenticator(auth)
        grpc_auth = authorize_grpc(self.authenticator) if auth.require_auth else None
        http_auth = authorize_http(self.authenticator) if auth.require_auth else None
        self.grpc = GrpcServer(GrpcServicer(self.plane, self), host=s.host, port=s.grpc_port,
                               max_message_bytes=s.max_request_bytes, reuse_port=reuse,
                               tls=_tls_pair(s.tls_cert, s.tls_key), authorize=grpc_auth,
                               engine=s.grpc_engine, max_connection_age=s.grpc_max_connection_age,
                               max_connection_age_grace=s.drain_seconds,
                               keepalive=(s.grpc_keepalive_time, s.grpc_keepalive_timeout))
        data_http = http_app.DataPlaneHttp(self.plane, max_body_bytes=s.max_request_bytes, repository=self,
                                           details=self.scaleout.watch.details)
        # the admin error handler: the same status table, plus the Bearer challenge on 401 / 403
        self.http = HttpServer(Router(http_app.routes(data_http, http_auth)), admin_error_response,
                               host=s.host, port=s.http_port, max_body_bytes=s.max_request_bytes, tls=tls,
                               reuse_port=reuse)
        self.admin = admin_server(self.control, self.authenticator, host=s.host, port=s.admin_port,
                                  extra=[Route("GET", "/metrics", self._metrics),
                                         self.scaleout.mirror.route(self.authenticator)],
                                  tls=tls, reuse_port=reuse)

    def route_now(self, decision: Decision) -> None:
        """A rollback takes traffic away from the candidate here before it is even written."""
        self.sync.apply_local(decision.route, revision=-1)

    def record_decision(self, decision: Decision) -> None:
        """Every applied rollout decision: its route takes effect here at once (the store notifies the
        other replicas), and it is counted in the metrics."""
        if decision.action is not Action.HOLD:
            self.sync.apply_local(decision.route, revision=-1)  # the next refresh reconciles the revision
        self.metrics.record_decision(decision.status.model, decision.action.value, decision.status.phase.value,
                                     PHASES)

    async def _metrics(self, req: Request) -> Response:
        if self.worker_metrics is not None:  # one of several workers: answer for all of them
            return Response(200, await self.worker_metrics.render(), CONTENT_TYPE)
        return Response(200, self.metrics.render(), CONTENT_TYPE)

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> Endpoints:
        host = self.settings.server.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        # Alone, the listeners open first so that liveness answers while models warm up. A worker shares
        # its ports with the others: it opens them once it can serve, so that a restarted worker never
        # answers "not ready" on connections the kernel hands it.
        alone = self.settings.server.workers == 1
        if not alone:
            await self._start_state()
        http_port = await self.http.start()
        grpc_port = await self.grpc.start()
        admin_port = await self.admin.start()
        if self.worker_metrics is not None:
            await self.worker_metrics.start()
        if alone:
            await self._start_state()
        self.plane.accepting = True
        await self.grpc.set_serving(True)
        return Endpoints(f"{shown}:{http_port}", f"{shown}:{grpc_port}", f"{shown}:{admin_port}")

    async def _start_state(self) -> None:
        await asyncio.to_thread(warm_up)  # drift kernels compile (or load from cache) before ready
        try:
            await self.scaleout.start()  # a store that lost its data is not bootstrapped over
            await self.sync.bootstrap()
            await self.fault_control.load_all()
        except StoreUnavailable as exc:
            log.error("state store unreachable at start (%s); serving the repository's highest versions "
                      "until it answers", exc)
            await self._load_repository()
        self._tasks.append(asyncio.ensure_future(self.sync.run(self._stop)))
        self._tasks.append(asyncio.ensure_future(self.drift.run(self._stop)))
        self._tasks += [asyncio.ensure_future(job) for job in self.scaleout.tasks(self._stop)]
        if self.settings.controller.enabled:  # competes for the lease with every other controller
            controller = self.scaleout.controller(self.store, self.registry, self.live_metrics,
                                                  on_decision=self.record_decision,
                                                  profiles=self.drift.model_profile,
                                                  on_rollback=self.route_now)
            self._tasks.append(asyncio.ensure_future(controller.run(self._stop)))

    async def _load_repository(self) -> None:
        for source in scan(self.settings.repository, self.settings.models).values() if self.settings.repository else ():
            for v in source.versions:
                await self.manager.load(source.name, v.version, v.path, source.config)

    async def stop(self) -> None:
        grace = self.settings.server.drain_seconds
        self.plane.accepting = False  # 1. readiness fails, new calls get 503 / UNAVAILABLE
        await self.grpc.set_serving(False)
        await asyncio.gather(self.http.stop(grace), self.grpc.stop(grace))  # 2+3. no new calls; finish
        await self.manager.drain(grace)
        self._stop.set()  # 4. background sync and controller end their current pass
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.shadow.stop()
        await self.manager.stop()
        await asyncio.to_thread(self.store.close)  # 5. state is durable at every write; close cleanly
        await self.admin.stop(1.0)  # last: metrics stay scrapeable during the drain
        if self.worker_metrics is not None:
            await self.worker_metrics.stop()

    # --- model-repository extension (RepositoryControl) ------------------------------------------

    async def load_model(self, name: str) -> None:
        if self.settings.repository is not None:
            self.sync.sources = scan(self.settings.repository, self.settings.models)
        if name not in self.sync.sources and name not in self.manager.models():
            raise ModelNotFound(f"model '{name}' is not in the repository {self.settings.repository}")
        await self.sync.bootstrap()

    async def unload_model(self, name: str) -> None:
        for loaded in self.manager.versions(name):
            await self.manager.unload(name, loaded.version, self.settings.server.drain_seconds)


def _tls_pair(cert: Path | None, key: Path | None) -> tuple[Path, Path] | None:
    if cert is None or key is None:
        return None
    return cert, key


def _tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    if cert is None or key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    return context
