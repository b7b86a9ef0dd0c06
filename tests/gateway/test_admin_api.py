"""The admin API over a real HTTP listener with a fake ControlPlane: statuses, bodies, field-naming
validation errors, the bearer challenge, roles per route, and the OpenAPI document's coverage.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import secrets
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from gateway.admin import openapi
from gateway.admin.app import admin_routes, admin_server
from gateway.admin.auth import Authenticator, mint
from gateway.mirror import SNAPSHOT_PATH
from gateway.protocol.http_server import HttpServer, Request, Response, Route
from gateway.settings import AuthSettings
from rollout.errors import StoreUnavailable, ValidationFailed
from rollout.policy import parse_traffic
from rollout.snapshot import Snapshot
from rollout.spec import parse_spec
from tests.fakes.control import FakeControlPlane

SECRET = secrets.token_urlsafe(32)
AUTH = AuthSettings(jwt_secret=SECRET)


class AdminServer:
    """`with AdminServer(control) as srv:` runs the admin listener on a free port in its own thread."""

    def __init__(self, control: FakeControlPlane, auth: AuthSettings = AUTH,
                 extra: Sequence[Route] = (), tls: ssl.SSLContext | None = None) -> None:
        self.control, self.auth, self.extra, self.tls = control, auth, extra, tls
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server: HttpServer = admin_server(self.control, Authenticator(self.auth), host="127.0.0.1", port=0,
                                          extra=self.extra, tls=self.tls)
        self.port = await server.start()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await server.stop(1.0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> AdminServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("admin server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def call(self, method: str, path: str, body: Any = None, *, token: str | None = None,
             raw: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        """(status, lower-case headers, decoded JSON body or None)."""
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        payload = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, payload, sent)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(data) if data else None
        finally:
            conn.close()


def token(*roles: str, sub: str = "alice", settings: AuthSettings = AUTH) -> str:
    return mint(settings, sub, roles, 600)


VIEWER, OPERATOR, ADMIN = token("viewer"), token("operator"), token("admin")


def fresh_control() -> FakeControlPlane:
    control = FakeControlPlane()
    control.add_model("fraud", {"1": "production", "2": "validated"})
    return control


@pytest.fixture
def srv() -> Iterator[AdminServer]:
    with AdminServer(fresh_control()) as server:
        yield server


def last(srv: AdminServer) -> tuple[str, tuple[Any, ...]]:
    return srv.control.calls[-1]


M = "/admin/v1/models/fraud"
SPEC = {"candidate": "2", "steps": [{"weight": 10}, {"weight": 100}], "window": "30s"}


# --- the OpenAPI document -------------------------------------------------------------------------------

def test_openapi_documents_every_route_and_nothing_else() -> None:
    table = {(r.method.lower(), r.pattern) for r in admin_routes(fresh_control(), Authenticator(AUTH))}
    table.add(("get", SNAPSHOT_PATH))  # each replica adds its state mirror's route (gateway/app.py)
    doc = openapi.document()
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert table == documented
    for path, ops in doc["paths"].items():
        for op in ops.values():
            named = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert named == {part[1:-1] for part in path.split("/") if part.startswith("{")}, path


def test_openapi_is_served_without_a_token(srv: AdminServer) -> None:
    status, _, doc = srv.call("GET", "/admin/v1/openapi.json")
    assert status == 200
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for name in ("RouteTable", "RolloutSpec", "RegisterVersion", "StageChange", "Faults", "Error"):
        assert name in doc["components"]["schemas"]


def test_openapi_spec_schema_lists_every_spec_field() -> None:
    spec = parse_spec({"candidate": "1"}).to_dict()
    schemas = openapi.document()["components"]["schemas"]
    assert set(schemas["RolloutSpec"]["properties"]) == set(spec)
    assert set(schemas["RolloutSpec"]["properties"]["analysis"]["properties"]) == set(spec["analysis"])
    table = parse_traffic("m", {"policy": "canary", "weights": {"1": 90, "2": 10}, "sticky_key": "k",
                                "shadow": {"version": "2", "percent": 5}, "fallback": "1", "retained": {"3": 1.0}})
    assert set(table.to_dict()) <= set(schemas["RouteTable"]["properties"])
    snapshot = Snapshot({"route": {"m": {"policy": "canary"}}}, (), 1.0, "e1", "replica-a").to_dict()
    assert set(snapshot) == set(schemas["StateSnapshot"]["properties"])
    assert set(schemas["StateSnapshot"]["required"]) <= set(snapshot)


# --- authentication on the wire -------------------------------------------------------------------------

def test_missing_token_is_401_with_a_bearer_challenge(srv: AdminServer) -> None:
    status, headers, body = srv.call("GET", "/admin/v1/models")
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer realm="servegate"'
    assert "Authorization: Bearer" in body["error"]
    assert srv.control.calls == []


def test_invalid_token_challenge_says_invalid_token(srv: AdminServer) -> None:
    status, headers, body = srv.call("GET", "/admin/v1/models", token="not.a.jwt")
    assert status == 401
    assert 'error="invalid_token"' in headers["www-authenticate"]
    assert "malformed" in body["error"]


def test_wrong_role_is_403_naming_the_role(srv: AdminServer) -> None:
    status, headers, body = srv.call("PUT", f"{M}/traffic", {"policy": "canary", "weights": {"1": 100}},
                                     token=VIEWER)
    assert status == 403
    assert "'operator'" in body["error"]
    assert 'error="insufficient_scope"' in headers["www-authenticate"]
    assert [c for c, _ in srv.control.calls] == []


@pytest.mark.parametrize(("method", "path", "body", "needs"), [
    ("GET", "/admin/v1/models", None, "viewer"),
    ("GET", M, None, "viewer"),
    ("POST", f"{M}/versions", {"version": "3", "artifact": "/m.onnx"}, "admin"),
    ("POST", f"{M}/versions/2/stage", {"stage": "canary", "reason": "r"}, "admin"),
    ("PUT", f"{M}/traffic", {"policy": "canary", "weights": {"1": 100}}, "operator"),
    ("POST", f"{M}/rollout", SPEC, "operator"),
    ("GET", f"{M}/rollout", None, "viewer"),
    ("POST", f"{M}/rollout/pause", None, "operator"),
    ("POST", f"{M}/rollout/approve", None, "admin"),
    ("GET", f"{M}/versions/1/drift", None, "viewer"),
    ("GET", f"{M}/versions/1/faults", None, "viewer"),
    ("PUT", f"{M}/versions/1/faults", {"error_rate": 0.5, "duration": "5m"}, "admin"),
    ("DELETE", f"{M}/versions/1/faults", None, "admin"),
    ("GET", "/admin/v1/audit", None, "viewer"),
    ("GET", "/admin/v1/audit/verify", None, "viewer"),
])
def test_each_route_needs_its_role(srv: AdminServer, method: str, path: str, body: Any, needs: str) -> None:
    status, _, _ = srv.call(method, path, body)
    assert status == 401
    ladder = ["predict", "viewer", "operator", "admin"]
    for role in ladder[:ladder.index(needs)]:
        status, _, doc = srv.call(method, path, body, token=token(role))
        assert status == 403, (role, doc)
        assert f"'{needs}'" in doc["error"]
    assert srv.control.calls == []
    status, _, doc = srv.call(method, path, body, token=token(needs))
    assert status not in (401, 403), doc


def test_whoami_reports_subject_roles_and_what_they_grant(srv: AdminServer) -> None:
    status, _, body = srv.call("GET", "/admin/v1/whoami", token=token("operator", sub="bob"))
    assert status == 200
    assert body == {"subject": "bob", "roles": ["operator"], "grants": ["operator", "viewer"]}


# --- reads ----------------------------------------------------------------------------------------------

def test_models_and_one_model(srv: AdminServer) -> None:
    status, _, body = srv.call("GET", "/admin/v1/models", token=VIEWER)
    assert status == 200
    assert [m["name"] for m in body["models"]] == ["fraud"]
    status, _, body = srv.call("GET", M, token=VIEWER)
    assert status == 200 and body["traffic"] == {"policy": "canary", "weights": {"1": 100}}
    status, _, body = srv.call("GET", "/admin/v1/models/nope", token=VIEWER)
    assert status == 404 and "unknown model 'nope'" in body["error"]


def test_unknown_route_is_404_and_wrong_method_405(srv: AdminServer) -> None:
    assert srv.call("GET", "/admin/v1/nothing", token=VIEWER)[0] == 404
    assert srv.call("DELETE", M, token=ADMIN)[0] == 405


# --- registry -------------------------------------------------------------------------------------------

def test_register_is_201_and_passes_the_actor(srv: AdminServer) -> None:
    body = {"version": 3, "artifact": "/models/fraud/3.onnx", "metadata": {"owner": "risk"}, "breaking": False}
    status, _, doc = srv.call("POST", f"{M}/versions", body, token=token("admin", sub="carol"))
    assert status == 201 and doc["version"] == "3"
    name, args = last(srv)
    assert name == "register"
    assert args == ("fraud", {"version": "3", "artifact": "/models/fraud/3.onnx",
                              "metadata": {"owner": "risk"}, "breaking": False}, "carol")
    status, _, doc = srv.call("POST", f"{M}/versions", body, token=ADMIN)
    assert status == 409 and "already has a version '3'" in doc["error"]


@pytest.mark.parametrize(("body", "fragment"), [
    ({"artifact": "/m.onnx"}, "version: expected a non-empty string"),
    ({"version": "3"}, "artifact: expected a non-empty string"),
    ({"version": "3", "artifact": "/m.onnx", "metadata": [1]}, "metadata: expected an object"),
    ({"version": "3", "artifact": "/m.onnx", "breaking": "yes"}, "breaking: expected true or false"),
    ({"version": "3", "artifact": "/m.onnx", "artefact": 1, "owner": 2}, "artefact, owner: unknown field"),
    ([1, 2], "body: expected a JSON object, got list"),
])
def test_register_body_errors_name_the_field(srv: AdminServer, body: Any, fragment: str) -> None:
    status, _, doc = srv.call("POST", f"{M}/versions", body, token=ADMIN)
    assert status == 400
    assert fragment in doc["error"]
    assert srv.control.calls == []


def test_invalid_json_and_empty_body_are_400(srv: AdminServer) -> None:
    status, _, doc = srv.call("POST", f"{M}/versions", raw=b'{"version": ', token=ADMIN)
    assert status == 400 and "body: not valid JSON" in doc["error"]
    status, _, doc = srv.call("PUT", f"{M}/traffic", raw=b"", token=ADMIN)
    assert status == 400 and "empty body" in doc["error"]


def test_failed_gates_are_422_with_the_report(srv: AdminServer) -> None:
    report = {"passed": False, "gates": [{"gate": "loads", "passed": False, "detail": "not ONNX"}]}
    srv.control.fail_next("register", ValidationFailed("fraud/3 was rejected by its gates", report))
    status, _, doc = srv.call("POST", f"{M}/versions", {"version": "3", "artifact": "/m"}, token=ADMIN)
    assert status == 422
    assert doc == {"error": "fraud/3 was rejected by its gates", "report": report}


def test_store_outage_is_503(srv: AdminServer) -> None:
    srv.control.fail_next("models", StoreUnavailable("store sqlite:///x is unavailable"))
    status, _, doc = srv.call("GET", "/admin/v1/models", token=VIEWER)
    assert status == 503 and "unavailable" in doc["error"]


def test_unexpected_errors_are_500_without_details(srv: AdminServer) -> None:
    srv.control.fail_next("models", RuntimeError("secret internals"))
    status, _, doc = srv.call("GET", "/admin/v1/models", token=VIEWER)
    assert status == 500 and "secret internals" not in doc["error"]


def test_stage_change(srv: AdminServer) -> None:
    status, _, doc = srv.call("POST", f"{M}/versions/2/stage", {"stage": "canary", "reason": "ticket 7"},
                              token=token("admin", sub="dan"))
    assert status == 200 and doc["stage"] == "canary"
    assert last(srv) == ("set_stage", ("fraud", "2", "canary", "ticket 7", "dan"))
    status, _, doc = srv.call("POST", f"{M}/versions/2/stage", {"stage": "gold", "reason": "x"}, token=ADMIN)
    assert status == 400 and "stage: expected one of registered, validated" in doc["error"]
    status, _, doc = srv.call("POST", f"{M}/versions/2/stage", {"stage": "canary"}, token=ADMIN)
    assert status == 400 and "reason: expected a non-empty string" in doc["error"]
    status, _, doc = srv.call("POST", f"{M}/versions/9/stage", {"stage": "canary", "reason": "x"}, token=ADMIN)
    assert status == 404 and "no version '9'" in doc["error"]


# --- traffic and rollouts -------------------------------------------------------------------------------

def test_set_traffic(srv: AdminServer) -> None:
    table = {"policy": "canary", "weights": {"1": 90, "2": 10}}
    status, _, doc = srv.call("PUT", f"{M}/traffic", table, token=token("operator", sub="erin"))
    assert status == 200 and doc["weights"] == {"1": 90, "2": 10}
    assert last(srv) == ("set_traffic", ("fraud", table, "erin"))


@pytest.mark.parametrize(("body", "fragment"), [
    ({"policy": "canary", "weights": {"1": 90, "2": 20}}, "weights: must sum to 100"),
    ({"policy": "canary", "weights": {"1": 100}, "colour": "blue"}, "colour: unknown field"),
    ({"weights": {"1": 100}}, "policy: required"),
    ({"policy": "ab", "weights": {"1": 50, "2": 50}}, "sticky_key"),
    ({"policy": "canary", "weights": {"1": 101}}, "weights.1: expected an integer percent"),
])
def test_bad_route_tables_are_400_naming_the_field(srv: AdminServer, body: Any, fragment: str) -> None:
    status, _, doc = srv.call("PUT", f"{M}/traffic", body, token=OPERATOR)
    assert status == 400
    assert fragment in doc["error"]
    assert srv.control.calls == []


def test_start_rollout_from_json_and_yaml(srv: AdminServer) -> None:
    status, _, doc = srv.call("POST", f"{M}/rollout", SPEC, token=OPERATOR)
    assert status == 201 and doc["status"]["phase"] == "progressing" and doc["status"]["candidate"] == "2"
    assert last(srv) == ("start_rollout", ("fraud", SPEC, "alice"))
    status, _, doc = srv.call("POST", f"{M}/rollout", SPEC, token=OPERATOR)
    assert status == 409 and "live rollout" in doc["error"]
    srv.call("POST", f"{M}/rollout/abort", token=OPERATOR)
    yaml_text = "candidate: '2'\nstrategy: canary\nsteps: [{weight: 50}]\nwindow: 1m\n"
    status, _, doc = srv.call("POST", f"{M}/rollout", raw=yaml_text.encode(), token=OPERATOR,
                              headers={"Content-Type": "application/yaml"})
    assert status == 201 and doc["spec"]["window"] == "1m"
    assert last(srv) == ("start_rollout", ("fraud", yaml_text, "alice"))


@pytest.mark.parametrize(("body", "headers", "fragment"), [
    (json.dumps({**SPEC, "analysis": {"max_error_rate": 2}}), {}, "analysis.max_error_rate: expected a number"),
    (json.dumps({**SPEC, "speed": 3}), {}, "speed: unknown field"),
    (json.dumps({"steps": []}), {}, "candidate: required"),
    ("candidate: '2'\nwindow: soon\n", {"Content-Type": "application/yaml"}, "window: expected a duration"),
    ("[1, 2]", {}, "body: expected a rollout spec object"),
])
def test_bad_specs_are_400_naming_the_field(srv: AdminServer, body: str, headers: dict[str, str],
                                            fragment: str) -> None:
    status, _, doc = srv.call("POST", f"{M}/rollout", raw=body.encode(), headers=headers, token=OPERATOR)
    assert status == 400
    assert fragment in doc["error"]
    assert srv.control.calls == []


def test_rollout_status_and_verbs(srv: AdminServer) -> None:
    status, _, doc = srv.call("GET", f"{M}/rollout", token=VIEWER)
    assert status == 404 and "has no rollout" in doc["error"]
    srv.call("POST", f"{M}/rollout", {**SPEC, "approval": "manual"}, token=OPERATOR)
    status, _, doc = srv.call("POST", f"{M}/rollout/pause", token=OPERATOR)
    assert status == 200 and doc["status"]["phase"] == "paused"
    status, _, doc = srv.call("POST", f"{M}/rollout/approve", token=OPERATOR)
    assert status == 403 and "'admin'" in doc["error"]
    status, _, doc = srv.call("POST", f"{M}/rollout/approve", token=token("admin", sub="frank"))
    assert status == 200 and doc["status"]["phase"] == "promoted"
    assert last(srv) == ("rollout_verb", ("fraud", "approve", "frank"))
    status, _, doc = srv.call("POST", f"{M}/rollout/resume", token=OPERATOR)
    assert status == 409 and "promoted" in doc["error"]
    status, _, doc = srv.call("GET", f"{M}/rollout", token=VIEWER)
    assert status == 200 and doc["status"]["phase"] == "promoted"


def test_unknown_verb_is_400_naming_the_allowed_ones(srv: AdminServer) -> None:
    status, _, doc = srv.call("POST", f"{M}/rollout/restart", token=ADMIN)
    assert status == 400
    assert doc["error"] == "verb: expected one of pause, resume, promote, abort, approve, got 'restart'"


# --- drift and faults -----------------------------------------------------------------------------------

def test_drift_window(srv: AdminServer) -> None:
    status, _, doc = srv.call("GET", f"{M}/versions/1/drift", token=VIEWER)
    assert status == 200 and doc["top"] == ["f0"]
    assert last(srv) == ("drift", ("fraud", "1", 60.0))
    srv.call("GET", f"{M}/versions/1/drift?window=5m", token=VIEWER)
    assert last(srv) == ("drift", ("fraud", "1", 300.0))
    for query, fragment in (("window=soon", "window: expected a duration"), ("window=0s", "window: expected a "
                            "duration > 0"), ("span=1m", "span: unknown query parameter")):
        status, _, doc = srv.call("GET", f"{M}/versions/1/drift?{query}", token=VIEWER)
        assert status == 400 and fragment in doc["error"], query


def test_faults_set_show_clear(srv: AdminServer) -> None:
    body = {"latency_ms": 250, "latency_jitter_ms": 50, "latency_distribution": "uniform", "error_rate": 0.2,
            "output_shift": -1.5, "output_noise": 0.1, "duration": "5m"}
    status, _, doc = srv.call("PUT", f"{M}/versions/2/faults", body, token=ADMIN)
    assert status == 200 and doc == body
    assert last(srv) == ("set_faults", ("fraud", "2", body, "alice"))
    status, _, doc = srv.call("GET", f"{M}/versions/2/faults", token=VIEWER)
    assert status == 200 and doc["error_rate"] == 0.2
    status, _, doc = srv.call("DELETE", f"{M}/versions/2/faults", token=ADMIN)
    assert status == 200
    assert srv.call("GET", f"{M}/versions/2/faults", token=VIEWER)[2] == {}


@pytest.mark.parametrize(("body", "fragment"), [
    ({"error_rate": 1.5, "duration": "5m"}, "error_rate: expected a number 0..1"),
    ({"latency_ms": -1, "duration": "5m"}, "latency_ms: expected a number 0..600000, got -1"),
    ({"output_noise": "lots", "duration": "5m"}, "output_noise: expected a number 0..1e+06, got 'lots'"),
    ({"output_shift": True, "duration": "5m"}, "output_shift: expected a number"),
    ({"output_shift": 2e6, "duration": "5m"}, "output_shift: expected a number -1e+06..1e+06"),
    ({"latency_ms": 5, "latency_distribution": "normal", "duration": "5m"},
     "latency_distribution: expected one of fixed, uniform, exponential"),
    ({"error_rate": 0.1}, "duration: required"),
    ({"error_rate": 0.1, "duration": "forever"}, "duration: expected a duration"),
    ({"error_rate": 0.1, "duration": "48h"}, "at most 24h"),
    ({"duration": "5m"}, "body: expected at least one fault"),
    ({"error_rate": 0.1, "duration": "5m", "crash": True}, "crash: unknown field"),
])
def test_bad_faults_are_400_naming_the_field(srv: AdminServer, body: Any, fragment: str) -> None:
    status, _, doc = srv.call("PUT", f"{M}/versions/2/faults", body, token=ADMIN)
    assert status == 400
    assert fragment in doc["error"]
    assert srv.control.calls == []


# --- audit ----------------------------------------------------------------------------------------------

def test_audit_lists_mutations_with_their_actor(srv: AdminServer) -> None:
    srv.call("PUT", f"{M}/traffic", {"policy": "canary", "weights": {"1": 90, "2": 10}},
             token=token("operator", sub="gus"))
    srv.call("PUT", f"{M}/versions/2/faults", {"error_rate": 0.1, "duration": "1m"}, token=token("admin", sub="hal"))
    status, _, doc = srv.call("GET", "/admin/v1/audit?model=fraud&limit=10", token=VIEWER)
    assert status == 200
    assert [(e["actor"], e["action"]) for e in doc["entries"]] == [("hal", "faults.set"), ("gus", "traffic.set")]
    assert last(srv) == ("audit", ("fraud", None, 10))
    srv.call("GET", "/admin/v1/audit?since=1h", token=VIEWER)
    since = last(srv)[1][1]
    assert abs(since - (time.time() - 3600)) < 60
    srv.call("GET", "/admin/v1/audit?since=2024-05-01T00:00:00Z", token=VIEWER)
    assert last(srv)[1] == (None, 1714521600.0, 100)
    status, _, doc = srv.call("GET", "/admin/v1/audit/verify", token=VIEWER)
    assert status == 200 and doc["ok"] is True and doc["checked"] == 2


@pytest.mark.parametrize(("query", "fragment"), [
    ("limit=0", "limit: expected an integer 1..10000"),
    ("limit=ten", "limit: expected an integer"),
    ("since=yesterday", "since: expected seconds since the epoch"),
    ("actor=bob", "actor: unknown query parameter"),
])
def test_bad_audit_queries_are_400(srv: AdminServer, query: str, fragment: str) -> None:
    status, _, doc = srv.call("GET", f"/admin/v1/audit?{query}", token=VIEWER)
    assert status == 400 and fragment in doc["error"]


# --- composition ----------------------------------------------------------------------------------------

def test_extra_routes_are_served_as_given() -> None:
    async def metrics(req: Request) -> Response:
        return Response(200, b"servegate_up 1\n", "text/plain")

    with AdminServer(fresh_control(), extra=[Route("GET", "/metrics", metrics)]) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        try:
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            assert resp.status == 200 and resp.read() == b"servegate_up 1\n"
        finally:
            conn.close()


def test_a_gateway_without_a_key_refuses_every_token() -> None:
    with AdminServer(fresh_control(), auth=AuthSettings()) as srv:
        status, _, doc = srv.call("GET", "/admin/v1/models", token=VIEWER)
        assert status == 401 and "no JWT key configured" in doc["error"]
        assert srv.call("GET", "/admin/v1/openapi.json")[0] == 200
