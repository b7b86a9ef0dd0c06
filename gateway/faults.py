"""Fault injection for rehearsing a bad release on a real gateway: added latency, errors, corrupt outputs.

Faults are off by default, set per version by an admin, audited, stored in the state store (so every
replica applies them) and expire on their own. Latency is added to each batch on its worker thread,
as a slow model would be; errors fail a share of requests after their inference; corruption shifts
or adds noise to float outputs before they are split per request.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from gateway.errors import InferenceFailed
from gateway.models import LoadedVersion, ModelManager
from rollout.errors import InvalidSpec, NotFound
from rollout.store.base import KIND_FAULT, StateStore

FIELDS = ("latency_ms", "latency_jitter_ms", "latency_distribution", "error_rate", "output_shift",
          "output_noise", "duration")
DISTRIBUTIONS = ("fixed", "uniform", "exponential")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
MAX_DURATION_S = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Faults:
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    latency_distribution: str = "fixed"
    error_rate: float = 0.0
    output_shift: float = 0.0
    output_noise: float = 0.0
    expires_at: float = 0.0  # wall clock
    set_by: str = ""

    def active(self, now: float) -> bool:
        return now < self.expires_at

    def delay_s(self, rand: random.Random) -> float:
        extra = 0.0
        if self.latency_jitter_ms > 0:
            if self.latency_distribution == "uniform":
                extra = rand.uniform(0.0, self.latency_jitter_ms)
            elif self.latency_distribution == "exponential":
                extra = rand.expovariate(1.0 / self.latency_jitter_ms)
        return max(0.0, self.latency_ms + extra) / 1000.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_faults(body: Mapping[str, Any], actor: str, now: float) -> Faults:
    """Validates a `PUT .../faults` body; errors name the field."""
    if not isinstance(body, Mapping):
        raise InvalidSpec("", "expected a JSON object")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise InvalidSpec(unknown[0], f"unknown field; expected some of {', '.join(FIELDS)}")
    if "duration" not in body:
        raise InvalidSpec("duration", "required: how long the faults last, e.g. \"5m\" (they expire on their own)")
    values = {name: _number(body, name, 0.0, 600_000.0) for name in ("latency_ms", "latency_jitter_ms")}
    values["error_rate"] = _number(body, "error_rate", 0.0, 1.0)
    values["output_shift"] = _number(body, "output_shift", -1e6, 1e6)
    values["output_noise"] = _number(body, "output_noise", 0.0, 1e6)
    distribution = body.get("latency_distribution", "fixed")
    if distribution not in DISTRIBUTIONS:
        raise InvalidSpec("latency_distribution", f"expected one of {', '.join(DISTRIBUTIONS)}")
    duration = _duration(body["duration"])
    return Faults(**values, latency_distribution=distribution, expires_at=now + duration, set_by=actor)


def _number(body: Mapping[str, Any], name: str, lo: float, hi: float) -> float:
    value = body.get(name, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise InvalidSpec(name, f"expected a number in [{lo:g}, {hi:g}], got {value!r}")
    return float(value)


def _duration(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise InvalidSpec("duration", f"expected a duration like \"90s\", \"5m\" or \"1h\", got {value!r}")
        seconds = float(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match.group(2) or "s"]
    if not 0 < seconds <= MAX_DURATION_S:
        raise InvalidSpec("duration", f"expected more than 0 and at most 24h, got {value!r}")
    return seconds


class FaultInjector:
    """Applies each version's current faults; `set` is called by the sync whenever the store changes."""

    def __init__(self, manager: ModelManager, clock: Callable[[], float] = time.time, seed: int | None = None) -> None:
        self._manager = manager
        self._clock = clock
        self._faults: dict[tuple[str, str], Faults] = {}
        self._rand = random.Random(seed)
        self._hooked: set[int] = set()

    def set(self, model: str, version: str, faults: Faults | None) -> None:
        key = (model, version)
        if faults is None:
            self._faults.pop(key, None)
        else:
            self._faults[key] = faults
        loaded = self._manager.find(model, version)
        if loaded is not None:
            self.attach(loaded)

    def current(self, model: str, version: str) -> Faults | None:
        faults = self._faults.get((model, version))
        return faults if faults is not None and faults.active(self._clock()) else None

    def attach(self, loaded: LoadedVersion) -> None:
        """Adds the batch hook once per loaded version; it does nothing while no fault is active."""
        if id(loaded) in self._hooked:
            return
        self._hooked.add(id(loaded))
        loaded.run_hooks.insert(0, lambda feeds, outputs: self._on_batch(loaded, outputs))

    def _on_batch(self, loaded: LoadedVersion, outputs: Mapping[str, Any]) -> None:
        faults = self.current(loaded.model, loaded.version)
        if faults is None:
            return
        delay = faults.delay_s(self._rand)
        if delay > 0:
            time.sleep(delay)  # worker thread: the version is slow, as a slow model would be
        if faults.output_shift or faults.output_noise:
            _corrupt(outputs, faults, self._rand)

    def check_request(self, model: str, version: str) -> None:
        """Data plane, after inference: fails this request with the configured probability."""
        faults = self.current(model, version)
        if faults is not None and faults.error_rate > 0 and self._rand.random() < faults.error_rate:
            raise InferenceFailed(f"model '{model}' version '{version}': injected fault (error_rate "
                                  f"{faults.error_rate:g})")


def _corrupt(outputs: Mapping[str, Any], faults: Faults, rand: random.Random) -> None:
    noise = np.random.default_rng(rand.getrandbits(32))
    for array in outputs.values():
        if isinstance(array, np.ndarray) and np.issubdtype(array.dtype, np.floating) and array.flags.writeable:
            array += np.asarray(faults.output_shift, dtype=array.dtype)
            if faults.output_noise:
                array += np.asarray(noise.normal(0.0, faults.output_noise, array.shape), dtype=array.dtype)


class FaultControl:
    """The admin side: read, set and clear faults in the store (audited); handlers for GatewayControl."""

    def __init__(self, store: StateStore, injector: FaultInjector, known: Callable[[str, str], None],
                 clock: Callable[[], float] = time.time) -> None:
        self._store, self._injector, self._known, self._clock = store, injector, known, clock

    async def faults(self, model: str, version: str) -> dict[str, Any]:
        self._known(model, version)
        doc = await asyncio.to_thread(self._store.get, KIND_FAULT, f"{model}/{version}")
        if doc is None or not doc.value.get("faults"):
            return {"model": model, "version": version, "faults": None}
        faults = Faults(**doc.value["faults"])
        return {"model": model, "version": version,
                "faults": faults.to_dict() if faults.active(self._clock()) else None}

    async def set_faults(self, model: str, version: str, body: Mapping[str, Any], actor: str) -> dict[str, Any]:
        self._known(model, version)
        faults = parse_faults(body, actor, self._clock())
        await self._write(model, version, faults, actor, "faults injected through the admin API")
        return {"model": model, "version": version, "faults": faults.to_dict()}

    async def clear_faults(self, model: str, version: str, actor: str) -> dict[str, Any]:
        self._known(model, version)
        await self._write(model, version, None, actor, "faults cleared through the admin API")
        return {"model": model, "version": version, "faults": None}

    async def _write(self, model: str, version: str, faults: Faults | None, actor: str, reason: str) -> None:
        key = f"{model}/{version}"
        before = await asyncio.to_thread(self._store.get, KIND_FAULT, key)
        value = {"faults": faults.to_dict() if faults else None}
        await asyncio.to_thread(self._store.put, KIND_FAULT, key, value)
        await asyncio.to_thread(self._store.append_audit, actor, "set_faults" if faults else "clear_faults",
                                model, version, dict(before.value) if before else None, value, reason)
        self._injector.set(model, version, faults)

    async def load_all(self) -> None:
        """Reads every stored fault (start-up and resync)."""
        for key, doc in await asyncio.to_thread(self._store.list, KIND_FAULT):
            model, _, version = key.partition("/")
            raw = doc.value.get("faults")
            self._injector.set(model, version, Faults(**raw) if raw else None)


def unknown_version(manager: ModelManager) -> Callable[[str, str], None]:
    """A `known` check for FaultControl: the version must exist on this gateway."""
    def check(model: str, version: str) -> None:
        if manager.find(model, version) is None:
            raise NotFound(f"model {model!r} has no version {version!r}")
    return check
