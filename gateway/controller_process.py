"""`servegate controller`: the promotion controller alone on a shared store, competing for the same lease
as the controllers inside `servegate serve`, judging windows on every replica's shipped slices. It
listens only on a small HTTP port for liveness, readiness and `/metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson

from gateway.models import ModelManager
from gateway.observability.drift_tracker import DriftTracker
from gateway.observability.metrics import CONTENT_TYPE, Metrics
from gateway.observation import LiveMetrics
from gateway.protocol import http_app
from gateway.protocol.http_server import HttpServer, Request, Response, Route, Router
from gateway.scaleout import ScaleOut
from gateway.settings import Settings
from rollout.decide import Decision, Phase
from rollout.errors import StoreUnavailable
from rollout.registry import Registry
from rollout.store import open_store

log = logging.getLogger(__name__)

HEALTH_MAX_BODY = 64 * 1024
LIVE_PATH, READY_PATH, METRICS_PATH = "/v2/health/live", "/v2/health/ready", "/metrics"


class ControllerProcess:
    """Composition root of `servegate controller`: `start` returns the health endpoint, `stop` gives
    the lease back and closes the store."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.store = open_store(settings.store_url())
        self.registry = Registry(self.store)
        self.scaleout = ScaleOut(settings, self.store, self.metrics, None, role="controller")
        profiles = DriftTracker(self.registry, self.metrics).model_profile  # references from the registry
        self.controller = self.scaleout.controller(self.store, self.registry,
                                                   LiveMetrics(ModelManager(self.metrics)),
                                                   on_decision=self._record, profiles=profiles)
        s = settings.server
        self.http = HttpServer(Router(self._routes()), http_app.error_response, host=s.host, port=s.admin_port,
                               max_body_bytes=HEALTH_MAX_BODY)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []

    def _record(self, decision: Decision) -> None:
        self.metrics.record_decision(decision.status.model, decision.action.value, decision.status.phase.value,
                                     tuple(p.value for p in Phase))

    def _routes(self) -> list[Route]:
        return [Route("GET", LIVE_PATH, self._live), Route("GET", READY_PATH, self._ready),
                Route("GET", METRICS_PATH, self._metrics)]

    async def _live(self, req: Request) -> Response:
        return Response(200, orjson.dumps({"live": True}))

    async def _ready(self, req: Request) -> Response:
        # A standby controller is ready too: it is waiting for the lease, which is its job.
        body = {"ready": True, **self.scaleout.watch.details(), "leader": self.scaleout.lease.held(),
                "replica": self.scaleout.replica}
        return Response(200, orjson.dumps(body))

    async def _metrics(self, req: Request) -> Response:
        return Response(200, self.metrics.render(), CONTENT_TYPE)

    async def start(self) -> str:
        port = await self.http.start()
        with contextlib.suppress(StoreUnavailable):
            await self.scaleout.start()  # down or marked reset: the watch keeps looking, the lease waits
        for job in (*self.scaleout.tasks(self._stop), self.controller.run(self._stop)):
            self._tasks.append(asyncio.ensure_future(job))
        host = self.settings.server.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        log.info("controller %s started on %s", self.scaleout.replica, self.store.url)
        return f"servegate controller ready admin={shown}:{port}"

    async def stop(self) -> None:
        self._stop.set()  # the controller finishes its tick and gives the lease back
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.to_thread(self.store.close)
        await self.http.stop(1.0)
