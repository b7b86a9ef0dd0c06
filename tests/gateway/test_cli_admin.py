"""The admin verbs of `servegate` against a real admin listener (fake ControlPlane): what each verb
sends, what it prints, exit codes (0 done, 1 refused, 2 usage), locally minted tokens, and TLS.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.admin.auth import Authenticator, Principal, mint
from gateway.cli import main
from gateway.cli_admin import render
from gateway.settings import AuthSettings
from rollout.errors import ValidationFailed
from tests.conftest import free_port
from tests.fakes.control import FakeControlPlane
from tests.gateway.test_admin_api import AdminServer

SECRET = secrets.token_urlsafe(32)
AUTH = AuthSettings(jwt_secret=SECRET)


@pytest.fixture
def srv(monkeypatch: pytest.MonkeyPatch) -> Iterator[AdminServer]:
    control = FakeControlPlane()
    control.add_model("fraud", {"1": "production", "2": "validated"})
    for name in ("SERVEGATE_TOKEN", "SERVEGATE_JWT_AUDIENCE", "SERVEGATE_JWT_ISSUER", "SERVEGATE_ADMIN_CA_CERT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SERVEGATE_JWT_SECRET", SECRET)
    monkeypatch.setenv("USER", "sre-on-call")
    with AdminServer(control, auth=AUTH) as server:
        monkeypatch.setenv("SERVEGATE_ADMIN_URL", server.url)
        yield server


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def last_call(srv: AdminServer) -> tuple[str, tuple[object, ...]]:
    return srv.control.calls[-1]


# --- token ----------------------------------------------------------------------------------------------

def test_token_round_trips_through_the_authenticator(srv: AdminServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "token", "--role", "operator", "--role", "viewer", "--sub", "alice", "--ttl", "10m")
    assert code == 0
    principal = Authenticator(AUTH).authenticate(f"Bearer {out.strip()}")
    assert principal == Principal("alice", frozenset({"operator", "viewer"}))


def test_token_needs_a_secret_and_known_roles(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("SERVEGATE_JWT_SECRET", raising=False)
    code, out, err = run(capsys, "token", "--role", "admin")
    assert code == 2 and out == "" and "needs the HS256 secret" in err
    code, _, err = run(capsys, "token", "--role", "admin", f"--jwt-secret={SECRET}", "--ttl", "soon")
    assert code == 2 and "ttl: expected a duration" in err
    with pytest.raises(SystemExit) as exit_:
        main(["token", "--role", "root", f"--jwt-secret={SECRET}"])
    assert exit_.value.code == 2
    assert "invalid choice: 'root'" in capsys.readouterr().err


# --- reads ----------------------------------------------------------------------------------------------

def test_models_table_and_json(srv: AdminServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models")
    assert code == 0
    header, row = out.strip().splitlines()
    assert header.split() == ["MODEL", "VERSIONS", "POLICY", "TRAFFIC", "ROLLOUT"]
    assert row.split()[:4] == ["fraud", "1:production", "2:validated", "canary"]
    code, out, _ = run(capsys, "models", "--json")
    assert code == 0 and json.loads(out)["models"][0]["name"] == "fraud"
    code, out, _ = run(capsys, "models", "fraud")
    assert code == 0 and "name: fraud" in out and "STAGE" in out
    code, _, err = run(capsys, "models", "nope")
    assert code == 1 and "error 404: unknown model 'nope'" in err


def test_whoami_uses_the_subject_given_with_as(srv: AdminServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "whoami", "--as", "ivy", "--json")
    assert code == 0 and json.loads(out)["subject"] == "ivy"
    code, out, _ = run(capsys, "whoami")
    assert code == 0 and "subject: sre-on-call" in out


# --- registry -------------------------------------------------------------------------------------------

def test_registry_register_and_stage(srv: AdminServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "registry", "register", "fraud", "3", "--artifact", "/m/3.onnx",
                       "--metadata", "owner=risk", "--metadata", "region=eu-west-1", "--breaking", "--as", "ci")
    assert code == 0 and "stage: validated" in out
    assert last_call(srv) == ("register", ("fraud", {"version": "3", "artifact": "/m/3.onnx", "breaking": True,
                                                     "metadata": {"owner": "risk", "region": "eu-west-1"}}, "ci"))
    code, out, _ = run(capsys, "registry", "stage", "fraud", "3", "canary", "--reason", "ticket 9")
    assert code == 0 and "stage: canary" in out
    assert last_call(srv) == ("set_stage", ("fraud", "3", "canary", "ticket 9", "sre-on-call"))
    code, _, err = run(capsys, "registry", "register", "fraud", "4", "--artifact", "/m", "--metadata", "owner")
    assert code == 2 and "--metadata KEY=VALUE" in err


def test_rejected_registration_prints_the_gates(srv: AdminServer, capsys: pytest.CaptureFixture[str]) -> None:
    report = {"passed": False, "gates": [{"gate": "signature", "passed": False, "detail": "input renamed"}]}
    srv.control.fail_next("register", ValidationFailed("fraud/3 was rejected by its gates", report))
    code, _, err = run(capsys, "registry", "register", "fraud", "3", "--artifact", "/m/3.onnx")
    assert code == 1
    assert "error 422: fraud/3 was rejected" in err
    assert "signature" in err and "input renamed" in err


# --- traffic --------------------------------------------------------------------------------------------

def test_traffic_set_show_and_blue_green(srv: AdminServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run(capsys, "traffic", "set", "fraud", "1=90", "2=10", "--shadow", "2:5")
    assert code == 0
    assert last_call(srv)[1][1] == {"policy": "canary", "weights": {"1": 90, "2": 10},
                                    "shadow": {"version": "2", "percent": 5}}
    code, out, _ = run(capsys, "traffic", "show", "fraud")
    assert code == 0 and "weights: 1=90 2=10" in out and "shadow: version=2 percent=5" in out
    run(capsys, "traffic", "set", "fraud", "1=50", "2=50", "--policy", "ab", "--sticky-key", "x-user-id")
    assert last_call(srv)[1][1] == {"policy": "ab", "weights": {"1": 50, "2": 50}, "sticky_key": "x-user-id"}
    code, out, _ = run(capsys, "traffic", "blue-green", "fraud", "--active", "2", "--preview", "1")
    assert code == 0 and "policy: blue_green" in out
    assert last_call(srv)[1][1] == {"policy": "blue_green", "active": "2", "preview": "1"}


def test_traffic_usage_and_refusals(srv: AdminServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "traffic", "set", "fraud", "1:90")
    assert code == 2 and "expected VERSION=PERCENT, got '1:90'" in err
    code, _, err = run(capsys, "traffic", "set", "fraud", "1=ninety")
    assert code == 2 and "weight of 1: expected an integer percent" in err
    code, _, err = run(capsys, "traffic", "set", "fraud", "1=90", "2=20")
    assert code == 1 and "error 400: weights: must sum to 100, got 110" in err
    viewer = mint(AUTH, "vic", ["viewer"], 60)
    code, _, err = run(capsys, "traffic", "set", "fraud", "1=100", "--token", viewer)
    assert code == 1 and "error 403: this needs role 'operator'; 'vic'" in err


# --- rollouts -------------------------------------------------------------------------------------------

def test_rollout_start_status_and_verbs(srv: AdminServer, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("candidate: '2'\nsteps: [{weight: 10}, {weight: 100}]\nwindow: 30s\napproval: manual\n")
    code, out, _ = run(capsys, "rollout", "start", "fraud", "-f", str(spec))
    assert code == 0 and "phase: progressing" in out
    assert last_call(srv) == ("start_rollout", ("fraud", spec.read_text(), "sre-on-call"))
    code, out, _ = run(capsys, "rollout", "pause", "fraud")
    assert code == 0 and "phase: paused" in out
    code, out, _ = run(capsys, "rollout", "status", "fraud", "--json")
    assert code == 0 and json.loads(out)["status"]["phase"] == "paused"
    code, out, _ = run(capsys, "rollout", "status", "fraud")
    assert code == 0 and "phase: paused" in out and "started_at: 20" in out and "history" not in out
    operator = mint(AUTH, "olga", ["operator"], 60)
    code, _, err = run(capsys, "rollout", "approve", "fraud", "--token", operator)
    assert code == 1 and "needs role 'admin'" in err
    code, out, _ = run(capsys, "rollout", "approve", "fraud", "--as", "pat")
    assert code == 0 and "phase: promoted" in out
    assert last_call(srv) == ("rollout_verb", ("fraud", "approve", "pat"))
    code, _, err = run(capsys, "rollout", "abort", "fraud")
    assert code == 1 and "error 409" in err


def test_rollout_spec_problems(srv: AdminServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "rollout", "start", "fraud", "-f", str(tmp_path / "missing.yaml"))
    assert code == 2 and "cannot read the spec" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("candidate: '2'\nanalysis: {max_error_rate: 3}\n")
    code, _, err = run(capsys, "rollout", "start", "fraud", "-f", str(bad))
    assert code == 1 and "analysis.max_error_rate: expected a number 0..1" in err


# --- audit, faults, drift -------------------------------------------------------------------------------

def test_audit_and_verify(srv: AdminServer, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "traffic", "set", "fraud", "1=80", "2=20", "--as", "quinn")
    code, out, _ = run(capsys, "audit", "--model", "fraud", "--since", "1h", "--limit", "5")
    assert code == 0
    header, row = out.strip().splitlines()
    assert header.split()[:5] == ["SEQ", "TIME", "ACTOR", "ACTION", "MODEL"]
    assert row.split()[2:5] == ["quinn", "traffic.set", "fraud"]
    name, (model, since, limit) = last_call(srv)
    assert (name, model, limit) == ("audit", "fraud", 5)
    assert isinstance(since, float) and abs(since - (time.time() - 3600)) < 60
    code, out, _ = run(capsys, "audit", "verify")
    assert code == 0 and "ok: yes" in out and "checked: 1" in out
    code, _, err = run(capsys, "audit", "--since", "last week")
    assert code == 1 and "since: expected seconds since the epoch" in err


def test_faults_and_drift(srv: AdminServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run(capsys, "faults", "set", "fraud", "2", "--error-rate", "0.25", "--latency-ms", "100",
                     "--duration", "5m")
    assert code == 0
    assert last_call(srv)[1][2] == {"latency_ms": 100.0, "error_rate": 0.25, "duration": "5m"}
    code, out, _ = run(capsys, "faults", "show", "fraud", "2")
    assert code == 0 and "error_rate: 0.25" in out
    code, _, err = run(capsys, "faults", "set", "fraud", "2", "--error-rate", "3", "--duration", "5m")
    assert code == 1 and "error_rate: expected a number 0..1" in err
    assert run(capsys, "faults", "clear", "fraud", "2")[0] == 0
    assert last_call(srv)[0] == "clear_faults"
    code, out, _ = run(capsys, "drift", "fraud", "1", "--window", "5m")
    assert code == 0 and "FEATURE" in out and "f0" in out
    assert last_call(srv) == ("drift", ("fraud", "1", 300.0))


# --- credentials and transport --------------------------------------------------------------------------

def test_without_token_or_secret_the_refusal_says_how_to_fix_it(srv: AdminServer, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("SERVEGATE_JWT_SECRET")
    code, _, err = run(capsys, "models")
    assert code == 1 and "error 401: missing credentials" in err and "SERVEGATE_TOKEN" in err
    monkeypatch.setenv("SERVEGATE_TOKEN", mint(AUTH, "env-user", ["viewer"], 60))
    code, out, _ = run(capsys, "whoami")
    assert code == 0 and "subject: env-user" in out


def test_an_unreachable_admin_api_is_reported(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SERVEGATE_JWT_SECRET", SECRET)
    code, _, err = run(capsys, "models", "--admin", f"http://127.0.0.1:{free_port()}")
    assert code == 1 and "cannot reach the admin API" in err
    code, _, err = run(capsys, "models", "--admin", "ftp://example")
    assert code == 2 and "expected http://host:port" in err


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_https_admin_url_uses_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    monkeypatch.setenv("SERVEGATE_JWT_SECRET", SECRET)
    control = FakeControlPlane()
    control.add_model("fraud", {"1": "production"})
    with AdminServer(control, auth=AUTH, tls=context) as server:
        url = f"https://127.0.0.1:{server.port}"
        code, out, _ = run(capsys, "models", "--admin", url, "--ca-cert", str(cert))
        assert code == 0 and "fraud" in out
        code, _, err = run(capsys, "models", "--admin", url)
        assert code == 1 and "CERTIFICATE_VERIFY_FAILED" in err


def test_human_output_keeps_versions_short_and_shows_times_in_utc() -> None:
    out = render({"name": "m", "versions": [{"version": "1", "stage": "production", "sha256": "ab" * 32,
                                             "artifact": "/models/m/1.onnx", "created_at": 0.0}],
                  "traffic": {"policy": "canary", "weights": {"1": 100}}, "rollout": None})
    assert "abababababab" in out and "ab" * 7 not in out
    assert "/models/m/1.onnx" not in out and "weights: 1=100" in out
    assert render({"ts": 0, "started_at": 86400.0}) == "ts: 1970-01-01T00:00:00Z\nstarted_at: 1970-01-02T00:00:00Z"
