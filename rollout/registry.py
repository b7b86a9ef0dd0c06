"""The model registry: versions with artifacts, signatures and metadata, moving through gated stages.

Every change is a compare-and-set write to the state store followed by an audit entry. A per-model
document holds the production pointer, so racing promotions cannot leave two production versions.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from rollout.audit import AuditLog
from rollout.errors import Conflict, InvalidSpec, NotFound, StaleWrite, TransitionNotAllowed, ValidationFailed
from rollout.store.base import KIND_MODEL, KIND_VERSION, Document, StateStore, Write
from rollout.validation import GatePolicy, Production, Validator

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class Stage(StrEnum):
    REGISTERED = "registered"
    VALIDATED = "validated"
    REJECTED = "rejected"
    CANARY = "canary"
    PRODUCTION = "production"
    ROLLED_BACK = "rolled_back"
    ARCHIVED = "archived"


ALLOWED: Mapping[Stage, frozenset[Stage]] = {
    Stage.REGISTERED: frozenset({Stage.VALIDATED, Stage.REJECTED}),
    Stage.VALIDATED: frozenset({Stage.CANARY}),
    Stage.CANARY: frozenset({Stage.PRODUCTION, Stage.ROLLED_BACK}),
    Stage.PRODUCTION: frozenset({Stage.ARCHIVED}),
    Stage.REJECTED: frozenset(),
    Stage.ROLLED_BACK: frozenset(),
    Stage.ARCHIVED: frozenset(),
}


@dataclass(frozen=True)
class ModelVersion:
    """One registered version. `revision` is the store revision it was read at (0 = not stored)."""

    model: str
    version: str
    artifact: str
    sha256: str
    signature: dict[str, Any]
    metadata: dict[str, Any]
    stage: Stage
    validation: dict[str, Any]
    drift_profile: dict[str, Any] | None
    created_at: float
    updated_at: float
    retained_until: float | None = None
    revision: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "version": self.version, "artifact": self.artifact, "sha256": self.sha256,
            "signature": self.signature, "metadata": self.metadata, "stage": self.stage.value,
            "validation": self.validation, "drift_profile": self.drift_profile,
            "created_at": self.created_at, "updated_at": self.updated_at,
            "retained_until": self.retained_until, "revision": self.revision,
        }

    @staticmethod
    def from_dict(data: Mapping[str, Any], revision: int | None = None) -> ModelVersion:
        """Reads a stored or serialised version; `revision` overrides the one in `data`."""
        try:
            return ModelVersion(
                model=str(data["model"]), version=str(data["version"]), artifact=str(data["artifact"]),
                sha256=str(data["sha256"]), signature=dict(data.get("signature") or {}),
                metadata=dict(data.get("metadata") or {}), stage=Stage(data["stage"]),
                validation=dict(data.get("validation") or {}), drift_profile=data.get("drift_profile"),
                created_at=float(data["created_at"]), updated_at=float(data["updated_at"]),
                retained_until=data.get("retained_until"),
                revision=int(data.get("revision", 0) if revision is None else revision),
            )
        except KeyError as exc:
            raise InvalidSpec(f"version.{exc.args[0]}", "missing") from exc
        except ValueError as exc:
            raise InvalidSpec("version.stage", f"expected one of {', '.join(Stage)}: {exc}") from exc

    def stored(self) -> dict[str, Any]:
        """The document value: everything but the revision, which the store owns."""
        out = self.to_dict()
        del out["revision"]
        return out


def version_key(model: str, version: str) -> str:
    return f"{model}/{version}"


def version_order(version: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key that compares digit runs as numbers: "2" < "10", "1.9" < "1.10"."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", version) if p)


def check_name(field: str, value: str) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise InvalidSpec(field, f"expected 1-128 letters, digits, '.', '_' or '-' (not first), got {value!r}")
    return value


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Registry:
    """Versions and stages of every model, kept in a `StateStore`; every change audited."""

    def __init__(self, store: StateStore, *, clock: Callable[[], float] = time.time,
                 validator: Validator | None = None) -> None:
        self._store = store
        self._clock = clock
        self._validator = validator
        self._audit = AuditLog(store)

    # -- reading -------------------------------------------------------------------------------

    def models(self) -> list[str]:
        return [key for key, _ in self._store.list(KIND_MODEL)]

    def versions(self, model: str) -> list[ModelVersion]:
        """Every version of `model`, in version order (numeric-aware)."""
        docs = self._store.list(KIND_VERSION, prefix=f"{model}/")
        found = [ModelVersion.from_dict(doc.value, doc.revision) for _, doc in docs]
        return sorted(found, key=lambda v: version_order(v.version))

    def get(self, model: str, version: str) -> ModelVersion:
        doc = self._store.get(KIND_VERSION, version_key(model, version))
        if doc is None:
            raise NotFound(f"model {model!r} has no version {version!r}")
        return ModelVersion.from_dict(doc.value, doc.revision)

    def production(self, model: str) -> ModelVersion | None:
        return self._current_production(model, self._model_doc(model))

    def gate_policy(self, model: str) -> GatePolicy:
        doc = self._model_doc(model)
        return GatePolicy.from_dict((doc.value.get("gates") if doc else None) or {})

    def _model_doc(self, model: str) -> Document | None:
        return self._store.get(KIND_MODEL, model)

    # -- registering ---------------------------------------------------------------------------

    def register(self, model: str, version: str, artifact: str | Path, *, actor: str,
                 metadata: Mapping[str, Any] | None = None, reason: str = "", breaking: bool = False,
                 holdout: str | Path | Mapping[str, Any] | None = None,
                 reference_profile: Mapping[str, Any] | None = None, validate: bool = True,
                 signature: Mapping[str, Any] | None = None) -> ModelVersion:
        """Records a new version and runs the gates; it ends `validated` or `rejected` (`registered`
        when validation is skipped). A failed gate does not raise: the report says which one.
        `signature` is one the package declares (MLflow); the loaded artifact's signature wins."""
        path = self._check_new(model, version, artifact, actor, metadata)
        meta = dict(metadata or {})
        now = self._clock()
        stage, report, sig = self._gate(model, str(path), meta, breaking, holdout, signature, validate)
        record = ModelVersion(model, version, str(path), file_sha256(path), sig, meta, stage,
                              {**report, "checked_at": now}, dict(reference_profile or {}) or None,
                              now, now, None, 1)
        self._write_new(record)
        self._audit.record(actor, "register", model, version, before=None,
                           after={"stage": stage.value, "sha256": record.sha256, "artifact": record.artifact},
                           reason=reason, evidence=_summary(report, breaking), ts=now)
        return record

    def _check_new(self, model: str, version: str, artifact: str | Path, actor: str,
                   metadata: Mapping[str, Any] | None) -> Path:
        check_name("model", model)
        check_name("version", version)
        if not actor:
            raise InvalidSpec("actor", "expected who registers the version")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise InvalidSpec("metadata", f"expected an object, got {type(metadata).__name__}")
        path = Path(artifact).resolve()
        if not path.is_file():
            raise InvalidSpec("artifact", f"expected a model file, found nothing at {artifact}")
        if self._store.get(KIND_VERSION, version_key(model, version)) is not None:
            raise Conflict(f"model {model!r} already has a version {version!r}")
        return path

    def _gate(self, model: str, artifact: str, metadata: dict[str, Any], breaking: bool,
              holdout: str | Path | Mapping[str, Any] | None, declared: Mapping[str, Any] | None,
              validate: bool) -> tuple[Stage, dict[str, Any], dict[str, Any]]:
        if self._validator is None or not validate:
            why = "validate=False" if self._validator else "no validator configured"
            return Stage.REGISTERED, {"passed": None, "gates": [], "skipped": why}, dict(declared or {})
        prod = self.production(model)
        ref = Production(prod.version, prod.artifact, prod.signature) if prod else None
        result = self._validator.validate(artifact, policy=self.gate_policy(model), production=ref,
                                          metadata=metadata, breaking=breaking, holdout=holdout,
                                          declared_signature=declared)
        stage = Stage.VALIDATED if result.report["passed"] else Stage.REJECTED
        return stage, result.report, result.signature or dict(declared or {})

    def _write_new(self, record: ModelVersion) -> None:
        key = version_key(record.model, record.version)
        for _ in range(2):  # a second try only when another registration created the model doc first
            writes = [Write(KIND_VERSION, key, record.stored(), 0)]
            if self._model_doc(record.model) is None:
                writes.append(Write(KIND_MODEL, record.model, {"production": None}, 0))
            try:
                self._store.put_many(writes)
                return
            except StaleWrite as exc:
                if self._store.get(KIND_VERSION, key) is not None:
                    raise Conflict(f"model {record.model!r} already has a version {record.version!r}") from exc
        raise Conflict(f"model {record.model!r} changed concurrently; register {record.version!r} again")

    # -- changing stages -----------------------------------------------------------------------

    def transition(self, model: str, version: str, stage: Stage | str, *, actor: str, reason: str,
                   evidence: Mapping[str, Any] | None = None) -> ModelVersion:
        """Moves one version along the allowed graph; the same stage again is a no-op. Entering
        production this way needs no other production version (use `promote` to replace one)."""
        target = _stage(stage)
        current = self.get(model, version)
        if current.stage == target:
            return current
        _check_allowed(current, target)
        now = self._clock()
        moved = replace(current, stage=target, updated_at=now, revision=current.revision + 1)
        writes = [Write(KIND_VERSION, version_key(model, version), moved.stored(), current.revision)]
        if Stage.PRODUCTION in (current.stage, target):
            writes.append(self._pointer_write(model, current, target))
        self._store.put_many(writes)
        self._audit.record(actor, "transition", model, version, before={"stage": current.stage.value},
                           after={"stage": target.value}, reason=reason, evidence=evidence, ts=now)
        return moved

    def _pointer_write(self, model: str, current: ModelVersion, target: Stage) -> Write:
        doc = self._model_doc(model)
        pointer = doc.value.get("production") if doc else None
        if target == Stage.PRODUCTION and pointer is not None:
            raise TransitionNotAllowed(
                f"{model}/{current.version}: version {pointer} is already in production; use promote")
        value = {**(doc.value if doc else {}), "production": current.version if target == Stage.PRODUCTION else None}
        return Write(KIND_MODEL, model, value, doc.revision if doc else 0)

    def promote(self, model: str, version: str, *, actor: str, reason: str,
                evidence: Mapping[str, Any] | None = None, retain_seconds: float = 0.0) -> ModelVersion:
        """Makes `version` (canary, or validated when there is no production yet) the production
        version and archives the previous one, atomically. The archived version is kept loadable until
        now + `retain_seconds` for an instant switch back. Promoting production again is a no-op."""
        if retain_seconds < 0:
            raise InvalidSpec("retain_seconds", f"expected >= 0, got {retain_seconds}")
        candidate = self.get(model, version)
        if candidate.stage == Stage.PRODUCTION:
            return candidate
        doc = self._model_doc(model)
        old = self._current_production(model, doc)
        if candidate.stage != Stage.CANARY and not (candidate.stage == Stage.VALIDATED and old is None):
            raise TransitionNotAllowed(
                f"{model}/{version}: cannot promote from {candidate.stage}; promote needs canary "
                f"(or validated while the model has no production version)")
        now = self._clock()
        promoted = replace(candidate, stage=Stage.PRODUCTION, updated_at=now, retained_until=None,
                           revision=candidate.revision + 1)
        writes = [Write(KIND_VERSION, version_key(model, version), promoted.stored(), candidate.revision),
                  Write(KIND_MODEL, model, {**(doc.value if doc else {}), "production": version},
                        doc.revision if doc else 0)]
        archived = None
        if old is not None:
            archived = replace(old, stage=Stage.ARCHIVED, updated_at=now, retained_until=now + retain_seconds,
                               revision=old.revision + 1)
            writes.append(Write(KIND_VERSION, version_key(model, old.version), archived.stored(), old.revision))
        self._store.put_many(writes)
        self._audit_promotion(actor, reason, evidence, candidate, archived, now)
        return promoted

    def _current_production(self, model: str, doc: Document | None) -> ModelVersion | None:
        """The version the model document points at, read after the document so that a newer
        pointer than `doc` cannot slip in unnoticed: the write's compare-and-set on `doc` catches it."""
        pointer = doc.value.get("production") if doc else None
        if pointer is None:
            return None
        old = self.get(model, str(pointer))
        if old.stage != Stage.PRODUCTION:
            raise Conflict(f"{model}: the production pointer names {pointer}, which is {old.stage}")
        return old

    def _audit_promotion(self, actor: str, reason: str, evidence: Mapping[str, Any] | None,
                         candidate: ModelVersion, archived: ModelVersion | None, now: float) -> None:
        self._audit.record(actor, "promote", candidate.model, candidate.version,
                           before={"stage": candidate.stage.value}, after={"stage": Stage.PRODUCTION.value},
                           reason=reason, evidence=evidence, ts=now)
        if archived is not None:
            self._audit.record(actor, "archive", archived.model, archived.version,
                               before={"stage": Stage.PRODUCTION.value},
                               after={"stage": Stage.ARCHIVED.value, "retained_until": archived.retained_until},
                               reason=reason, evidence={"replaced_by": candidate.version}, ts=now)

    # -- other changes -------------------------------------------------------------------------

    def set_drift_profile(self, model: str, version: str, profile: Mapping[str, Any], *,
                          actor: str) -> ModelVersion:
        """Replaces the reference profile (bin edges, reference counts) that drift is measured against."""
        if not isinstance(profile, Mapping):
            raise InvalidSpec("profile", f"expected an object, got {type(profile).__name__}")
        current = self.get(model, version)
        now = self._clock()
        changed = replace(current, drift_profile=dict(profile), updated_at=now, revision=current.revision + 1)
        self._store.put(KIND_VERSION, version_key(model, version), changed.stored(), current.revision)
        self._audit.record(actor, "set_drift_profile", model, version,
                           before={"had_profile": current.drift_profile is not None},
                           after={"had_profile": True}, reason="", evidence={"keys": sorted(profile)}, ts=now)
        return changed

    def set_gate_policy(self, model: str, policy: GatePolicy, *, actor: str, reason: str = "") -> GatePolicy:
        """Stores the gate settings used for the model's next registrations."""
        check_name("model", model)
        doc = self._model_doc(model)
        value = {"production": None, **(doc.value if doc else {}), "gates": policy.to_dict()}
        self._store.put(KIND_MODEL, model, value, doc.revision if doc else 0)
        before = (doc.value.get("gates") if doc else None) or None
        self._audit.record(actor, "set_gate_policy", model, "", before=before, after=policy.to_dict(),
                           reason=reason, ts=self._clock())
        return policy

    def verify_artifact(self, version: ModelVersion) -> None:
        """Raises `ValidationFailed` when the artifact is gone or its sha256 differs from the recorded one."""
        where = f"{version.model}/{version.version}"
        if not Path(version.artifact).is_file():
            raise ValidationFailed(f"artifact of {where} is missing: {version.artifact}",
                                   {"artifact": version.artifact, "expected_sha256": version.sha256})
        actual = file_sha256(version.artifact)
        if actual != version.sha256:
            raise ValidationFailed(f"artifact of {where} changed since registration: sha256 {actual}, "
                                   f"recorded {version.sha256}",
                                   {"artifact": version.artifact, "expected_sha256": version.sha256,
                                    "actual_sha256": actual})


def _stage(value: Stage | str) -> Stage:
    try:
        return Stage(value)
    except ValueError as exc:
        raise InvalidSpec("stage", f"expected one of {', '.join(Stage)}, got {value!r}") from exc


def _check_allowed(current: ModelVersion, target: Stage) -> None:
    allowed = ALLOWED[current.stage]
    if target not in allowed:
        options = ", ".join(sorted(allowed)) or "nothing (a final stage)"
        raise TransitionNotAllowed(f"{current.model}/{current.version}: {current.stage} -> {target} is not "
                                   f"allowed; from {current.stage} the allowed stages are {options}")


def _summary(report: Mapping[str, Any], breaking: bool) -> dict[str, Any]:
    gates = {g["gate"]: g["passed"] for g in report.get("gates", [])}
    return {"passed": report.get("passed"), "gates": gates, "breaking": breaking}
