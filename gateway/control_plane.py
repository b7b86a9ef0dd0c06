"""The gateway's ControlPlane: registry, stages, traffic, rollouts and audit, applied to this process at once.

Writes go to the state store first (durable, compare-and-set, audited); the local router is updated
right after, so the caller's next request sees the change. Other replicas follow through the store's
notifications. Store calls are synchronous and run in threads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gateway.models import ModelManager
from gateway.shadow import ShadowMirror
from gateway.sync import SERVABLE, StateSync, reference_profile
from rollout import controller as rc
from rollout.audit import AuditLog, record_to_dict
from rollout.decide import Decision
from rollout.errors import Conflict, InvalidSpec, NotFound, ValidationFailed
from rollout.policy import RouteTable, parse_traffic
from rollout.registry import ModelVersion, Registry, Stage
from rollout.spec import parse_spec
from rollout.store.base import KIND_ROLLOUT, KIND_ROUTE, StateStore

JSON = dict[str, Any]
REGISTER_FIELDS = ("version", "artifact", "metadata", "holdout", "reference", "breaking")


class GatewayControl:
    def __init__(self, store: StateStore, registry: Registry, sync: StateSync, manager: ModelManager, *,
                 repository: Path | None = None, rollback_window_s: float = 300.0,
                 clock: Callable[[], float] = time.time,
                 extras: Mapping[str, Callable[..., Any]] | None = None,
                 shadow: ShadowMirror | None = None) -> None:
        self.store, self.registry, self.sync, self.manager = store, registry, sync, manager
        self.repository = repository
        self.rollback_window_s = rollback_window_s
        self.clock = clock
        self.audit_log = AuditLog(store)
        self.extras = dict(extras or {})  # drift and fault handlers, provided by their subsystems
        self.shadow = shadow
        self.on_decision: Callable[[Decision], None] | None = None  # metrics for operator decisions

    # --- reads -----------------------------------------------------------------------------------

    async def models(self) -> list[JSON]:
        names = set(await asyncio.to_thread(self.registry.models)) | set(self.manager.models())
        return [await self._model(name, full=False) for name in sorted(names)]

    async def model(self, model: str) -> JSON:
        known = await asyncio.to_thread(self.registry.models)
        if model not in known and model not in self.manager.models():
            raise NotFound(f"unknown model {model!r}; known models: {sorted(known)}")
        return await self._model(model, full=True)

    async def _model(self, model: str, full: bool) -> JSON:
        versions = await asyncio.to_thread(self.registry.versions, model)
        route = await asyncio.to_thread(self.store.get, KIND_ROUTE, model)
        rollout = await asyncio.to_thread(self.store.get, KIND_ROLLOUT, model)
        out: JSON = {
            "name": model,
            "versions": [self._version(v, full) for v in versions],
            "traffic": dict(route.value) if route is not None else None,
            "rollout": _rollout_summary(rollout.value) if rollout is not None and not full else
            (dict(rollout.value) if rollout is not None else None),
        }
        if full and self.shadow is not None:
            shadow = (route.value.get("shadow") or {}).get("version") if route is not None else None
            if shadow:
                now = self.clock()
                out["shadow"] = {"version": shadow, "window_s": 60,
                                 **self.shadow.figures(model, shadow, now - 60, now + 1).to_dict()}
        return out

    def _version(self, v: ModelVersion, full: bool) -> JSON:
        loaded = self.manager.find(v.model, v.version)
        out: JSON = {"version": v.version, "stage": v.stage.value,
                     "state": loaded.state.value if loaded is not None else "UNAVAILABLE",
                     "provider": loaded.provider if loaded is not None else ""}
        if full:
            out.update(sha256=v.sha256, artifact=v.artifact, metadata=v.metadata, validation=v.validation,
                       signature=v.signature, reason=loaded.reason if loaded is not None else "",
                       created_at=v.created_at, updated_at=v.updated_at, retained_until=v.retained_until,
                       drift=self._drift_status(v))
        return out

    def _drift_status(self, v: ModelVersion) -> JSON:
        status = self.extras.get("drift_status")
        if status is not None:
            result: JSON = status(v.model, v.version)
            return result
        return {"reference": "profile" if v.drift_profile else "none"}

    async def rollout(self, model: str) -> JSON:
        doc = await asyncio.to_thread(self.store.get, KIND_ROLLOUT, model)
        if doc is None:
            raise NotFound(f"model {model!r} has no rollout")
        return dict(doc.value)

    async def audit(self, model: str | None, since: float | None, limit: int) -> list[JSON]:
        entries = await asyncio.to_thread(self.store.audit, model, since, limit)
        return [record_to_dict(e) for e in entries]

    async def verify_audit(self) -> JSON:
        result = await asyncio.to_thread(self.audit_log.verify)
        return {"ok": result.ok, "checked": result.checked, "broken_at": result.broken_seq,
                "reason": result.reason}

    # --- registry --------------------------------------------------------------------------------

    async def register(self, model: str, body: JSON, actor: str) -> JSON:
        unknown = sorted(set(body) - set(REGISTER_FIELDS))
        if unknown:
            raise InvalidSpec(unknown[0], f"unknown field; expected some of {', '.join(REGISTER_FIELDS)}")
        version = _text(body, "version")
        artifact = self._path(_text(body, "artifact"), "artifact")
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise InvalidSpec("metadata", "expected an object")
        holdout = self._path(_text(body, "holdout"), "holdout") if body.get("holdout") else None
        breaking = body.get("breaking", False)
        if not isinstance(breaking, bool):
            raise InvalidSpec("breaking", "expected true or false")
        profile = None
        if body.get("reference"):
            ref = self._path(_text(body, "reference"), "reference")
            profile = await asyncio.to_thread(reference_profile, ref, artifact,
                                              self.sync.config_for(model).drift_bins)
        record = await asyncio.to_thread(
            self.registry.register, model, version, artifact, actor=actor, metadata=metadata,
            breaking=breaking, holdout=holdout, reference_profile=profile, reason="registered through the admin API")
        await self.sync.refresh(model)
        if record.stage is Stage.REJECTED:
            raise ValidationFailed(f"{model}/{version} was registered but rejected by its validation gates",
                                   self._version(record, True))
        return self._version(record, True)

    def _path(self, raw: str, field: str) -> Path:
        path = Path(raw)
        if not path.is_absolute() and self.repository is not None:
            path = self.repository / path
        if not path.is_file():
            raise InvalidSpec(field, f"no file at {raw}")
        return path

    async def set_stage(self, model: str, version: str, stage: str, reason: str, actor: str) -> JSON:
        if not reason:
            raise InvalidSpec("reason", "say why the stage changes (it goes into the audit log)")
        if stage == Stage.PRODUCTION.value:
            record = await asyncio.to_thread(self.registry.promote, model, version, actor=actor, reason=reason,
                                             retain_seconds=self.rollback_window_s)
            await self._route_all_to(model, version, actor, reason)
        else:
            await self._refuse_if_routed(model, version, stage)
            record = await asyncio.to_thread(self.registry.transition, model, version, stage, actor=actor,
                                             reason=reason)
        await self.sync.refresh(model)
        return self._version(record, True)

    async def _refuse_if_routed(self, model: str, version: str, stage: str) -> None:
        if stage in (s.value for s in SERVABLE):
            return
        table = self.sync.router.table(model)
        if table is not None and table.weights.get(version, 0) > 0:
            raise Conflict(f"{model}/{version} receives {table.weights[version]}% of traffic; move traffic "
                           f"away before marking it {stage}")

    async def _route_all_to(self, model: str, version: str, actor: str, reason: str) -> None:
        current = self.sync.router.table(model)
        table = RouteTable(model=model, policy="canary", weights={version: 100})
        if current is not None:
            for old in current.versions_in_use(self.clock()) - {version}:
                table = table.with_retained(old, self.clock() + self.rollback_window_s)
        await self._write_route(table, actor, reason)

    # --- traffic ---------------------------------------------------------------------------------

    async def set_traffic(self, model: str, body: JSON, actor: str) -> JSON:
        table = parse_traffic(model, body)
        rollout = await asyncio.to_thread(self.store.get, KIND_ROLLOUT, model)
        if rollout is not None and not _terminal(rollout.value):
            raise Conflict(f"model {model!r} has an active rollout; pause or abort it before changing traffic")
        now = self.clock()
        for version in sorted(table.versions_in_use(now) - set(table.retained)):
            record = await self._servable(model, version)
            await self.sync.ensure_loaded(record)
        current = self.sync.router.table(model)
        if current is not None:  # the versions leaving stay warm for an instant switch back
            for old in current.versions_in_use(now) - table.versions_in_use(now):
                table = table.with_retained(old, now + self.rollback_window_s)
        await self._write_route(table, actor, "traffic set through the admin API")
        return table.to_dict()

    async def _servable(self, model: str, version: str) -> ModelVersion:
        record = await asyncio.to_thread(self.registry.get, model, version)
        if record.stage not in SERVABLE:
            raise Conflict(f"{model}/{version} is {record.stage.value}; traffic may go only to validated, "
                           "canary or production versions")
        return record

    async def _write_route(self, table: RouteTable, actor: str, reason: str) -> None:
        doc = await asyncio.to_thread(self.store.get, KIND_ROUTE, table.model)
        revision = await asyncio.to_thread(self.store.put, KIND_ROUTE, table.model, table.to_dict(),
                                           doc.revision if doc is not None else 0)
        await asyncio.to_thread(self.store.append_audit, actor, "set_traffic", table.model, "",
                                dict(doc.value) if doc is not None else None, table.to_dict(), reason)
        self.sync.apply_local(table, revision)

    # --- rollouts --------------------------------------------------------------------------------

    async def start_rollout(self, model: str, spec: JSON | str, actor: str) -> JSON:
        parsed = parse_spec(spec)
        record = await self._servable(model, parsed.candidate)
        await self.sync.ensure_loaded(record)
        decision = await asyncio.to_thread(rc.start_rollout, self.store, self.registry, model, parsed,
                                           actor=actor, now=self.clock())
        await self._apply(model, decision)
        return await self.rollout(model)

    async def rollout_verb(self, model: str, verb: str, actor: str) -> JSON:
        decision = await asyncio.to_thread(rc.apply_verb, self.store, self.registry, model, verb, actor=actor,
                                           now=self.clock())
        await self._apply(model, decision)
        return await self.rollout(model)

    async def _apply(self, model: str, decision: Decision) -> None:
        if self.on_decision is not None:
            self.on_decision(decision)
        if decision.route is not None:
            doc = await asyncio.to_thread(self.store.get, KIND_ROUTE, model)
            if doc is not None:
                self.sync.apply_local(parse_traffic(model, dict(doc.value)), doc.revision)
        await self.sync.refresh(model)

    # --- drift and faults (provided by their subsystems) -----------------------------------------

    async def drift(self, model: str, version: str, window_s: float) -> JSON:
        return await self._extra("drift", model, version, window_s)

    async def faults(self, model: str, version: str) -> JSON:
        return await self._extra("faults", model, version)

    async def set_faults(self, model: str, version: str, body: JSON, actor: str) -> JSON:
        return await self._extra("set_faults", model, version, body, actor)

    async def clear_faults(self, model: str, version: str, actor: str) -> JSON:
        return await self._extra("clear_faults", model, version, actor)

    async def _extra(self, name: str, *args: Any) -> JSON:
        handler = self.extras.get(name)
        if handler is None:
            raise NotFound(f"{name} is not available on this gateway")
        result: JSON = await handler(*args)
        return result


def _text(body: Mapping[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value:
        raise InvalidSpec(field, "expected a non-empty string")
    return value


def _terminal(value: Mapping[str, Any]) -> bool:
    phase = (value.get("status") or {}).get("phase")
    return phase in ("promoted", "rolled_back", "aborted")


def _rollout_summary(value: Mapping[str, Any]) -> JSON:
    status = value.get("status") or {}
    return {k: status.get(k) for k in ("phase", "candidate", "stable", "step_index", "weights", "message")}
