"""Handlers of the admin API: authenticate, require the role, validate the body, call the ControlPlane.

Body and query errors are `InvalidSpec` naming the field; the admin server's one exception handler
turns every error into a status and `{"error": ...}`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.admin.auth import ADMIN, OPERATOR, VIEWER, Authenticator, Principal
from gateway.control import JSON, ControlPlane
from gateway.protocol.http_server import Request, Response
from rollout.errors import InvalidSpec
from rollout.policy import parse_traffic
from rollout.registry import Stage
from rollout.spec import parse_duration, parse_spec

VERBS: dict[str, str] = {"pause": OPERATOR, "resume": OPERATOR, "promote": OPERATOR,
                         "abort": OPERATOR, "approve": ADMIN}
REGISTER_FIELDS = ("version", "artifact", "metadata", "holdout", "reference", "breaking")
STAGE_FIELDS = ("stage", "reason")
# fault -> (lowest, highest); the same bounds as gateway/faults.py, which applies them.
FAULT_RANGES: dict[str, tuple[float | None, float | None]] = {
    "latency_ms": (0.0, 600_000.0),
    "latency_jitter_ms": (0.0, 600_000.0),
    "error_rate": (0.0, 1.0),
    "output_shift": (-1e6, 1e6),
    "output_noise": (0.0, 1e6),
}
LATENCY_DISTRIBUTIONS = ("fixed", "uniform", "exponential")
FAULT_FIELDS = (*FAULT_RANGES, "latency_distribution", "duration")
MAX_FAULT_DURATION_S = 24 * 3600.0
AUDIT_LIMIT_DEFAULT = 100
AUDIT_LIMIT_MAX = 10_000
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


def json_response(value: Any, status: int = 200) -> Response:
    return Response(status, orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS))


class AdminEndpoints:
    """One handler per admin route; each states the role it needs in its first line."""

    def __init__(self, control: ControlPlane, authenticator: Authenticator, openapi: JSON) -> None:
        self.control = control
        self.auth = authenticator
        self._openapi = orjson.dumps(openapi)

    def _principal(self, req: Request, role: str | None) -> Principal:
        principal = self.auth.authenticate(req.headers.get("authorization"))
        if role is not None:
            principal.require(role)
        return principal

    # --- models and the registry -----------------------------------------------------------------

    async def models(self, req: Request) -> Response:
        self._principal(req, VIEWER)
        return json_response({"models": await self.control.models()})

    async def model(self, req: Request) -> Response:
        self._principal(req, VIEWER)
        return json_response(await self.control.model(req.params["model"]))

    async def register(self, req: Request) -> Response:
        who = self._principal(req, ADMIN)
        body = register_body(json_object(req, REGISTER_FIELDS))
        return json_response(await self.control.register(req.params["model"], body, who.subject), 201)

    async def set_stage(self, req: Request) -> Response:
        who = self._principal(req, ADMIN)
        body = json_object(req, STAGE_FIELDS)
        stage = choice(body, "stage", tuple(Stage))
        reason = text(body, "reason")
        p = req.params
        return json_response(await self.control.set_stage(p["model"], p["version"], stage, reason, who.subject))

    # --- traffic and rollouts --------------------------------------------------------------------

    async def set_traffic(self, req: Request) -> Response:
        who = self._principal(req, OPERATOR)
        body = json_document(req)
        parse_traffic(req.params["model"], body)  # refuse a bad table here, with the field named
        return json_response(await self.control.set_traffic(req.params["model"], body, who.subject))

    async def start_rollout(self, req: Request) -> Response:
        who = self._principal(req, OPERATOR)
        spec = rollout_body(req)
        parse_spec(spec)
        return json_response(await self.control.start_rollout(req.params["model"], spec, who.subject), 201)

    async def rollout(self, req: Request) -> Response:
        self._principal(req, VIEWER)
        return json_response(await self.control.rollout(req.params["model"]))

    async def rollout_verb(self, req: Request) -> Response:
        principal = self._principal(req, None)
        verb = req.params["verb"]
        if verb not in VERBS:
            raise InvalidSpec("verb", f"expected one of {', '.join(VERBS)}, got {verb!r}")
        principal.require(VERBS[verb])
        return json_response(await self.control.rollout_verb(req.params["model"], verb, principal.subject))

    # --- measurements and faults -----------------------------------------------------------------

    async def drift(self, req: Request) -> Response:
        self._principal(req, VIEWER)
        query = query_params(req, ("window",))
        window = parse_duration("window", query.get("window", "60s"))
        if window <= 0:
            raise InvalidSpec("window", f"expected a duration > 0, got {query['window']!r}")
        p = req.params
        return json_response(await self.control.drift(p["model"], p["version"], window))

    async def faults(self, req: Request) -> Response:
        self._principal(req, VIEWER)
        return json_response(await self.control.faults(req.params["model"], req.params["version"]))

    async def set_faults(self, req: Request) -> Response:
        who = self._principal(req, ADMIN)
        body = faults_body(json_object(req, FAULT_FIELDS))
        p = req.params
        return json_response(await self.control.set_faults(p["model"], p["version"], body, who.subject))

    async def clear_faults(self, req: Request) -> Response:
        who = self._principal(req, ADMIN)
        p = req.params
        return json_response(await self.control.clear_faults(p["model"], p["version"], who.subject))

    # --- audit, identity, the document ------------------------------------------------------------

    async def audit(self, req: Request) -> Response:
        self._principal(req, VIEWER)
        query = query_params(req, ("model", "since", "limit"))
        since = parse_since(query["since"], time.time()) if query.get("since") else None
        limit = parse_limit(query.get("limit"))
        entries = await self.control.audit(query.get("model") or None, since, limit)
        return json_response({"entries": entries})

    async def verify_audit(self, req: Request) -> Response:
        self._principal(req, VIEWER)
        return json_response(await self.control.verify_audit())

    async def whoami(self, req: Request) -> Response:
        principal = self._principal(req, None)
        return json_response({"subject": principal.subject, "roles": sorted(principal.roles),
                              "grants": sorted(principal.grants)})

    async def openapi(self, req: Request) -> Response:
        return Response(200, self._openapi)


# --- request parsing (pure; errors name the field) ---------------------------------------------------

def json_document(req: Request) -> Any:
    if not req.body.strip():
        raise InvalidSpec("body", "expected a JSON object, got an empty body")
    try:
        return orjson.loads(req.body)
    except orjson.JSONDecodeError as exc:
        raise InvalidSpec("body", f"not valid JSON: {exc}") from None


def json_object(req: Request, fields: tuple[str, ...]) -> dict[str, Any]:
    """The body as an object whose keys are all in `fields`."""
    doc = json_document(req)
    if not isinstance(doc, dict):
        raise InvalidSpec("body", f"expected a JSON object, got {type(doc).__name__}")
    unknown = sorted(k for k in doc if k not in fields)
    if unknown:
        raise InvalidSpec(", ".join(unknown), f"unknown field; expected some of {', '.join(fields)}")
    return doc


def query_params(req: Request, names: tuple[str, ...]) -> dict[str, str]:
    query = req.query_params()
    unknown = sorted(k for k in query if k not in names)
    if unknown:
        raise InvalidSpec(", ".join(unknown), f"unknown query parameter; expected some of {', '.join(names)}")
    return query


def rollout_body(req: Request) -> JSON | str:
    """A spec as a JSON object, or as YAML text when the content type says YAML."""
    content_type = req.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in YAML_TYPES:
        doc = json_document(req)
        if not isinstance(doc, dict):
            raise InvalidSpec("body", f"expected a rollout spec object, got {type(doc).__name__}")
        return doc
    try:
        return req.body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidSpec("body", "expected UTF-8 YAML text") from None


def text(body: Mapping[str, Any], name: str) -> str:
    """A required non-empty string field."""
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidSpec(name, f"expected a non-empty string, got {value!r}")
    return value


def choice(body: Mapping[str, Any], name: str, choices: tuple[str, ...]) -> str:
    value = body.get(name)
    if value not in choices:
        raise InvalidSpec(name, f"expected one of {', '.join(choices)}, got {value!r}")
    return str(value)


def register_body(body: dict[str, Any]) -> JSON:
    if isinstance(body.get("version"), int) and not isinstance(body["version"], bool):
        body = {**body, "version": str(body["version"])}  # `"version": 3` means "3", as in specs
    out: JSON = {"version": text(body, "version"),
                 "artifact": text(body, "artifact")}
    if body.get("metadata") is not None:
        if not isinstance(body["metadata"], dict):
            raise InvalidSpec("metadata", f"expected an object, got {type(body['metadata']).__name__}")
        out["metadata"] = body["metadata"]
    for name in ("holdout", "reference"):
        if body.get(name) is not None:
            out[name] = text(body, name)
    if "breaking" in body:
        if not isinstance(body["breaking"], bool):
            raise InvalidSpec("breaking", f"expected true or false, got {body['breaking']!r}")
        out["breaking"] = body["breaking"]
    return out


def faults_body(body: dict[str, Any]) -> JSON:
    """Checks each fault's range and the required duration; the body goes on as it was sent."""
    for name, (low, high) in FAULT_RANGES.items():
        if name in body:
            number(name, body[name], low, high)
    if "latency_distribution" in body:
        choice(body, "latency_distribution", LATENCY_DISTRIBUTIONS)
    if not any(name in body for name in FAULT_RANGES):
        raise InvalidSpec("body", f"expected at least one fault: {', '.join(FAULT_RANGES)}")
    if "duration" not in body:
        raise InvalidSpec("duration", "required: how long the faults last, e.g. 5m")
    seconds = parse_duration("duration", body["duration"])
    if not 0 < seconds <= MAX_FAULT_DURATION_S:
        raise InvalidSpec("duration", f"expected a duration > 0 and at most 24h, got {body['duration']!r}")
    return body


def number(name: str, value: object, low: float | None, high: float | None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or (low is not None and value < low) or (high is not None and value > high):
        if low is not None and high is not None:
            bound = f"{low:g}..{high:g}"
        else:
            bound = f">= {low:g}" if low is not None else "(any finite value)"
        raise InvalidSpec(name, f"expected a number {bound}, got {value!r}")
    return float(value)


def parse_since(value: str, now: float) -> float:
    """Seconds since the epoch, an ISO 8601 time (UTC unless it says otherwise), or a duration ago."""
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds):
            return seconds
    try:
        return now - parse_duration("since", value)
    except InvalidSpec:
        pass
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidSpec("since", "expected seconds since the epoch, an ISO 8601 time or a "
                                   f"duration ago like 1h, got {value!r}") from None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()


def parse_limit(value: str | None) -> int:
    if value is None or value == "":
        return AUDIT_LIMIT_DEFAULT
    if not value.isdigit() or not 1 <= int(value) <= AUDIT_LIMIT_MAX:
        raise InvalidSpec("limit", f"expected an integer 1..{AUDIT_LIMIT_MAX}, got {value!r}")
    return int(value)
