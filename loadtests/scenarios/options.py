"""Options of `scenario NAME`: one typed value for every flag; zero or empty means "the scenario's default"."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from loadtests.clients import PROTOCOLS


@dataclass(frozen=True)
class Options:
    name: str
    out: Path
    duration_s: float = 0.0
    model: str = ""
    protocol: str = "grpc"
    rate: float = 0.0
    workers: int = 0
    timeout_s: float = 5.0
    window_s: float = 5.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_error_rate: float = -1.0  # negative: the scenario's default
    target: str = ""
    http: str = ""
    admin_url: str = ""
    token: str = ""
    jwt_secret: str = ""
    candidate_version: str = ""
    controller_interval_s: float = 0.0
    start_rate: float = 0.0
    max_rate: float = 0.0
    step_s: float = 0.0
    queue_capacity: int = 0
    max_batch_size: int = 0
    service_ms: float = -1.0  # negative: the scenario's default; 0: no added service time
    down_s: float = 5.0
    replicas: int = 3
    redis_server: str = "redis-server"
    sample_interval_s: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.duration_s < 0 or self.rate < 0 or self.window_s <= 0 or self.timeout_s <= 0:
            raise ValueError("duration and rate must be >= 0, window and timeout > 0")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.sample_interval_s <= 0 or self.replicas < 2 or self.down_s < 0:
            raise ValueError("sample interval must be > 0, replicas >= 2 and down time >= 0")

    def with_defaults(self, defaults: dict[str, Any]) -> Options:
        """Fills every option left at zero / empty / negative from the scenario's defaults."""
        unset = {f.name for f in fields(self) if _unset(f.name, getattr(self, f.name))}
        return replace(self, **{k: v for k, v in defaults.items() if k in unset})

    @property
    def targeted(self) -> bool:
        return bool(self.target)

    def to_dict(self) -> dict[str, Any]:
        doc = {f.name: getattr(self, f.name) for f in fields(self)}
        doc["out"] = str(self.out)
        doc["token"] = "***" if self.token else ""  # secrets never reach a report
        doc["jwt_secret"] = "***" if self.jwt_secret else ""
        return doc


_ZERO_IS_A_VALUE = ("max_error_rate", "service_ms")  # 0 errors, 0 ms are real settings: negative = unset


def _unset(name: str, value: Any) -> bool:
    if name in _ZERO_IS_A_VALUE:
        return bool(value < 0)
    return value in (0, "")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, default=0.0, help="seconds of load (default: per scenario)")
    p.add_argument("--out", type=Path, help="report directory (default: ./scenario-NAME-TIME)")
    p.add_argument("--model", default="", help="tabular | mlp | wide (default: per scenario)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="grpc")
    p.add_argument("--rate", type=float, default=0.0, help="requests/s (overload: the sustainable rate)")
    p.add_argument("--workers", type=int, default=0, help="load generator processes")
    p.add_argument("--timeout", type=float, default=5.0, help="per-request timeout, seconds")
    p.add_argument("--window", type=float, default=5.0, help="rollout analysis window, seconds")
    p.add_argument("--p50-ms", type=float, default=0.0, help="p50 latency target")
    p.add_argument("--p99-ms", type=float, default=0.0, help="p99 latency target")
    p.add_argument("--max-error-rate", type=float, default=-1.0, help="error-rate target (0..1)")
    p.add_argument("--target", default="", metavar="HOST:PORT",
                   help="use this running gateway (its gRPC endpoint) instead of starting one")
    p.add_argument("--http", default="", metavar="HOST:PORT", help="with --target: its HTTP endpoint")
    p.add_argument("--admin-url", default="", help="with --target: http://HOST:PORT of its admin API")
    p.add_argument("--token", default="", help="with --target: an admin JWT")
    p.add_argument("--jwt-secret", default="", help="with --target: the HS256 secret to mint admin JWTs")
    p.add_argument("--candidate-version", default="", help="version name of the rollout candidate")
    p.add_argument("--controller-interval", type=float, default=0.0, help="gateway controller tick, s")
    p.add_argument("--start-rate", type=float, default=0.0, help="ramp: first rate")
    p.add_argument("--max-rate", type=float, default=0.0, help="ramp: last rate")
    p.add_argument("--step", type=float, default=0.0, help="ramp: seconds per rate step")
    p.add_argument("--queue-capacity", type=int, default=0, help="overload: the model's queue_capacity")
    p.add_argument("--max-batch-size", type=int, default=0, help="overload: the model's max_batch_size")
    p.add_argument("--service-ms", type=float, default=-1.0,
                   help="overload: service time per batch pinned with a latency fault (0: the model's own)")
    p.add_argument("--down", type=float, default=5.0, help="replica-failover: seconds a replica stays down")
    p.add_argument("--replicas", type=int, default=3, help="replica-failover: gateway replicas")
    p.add_argument("--redis-server", default="redis-server", help="replica-failover: redis-server binary")
    p.add_argument("--sample-interval", type=float, default=1.0, help="seconds between gateway samples")
    p.add_argument("--seed", type=int, default=0)


def from_args(name: str, args: argparse.Namespace) -> Options:
    out = args.out or Path(f"scenario-{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    return Options(
        name=name, out=out, duration_s=args.duration, model=args.model, protocol=args.protocol,
        rate=args.rate, workers=args.workers, timeout_s=args.timeout, window_s=args.window,
        p50_ms=args.p50_ms, p99_ms=args.p99_ms, max_error_rate=args.max_error_rate, target=args.target,
        http=args.http, admin_url=args.admin_url, token=args.token, jwt_secret=args.jwt_secret,
        candidate_version=args.candidate_version, controller_interval_s=args.controller_interval,
        start_rate=args.start_rate, max_rate=args.max_rate, step_s=args.step,
        queue_capacity=args.queue_capacity, max_batch_size=args.max_batch_size, service_ms=args.service_ms,
        down_s=args.down,
        replicas=args.replicas, redis_server=args.redis_server, sample_interval_s=args.sample_interval,
        seed=args.seed,
    )
