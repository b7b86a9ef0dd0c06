"""Reads the gateway's Prometheus text into the few figures a scenario plots: traffic weights, requests by
version and outcome, queue depth, in-flight requests and drift scores, for one model."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

_LINE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def samples(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """(metric name, labels, value) for every sample line; comments and malformed lines are skipped."""
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        yield match.group(1), dict(_LABEL.findall(match.group(2) or "")), value


def model_figures(text: str, model: str) -> dict[str, Any]:
    """One scrape reduced to what a scenario samples each second (for `model` only)."""
    out: dict[str, Any] = {"weights": {}, "requests": {}, "queue_depth": {}, "inflight": {}, "drift": {}}
    for name, labels, value in samples(text):
        if labels.get("model") != model or math.isnan(value):
            continue
        version = labels.get("version", "")
        if name == "servegate_traffic_weight":
            out["weights"][version] = value
        elif name == "servegate_requests_total":
            by_outcome = out["requests"].setdefault(version, {})
            outcome = labels.get("outcome", "")
            by_outcome[outcome] = by_outcome.get(outcome, 0.0) + value  # summed over protocols
        elif name == "servegate_queue_depth":
            out["queue_depth"][version] = value
        elif name == "servegate_inflight_requests":
            out["inflight"][version] = value
        elif name == "servegate_drift":
            key = "/".join(labels.get(k, "") for k in ("version", "tensor", "kind", "statistic"))
            out["drift"][key] = value
    return out


def total_requests(figures: dict[str, Any], version: str | None = None) -> float:
    """Requests counted by the gateway: one version's (every outcome), or all versions'."""
    requests: dict[str, dict[str, float]] = figures.get("requests", {})
    chosen = [requests.get(version, {})] if version is not None else list(requests.values())
    return float(sum(sum(by_outcome.values()) for by_outcome in chosen))
