"""The promotion controller: a level-triggered loop (read -> observe -> decide -> apply -> persist with
compare-and-set -> audit) over every active rollout, and the start / verb entry points the admin API calls."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from rollout.analysis import Observation
from rollout.decide import Action, Decision, Phase, RolloutStatus, begin, command, decide
from rollout.errors import Conflict, InvalidSpec, NotFound, RolloutError, StaleWrite, StoreUnavailable
from rollout.spec import RolloutSpec, parse_spec
from rollout.store.base import KIND_ROLLOUT, KIND_ROUTE, Document, StateStore, Write

_log = logging.getLogger(__name__)

# Registry stages by value, so this module does not depend on the registry's own types.
VALIDATED, CANARY, PRODUCTION, ROLLED_BACK = "validated", "canary", "production", "rolled_back"


class MetricsSource(Protocol):
    """Window measurements per arm; the gateway implements it from its live per-version windows."""

    def observe(self, model: str, candidate: str, stable: str, window_start: float,
                window_end: float) -> Observation | None:
        """The arms' figures over [window_start, window_end) (wall-clock seconds); None = no data."""
        ...


class Leadership(Protocol):
    """Who may act when several controllers run (one per replica): only the lease holder. See rollout.lease."""

    def acquire(self) -> bool:
        """Takes or renews the right to act (store I/O); True while it is held."""
        ...

    def held(self) -> bool:
        """Whether the right is still held at this instant (no I/O)."""
        ...

    def release(self) -> None:
        """Gives the right back so that another controller may act at once."""
        ...


class VersionView(Protocol):
    @property
    def model(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def stage(self) -> str: ...


class RegistryPort(Protocol):
    """The registry operations the controller needs (see rollout/registry.py)."""

    def get(self, model: str, version: str) -> VersionView: ...

    def production(self, model: str) -> VersionView | None: ...

    def transition(self, model: str, version: str, stage: str, *, actor: str, reason: str,
                   evidence: Mapping[str, Any] | None = None) -> VersionView: ...

    def promote(self, model: str, version: str, *, actor: str, reason: str,
                evidence: Mapping[str, Any] | None = None, retain_seconds: float = 0.0) -> VersionView: ...


class Controller:
    """Owns the loop. `tick(now)` is one reconcile pass and is safe to repeat; `run` ticks every
    `interval_s` until `stop` is set. Losing the store pauses change, never the loop. With a
    `leadership`, `run` ticks only while it is held, and each decision is applied only if it still is."""

    def __init__(self, store: StateStore, registry: RegistryPort, metrics: MetricsSource, *,
                 interval_s: float = 1.0, actor: str = "controller",
                 clock: Callable[[], float] = time.time, leadership: Leadership | None = None,
                 on_decision: Callable[[Decision], None] | None = None,
                 on_rollback: Callable[[Decision], None] | None = None) -> None:
        if not interval_s > 0:
            raise InvalidSpec("interval_s", f"expected seconds > 0, got {interval_s!r}")
        self._store, self._registry, self._metrics = store, registry, metrics
        self._interval_s, self._actor, self._clock = interval_s, actor, clock
        self._leadership = leadership
        self._on_decision = on_decision  # e.g. metrics; called for every applied decision
        # Called with a rollback before it is written, so that this process stops sending traffic to
        # the candidate at the moment of the decision rather than a store round trip later.
        self._on_rollback = on_rollback

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    if await self._lead():
                        await self.tick(self._clock())
                except Exception:
                    # One bad tick (a broken document, a failing registry) must not end rollout control.
                    _log.exception("controller tick failed; retrying next tick")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self._interval_s)
        finally:
            if self._leadership is not None:
                await asyncio.to_thread(self._leadership.release)

    async def _lead(self) -> bool:
        return self._leadership is None or await asyncio.to_thread(self._leadership.acquire)

    def _may_act(self) -> bool:
        return self._leadership is None or self._leadership.held()

    async def tick(self, now: float) -> list[Decision]:
        """Reconciles every rollout once; returns the decisions that were applied."""
        try:
            rows = await asyncio.to_thread(self._store.list, KIND_ROLLOUT)
        except StoreUnavailable as exc:
            _log.warning("state store unavailable, no rollout changes this tick: %s", exc)
            return []
        applied: list[Decision] = []
        for model, doc in rows:
            try:
                decision = await self._reconcile(model, doc, now)
            except StaleWrite as exc:
                _log.info("rollout of %s changed under this tick; re-reading next tick: %s", model, exc)
                continue
            except StoreUnavailable as exc:
                _log.warning("state store unavailable, no rollout changes this tick: %s", exc)
                return applied
            if decision is not None:
                applied.append(decision)
        return applied

    async def _reconcile(self, model: str, doc: Document, now: float) -> Decision | None:
        try:
            spec, status = rollout_from_document(doc)
        except RolloutError as exc:
            _log.error("rollout document of %s is unreadable, skipped: %s", model, exc)
            return None
        if status.phase.terminal:
            # The registry may lag a finished rollout (a crash after the status write): heal it.
            await asyncio.to_thread(sync_registry, self._registry, spec, status, self._actor,
                                    status.message, {})
            return None
        observation = await asyncio.to_thread(self._observe, status, now)
        decision = decide(spec, status, observation, now)
        if not self._may_act():
            # The lease lapsed while observing (a slow store, a paused process): a successor may be
            # acting already, so this decision is dropped; the compare-and-set guards the rest.
            _log.warning("lease lost during the tick; %s decision for %s dropped", decision.action, model)
            return None
        if decision.action is Action.ROLLBACK and self._on_rollback is not None:
            self._on_rollback(decision)
        await asyncio.to_thread(apply_decision, self._store, self._registry, spec, doc, decision,
                                self._actor)
        if self._on_decision is not None:
            self._on_decision(decision)
        return decision

    def _observe(self, status: RolloutStatus, now: float) -> Observation | None:
        try:
            return self._metrics.observe(status.model, status.candidate, status.stable,
                                         status.window_start, now)
        except Exception:
            # A metrics outage is "no data" (an Error window), which the analysis already handles.
            _log.exception("metrics for %s unavailable", status.model)
            return None


def rollout_from_document(doc: Document) -> tuple[RolloutSpec, RolloutStatus]:
    """Reads a stored rollout {"spec": ..., "status": ...}; raises `InvalidSpec` when malformed."""
    return parse_spec(doc.value.get("spec", {})), RolloutStatus.from_dict(doc.value.get("status", {}))


def start_rollout(store: StateStore, registry: RegistryPort, model: str, spec: RolloutSpec, *,
                  actor: str, now: float) -> Decision:
    """Starts a rollout of `spec.candidate` against the current production version. Raises
    `NotFound` for an unknown version and `Conflict` when the version is not validated (or canary),
    there is no production version, or the model already has an active rollout."""
    candidate = registry.get(model, spec.candidate)
    if str(candidate.stage) not in (VALIDATED, CANARY):
        raise Conflict(f"version {spec.candidate} of {model} is {candidate.stage}; a rollout needs a "
                       f"validated version")
    production = registry.production(model)
    if production is None:
        raise Conflict(f"{model} has no production version to roll out against; promote one first")
    existing = store.get(KIND_ROLLOUT, model)
    if existing is not None:
        _refuse_if_active(model, existing)
    decision = begin(spec, model, production.version, actor, now)
    apply_decision(store, registry, spec, existing, decision, actor)
    return decision


def apply_verb(store: StateStore, registry: RegistryPort, model: str, verb: str, *, actor: str,
               now: float) -> Decision:
    """Applies pause | resume | promote | abort | approve to the model's rollout (see decide.command)."""
    doc = store.get(KIND_ROLLOUT, model)
    if doc is None:
        raise NotFound(f"{model} has no rollout")
    spec, status = rollout_from_document(doc)
    decision = command(spec, status, verb, actor, now)
    apply_decision(store, registry, spec, doc, decision, actor)
    return decision


def apply_decision(store: StateStore, registry: RegistryPort, spec: RolloutSpec, doc: Document | None,
                   decision: Decision, actor: str) -> bool:
    """Persists a decision: route table and status in one compare-and-set batch against the rollout
    revision read (`doc`), then its audit entry, then the registry stage. Writes nothing when nothing
    changed, so repeating a decision is harmless. Returns whether anything was written."""
    status = decision.status
    writes = _writes(store, spec, doc, decision)
    if writes:
        store.put_many(writes)
        if decision.event is not None:
            store.append_audit(actor, decision.event, status.model, status.candidate,
                               _summary_of(doc), _summary(status), decision.reason, decision.evidence)
    sync_registry(registry, spec, status, actor, decision.reason, decision.evidence)
    return bool(writes)


def _writes(store: StateStore, spec: RolloutSpec, doc: Document | None,
            decision: Decision) -> list[Write]:
    model = decision.status.model
    rollout = {"spec": spec.to_dict(), "status": decision.status.to_dict()}
    route = decision.route.to_dict()
    current_route = store.get(KIND_ROUTE, model)
    route_stale = current_route is None or dict(current_route.value) != route
    if doc is not None and dict(doc.value) == rollout and not route_stale:
        return []
    # The rollout document rides along even when unchanged, so its revision guards the route write.
    writes = [Write(KIND_ROLLOUT, model, rollout, doc.revision if doc is not None else 0)]
    if route_stale:
        writes.append(Write(KIND_ROUTE, model, route,
                            current_route.revision if current_route is not None else 0))
    return writes


def sync_registry(registry: RegistryPort, spec: RolloutSpec, status: RolloutStatus, actor: str,
                  reason: str, evidence: Mapping[str, Any]) -> None:
    """Moves the candidate's stage along validated -> canary -> production | rolled_back to match the
    rollout phase. A stage off that path means someone else moved it: left alone and logged."""
    target = _target_stage(status.phase)
    model, version = status.model, status.candidate
    try:
        stage = str(registry.get(model, version).stage)
        if stage == VALIDATED:
            registry.transition(model, version, CANARY, actor=actor, reason=f"rollout: {reason}",
                                evidence=evidence)
            stage = CANARY
        if stage == target:
            return
        if stage != CANARY:
            _log.warning("%s version %s is %s, not on the rollout's path to %s; left alone",
                         model, version, stage, target)
        elif target == PRODUCTION:
            registry.promote(model, version, actor=actor, reason=reason, evidence=evidence,
                             retain_seconds=spec.rollback_window_s)
        else:
            registry.transition(model, version, ROLLED_BACK, actor=actor, reason=reason, evidence=evidence)
    except (NotFound, Conflict, StoreUnavailable) as exc:
        # The status is already durable; the next tick retries the stage change.
        _log.warning("registry stage of %s version %s not updated yet: %s", model, version, exc)


def _target_stage(phase: Phase) -> str:
    if phase is Phase.PROMOTED:
        return PRODUCTION
    if phase in (Phase.ROLLED_BACK, Phase.ABORTED):
        return ROLLED_BACK
    return CANARY


def _refuse_if_active(model: str, doc: Document) -> None:
    try:
        _, status = rollout_from_document(doc)
    except RolloutError:
        return  # an unreadable old document must not block a fresh rollout
    if not status.phase.terminal:
        raise Conflict(f"{model} already has an active rollout of version {status.candidate} "
                       f"({status.phase}); abort or finish it first")


def _summary_of(doc: Document | None) -> dict[str, Any] | None:
    if doc is None:
        return None
    try:
        return _summary(RolloutStatus.from_dict(doc.value.get("status", {})))
    except RolloutError:
        return None


def _summary(status: RolloutStatus) -> dict[str, Any]:
    return {"phase": str(status.phase), "step": status.step_index, "weights": status.weights,
            "failures": status.failures}
