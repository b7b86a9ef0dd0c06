"""The REST surface of the data plane as one table: every Open Inference Protocol route and its handler.

Handlers convert, call the data plane once, and convert back; errors are turned into responses by the
server's single exception handler (`error_response`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson

from gateway.dataplane import DataPlane
from gateway.errors import InvalidInput
from gateway.protocol import http_convert as convert
from gateway.protocol import status
from gateway.protocol.grpc_servicer import RepositoryControl
from gateway.protocol.http_server import Handler, Request, Response, Route

log = logging.getLogger(__name__)

Authorize = Callable[[Request], None]


def error_response(request: Request | None, exc: BaseException) -> Response:
    """The one place where the HTTP surface maps an exception to a status and `{"error": ...}`."""
    if status.is_known(exc):
        return Response(status.http_status(exc), orjson.dumps({"error": str(exc)}))
    where = f" ({request.method} {request.path})" if request is not None else ""
    log.error("unexpected error%s", where, exc_info=exc)
    return Response(500, orjson.dumps({"error": "internal error; see the gateway's log"}))


def _json(value: Any, code: int = 200) -> Response:
    return Response(code, convert.dumps(value))


class DataPlaneHttp:
    """Handlers for the data plane's REST routes."""

    def __init__(self, plane: DataPlane, *, max_body_bytes: int,
                 repository: RepositoryControl | None = None,
                 details: Callable[[], dict[str, Any]] | None = None) -> None:
        self.plane = plane
        self.max_body = max_body_bytes
        self.repository = repository
        self.details = details  # extra readiness fields, such as how the state store is

    async def live(self, req: Request) -> Response:
        return _json({"live": True}) if self.plane.live else _json({"live": False}, 503)

    async def ready(self, req: Request) -> Response:
        extra = self.details() if self.details is not None else {}
        return _json({"ready": True, **extra}) if self.plane.ready() else _json({"ready": False, **extra}, 503)

    async def server_metadata(self, req: Request) -> Response:
        return _json(self.plane.server_metadata())

    async def models(self, req: Request) -> Response:
        return _json({"models": self.plane.manager.models()})

    async def model_metadata(self, req: Request) -> Response:
        return _json(self.plane.model_metadata(req.params["model"], req.params.get("version", "")))

    async def model_ready(self, req: Request) -> Response:
        model, version = req.params["model"], req.params.get("version", "")
        ready = self.plane.model_ready(model, version)
        return _json({"name": model, "ready": ready}, 200 if ready else 503)

    async def infer(self, req: Request) -> Response:
        body = convert.decode_body(req.body, req.headers, self.max_body)
        request = convert.parse_infer(body, req.headers, req.params["model"], req.params.get("version", ""))
        response = await self.plane.infer(request)
        payload, content_type, headers = convert.encode_infer(response, request)
        return Response(200, payload, content_type, headers)

    async def config(self, req: Request) -> Response:
        return _json(self.plane.model_config(req.params["model"], req.params.get("version", "")))

    async def stats(self, req: Request) -> Response:
        stats = self.plane.model_statistics(req.params.get("model", ""), req.params.get("version", ""))
        return _json({"model_stats": stats})

    async def repository_index(self, req: Request) -> Response:
        ready = False
        if req.body.strip():
            try:
                doc = orjson.loads(req.body)
            except orjson.JSONDecodeError as exc:
                raise InvalidInput(f"request body is not valid JSON: {exc}") from exc
            ready = bool(doc.get("ready", False)) if isinstance(doc, dict) else False
        return _json(self.plane.repository_index(ready))

    async def load(self, req: Request) -> Response:
        if self.repository is not None:
            await self.repository.load_model(req.params["model"])
        return _json({})

    async def unload(self, req: Request) -> Response:
        if self.repository is not None:
            await self.repository.unload_model(req.params["model"])
        return _json({})


def routes(h: DataPlaneHttp, authorize: Authorize | None = None) -> list[Route]:
    """The data plane's REST table. With `authorize`, every route but health checks needs a token."""
    m, mv = "/v2/models/{model}", "/v2/models/{model}/versions/{version}"
    open_routes = [
        Route("GET", "/v2/health/live", h.live),
        Route("GET", "/v2/health/ready", h.ready),
    ]
    guarded = [
        Route("GET", "/v2", h.server_metadata),
        Route("GET", "/v2/models", h.models),
        Route("GET", "/v2/models/stats", h.stats),
        Route("GET", m, h.model_metadata),
        Route("GET", mv, h.model_metadata),
        Route("GET", f"{m}/ready", h.model_ready),
        Route("GET", f"{mv}/ready", h.model_ready),
        Route("POST", f"{m}/infer", h.infer),
        Route("POST", f"{mv}/infer", h.infer),
        Route("GET", f"{m}/config", h.config),
        Route("GET", f"{mv}/config", h.config),
        Route("GET", f"{m}/stats", h.stats),
        Route("GET", f"{mv}/stats", h.stats),
        Route("POST", "/v2/repository/index", h.repository_index),
        Route("POST", "/v2/repository/models/{model}/load", h.load),
        Route("POST", "/v2/repository/models/{model}/unload", h.unload),
    ]
    if authorize is not None:
        guarded = [Route(r.method, r.pattern, _with_auth(r.handler, authorize)) for r in guarded]
    return open_routes + guarded


def _with_auth(handler: Handler, authorize: Authorize) -> Handler:
    async def guarded(req: Request) -> Response:
        authorize(req)
        return await handler(req)
    return guarded
