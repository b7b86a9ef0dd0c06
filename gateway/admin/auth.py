"""JWT bearer authentication and role checks for the admin API and, with `--require-auth`, the data plane.

Tokens are verified against an algorithm allow-list fixed by the configured key (HS256 for a secret,
RS256 / ES256 for a public key), with exp / nbf / aud / iss checks; the token itself is never echoed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.errors import PermissionDenied, Unauthenticated
from gateway.protocol.http_server import Request
from gateway.settings import AuthSettings, SettingsError

log = logging.getLogger(__name__)

VIEWER = "viewer"
OPERATOR = "operator"
ADMIN = "admin"
PREDICT = "predict"
ROLES = (VIEWER, OPERATOR, ADMIN, PREDICT)

# What each role grants: admin implies operator implies viewer; admin may also call the data plane.
_GRANTS: dict[str, frozenset[str]] = {
    VIEWER: frozenset({VIEWER}),
    OPERATOR: frozenset({OPERATOR, VIEWER}),
    ADMIN: frozenset({ADMIN, OPERATOR, VIEWER, PREDICT}),
    PREDICT: frozenset({PREDICT}),
}
LEEWAY_S = 30.0  # clock skew tolerated on exp / nbf / iat
MIN_SECRET_BYTES = 32  # RFC 7518 3.2: an HS256 key is at least as long as the hash (256 bits)
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


def grants(roles: Iterable[str]) -> frozenset[str]:
    """Every role the given ones imply; names outside `ROLES` grant nothing."""
    out: set[str] = set()
    for role in roles:
        out |= _GRANTS.get(role, frozenset())
    return frozenset(out)


class MissingCredentials(Unauthenticated):
    """No credentials at all (as opposed to credentials that do not verify)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified caller: the token's subject and the roles it was granted (as written in the token)."""

    subject: str
    roles: frozenset[str]

    @property
    def grants(self) -> frozenset[str]:
        return grants(self.roles)

    def has(self, role: str) -> bool:
        return role in self.grants

    def require(self, role: str) -> None:
        """Raises `PermissionDenied` naming the missing role."""
        if not self.has(role):
            held = ", ".join(sorted(self.roles)) or "none"
            raise PermissionDenied(f"this needs role '{role}'; '{self.subject}' has roles: {held}")


class Authenticator:
    """Verifies `Authorization: Bearer <JWT>` headers with the key in `AuthSettings`."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self._key: Any = None
        self.algorithms: tuple[str, ...] = ()
        if settings.jwt_secret is not None:
            self._key, self.algorithms = settings.jwt_secret, ("HS256",)
            if len(settings.jwt_secret.encode()) < MIN_SECRET_BYTES:
                log.warning("the JWT secret is shorter than %d bytes; use a longer random secret",
                            MIN_SECRET_BYTES)
        elif settings.jwt_public_key is not None:
            self._key, algorithm = _load_public_key(settings)
            self.algorithms = (algorithm,)

    @property
    def configured(self) -> bool:
        return bool(self.algorithms)

    def authenticate(self, authorization_header: str | None) -> Principal:
        """The verified principal, or `Unauthenticated` saying why (never repeating the token)."""
        token = _bearer_token(authorization_header)
        if not self.configured:
            raise Unauthenticated("this gateway has no JWT key configured (--jwt-secret or "
                                  "--jwt-public-key), so it cannot verify any token")
        self._check_algorithm(token)
        claims = self._decode(token)
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject.strip():
            raise Unauthenticated("token claim 'sub' must be a non-empty string")
        return Principal(subject, _roles(claims["roles"]))

    def authorize(self, authorization_header: str | None, role: str) -> Principal:
        """Authenticates, then requires `role` (`PermissionDenied` without it)."""
        principal = self.authenticate(authorization_header)
        principal.require(role)
        return principal

    def _check_algorithm(self, token: str) -> None:
        # Checked before verification so that a token for another key type (an HMAC token sent to
        # a public-key gateway: key confusion) or `alg: none` gets its own clear refusal.
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise Unauthenticated("token is malformed: expected a JWT (header.payload.signature, "
                                  "base64url)") from exc
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise Unauthenticated(f"token algorithm {alg!r} is not allowed; this gateway accepts "
                                  f"{', '.join(self.algorithms)}")

    def _decode(self, token: str) -> dict[str, Any]:
        required = ["sub", "exp", "roles", "aud"] + (["iss"] if self.settings.issuer else [])
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self._key, algorithms=list(self.algorithms), audience=self.settings.audience,
                issuer=self.settings.issuer, leeway=LEEWAY_S, options={"require": required})
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(self._reason(exc)) from None
        return claims

    def _reason(self, exc: jwt.InvalidTokenError) -> str:
        if isinstance(exc, jwt.ExpiredSignatureError):
            return "token has expired (exp)"
        if isinstance(exc, jwt.ImmatureSignatureError):
            return "token is not valid yet (nbf/iat in the future)"
        if isinstance(exc, jwt.InvalidAudienceError):
            return f"token audience (aud) is wrong; expected {self.settings.audience!r}"
        if isinstance(exc, jwt.InvalidIssuerError):
            return f"token issuer (iss) is wrong; expected {self.settings.issuer!r}"
        if isinstance(exc, jwt.MissingRequiredClaimError):
            return f"token is missing the required claim {exc.claim!r}"
        if isinstance(exc, jwt.InvalidSignatureError):
            return "token signature does not verify with the configured key"
        if isinstance(exc, jwt.InvalidAlgorithmError):
            return f"token algorithm is not allowed; this gateway accepts {', '.join(self.algorithms)}"
        if isinstance(exc, jwt.DecodeError):
            return "token is malformed: expected a JWT (header.payload.signature, base64url)"
        return f"token is invalid: {exc}"


def mint(settings: AuthSettings, subject: str, roles: Iterable[str], ttl_s: float,
         *, now: float | None = None) -> str:
    """An HS256 token from the configured secret for `servegate token` and the CLI's local convenience."""
    if settings.jwt_secret is None:
        raise SettingsError("minting a token needs the HS256 secret: --jwt-secret or SERVEGATE_JWT_SECRET")
    role_list = sorted(set(roles))
    unknown = [r for r in role_list if r not in ROLES]
    if unknown or not role_list:
        raise ValueError(f"roles: expected one or more of {', '.join(ROLES)}, got {unknown or 'none'}")
    if not subject.strip():
        raise ValueError("subject: expected a non-empty name")
    if not ttl_s > 0:
        raise ValueError(f"ttl: expected a duration > 0, got {ttl_s}")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": subject, "roles": role_list, "aud": settings.audience,
                              "iat": issued, "nbf": issued, "exp": issued + max(1, round(ttl_s))}
    if settings.issuer:
        claims["iss"] = settings.issuer
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")


class MetadataContext(Protocol):
    """The part of a grpc.aio ServicerContext that authorization reads."""

    def invocation_metadata(self) -> Any: ...


def authorize_grpc(authenticator: Authenticator) -> Callable[[MetadataContext], None]:
    """A gRPC server `authorize` hook: the `authorization` metadata must carry a `predict` token."""
    def authorize(context: MetadataContext) -> None:
        header = None
        for key, value in context.invocation_metadata() or ():
            if key.lower() == "authorization" and isinstance(value, str):
                header = value
                break
        authenticator.authorize(header, PREDICT)
    return authorize


def authorize_http(authenticator: Authenticator) -> Callable[[Request], None]:
    """The data plane's REST `authorize` hook: the `Authorization` header must carry a `predict` token."""
    def authorize(request: Request) -> None:
        authenticator.authorize(request.headers.get("authorization"), PREDICT)
    return authorize


def _bearer_token(header: str | None) -> str:
    if header is None or not header.strip():
        raise MissingCredentials("missing credentials: send 'Authorization: Bearer <JWT>'")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <JWT>'")
    return token.strip()


def _roles(claim: object) -> frozenset[str]:
    if isinstance(claim, str):
        return frozenset(claim.split())
    if isinstance(claim, list) and all(isinstance(r, str) for r in claim):
        return frozenset(claim)
    raise Unauthenticated("token claim 'roles' must be a list of strings or a space-separated string")


def _load_public_key(settings: AuthSettings) -> tuple[Any, str]:
    path = settings.jwt_public_key
    try:
        data = path.read_bytes() if path is not None else b""
    except OSError as exc:
        raise SettingsError(f"--jwt-public-key {path}: cannot read it: {exc.strerror}") from exc
    try:
        if b"CERTIFICATE" in data:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise SettingsError(f"--jwt-public-key {path}: expected a PEM public key or certificate") from exc
    if isinstance(key, rsa.RSAPublicKey):
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _EC_ALGORITHMS:
        return key, _EC_ALGORITHMS[key.curve.name]
    raise SettingsError(f"--jwt-public-key {path}: expected an RSA key (RS256) or an EC P-256 key "
                        f"(ES256; P-384 and P-521 give ES384 / ES512)")
