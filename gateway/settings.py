"""Typed settings per subsystem, from flags, `SERVEGATE_*` environment variables and a YAML file.

Precedence: flag > environment > file > default. Everything is validated once here; an invalid value
is a `SettingsError` naming its source and the setting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.repository import ConfigError, ModelConfig, parse_config

MiB = 1024 * 1024


class SettingsError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "0.0.0.0"
    http_port: int = 8000
    grpc_port: int = 8001
    admin_port: int = 8002
    max_request_bytes: int = 256 * MiB
    drain_seconds: float = 30.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    workers: int = 1
    grpc_engine: str = "native"  # native: the HTTP/2 server in gateway/protocol/h2; grpcio: grpc.aio
    # seconds a gRPC connection may live before the server asks the client to reconnect (GOAWAY); 0 = no
    # limit. Clients then open a new connection, which spreads them over replicas added since.
    grpc_max_connection_age: float = 0.0
    # a gRPC client silent this long gets a PING, and its connection closes unless it answers within
    # the timeout: finds clients that vanished without closing. grpc-core's server defaults.
    grpc_keepalive_time: float = 7200.0
    grpc_keepalive_timeout: float = 20.0


@dataclass(frozen=True, slots=True)
class AuthSettings:
    jwt_secret: str | None = field(default=None, repr=False)
    jwt_public_key: Path | None = None
    audience: str = "servegate"
    issuer: str | None = None
    require_auth: bool = False  # the data plane also needs a token (role `predict`)


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    enabled: bool = True
    interval_s: float = 1.0
    lease_ttl_s: float = 5.0


@dataclass(frozen=True, slots=True)
class Settings:
    repository: Path | None = None
    store: str | None = None
    server: ServerSettings = field(default_factory=ServerSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    controller: ControllerSettings = field(default_factory=ControllerSettings)
    models: ModelConfig = field(default_factory=ModelConfig)
    log_level: str = "info"

    def store_url(self) -> str:
        """The store URL; without one, a SQLite file beside the repository (or in the working directory)."""
        if self.store:
            return self.store
        if self.repository is not None:
            repo = self.repository.resolve()
            return f"sqlite:///{repo.parent / (repo.name + '.servegate.db')}"
        return f"sqlite:///{Path.cwd() / 'servegate.db'}"


def _port(v: str) -> int:
    n = int(v)
    if not 0 <= n <= 65535:
        raise ValueError("a port is 0..65535 (0 picks a free one)")
    return n


def _positive_int(v: str) -> int:
    n = int(v)
    if n < 1:
        raise ValueError("must be at least 1")
    return n


def _seconds(v: str) -> float:
    n = float(v)
    if n < 0:
        raise ValueError("must not be negative")
    return n


def _bool(v: str) -> bool:
    low = str(v).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def _grpc_engine(v: str) -> str:
    if v not in ("native", "grpcio"):
        raise ValueError("expected native or grpcio")
    return v


def _path(v: str) -> Path:
    return Path(v).expanduser()


# setting name -> (section, field, parser); the flag is --name with dashes, the env var SERVEGATE_NAME.
SETTINGS: dict[str, tuple[str, str, Callable[[str], Any]]] = {
    "repository": ("", "repository", _path),
    "store": ("", "store", str),
    "log_level": ("", "log_level", str),
    "host": ("server", "host", str),
    "http_port": ("server", "http_port", _port),
    "grpc_port": ("server", "grpc_port", _port),
    "admin_port": ("server", "admin_port", _port),
    "max_request_bytes": ("server", "max_request_bytes", _positive_int),
    "drain_seconds": ("server", "drain_seconds", _seconds),
    "tls_cert": ("server", "tls_cert", _path),
    "tls_key": ("server", "tls_key", _path),
    "workers": ("server", "workers", _positive_int),
    "grpc_engine": ("server", "grpc_engine", _grpc_engine),
    "grpc_max_connection_age": ("server", "grpc_max_connection_age", _seconds),
    "grpc_keepalive_time": ("server", "grpc_keepalive_time", _seconds),
    "grpc_keepalive_timeout": ("server", "grpc_keepalive_timeout", _seconds),
    "jwt_secret": ("auth", "jwt_secret", str),
    "jwt_public_key": ("auth", "jwt_public_key", _path),
    "jwt_audience": ("auth", "audience", str),
    "jwt_issuer": ("auth", "issuer", str),
    "require_auth": ("auth", "require_auth", _bool),
    "controller": ("controller", "enabled", _bool),
    "controller_interval": ("controller", "interval_s", _seconds),
    "lease_ttl": ("controller", "lease_ttl_s", _seconds),
}


def load(flags: Mapping[str, Any], env: Mapping[str, str], config_file: Path | None = None) -> Settings:
    """Builds validated settings; `flags` holds only the flags given on the command line (None = absent)."""
    file_values = _read_file(config_file) if config_file else {}
    sections: dict[str, dict[str, Any]] = {"": {}, "server": {}, "auth": {}, "controller": {}}
    for name, (section, attr, parse) in SETTINGS.items():
        for source, value in ((f"--{name.replace('_', '-')}", flags.get(name)),
                              (f"SERVEGATE_{name.upper()}", env.get(f"SERVEGATE_{name.upper()}")),
                              (f"{config_file}: {name}", file_values.get(name))):
            if value is None:
                continue
            try:
                sections[section][attr] = value if isinstance(value, bool | Path) else parse(str(value))
            except ValueError as exc:
                raise SettingsError(f"{source}: invalid value {value!r}: {exc}") from exc
            break
    try:
        models = parse_config(file_values.get("models") or {}, ModelConfig(), source=f"{config_file}: models")
    except ConfigError as exc:
        raise SettingsError(str(exc)) from exc
    settings = Settings(server=ServerSettings(**sections["server"]), auth=AuthSettings(**sections["auth"]),
                        controller=ControllerSettings(**sections["controller"]), models=models,
                        **sections[""])
    _check(settings)
    return settings


def _read_file(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SettingsError(f"{path}: cannot read settings: {exc}") from exc
    if not isinstance(raw, dict):
        raise SettingsError(f"{path}: expected a mapping of settings")
    unknown = sorted(set(raw) - set(SETTINGS) - {"models"})
    if unknown:
        raise SettingsError(f"{path}: unknown setting(s) {unknown}")
    return raw


def _check(s: Settings) -> None:
    if (s.server.tls_cert is None) != (s.server.tls_key is None):
        raise SettingsError("--tls-cert and --tls-key go together")
    for p in (s.server.tls_cert, s.server.tls_key, s.auth.jwt_public_key):
        if p is not None and not p.is_file():
            raise SettingsError(f"{p}: no such file")
    if s.auth.jwt_secret is not None and s.auth.jwt_public_key is not None:
        raise SettingsError("give either --jwt-secret (HS256) or --jwt-public-key (RS256/ES256), not both")
    if s.auth.require_auth and s.auth.jwt_secret is None and s.auth.jwt_public_key is None:
        raise SettingsError("--require-auth needs a key: --jwt-secret or --jwt-public-key")
    if s.repository is not None and not s.repository.is_dir():
        raise SettingsError(f"--repository {s.repository}: not a directory")
