"""The admin API as one table: every route, the role it needs, and its handler; plus its error handler.

The composition root builds the admin listener from `admin_routes(...)` and `error_response`, adding
its own unauthenticated routes (such as `GET /metrics`) through `extra`.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence

import orjson

from gateway.admin import openapi
from gateway.admin.auth import Authenticator, MissingCredentials
from gateway.admin.endpoints import AdminEndpoints
from gateway.control import ControlPlane
from gateway.errors import PermissionDenied, Unauthenticated
from gateway.protocol import http_app
from gateway.protocol.http_server import HttpServer, Request, Response, Route, Router
from rollout.errors import ValidationFailed

PREFIX = "/admin/v1"
MAX_BODY_BYTES = 16 * 1024 * 1024
REALM = "servegate"


def admin_routes(control: ControlPlane, authenticator: Authenticator,
                 extra: Sequence[Route] = ()) -> list[Route]:
    """The admin surface; roles are checked inside each handler (see the comment at the end of a row)."""
    e = AdminEndpoints(control, authenticator, openapi.document())
    m, mv = f"{PREFIX}/models/{{model}}", f"{PREFIX}/models/{{model}}/versions/{{version}}"
    return [
        Route("GET", f"{PREFIX}/models", e.models),                   # viewer
        Route("GET", m, e.model),                                     # viewer
        Route("POST", f"{m}/versions", e.register),                   # admin
        Route("POST", f"{mv}/stage", e.set_stage),                    # admin
        Route("PUT", f"{m}/traffic", e.set_traffic),                  # operator
        Route("POST", f"{m}/rollout", e.start_rollout),               # operator
        Route("GET", f"{m}/rollout", e.rollout),                      # viewer
        Route("POST", f"{m}/rollout/{{verb}}", e.rollout_verb),       # operator; approve: admin
        Route("GET", f"{mv}/drift", e.drift),                         # viewer
        Route("GET", f"{mv}/faults", e.faults),                       # viewer
        Route("PUT", f"{mv}/faults", e.set_faults),                   # admin
        Route("DELETE", f"{mv}/faults", e.clear_faults),              # admin
        Route("GET", f"{PREFIX}/audit", e.audit),                     # viewer
        Route("GET", f"{PREFIX}/audit/verify", e.verify_audit),       # viewer
        Route("GET", f"{PREFIX}/whoami", e.whoami),                   # any valid token
        Route("GET", f"{PREFIX}/openapi.json", e.openapi),            # no token
        *extra,
    ]


def error_response(request: Request | None, exc: BaseException) -> Response:
    """The data plane's error mapping, plus the RFC 6750 `WWW-Authenticate` challenge on 401 / 403 and
    a failed registration's validation report beside its error."""
    response = http_app.error_response(request, exc)
    if isinstance(exc, ValidationFailed) and exc.report:
        response.body = orjson.dumps({"error": str(exc), "report": exc.report}, option=orjson.OPT_NON_STR_KEYS)
    challenge = _challenge(exc)
    if challenge is not None:
        response.headers = (*response.headers, ("www-authenticate", challenge))
    return response


def _challenge(exc: BaseException) -> str | None:
    if isinstance(exc, MissingCredentials):
        return f'Bearer realm="{REALM}"'
    if isinstance(exc, Unauthenticated):
        return f'Bearer realm="{REALM}", error="invalid_token", error_description="{_quoted(str(exc))}"'
    if isinstance(exc, PermissionDenied):
        return f'Bearer realm="{REALM}", error="insufficient_scope"'
    return None


def _quoted(text: str) -> str:
    # A quoted-string may not hold '"' or '\'; header values must stay latin-1.
    return text.replace("\\", "").replace('"', "'").encode("latin-1", "replace").decode("latin-1")


def admin_server(control: ControlPlane, authenticator: Authenticator, *, host: str, port: int,
                 extra: Sequence[Route] = (), tls: ssl.SSLContext | None = None,
                 reuse_port: bool = False, max_body_bytes: int = MAX_BODY_BYTES) -> HttpServer:
    """An `HttpServer` serving `admin_routes` with this module's error handler (start it to listen)."""
    router = Router(admin_routes(control, authenticator, extra))
    return HttpServer(router, error_response, host=host, port=port, max_body_bytes=max_body_bytes,
                      tls=tls, reuse_port=reuse_port)
