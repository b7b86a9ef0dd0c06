"""The OpenAPI 3.1 document of the admin API, written by hand and served at /admin/v1/openapi.json.

Request schemas mirror the validation in `rollout.policy`, `rollout.spec` and `gateway.admin.endpoints`;
a test keeps the paths here and the route table in step.
"""

from __future__ import annotations

import copy
from typing import Any

JSON = dict[str, Any]

_DURATION: JSON = {"oneOf": [{"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h)\s*$"},
                             {"type": "number", "minimum": 0}],
                   "description": "500ms, 30s, 5m, 1h, or a number of seconds", "examples": ["5m"]}
_PERCENT: JSON = {"type": "integer", "minimum": 0, "maximum": 100}
_NULLABLE_NUMBER: JSON = {"type": ["number", "null"], "minimum": 0}
_OBJECT: JSON = {"type": "object", "additionalProperties": True}


def _ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: JSON, required: tuple[str, ...] = (), *, closed: bool = True, **extra: Any) -> JSON:
    schema: JSON = {"type": "object", "properties": properties, "additionalProperties": not closed, **extra}
    if required:
        schema["required"] = list(required)
    return schema


ROUTE_TABLE = _object({
    "policy": {"enum": ["canary", "blue_green", "ab"]},
    "weights": {"type": "object", "additionalProperties": _PERCENT,
                "description": "version -> percent; sums to 100 (canary, ab)"},
    "active": {"type": "string", "description": "blue_green: the version taking all live traffic"},
    "preview": {"type": "string", "description": "blue_green: loaded, gets shadow or explicit traffic"},
    "sticky_key": {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]*$",
                   "description": "header / metadata name hashed to keep a user on one arm (required for ab)"},
    "shadow": _object({"version": {"type": "string"}, "percent": _PERCENT}, ("version", "percent")),
    "fallback": {"type": "string", "description": "version a failed request is re-run on"},
    "retained": {"type": "object", "additionalProperties": {"type": "number"},
                 "description": "version -> unix time until which it stays loaded"},
}, ("policy",), examples=[{"policy": "canary", "weights": {"1": 90, "2": 10}},
                          {"policy": "blue_green", "active": "2", "preview": "3"}])

ANALYSIS = _object({
    "min_requests": {"type": "integer", "minimum": 0, "default": 100},
    "max_error_rate": {"type": ["number", "null"], "minimum": 0, "maximum": 1, "default": 0.01},
    "max_p99_latency_ms": _NULLABLE_NUMBER,
    "max_p99_latency_ratio": _NULLABLE_NUMBER,
    "max_input_psi": _NULLABLE_NUMBER,
    "max_prediction_psi": _NULLABLE_NUMBER,
    "failure_limit": {"type": "integer", "minimum": 1, "default": 1},
    "error_limit": {"type": "integer", "minimum": 1, "default": 4},
    "on_inconclusive": {"enum": ["pause", "rollback"], "default": "pause"},
})

ROLLOUT_SPEC = _object({
    "candidate": {"type": ["string", "integer"], "description": "the version to roll out"},
    "strategy": {"enum": ["canary", "blue_green", "ab"], "default": "canary"},
    "steps": {"type": "array", "items": {"oneOf": [
        _object({"weight": _PERCENT}, ("weight",)),
        _object({"pause": {"oneOf": [{"const": "manual"}, _DURATION]}}, ("pause",))]}},
    "window": {**_DURATION, "default": "60s"},
    "analysis": ANALYSIS,
    "sticky_key": {"type": "string"},
    "shadow_percent": {**_PERCENT, "default": 0},
    "retry_on_stable": {"type": "boolean", "default": True},
    "approval": {"enum": ["auto", "manual"], "default": "auto"},
    "rollback_window": {**_DURATION, "default": "5m"},
}, ("candidate",), examples=[{"candidate": "3", "steps": [{"weight": 10}, {"weight": 50}, {"weight": 100}],
                              "window": "30s", "analysis": {"max_error_rate": 0.01}}])

REGISTER = _object({
    "version": {"type": ["string", "integer"]},
    "artifact": {"type": "string", "description": "path of the ONNX file on the gateway's host"},
    "metadata": {"type": "object", "description": "owner, training data, hyperparameters, region, ..."},
    "holdout": {"type": "string", "description": "holdout set for the evaluation gate"},
    "reference": {"type": "string", "description": "reference data for drift bin edges"},
    "breaking": {"type": "boolean", "description": "the signature change is intended"},
}, ("version", "artifact"))

STAGE = _object({
    "stage": {"enum": ["registered", "validated", "rejected", "canary", "production", "rolled_back",
                       "archived"]},
    "reason": {"type": "string", "minLength": 1},
}, ("stage", "reason"))

FAULTS = _object({
    "latency_ms": {"type": "number", "minimum": 0, "maximum": 600000},
    "latency_jitter_ms": {"type": "number", "minimum": 0, "maximum": 600000},
    "latency_distribution": {"enum": ["fixed", "uniform", "exponential"], "default": "fixed",
                             "description": "how the jitter is drawn"},
    "error_rate": {"type": "number", "minimum": 0, "maximum": 1},
    "output_shift": {"type": "number", "minimum": -1e6, "maximum": 1e6},
    "output_noise": {"type": "number", "minimum": 0, "maximum": 1e6},
    "duration": {**_DURATION, "description": "how long the faults last (at most 24h); they expire on their own"},
}, ("duration",), description="at least one of latency_ms, latency_jitter_ms, error_rate, output_shift, "
                              "output_noise besides duration")

SCHEMAS: JSON = {
    "Error": _object({"error": {"type": "string"}}, ("error",)),
    "RouteTable": ROUTE_TABLE,
    "RolloutSpec": ROLLOUT_SPEC,
    "RegisterVersion": REGISTER,
    "StageChange": STAGE,
    "Faults": FAULTS,
    "Model": _object({"name": {"type": "string"}, "versions": {"type": "array", "items": _OBJECT},
                      "traffic": {"oneOf": [_ref("RouteTable"), {"type": "null"}]},
                      "rollout": {"type": ["object", "null"]}}, closed=False),
    "ModelList": _object({"models": {"type": "array", "items": _ref("Model")}}, ("models",)),
    "Version": _object({"version": {"type": "string"}, "stage": {"type": "string"}}, closed=False),
    "RolloutStatus": _object({
        "spec": _ref("RolloutSpec"),
        "status": _object({"phase": {"enum": ["progressing", "paused", "awaiting_approval", "promoted",
                                              "rolled_back", "aborted"]},
                           "candidate": {"type": "string"}, "stable": {"type": ["string", "null"]},
                           "step_index": {"type": "integer"},
                           "weights": {"type": "object", "additionalProperties": _PERCENT},
                           "message": {"type": "string"}}, closed=False)}, closed=False),
    "FaultState": _object({"model": {"type": "string"}, "version": {"type": "string"},
                           "faults": {"type": ["object", "null"]}}, closed=False,
                          description="the faults in force, with when they expire and who set them"),
    "AuditEntries": _object({"entries": {"type": "array", "items": _OBJECT}}, ("entries",)),
    "AuditVerification": _object({"ok": {"type": "boolean"}, "checked": {"type": "integer"},
                                  "broken_at": {"type": ["integer", "null"]}, "reason": {"type": "string"}},
                                 closed=False),
    "Drift": _OBJECT,
    "Whoami": _object({"subject": {"type": "string"},
                       "roles": {"type": "array", "items": {"type": "string"}},
                       "grants": {"type": "array", "items": {"type": "string"}}}, ("subject", "roles")),
    "StateSnapshot": _object({
        "format": {"const": "servegate-state"},
        "format_version": {"const": 1},
        "taken_at": {"type": "number", "description": "unix time of the read this copy comes from"},
        "epoch": {"type": ["string", "null"], "description": "the store epoch it was read from"},
        "source": {"type": "string", "description": "the replica that served it"},
        "documents": {"type": "object", "description": "kind -> key -> document"},
        "audit": {"type": "array", "items": _OBJECT, "description": "the whole audit chain, oldest first"},
    }, ("format", "format_version", "documents", "audit"),
        description="input to `servegate state restore --from-replica` after the store lost its data"),
}

_ERRORS = {
    "400": "a field of the request is wrong; the message names it",
    "401": "missing or invalid token (the response carries WWW-Authenticate: Bearer)",
    "403": "the token lacks the role this route needs",
    "404": "no such model, version or rollout",
    "409": "the request contradicts the current state",
    "422": "a registration gate failed",
    "503": "the state store is unavailable",
}


def _param(name: str, where: str, description: str, schema: JSON | None = None) -> JSON:
    return {"name": name, "in": where, "required": where == "path", "description": description,
            "schema": schema or {"type": "string"}}


MODEL = _param("model", "path", "model name")
VERSION = _param("version", "path", "version of the model")
VERB = _param("verb", "path", "pause, resume, promote, abort (operator) or approve (admin)",
              {"enum": ["pause", "resume", "promote", "abort", "approve"]})
WINDOW = _param("window", "query", "window length, default 60s", {**_DURATION, "default": "60s"})
AUDIT_QUERY = [
    _param("model", "query", "only this model's entries"),
    _param("since", "query", "unix seconds, ISO 8601 time, or a duration ago such as 1h"),
    _param("limit", "query", "most entries returned, newest first",
           {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100}),
]


def _op(summary: str, role: str | None, result: str, *, status: str = "200", body: str | None = None,
        params: tuple[JSON, ...] = (), errors: str = "") -> JSON:
    """One operation; `errors` lists the non-auth error statuses it can return besides 503."""
    responses: JSON = {status: {"description": "OK",
                                "content": {"application/json": {"schema": _ref(result)}}}}
    codes = ([] if role is None else ["401", "403"]) + errors.split() + ([] if role is None else ["503"])
    for code in codes:
        responses[code] = {"$ref": f"#/components/responses/E{code}"}
    op: JSON = {"summary": summary, "parameters": list(params), "responses": responses}
    op["description"] = f"Role: {role}." if role else "No token needed."
    op["security"] = [{"bearer": []}] if role else []
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    return op


def _paths() -> JSON:
    m, mv = "/admin/v1/models/{model}", "/admin/v1/models/{model}/versions/{version}"
    rollout_start = _op("Start a rollout", "operator", "RolloutStatus", status="201", body="RolloutSpec",
                        params=(MODEL,), errors="400 404 409")
    rollout_start["requestBody"]["content"]["application/yaml"] = {"schema": {"type": "string"}}
    return {
        "/admin/v1/models": {"get": _op("List models", "viewer", "ModelList")},
        m: {"get": _op("One model in full", "viewer", "Model", params=(MODEL,), errors="404")},
        f"{m}/versions": {"post": _op("Register a version (runs the validation gates)", "admin", "Version",
                                      status="201", body="RegisterVersion", params=(MODEL,),
                                      errors="400 404 409 422")},
        f"{mv}/stage": {"post": _op("Change a version's stage", "admin", "Version", body="StageChange",
                                    params=(MODEL, VERSION), errors="400 404 409")},
        f"{m}/traffic": {"put": _op("Set the route table", "operator", "RouteTable", body="RouteTable",
                                    params=(MODEL,), errors="400 404 409")},
        f"{m}/rollout": {"get": _op("The current or last rollout", "viewer", "RolloutStatus",
                                    params=(MODEL,), errors="404"),
                         "post": rollout_start},
        f"{m}/rollout/{{verb}}": {"post": _op("Pause, resume, promote, abort or approve the rollout",
                                              "operator (approve: admin)", "RolloutStatus",
                                              params=(MODEL, VERB), errors="400 404 409")},
        f"{mv}/drift": {"get": _op("Drift statistics of a version", "viewer", "Drift",
                                   params=(MODEL, VERSION, WINDOW), errors="400 404")},
        f"{mv}/faults": {
            "get": _op("Faults injected into a version", "viewer", "FaultState", params=(MODEL, VERSION),
                       errors="404"),
            "put": _op("Inject faults (they expire on their own)", "admin", "FaultState", body="Faults",
                       params=(MODEL, VERSION), errors="400 404"),
            "delete": _op("Clear a version's faults", "admin", "FaultState", params=(MODEL, VERSION),
                          errors="404")},
        "/admin/v1/audit": {"get": _op("Audit entries, newest first", "viewer", "AuditEntries",
                                       params=tuple(AUDIT_QUERY), errors="400")},
        "/admin/v1/audit/verify": {"get": _op("Verify the audit hash chain", "viewer", "AuditVerification")},
        "/admin/v1/whoami": {"get": _op("The caller's subject and roles", "any valid token", "Whoami")},
        "/admin/v1/state/snapshot": {"get": _op("This replica's last good copy of the state", "admin",
                                                "StateSnapshot")},
        "/admin/v1/openapi.json": {"get": {"summary": "This document", "security": [],
                                           "responses": {"200": {"description": "OpenAPI 3.1 document"}}}},
    }


def document() -> JSON:
    """A fresh copy of the whole document."""
    error = {"content": {"application/json": {"schema": _ref("Error")}}}
    return copy.deepcopy({
        "openapi": "3.1.0",
        "info": {"title": "servegate admin API", "version": "1",
                 "description": "Registry, traffic, rollouts, faults, drift and the audit log. Roles: "
                                "viewer < operator < admin; admin also implies predict."},
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "responses": {f"E{code}": {"description": text, **error} for code, text in _ERRORS.items()},
        },
        "security": [{"bearer": []}],
    })
