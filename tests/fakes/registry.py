"""An in-memory model registry with the real registry's methods and stage graph, for controller tests.

Every stage change is recorded in `changes` (model, version, from, to, actor) in place of the audit
log; `available = False` makes every call raise `StoreUnavailable`, as a lost store would.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from rollout.errors import NotFound, StoreUnavailable, TransitionNotAllowed
from rollout.registry import ALLOWED, Stage

__all__ = ["ALLOWED", "FakeRegistry", "ModelVersion", "Stage", "StageChange"]


@dataclass(frozen=True)
class ModelVersion:
    model: str
    version: str
    stage: Stage
    signature: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StageChange:
    model: str
    version: str
    before: Stage
    after: Stage
    actor: str
    reason: str
    evidence: Mapping[str, Any]


class FakeRegistry:
    def __init__(self) -> None:
        self._versions: dict[tuple[str, str], ModelVersion] = {}
        self.changes: list[StageChange] = []
        self.available = True
        self.retained_for: float | None = None  # retain_seconds of the last promote

    def add(self, model: str, version: str, stage: Stage = Stage.VALIDATED) -> ModelVersion:
        """Test set-up: a version already at `stage`, without going through the graph."""
        mv = ModelVersion(model, version, stage)
        self._versions[(model, version)] = mv
        return mv

    def get(self, model: str, version: str) -> ModelVersion:
        self._check()
        try:
            return self._versions[(model, version)]
        except KeyError:
            raise NotFound(f"{model} has no version {version}") from None

    def production(self, model: str) -> ModelVersion | None:
        self._check()
        return next((v for (m, _), v in self._versions.items()
                     if m == model and v.stage is Stage.PRODUCTION), None)

    def transition(self, model: str, version: str, stage: Stage | str, *, actor: str, reason: str,
                   evidence: Mapping[str, Any] | None = None) -> ModelVersion:
        self._check()
        current = self.get(model, version)
        target = Stage(stage)
        if current.stage is target:
            return current
        if target not in ALLOWED.get(current.stage, frozenset()):
            raise TransitionNotAllowed(f"{model} {version}: {current.stage} -> {target} is not allowed")
        return self._set(current, target, actor, reason, evidence)

    def promote(self, model: str, version: str, *, actor: str, reason: str,
                evidence: Mapping[str, Any] | None = None, retain_seconds: float = 0.0) -> ModelVersion:
        self._check()
        self.retained_for = retain_seconds
        current = self.get(model, version)
        if current.stage is Stage.PRODUCTION:
            return current
        if current.stage is not Stage.CANARY:
            raise TransitionNotAllowed(f"{model} {version}: only a canary can be promoted, not {current.stage}")
        old = self.production(model)
        if old is not None:
            self._set(old, Stage.ARCHIVED, actor, reason, evidence)
        return self._set(current, Stage.PRODUCTION, actor, reason, evidence)

    def _set(self, current: ModelVersion, target: Stage, actor: str, reason: str,
             evidence: Mapping[str, Any] | None) -> ModelVersion:
        updated = replace(current, stage=target)
        self._versions[(current.model, current.version)] = updated
        self.changes.append(StageChange(current.model, current.version, current.stage, target, actor,
                                        reason, dict(evidence or {})))
        return updated

    def _check(self) -> None:
        if not self.available:
            raise StoreUnavailable("registry store unavailable (test switch)")
