"""Traffic policies as immutable values: the route table one model serves by (canary weights,
blue-green active/preview, sticky A/B, shadow), its JSON shape, and validation of that shape."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from rollout.errors import InvalidSpec

CANARY = "canary"
BLUE_GREEN = "blue_green"
AB = "ab"
POLICIES = (CANARY, BLUE_GREEN, AB)

_BODY_FIELDS = ("policy", "weights", "active", "preview", "sticky_key", "shadow", "fallback", "retained")
# Header names and gRPC metadata keys share this alphabet once lower-cased.
_STICKY_KEY = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Shadow:
    """`percent` of the model's requests are also sent to `version`; its answer is measured, not returned."""

    version: str
    percent: int

    def __post_init__(self) -> None:
        _check_version("shadow.version", self.version)
        _check_percent("shadow.percent", self.percent)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "percent": self.percent}


@dataclass(frozen=True)
class RouteTable:
    """How one model's traffic is split. Every version named here must be loaded.

    `weights` always sums to 100: for blue_green it is derived ({active: 100, preview: 0}), so the
    router and the metrics can read one field whatever the policy. A version with weight 0 is kept
    loaded but gets no live traffic. `fallback` is the version a failed request is re-run on
    (retry-on-stable); `retained` maps versions kept loaded after a switch to the wall-clock time
    (seconds since the epoch) until which they stay warm for an instant switch back.
    """

    model: str
    policy: str
    weights: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    sticky_key: str | None = None
    active: str | None = None
    preview: str | None = None
    shadow: Shadow | None = None
    fallback: str | None = None
    retained: Mapping[str, float] = field(default_factory=lambda: _EMPTY)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise InvalidSpec("policy", f"expected one of {', '.join(POLICIES)}, got {self.policy!r}")
        if self.policy == BLUE_GREEN:
            self._check_blue_green()
        else:
            self._check_weighted()
        object.__setattr__(self, "weights", MappingProxyType(dict(self.weights)))
        object.__setattr__(self, "retained", MappingProxyType(dict(self.retained)))
        self._check_extras()

    def _check_weighted(self) -> None:
        if self.active is not None or self.preview is not None:
            raise InvalidSpec("active", f"only blue_green has active/preview; use weights for {self.policy}")
        _check_weights(self.weights)
        if self.policy == AB:
            if len(self.weights) < 2:
                raise InvalidSpec("weights", "ab needs at least two versions")
            if self.sticky_key is None:
                raise InvalidSpec("sticky_key", "ab needs a sticky key (a header or metadata name)")
        if self.sticky_key is not None:
            _check_sticky_key(self.sticky_key)

    def _check_blue_green(self) -> None:
        if self.active is None:
            raise InvalidSpec("active", "blue_green needs the version that takes all traffic")
        _check_version("active", self.active)
        if self.preview is not None:
            _check_version("preview", self.preview)
            if self.preview == self.active:
                raise InvalidSpec("preview", "must differ from active")
        if self.sticky_key is not None:
            raise InvalidSpec("sticky_key", "blue_green sends all traffic to active; a sticky key has no use")
        derived = {self.active: 100} | ({self.preview: 0} if self.preview else {})
        if self.weights and dict(self.weights) != derived:
            raise InvalidSpec("weights", "blue_green derives its weights from active/preview; leave it out")
        object.__setattr__(self, "weights", derived)

    def _check_extras(self) -> None:
        routed = set(self.weights)
        if self.shadow is not None and self.weights.get(self.shadow.version) == 100:
            raise InvalidSpec("shadow.version", f"{self.shadow.version!r} already takes all live traffic")
        if self.fallback is not None and self.fallback not in routed:
            raise InvalidSpec("fallback", f"{self.fallback!r} is not a version of this table")
        for version, until in self.retained.items():
            _check_version("retained", version)
            _check_wall_time(f"retained.{version}", until)

    def versions_in_use(self, now: float | None = None) -> frozenset[str]:
        """The versions the gateway must keep loaded; retained ones only until their time (if `now`)."""
        used = set(self.weights)
        for extra in (self.active, self.preview, self.fallback):
            if extra is not None:
                used.add(extra)
        if self.shadow is not None:
            used.add(self.shadow.version)
        used.update(v for v, until in self.retained.items() if now is None or until > now)
        return frozenset(used)

    def __hash__(self) -> int:
        return hash(repr(sorted(self.to_dict().items(), key=lambda kv: kv[0])))

    def with_weights(self, stable: str, candidate: str, candidate_weight: int) -> RouteTable:
        """This table with its split replaced by stable/candidate at `candidate_weight` percent."""
        _check_percent("weights", candidate_weight)
        weights = {stable: 100 - candidate_weight, candidate: candidate_weight}
        policy = CANARY if self.policy == BLUE_GREEN else self.policy
        return replace(self, policy=policy, weights=weights, active=None, preview=None)

    def with_retained(self, version: str, until: float) -> RouteTable:
        return replace(self, retained={**self.retained, version: until})

    def without_expired(self, now: float) -> RouteTable:
        return replace(self, retained={v: t for v, t in self.retained.items() if t > now})

    def to_dict(self) -> dict[str, Any]:
        """The body `PUT /admin/v1/models/{model}/traffic` takes; `parse_traffic` reads it back."""
        body: dict[str, Any] = {"policy": self.policy}
        if self.policy == BLUE_GREEN:
            body["active"] = self.active
            if self.preview is not None:
                body["preview"] = self.preview
        else:
            body["weights"] = dict(self.weights)
        if self.sticky_key is not None:
            body["sticky_key"] = self.sticky_key
        if self.shadow is not None:
            body["shadow"] = self.shadow.to_dict()
        if self.fallback is not None:
            body["fallback"] = self.fallback
        if self.retained:
            body["retained"] = dict(self.retained)
        return body


def single(model: str, version: str) -> RouteTable:
    """All traffic to one version: the table of a model outside any rollout."""
    return RouteTable(model=model, policy=CANARY, weights={version: 100})


def split(model: str, stable: str, candidate: str, candidate_weight: int, *, policy: str = CANARY,
          sticky_key: str | None = None, shadow_percent: int = 0, fallback: bool = False) -> RouteTable:
    """A weighted canary or A/B step. Shadow copies go to the candidate while it is below 100 %."""
    shadow = Shadow(candidate, shadow_percent) if shadow_percent and candidate_weight < 100 else None
    return RouteTable(model=model, policy=policy, weights={stable: 100 - candidate_weight,
                                                           candidate: candidate_weight},
                      sticky_key=sticky_key, shadow=shadow,
                      fallback=stable if fallback and candidate_weight > 0 else None)


def blue_green(model: str, active: str, preview: str, *, shadow_percent: int = 0,
               fallback: str | None = None) -> RouteTable:
    """`active` takes all live traffic; `preview` is loaded and sees shadow or explicit-version traffic."""
    shadow = Shadow(preview, shadow_percent) if shadow_percent else None
    return RouteTable(model=model, policy=BLUE_GREEN, active=active, preview=preview, shadow=shadow,
                      fallback=fallback)


def parse_traffic(model: str, body: object) -> RouteTable:
    """Validates a `PUT .../traffic` body; errors name the field and what was expected."""
    if not isinstance(body, Mapping):
        raise InvalidSpec("", "expected a JSON object with a policy")
    unknown = sorted(str(k) for k in body if k not in _BODY_FIELDS)
    if unknown:
        raise InvalidSpec(unknown[0], f"unknown field; expected some of {', '.join(_BODY_FIELDS)}")
    if "policy" not in body:
        raise InvalidSpec("policy", f"required; one of {', '.join(POLICIES)}")
    policy = _string(body, "policy")
    return RouteTable(
        model=model, policy=policy,
        weights=_parse_weights(body["weights"]) if "weights" in body else _EMPTY,
        sticky_key=parse_sticky_key(body["sticky_key"]) if body.get("sticky_key") is not None else None,
        active=_string_or_none(body, "active"), preview=_string_or_none(body, "preview"),
        shadow=_parse_shadow(body["shadow"]) if body.get("shadow") is not None else None,
        fallback=_string_or_none(body, "fallback"),
        retained=_parse_retained(body["retained"]) if "retained" in body else _EMPTY,
    )


def _parse_weights(raw: object) -> dict[str, int]:
    if not isinstance(raw, Mapping) or not raw:
        raise InvalidSpec("weights", "expected an object mapping version to an integer percent")
    weights: dict[str, int] = {}
    for version, weight in raw.items():
        weights[str(version)] = _check_percent(f"weights.{version}", weight)
    return weights


def _parse_shadow(raw: object) -> Shadow:
    if not isinstance(raw, Mapping) or set(raw) != {"version", "percent"}:
        raise InvalidSpec("shadow", 'expected {"version": "<version>", "percent": <0..100>}')
    version = raw["version"]
    if not isinstance(version, str):
        raise InvalidSpec("shadow.version", "expected a version string")
    return Shadow(version, raw["percent"])


def _parse_retained(raw: object) -> dict[str, float]:
    if not isinstance(raw, Mapping):
        raise InvalidSpec("retained", "expected an object mapping version to a wall-clock time")
    return {str(k): _check_wall_time(f"retained.{k}", v) for k, v in raw.items()}


def _string(body: Mapping[str, Any], name: str) -> str:
    value = body[name]
    if not isinstance(value, str):
        raise InvalidSpec(name, f"expected a string, got {type(value).__name__}")
    return value


def _string_or_none(body: Mapping[str, Any], name: str) -> str | None:
    return None if body.get(name) is None else _string(body, name)


def _check_weights(weights: Mapping[str, int]) -> None:
    if not weights:
        raise InvalidSpec("weights", "expected at least one version")
    for version, weight in weights.items():
        _check_version("weights", version)
        _check_percent(f"weights.{version}", weight)
    total = sum(weights.values())
    if total != 100:
        raise InvalidSpec("weights", f"must sum to 100, got {total}")


def _check_percent(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise InvalidSpec(name, f"expected an integer percent 0..100, got {value!r}")
    return value


def _check_wall_time(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidSpec(name, f"expected a wall-clock time in seconds, got {value!r}")
    return float(value)


def _check_version(name: str, version: object) -> None:
    if not isinstance(version, str) or not version.strip():
        raise InvalidSpec(name, f"expected a non-empty version string, got {version!r}")


def _check_sticky_key(key: str) -> None:
    if not _STICKY_KEY.match(key):
        raise InvalidSpec("sticky_key", f"expected a lower-case header or metadata name, got {key!r}")


def parse_sticky_key(value: object) -> str:
    """A header / gRPC metadata name, lower-cased (HTTP headers ignore case; gRPC keys are lower)."""
    if not isinstance(value, str):
        raise InvalidSpec("sticky_key", f"expected a header or metadata name, got {value!r}")
    _check_sticky_key(value.lower())
    return value.lower()


def parse_percent(name: str, value: object) -> int:
    """An integer percent 0..100 (booleans refused); `name` is the field reported on error."""
    return _check_percent(name, value)
