"""JWT verification and roles: what verifies, every way a token is refused (and that the reason is clear
and never repeats the token), HS256 / RS256 / ES256 keys, key confusion, `alg: none`, the role ladder,
minting, and the data plane's gRPC / HTTP hooks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from gateway.admin.auth import (
    ADMIN,
    OPERATOR,
    PREDICT,
    VIEWER,
    Authenticator,
    MissingCredentials,
    Principal,
    authorize_grpc,
    authorize_http,
    grants,
    mint,
)
from gateway.errors import PermissionDenied, Unauthenticated
from gateway.protocol.http_server import Request
from gateway.settings import AuthSettings, SettingsError
from tests.fakes.control import FakeControlPlane
from tests.gateway.test_admin_api import AdminServer

SECRET = secrets.token_urlsafe(32)
HS = AuthSettings(jwt_secret=SECRET)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": "alice", "roles": ["operator"], "aud": "servegate", "iat": now,
                            "exp": now + 600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs256(payload: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A token assembled by hand, so that libraries cannot refuse to sign what an attacker would send."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def refusal(auth: Authenticator, token: str) -> str:
    with pytest.raises(Unauthenticated) as err:
        auth.authenticate(f"Bearer {token}")
    message = str(err.value)
    assert all(part not in message for part in token.split(".") if part)
    return message


def pem_file(path: Path, key: Any) -> Path:
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def rs_auth(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> Authenticator:
    return Authenticator(AuthSettings(jwt_public_key=pem_file(tmp_path / "rsa.pem", rsa_key)))


# --- tokens that verify ---------------------------------------------------------------------------------

def test_a_valid_hs256_token_gives_its_principal() -> None:
    principal = Authenticator(HS).authenticate(f"Bearer {hs256(claims(roles=['viewer', 'predict']))}")
    assert principal == Principal("alice", frozenset({"viewer", "predict"}))


def test_roles_may_be_a_space_separated_string_and_the_scheme_any_case() -> None:
    principal = Authenticator(HS).authenticate(f"bearer  {hs256(claims(roles='viewer operator'))}")
    assert principal.roles == frozenset({"viewer", "operator"})


def test_rs256_and_es256_tokens_verify_with_the_public_key(tmp_path: Path, rsa_key: rsa.RSAPrivateKey,
                                                             ec_key: ec.EllipticCurvePrivateKey) -> None:
    rs = Authenticator(AuthSettings(jwt_public_key=pem_file(tmp_path / "rsa.pem", rsa_key)))
    es = Authenticator(AuthSettings(jwt_public_key=pem_file(tmp_path / "ec.pem", ec_key)))
    assert (rs.algorithms, es.algorithms) == (("RS256",), ("ES256",))
    assert rs.authenticate(f"Bearer {jwt.encode(claims(), rsa_key, algorithm='RS256')}").subject == "alice"
    assert es.authenticate(f"Bearer {jwt.encode(claims(), ec_key, algorithm='ES256')}").subject == "alice"
    assert "not allowed" in refusal(rs, jwt.encode(claims(), ec_key, algorithm="ES256"))


def test_a_certificate_may_carry_the_public_key(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(rsa_key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .sign(rsa_key, hashes.SHA256()))
    path = tmp_path / "cert.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    auth = Authenticator(AuthSettings(jwt_public_key=path))
    assert auth.authenticate(f"Bearer {jwt.encode(claims(), rsa_key, algorithm='RS256')}").subject == "alice"


def test_issuer_is_checked_when_configured() -> None:
    auth = Authenticator(AuthSettings(jwt_secret=SECRET, issuer="https://idp.example"))
    assert auth.authenticate(f"Bearer {hs256(claims(iss='https://idp.example'))}").subject == "alice"
    assert "issuer (iss) is wrong; expected 'https://idp.example'" in refusal(auth, hs256(claims(iss="evil")))
    assert "missing the required claim 'iss'" in refusal(auth, hs256(claims()))


def test_a_small_clock_skew_is_tolerated() -> None:
    now = int(time.time())
    token = hs256(claims(exp=now - 5, nbf=now + 5))
    assert Authenticator(HS).authenticate(f"Bearer {token}").subject == "alice"


# --- tokens that are refused ----------------------------------------------------------------------------

@pytest.mark.parametrize(("payload", "reason"), [
    (claims(exp=int(time.time()) - 3600), "token has expired (exp)"),
    (claims(nbf=int(time.time()) + 3600), "token is not valid yet"),
    (claims(aud="another-service"), "audience (aud) is wrong; expected 'servegate'"),
    (claims(aud=None), "missing the required claim 'aud'"),
    (claims(sub=None), "missing the required claim 'sub'"),
    (claims(exp=None), "missing the required claim 'exp'"),
    (claims(roles=None), "missing the required claim 'roles'"),
    (claims(roles=[1, 2]), "claim 'roles' must be a list of strings"),
    (claims(sub="  "), "claim 'sub' must be a non-empty string"),
])
def test_bad_claims_are_refused_with_the_reason(payload: dict[str, Any], reason: str) -> None:
    assert reason in refusal(Authenticator(HS), hs256(payload))


def test_a_bad_signature_is_refused() -> None:
    message = refusal(Authenticator(HS), hs256(claims(), secret=secrets.token_urlsafe(32)))
    assert message == "token signature does not verify with the configured key"


def test_alg_none_is_refused() -> None:
    token = handmade({"alg": "none", "typ": "JWT"}, claims(roles=["admin"]), key=None)
    assert token.endswith(".")
    assert refusal(Authenticator(HS), token) == "token algorithm 'none' is not allowed; this gateway accepts HS256"


def test_an_hmac_token_keyed_with_the_public_key_is_refused(tmp_path: Path,
                                                              rsa_key: rsa.RSAPrivateKey) -> None:
    """Key confusion: an attacker signs HS256 with the (public) PEM as the secret."""
    path = pem_file(tmp_path / "rsa.pem", rsa_key)
    auth = Authenticator(AuthSettings(jwt_public_key=path))
    forged = handmade({"alg": "HS256", "typ": "JWT"}, claims(roles=["admin"]), key=path.read_bytes())
    assert refusal(auth, forged) == "token algorithm 'HS256' is not allowed; this gateway accepts RS256"


def test_a_token_signed_by_another_rsa_key_is_refused(rs_auth: Authenticator) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert "signature does not verify" in refusal(rs_auth, jwt.encode(claims(), other, algorithm="RS256"))


@pytest.mark.parametrize(("header", "fragment"), [
    (None, "missing credentials"),
    ("", "missing credentials"),
    ("Basic YWxpY2U6c2VjcmV0", "must be 'Bearer <JWT>'"),
    ("Bearer", "must be 'Bearer <JWT>'"),
    ("Bearer not-a-jwt", "token is malformed"),
    ("Bearer a.b.c", "token is malformed"),
])
def test_missing_or_malformed_headers_are_refused(header: str | None, fragment: str) -> None:
    with pytest.raises(Unauthenticated) as err:
        Authenticator(HS).authenticate(header)
    assert fragment in str(err.value)
    assert isinstance(err.value, MissingCredentials) == (fragment == "missing credentials")


def test_without_a_configured_key_nothing_verifies() -> None:
    auth = Authenticator(AuthSettings())
    assert not auth.configured
    with pytest.raises(Unauthenticated, match="no JWT key configured"):
        auth.authenticate(f"Bearer {hs256(claims())}")


def test_unusable_public_keys_are_settings_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    with pytest.raises(SettingsError, match="expected a PEM public key or certificate"):
        Authenticator(AuthSettings(jwt_public_key=junk))
    edwards = pem_file(tmp_path / "ed.pem", ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(SettingsError, match="expected an RSA key"):
        Authenticator(AuthSettings(jwt_public_key=edwards))


# --- over the wire --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def srv() -> Iterator[AdminServer]:
    control = FakeControlPlane()
    control.add_model("fraud", {"1": "production"})
    with AdminServer(control, auth=HS) as server:
        yield server


@pytest.mark.parametrize(("token", "reason"), [
    (hs256(claims(exp=int(time.time()) - 3600)), "expired"),
    (hs256(claims(nbf=int(time.time()) + 3600)), "not valid yet"),
    (hs256(claims(aud="other")), "audience"),
    (hs256(claims(), secret=secrets.token_urlsafe(32)), "signature"),
    (handmade({"alg": "none"}, claims(roles=["admin"]), key=None), "'none' is not allowed"),
])
def test_refused_tokens_are_401_over_http(srv: AdminServer, token: str, reason: str) -> None:
    status, headers, body = srv.call("GET", "/admin/v1/models", token=token)
    assert status == 401
    assert reason in body["error"] and token not in body["error"]
    assert headers["www-authenticate"].startswith('Bearer realm="servegate", error="invalid_token"')


def test_valid_token_reads_and_viewer_cannot_change_traffic(srv: AdminServer) -> None:
    viewer = hs256(claims(roles=["viewer"]))
    assert srv.call("GET", "/admin/v1/models", token=viewer)[0] == 200
    status, _, body = srv.call("PUT", "/admin/v1/models/fraud/traffic",
                               {"policy": "canary", "weights": {"1": 100}}, token=viewer)
    assert status == 403 and "needs role 'operator'" in body["error"]
    assert srv.call("GET", "/admin/v1/models")[0] == 401


# --- roles ----------------------------------------------------------------------------------------------

def test_the_role_ladder() -> None:
    assert grants([ADMIN]) == {ADMIN, OPERATOR, VIEWER, PREDICT}
    assert grants([OPERATOR]) == {OPERATOR, VIEWER}
    assert grants([VIEWER]) == {VIEWER}
    assert grants([PREDICT]) == {PREDICT}
    assert grants(["root", "superuser"]) == frozenset()


def test_require_names_the_missing_role() -> None:
    principal = Principal("bob", frozenset({OPERATOR}))
    principal.require(VIEWER)
    with pytest.raises(PermissionDenied) as err:
        principal.require(ADMIN)
    assert str(err.value) == "this needs role 'admin'; 'bob' has roles: operator"


def test_authorize_checks_the_role_after_the_token() -> None:
    auth = Authenticator(HS)
    assert auth.authorize(f"Bearer {hs256(claims(roles=['admin']))}", PREDICT).subject == "alice"
    with pytest.raises(PermissionDenied):
        auth.authorize(f"Bearer {hs256(claims(roles=['operator']))}", ADMIN)


# --- minting --------------------------------------------------------------------------------------------

def test_minted_tokens_round_trip_through_the_authenticator() -> None:
    settings = AuthSettings(jwt_secret=SECRET, audience="gw", issuer="servegate-cli")
    token = mint(settings, "carol", ["operator", "viewer"], 60)
    principal = Authenticator(settings).authenticate(f"Bearer {token}")
    assert principal == Principal("carol", frozenset({"operator", "viewer"}))
    decoded = jwt.decode(token, SECRET, algorithms=["HS256"], audience="gw")
    assert decoded["exp"] - decoded["iat"] == 60 and decoded["iss"] == "servegate-cli"
    assert "audience" in refusal(Authenticator(HS), token)


def test_mint_refuses_without_a_secret_or_with_bad_input() -> None:
    with pytest.raises(SettingsError, match="needs the HS256 secret"):
        mint(AuthSettings(), "carol", ["viewer"], 60)
    with pytest.raises(ValueError, match="roles: expected one or more of"):
        mint(HS, "carol", ["root"], 60)
    with pytest.raises(ValueError, match="ttl"):
        mint(HS, "carol", ["viewer"], 0)
    with pytest.raises(ValueError, match="subject"):
        mint(HS, " ", ["viewer"], 60)


# --- the data plane's hooks -----------------------------------------------------------------------------

class FakeGrpcContext:
    def __init__(self, metadata: tuple[tuple[str, str | bytes], ...]) -> None:
        self.metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self.metadata


def test_grpc_hook_needs_a_predict_token() -> None:
    authorize = authorize_grpc(Authenticator(HS))
    authorize(FakeGrpcContext((("x-user", "u1"), ("authorization", f"Bearer {hs256(claims(roles=['predict']))}"))))
    authorize(FakeGrpcContext((("authorization", f"Bearer {hs256(claims(roles=['admin']))}"),)))
    with pytest.raises(PermissionDenied, match="'predict'"):
        authorize(FakeGrpcContext((("authorization", f"Bearer {hs256(claims(roles=['operator']))}"),)))
    with pytest.raises(MissingCredentials):
        authorize(FakeGrpcContext((("x-user", "u1"),)))


def test_http_hook_needs_a_predict_token() -> None:
    authorize = authorize_http(Authenticator(HS))

    def request(headers: dict[str, str]) -> Request:
        return Request("POST", "/v2/models/m/infer", "", headers, b"")

    authorize(request({"authorization": f"Bearer {hs256(claims(roles=['predict']))}"}))
    with pytest.raises(PermissionDenied):
        authorize(request({"authorization": f"Bearer {hs256(claims(roles=['viewer']))}"}))
    with pytest.raises(Unauthenticated, match="expired"):
        authorize(request({"authorization": f"Bearer {hs256(claims(roles=['predict'], exp=1))}"}))
