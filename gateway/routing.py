"""Hot-path choice of a version from the model's current route table (a few microseconds per call).

Each route table is compiled once into cumulative bounds over 10,000 buckets; swapping a table is one
dict assignment, so a change takes effect on the next request. Sticky keys hash into the same
buckets, so a user stays on one arm and, as a candidate's weight grows, users only move toward it.
"""

from __future__ import annotations

import hashlib
import random
from bisect import bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.errors import ModelNotFound
from gateway.models import ModelManager, VersionState
from gateway.repository import version_key
from rollout.policy import RouteTable

FORCE_VERSION = "x-servegate-version"
BUCKETS = 10_000


@dataclass(frozen=True, slots=True)
class RouteChoice:
    """Where one call goes: the answering version, an optional shadow, and the stable fallback."""

    version: str
    shadow: str | None = None
    fallback: str | None = None


def sticky_bucket(key: str) -> int:
    """A stable bucket in [0, 10000) for a sticky key (the same on every replica and restart)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


class CompiledRoute:
    """A route table ready for the hot path."""

    __slots__ = ("bounds", "fallback", "live", "only", "shadow", "shadow_share", "sticky", "table", "versions")

    def __init__(self, table: RouteTable) -> None:
        self.table = table
        live = [(v, w) for v, w in table.weights.items() if w > 0]
        self.versions = [v for v, _ in live]
        self.live = frozenset(self.versions)
        bounds, total = [], 0
        for _, weight in live:
            total += weight * (BUCKETS // 100)
            bounds.append(total)
        self.bounds = bounds
        self.only = self.versions[0] if len(self.versions) == 1 else None
        self.sticky = table.sticky_key
        self.shadow = table.shadow.version if table.shadow and table.shadow.percent > 0 else None
        self.shadow_share = table.shadow.percent / 100 if table.shadow else 0.0
        self.fallback = table.fallback

    def choose(self, routing: Mapping[str, str], rand: Callable[[], float] = random.random) -> RouteChoice:
        forced = routing.get(FORCE_VERSION) if routing else None
        if forced:
            return RouteChoice(forced)  # smoke tests: exactly this version, nothing mirrored
        version = self.only
        if version is None:
            key = routing.get(self.sticky) if self.sticky and routing else None
            point = sticky_bucket(key) if key is not None else int(rand() * BUCKETS)
            version = self.versions[min(bisect_right(self.bounds, point), len(self.versions) - 1)]
        shadow = None
        if self.shadow is not None and self.shadow != version and rand() < self.shadow_share:
            shadow = self.shadow
        fallback = self.fallback if self.fallback != version else None
        return RouteChoice(version, shadow, fallback)


class TrafficRouter:
    """The route tables of every model; a model without one goes to its highest READY version."""

    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager
        self._routes: dict[str, CompiledRoute] = {}

    def set_table(self, table: RouteTable) -> None:
        self._routes[table.model] = CompiledRoute(table)

    def remove(self, model: str) -> None:
        self._routes.pop(model, None)

    def table(self, model: str) -> RouteTable | None:
        route = self._routes.get(model)
        return route.table if route is not None else None

    def tables(self) -> dict[str, RouteTable]:
        return {m: r.table for m, r in self._routes.items()}

    def withdrawn(self, model: str, version: str) -> bool:
        """True when the model's route table no longer sends live traffic to `version` (a rollback or
        an operator took it out after a call chose it)."""
        route = self._routes.get(model)
        return route is not None and version not in route.live

    def choose(self, model: str, routing: Mapping[str, str]) -> RouteChoice:
        route = self._routes.get(model)
        if route is not None:
            return route.choose(routing)
        forced = routing.get(FORCE_VERSION) if routing else None
        if forced:
            return RouteChoice(forced)
        versions = self._manager.versions(model)
        if not versions:
            raise ModelNotFound(f"unknown model '{model}'; served models: {self._manager.models()}")
        ready = [v.version for v in versions if v.state is VersionState.READY]
        return RouteChoice(max(ready or [v.version for v in versions], key=version_key))
