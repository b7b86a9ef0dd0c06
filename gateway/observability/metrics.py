"""Every Prometheus metric servegate exports, declared once in an object that owns its registry.

Labels are bounded: model, version, protocol, outcome, provider (plus tensor/kind/statistic for
drift) — never request ids. Hot-path callers hold a `VersionMetrics` whose label children are
resolved once, so recording a request costs a few attribute lookups.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01,
                   0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
OUTCOMES = ("success", "invalid_input", "not_found", "not_ready", "overloaded", "deadline_exceeded",
            "failed", "cancelled", "unauthenticated", "retried_on_stable", "withdrawn")
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The gateway's metrics; build a fresh one per gateway (tests build their own)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        mv = ["model", "version"]
        self.requests = Counter("servegate_requests", "Inference requests by outcome.",
                                [*mv, "protocol", "outcome"], registry=r)
        self.request_duration = Histogram("servegate_request_duration_seconds",
                                          "Request latency inside the gateway, decode to encode.",
                                          [*mv, "protocol"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_duration = Histogram("servegate_queue_duration_seconds",
                                        "Time a request waited in its batch queue.", mv,
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.compute_duration = Histogram("servegate_compute_duration_seconds",
                                          "ONNX Runtime time per batch (plus drift binning).", mv,
                                          buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("servegate_batch_size", "Rows per executed batch.", mv,
                                    buckets=BATCH_BUCKETS, registry=r)
        self.batch_requests = Histogram("servegate_batch_requests", "Requests per executed batch.", mv,
                                        buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("servegate_queue_depth", "Requests waiting in the batch queue.", mv,
                                 registry=r)
        self.inflight = Gauge("servegate_inflight_requests", "Requests queued or running.", mv,
                              registry=r)
        self.model_ready = Gauge("servegate_model_ready", "1 when the version serves, else 0.", mv,
                                 registry=r)
        self.model_provider = Gauge("servegate_model_provider",
                                    "Execution provider in use (value 1 on the provider's series).",
                                    [*mv, "provider"], registry=r)
        self.traffic_weight = Gauge("servegate_traffic_weight", "Percent of traffic routed to a version.",
                                    mv, registry=r)
        self.shadow_requests = Counter("servegate_shadow_requests", "Mirrored requests by outcome.",
                                       [*mv, "outcome"], registry=r)
        self.shadow_agreement = Gauge("servegate_shadow_agreement",
                                      "Share of shadow answers agreeing with the primary (last window).",
                                      mv, registry=r)
        self.rollout_phase = Gauge("servegate_rollout_phase",
                                   "1 on the current rollout phase of a model.", ["model", "phase"], registry=r)
        self.controller_decisions = Counter("servegate_controller_decisions",
                                            "Decisions applied by the promotion controller.",
                                            ["model", "action"], registry=r)
        self.drift = Gauge("servegate_drift", "Drift of a version's inputs or predictions.",
                           [*mv, "tensor", "kind", "statistic"], registry=r)
        self.store_degraded = Gauge("servegate_store_degraded",
                                    "1 while the state store cannot be reached.", registry=r)
        self.store_reset = Gauge("servegate_store_reset",
                                 "1 while the state store has lost its data and awaits `state restore`.",
                                 registry=r)
        self.controller_leader = Gauge("servegate_controller_leader",
                                       "1 while this process holds the controller lease.", registry=r)

    def for_version(self, model: str, version: str) -> VersionMetrics:
        return VersionMetrics(self, model, version)

    def bind_gauges(self, model: str, version: str, depth: Callable[[], float],
                    busy: Callable[[], float]) -> None:
        """Queue depth and in-flight are read at scrape time: no cost on the request path."""
        self.queue_depth.labels(model, version).set_function(depth)
        self.inflight.labels(model, version).set_function(busy)

    def forget_version(self, model: str, version: str) -> None:
        """Drops an unloaded version's series so label sets stay bounded over many versions."""
        for metric in (self.queue_depth, self.inflight, self.model_ready, self.traffic_weight,
                       self.queue_duration, self.compute_duration, self.batch_size, self.batch_requests):
            with contextlib.suppress(KeyError):
                metric.remove(model, version)

    def record_decision(self, model: str, action: str, phase: str, phases: tuple[str, ...]) -> None:
        """A controller or operator decision: counted by action, and the model's phase gauge set to it."""
        if action != "hold":
            self.controller_decisions.labels(model, action).inc()
        for name in phases:
            self.rollout_phase.labels(model, name).set(1 if name == phase else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class VersionMetrics:
    """Label children of one model version, resolved once; per-protocol children cached on first use."""

    __slots__ = ("_children", "_metrics", "batch_requests", "batch_size", "compute", "model", "queue",
                 "version")

    def __init__(self, metrics: Metrics, model: str, version: str) -> None:
        self._metrics = metrics
        self.model, self.version = model, version
        self.queue = metrics.queue_duration.labels(model, version)
        self.compute = metrics.compute_duration.labels(model, version)
        self.batch_size = metrics.batch_size.labels(model, version)
        self.batch_requests = metrics.batch_requests.labels(model, version)
        self._children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def _child(self, protocol: str, outcome: str) -> tuple[Counter, Histogram]:
        key = (protocol, outcome)
        child = self._children.get(key)
        if child is None:
            m = self._metrics
            child = (m.requests.labels(self.model, self.version, protocol, outcome),
                     m.request_duration.labels(self.model, self.version, protocol))
            self._children[key] = child
        return child

    def request(self, protocol: str, outcome: str, seconds: float) -> None:
        counter, latency = self._child(protocol, outcome)
        counter.inc()
        latency.observe(seconds)

    def batch(self, rows: int, requests: int, compute_s: float) -> None:
        """Called on the event loop after each batch's replies (see BatchQueue._deliver)."""
        self.batch_size.observe(rows)
        self.batch_requests.observe(requests)
        self.compute.observe(compute_s)
