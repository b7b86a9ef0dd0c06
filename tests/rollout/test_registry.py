"""The registry: registration, the stage graph, promotion with exactly one production, audit, artifacts."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rollout.audit import verify
from rollout.errors import Conflict, InvalidSpec, NotFound, StaleWrite, TransitionNotAllowed, ValidationFailed
from rollout.registry import ALLOWED, ModelVersion, Registry, Stage
from rollout.store.base import KIND_MODEL, KIND_VERSION, StateStore
from rollout.store.redis import RedisStore
from rollout.store.sqlite import SqliteStore
from rollout.validation import GatePolicy, Validator
from tests.fakes.probe import FakeModel, FakeProbe, signature, tensor
from tests.fakes.store import FakeStore

SIG = signature([tensor("x", "FP32", [-1, 2])], [tensor("y", "FP32", [-1, 1])])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def store() -> Iterator[FakeStore]:
    fake = FakeStore()
    yield fake
    fake.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def registry(store: FakeStore, clock: Clock) -> Registry:
    return Registry(store, clock=clock)


def artifact(tmp_path: Path, name: str = "model.onnx", content: bytes = b"onnx bytes") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def at_stage(registry: Registry, tmp_path: Path, version: str, stage: Stage) -> ModelVersion:
    """Walks a new version along the graph to `stage`."""
    registry.register("m", version, artifact(tmp_path, f"{version}.onnx"), actor="ci", validate=False)
    paths = {Stage.REGISTERED: [], Stage.VALIDATED: [Stage.VALIDATED], Stage.REJECTED: [Stage.REJECTED],
             Stage.CANARY: [Stage.VALIDATED, Stage.CANARY],
             Stage.PRODUCTION: [Stage.VALIDATED, Stage.CANARY, Stage.PRODUCTION],
             Stage.ROLLED_BACK: [Stage.VALIDATED, Stage.CANARY, Stage.ROLLED_BACK],
             Stage.ARCHIVED: [Stage.VALIDATED, Stage.CANARY, Stage.PRODUCTION, Stage.ARCHIVED]}
    for step in paths[stage]:
        registry.transition("m", version, step, actor="ci", reason="setup")
    return registry.get("m", version)


# -- registering -----------------------------------------------------------------------------------


def test_register_records_the_artifact_and_audits(registry: Registry, store: FakeStore, tmp_path: Path) -> None:
    path = artifact(tmp_path, content=b"weights")
    v = registry.register("m", "1", path, actor="alice", metadata={"owner": "risk", "region": "eu"},
                          reason="nightly", reference_profile={"edges": [0, 1]})
    assert v.stage == Stage.REGISTERED and v.revision == 1
    assert v.sha256 == hashlib.sha256(b"weights").hexdigest() and v.artifact == str(path.resolve())
    assert registry.get("m", "1") == v and registry.models() == ["m"]
    assert v.drift_profile == {"edges": [0, 1]} and v.validation["skipped"] == "no validator configured"
    entry = store.audit_all()[-1]
    assert (entry.actor, entry.action, entry.model, entry.version, entry.reason) == ("alice", "register", "m", "1",
                                                                                      "nightly")
    assert entry.after == {"stage": "registered", "sha256": v.sha256, "artifact": v.artifact}


def test_register_refuses_bad_input_and_duplicates(registry: Registry, tmp_path: Path) -> None:
    path = artifact(tmp_path)
    registry.register("m", "1", path, actor="ci")
    with pytest.raises(Conflict, match="already has a version '1'"):
        registry.register("m", "1", path, actor="ci")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model": "a/b"}, "model"), ({"version": ""}, "version"),
        ({"artifact": tmp_path / "missing.onnx"}, "artifact"), ({"actor": ""}, "actor"),
        ({"metadata": ["x"]}, "metadata")]
    for kwargs, field in cases:
        args: dict[str, Any] = {"model": "m", "version": "2", "artifact": path, "actor": "ci", **kwargs}
        with pytest.raises(InvalidSpec) as err:
            registry.register(args.pop("model"), args.pop("version"), args.pop("artifact"), **args)
        assert err.value.field == field
    assert [v.version for v in registry.versions("m")] == ["1"]


def test_versions_sort_numbers_as_numbers(registry: Registry, tmp_path: Path) -> None:
    for version in ["10", "2", "1.10", "1", "1.9", "b", "a"]:
        registry.register("m", version, artifact(tmp_path), actor="ci")
    registry.register("m2", "1", artifact(tmp_path), actor="ci")
    assert [v.version for v in registry.versions("m")] == ["1", "1.9", "1.10", "2", "10", "a", "b"]
    with pytest.raises(NotFound, match="no version '3'"):
        registry.get("m", "3")


def gated_registry(store: FakeStore, tmp_path: Path, latency: float) -> tuple[Registry, Path]:
    probe = FakeProbe()
    path = artifact(tmp_path)
    probe.add(path, FakeModel(SIG, latencies=[latency] * 10))
    return Registry(store, validator=Validator(probe)), path


def test_gates_decide_validated_or_rejected_and_the_report_is_kept(store: FakeStore, tmp_path: Path) -> None:
    registry, path = gated_registry(store, tmp_path, latency=250.0)
    rejected = registry.register("m", "1", path, actor="ci")
    assert rejected.stage == Stage.REJECTED and rejected.validation["passed"] is False
    assert rejected.signature == SIG and "checked_at" in rejected.validation
    registry.set_gate_policy("m", GatePolicy(latency_budget_ms=500), actor="ops")
    assert registry.register("m", "2", path, actor="ci").stage == Stage.VALIDATED
    assert registry.register("m", "3", path, actor="ci", validate=False).stage == Stage.REGISTERED
    assert store.audit_all()[-2].evidence["gates"]["latency"] is True


# -- the stage graph -------------------------------------------------------------------------------


@pytest.mark.parametrize("source", list(Stage))
@pytest.mark.parametrize("target", list(Stage))
def test_only_the_allowed_transitions_happen(registry: Registry, tmp_path: Path, source: Stage,
                                             target: Stage) -> None:
    before = at_stage(registry, tmp_path, "1", source)
    if target == source:
        assert registry.transition("m", "1", target, actor="ci", reason="again") == before
    elif target in ALLOWED[source]:
        moved = registry.transition("m", "1", target, actor="ci", reason="r", evidence={"ticket": 7})
        assert moved.stage == target and registry.get("m", "1") == moved and moved.revision == before.revision + 1
    else:
        with pytest.raises(TransitionNotAllowed) as err:
            registry.transition("m", "1", target, actor="ci", reason="r")
        assert f"{source} -> {target} is not allowed" in err.value.message
        assert registry.get("m", "1") == before


def test_transitions_are_audited_with_before_after_and_evidence(registry: Registry, store: FakeStore,
                                                                tmp_path: Path) -> None:
    at_stage(registry, tmp_path, "1", Stage.VALIDATED)
    registry.transition("m", "1", "canary", actor="bob", reason="start", evidence={"rollout": "r1"})
    entry = store.audit_all()[-1]
    assert (entry.action, entry.before, entry.after, entry.evidence) == (
        "transition", {"stage": "validated"}, {"stage": "canary"}, {"rollout": "r1"})
    with pytest.raises(InvalidSpec, match="stage"):
        registry.transition("m", "1", "staging", actor="bob", reason="")


def test_a_second_production_only_through_promote(registry: Registry, tmp_path: Path) -> None:
    at_stage(registry, tmp_path, "1", Stage.PRODUCTION)
    at_stage(registry, tmp_path, "2", Stage.CANARY)
    with pytest.raises(TransitionNotAllowed, match="1 is already in production; use promote"):
        registry.transition("m", "2", Stage.PRODUCTION, actor="ci", reason="")
    registry.transition("m", "1", Stage.ARCHIVED, actor="ci", reason="retire")
    assert registry.production("m") is None
    assert registry.transition("m", "2", Stage.PRODUCTION, actor="ci", reason="").stage == Stage.PRODUCTION
    assert registry.production("m").version == "2"  # type: ignore[union-attr]


# -- promotion -------------------------------------------------------------------------------------


def test_promote_swaps_production_atomically_and_retains_the_old(registry: Registry, store: FakeStore,
                                                                 clock: Clock, tmp_path: Path) -> None:
    at_stage(registry, tmp_path, "1", Stage.VALIDATED)
    first = registry.promote("m", "1", actor="ops", reason="first production")
    assert first.stage == Stage.PRODUCTION and registry.production("m") == first
    at_stage(registry, tmp_path, "2", Stage.CANARY)
    writes = store.writes
    promoted = registry.promote("m", "2", actor="ctl", reason="slo met", evidence={"p99": 9.5}, retain_seconds=60)
    assert store.writes == writes + 1  # one put_many for both versions and the pointer
    old = registry.get("m", "1")
    assert promoted.stage == Stage.PRODUCTION and old.stage == Stage.ARCHIVED
    assert old.retained_until == pytest.approx(promoted.updated_at + 60)
    assert registry.production("m") == promoted and store.get(KIND_MODEL, "m").value["production"] == "2"  # type: ignore[union-attr]
    promote, archive = store.audit_all()[-2:]
    assert (promote.action, promote.version, promote.evidence) == ("promote", "2", {"p99": 9.5})
    assert (archive.action, archive.version, archive.evidence) == ("archive", "1", {"replaced_by": "2"})
    assert registry.promote("m", "2", actor="ctl", reason="again") == promoted
    assert verify(store.audit_all()).ok


@pytest.mark.parametrize("stage", [Stage.REGISTERED, Stage.REJECTED, Stage.ROLLED_BACK, Stage.VALIDATED])
def test_promote_needs_a_canary_once_there_is_production(registry: Registry, tmp_path: Path, stage: Stage) -> None:
    at_stage(registry, tmp_path, "1", Stage.PRODUCTION)
    at_stage(registry, tmp_path, "2", stage)
    with pytest.raises(TransitionNotAllowed, match=f"cannot promote from {stage}"):
        registry.promote("m", "2", actor="ops", reason="")
    assert registry.production("m").version == "1"  # type: ignore[union-attr]
    with pytest.raises(InvalidSpec, match="retain_seconds"):
        registry.promote("m", "2", actor="ops", reason="", retain_seconds=-1)


@pytest.fixture(params=["sqlite", "redis", "fake"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    backend: StateStore
    if request.param == "sqlite":
        backend = SqliteStore(f"sqlite:///{tmp_path}/state.db")
    elif request.param == "redis":
        backend = RedisStore(request.getfixturevalue("redis_server").url)
    else:
        backend = FakeStore()
    yield backend
    backend.close()


@pytest.mark.parametrize("first", [True, False], ids=["first-production", "replacing"])
def test_racing_promotions_leave_exactly_one_production(shared_store: StateStore, tmp_path: Path,
                                                        first: bool) -> None:
    registry = Registry(shared_store)
    at_stage(registry, tmp_path, "0", Stage.VALIDATED)
    if not first:
        registry.promote("m", "0", actor="ops", reason="")
    candidates = [str(i) for i in range(1, 7)]
    for version in candidates:
        at_stage(registry, tmp_path, version, Stage.CANARY)
    start, outcomes = threading.Barrier(len(candidates)), {}

    def promote(version: str) -> None:
        start.wait()
        try:
            registry.promote("m", version, actor=f"ctl-{version}", reason="race")
            outcomes[version] = "won"
        except (StaleWrite, Conflict) as exc:
            outcomes[version] = type(exc).__name__

    threads = [threading.Thread(target=promote, args=(v,)) for v in candidates]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stages = {v.version: v.stage for v in registry.versions("m")}
    production = [v for v, s in stages.items() if s == Stage.PRODUCTION]
    assert len(production) == 1 and registry.production("m").version == production[0]  # type: ignore[union-attr]
    winners = [v for v, o in outcomes.items() if o == "won"]
    assert production[0] in winners
    assert all(stages[v] == Stage.ARCHIVED for v in winners if v != production[0])
    assert all(stages[v] == Stage.CANARY for v, o in outcomes.items() if o != "won")
    assert stages["0"] == (Stage.VALIDATED if first else Stage.ARCHIVED)
    assert verify(shared_store.audit_all()).ok


# -- other changes ---------------------------------------------------------------------------------


def test_drift_profile_and_gate_policy_are_stored_and_audited(registry: Registry, store: FakeStore,
                                                              tmp_path: Path) -> None:
    at_stage(registry, tmp_path, "1", Stage.PRODUCTION)
    changed = registry.set_drift_profile("m", "1", {"x": {"edges": [0.0, 1.0]}}, actor="ops")
    assert registry.get("m", "1").drift_profile == {"x": {"edges": [0.0, 1.0]}} == changed.drift_profile
    assert store.audit_all()[-1].action == "set_drift_profile"
    registry.set_gate_policy("m", GatePolicy(metric="auc", threshold=0.7), actor="ops", reason="tighter")
    assert registry.gate_policy("m") == GatePolicy(metric="auc", threshold=0.7)
    assert registry.production("m").version == "1"  # type: ignore[union-attr]
    assert registry.gate_policy("unknown") == GatePolicy()
    with pytest.raises(InvalidSpec, match="profile"):
        registry.set_drift_profile("m", "1", [1, 2], actor="ops")  # type: ignore[arg-type]


def test_verify_artifact_catches_changed_and_missing_files(registry: Registry, tmp_path: Path) -> None:
    path = artifact(tmp_path, content=b"original")
    v = registry.register("m", "1", path, actor="ci")
    registry.verify_artifact(v)
    path.write_bytes(b"swapped")
    with pytest.raises(ValidationFailed, match="changed since registration") as err:
        registry.verify_artifact(v)
    assert err.value.report["actual_sha256"] == hashlib.sha256(b"swapped").hexdigest()
    path.unlink()
    with pytest.raises(ValidationFailed, match="missing"):
        registry.verify_artifact(v)


def test_model_versions_round_trip_through_dicts(registry: Registry, store: FakeStore, tmp_path: Path) -> None:
    v = at_stage(registry, tmp_path, "1", Stage.CANARY)
    assert ModelVersion.from_dict(v.to_dict()) == v
    assert "revision" not in store.get(KIND_VERSION, "m/1").value  # type: ignore[union-attr]
    with pytest.raises(InvalidSpec, match=r"version\.sha256"):
        ModelVersion.from_dict({k: x for k, x in v.to_dict().items() if k != "sha256"})
