"""Pure rollout decisions: decide(spec, status, observation, now) and command(...) for manual verbs
return the next status, the route table to serve and the evidence. No I/O, no clock, no randomness."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from rollout.analysis import Assessment, Observation, Verdict, assess
from rollout.errors import Conflict, InvalidSpec
from rollout.policy import BLUE_GREEN, RouteTable, blue_green, single, split
from rollout.spec import AUTO, PAUSE, PauseStep, RolloutSpec, WeightStep

HISTORY_LIMIT = 200  # windows kept in the status document; the audit log keeps every decision


class Phase(StrEnum):
    PROGRESSING = "progressing"
    PAUSED = "paused"
    AWAITING_APPROVAL = "awaiting_approval"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"  # analysis failed
    ABORTED = "aborted"  # an operator rolled it back

    @property
    def terminal(self) -> bool:
        return self in (Phase.PROMOTED, Phase.ROLLED_BACK, Phase.ABORTED)


class Action(StrEnum):
    HOLD = "hold"
    SET_WEIGHTS = "set_weights"
    PAUSE = "pause"
    PROMOTE = "promote"
    ROLLBACK = "rollback"


class Verb(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    PROMOTE = "promote"
    ABORT = "abort"
    APPROVE = "approve"


class PauseReason(StrEnum):
    STEP = "step"  # a {pause: manual} step
    INCONCLUSIVE = "inconclusive"  # analysis could not tell; a human decides
    OPERATOR = "operator"  # the pause verb


@dataclass(frozen=True)
class RolloutStatus:
    """Where one rollout stands; times are wall-clock seconds. Stored beside its spec."""

    model: str
    candidate: str
    stable: str
    phase: Phase
    step_index: int
    step_started_at: float
    window_start: float
    candidate_weight: int
    failures: int = 0
    consecutive_failures: int = 0
    consecutive_errors: int = 0
    windows: int = 0
    history: tuple[Mapping[str, Any], ...] = ()
    pause_reason: PauseReason | None = None
    started_by: str = ""
    started_at: float = 0.0
    approved_by: str | None = None
    finished_at: float | None = None
    updated_at: float = 0.0
    message: str = ""

    @property
    def weights(self) -> dict[str, int]:
        return {self.stable: 100 - self.candidate_weight, self.candidate: self.candidate_weight}

    def to_dict(self) -> dict[str, Any]:
        body = {name: getattr(self, name) for name in _STATUS_FIELDS}
        body |= {"phase": str(self.phase), "weights": self.weights, "history": [dict(h) for h in self.history],
                 "pause_reason": str(self.pause_reason) if self.pause_reason else None}
        return body

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> RolloutStatus:
        try:
            fields = {name: body[name] for name in _STATUS_FIELDS}
            reason = body.get("pause_reason")
            return cls(**fields, phase=Phase(body["phase"]), history=tuple(body.get("history", ())),
                       candidate_weight=int(body["weights"][body["candidate"]]),
                       pause_reason=PauseReason(reason) if reason else None)
        except (KeyError, ValueError, TypeError) as exc:
            raise InvalidSpec("status", f"not a rollout status document: {exc!r}") from exc


_STATUS_FIELDS = ("model", "candidate", "stable", "step_index", "step_started_at", "window_start",
                  "failures", "consecutive_failures", "consecutive_errors", "windows", "started_by",
                  "started_at", "approved_by", "finished_at", "updated_at", "message")


@dataclass(frozen=True)
class Decision:
    """What to do now. `route` is the table the new status implies; `event` names the audit entry
    to append (None when nothing an operator would care about happened)."""

    action: Action
    status: RolloutStatus
    route: RouteTable
    reason: str
    evidence: Mapping[str, Any]
    event: str | None = None


def route_for(spec: RolloutSpec, status: RolloutStatus) -> RouteTable:
    """The route table a rollout in `status` serves by."""
    model, stable, cand, weight = status.model, status.stable, status.candidate, status.candidate_weight
    if status.phase in (Phase.ROLLED_BACK, Phase.ABORTED):
        return single(model, stable)
    if status.phase is Phase.PROMOTED:
        table = single(model, cand)
        keep_until = (status.finished_at or status.updated_at) + spec.rollback_window_s
        return table.with_retained(stable, keep_until) if spec.rollback_window_s > 0 else table
    if spec.strategy == BLUE_GREEN:
        if weight == 0:
            return blue_green(model, stable, cand, shadow_percent=spec.shadow_percent)
        return blue_green(model, cand, stable, fallback=stable if spec.retry_on_stable else None)
    return split(model, stable, cand, weight, policy=spec.strategy, sticky_key=spec.sticky_key,
                 shadow_percent=spec.shadow_percent, fallback=spec.retry_on_stable)


def begin(spec: RolloutSpec, model: str, stable: str, actor: str, now: float) -> Decision:
    """The first decision of a rollout: enter its first step."""
    _check_actor(actor)
    before = RolloutStatus(model=model, candidate=spec.candidate, stable=stable,
                           phase=Phase.PROGRESSING, step_index=-1, step_started_at=now,
                           window_start=now, candidate_weight=0, started_by=actor, started_at=now)
    first = _advance(spec, before, now, f"rollout of {spec.candidate} started by {actor}", {})
    return replace(first, action=first.action if first.action is Action.PAUSE else Action.SET_WEIGHTS,
                   event="rollout.start")


def decide(spec: RolloutSpec, status: RolloutStatus, observation: Observation | None,
           now: float) -> Decision:
    """The level-triggered step: judge the window if it closed (or already failed), then move on
    by the spec. A terminal status is returned unchanged."""
    if status.phase.terminal:
        return _hold(spec, status, f"rollout is {status.phase}")
    assessment, early = _closing_window(spec, status, observation, now)
    if assessment is None:
        return _after_time(spec, status, now) or _hold(spec, status, "window in progress")
    recorded = _record(status, assessment, early, now)
    evidence = assessment.to_dict()
    verdict = assessment.verdict
    if verdict is Verdict.FAILED:
        return _on_failure(spec, recorded, assessment, now)
    if verdict is Verdict.ERROR:
        if recorded.consecutive_errors < spec.analysis.error_limit:
            return _hold(spec, recorded, f"no measurements ({recorded.consecutive_errors} of "
                                         f"{spec.analysis.error_limit} errored windows); retrying")
        verdict = Verdict.INCONCLUSIVE
        recorded = replace(recorded, consecutive_errors=0)
    if not _analysing(spec, recorded):
        return _after_time(spec, recorded, now) or _hold(spec, recorded, f"window {verdict}")
    if verdict is Verdict.SUCCESSFUL:
        return _advance(spec, recorded, now, f"step {recorded.step_index} passed analysis", evidence)
    if spec.analysis.on_inconclusive == PAUSE:
        return _pause(spec, recorded, PauseReason.INCONCLUSIVE, now,
                      f"inconclusive: {assessment.reason}", evidence)
    return _rollback(spec, recorded, Phase.ROLLED_BACK, now, f"inconclusive: {assessment.reason}",
                     evidence)


def command(spec: RolloutSpec, status: RolloutStatus, verb: str, actor: str, now: float) -> Decision:
    """A manual verb. Raises `InvalidSpec` for an unknown verb and `Conflict` when the verb makes no
    sense in the current phase (terminal phases refuse every verb)."""
    try:
        chosen = Verb(verb)
    except ValueError:
        raise InvalidSpec("verb", f"expected one of {', '.join(v.value for v in Verb)}, "
                                  f"got {verb!r}") from None
    _check_actor(actor)
    if status.phase.terminal:
        raise Conflict(f"the rollout of {status.candidate} is already {status.phase}; "
                       f"start a new rollout instead")
    handler = _VERBS[chosen]
    return handler(spec, status, actor, now)


def _pause_verb(spec: RolloutSpec, status: RolloutStatus, actor: str, now: float) -> Decision:
    if status.phase is not Phase.PROGRESSING:
        raise Conflict(f"cannot pause: the rollout is {status.phase}")
    return _pause(spec, status, PauseReason.OPERATOR, now, f"paused by {actor}", {"actor": actor})


def _resume_verb(spec: RolloutSpec, status: RolloutStatus, actor: str, now: float) -> Decision:
    if status.phase is not Phase.PAUSED:
        hint = "; use approve" if status.phase is Phase.AWAITING_APPROVAL else ""
        raise Conflict(f"cannot resume: the rollout is {status.phase}{hint}")
    evidence = {"actor": actor, "pause_reason": str(status.pause_reason)}
    if status.pause_reason is PauseReason.OPERATOR:
        # The interrupted step starts over: its window and any timed pause restart from now.
        resumed = replace(status, phase=Phase.PROGRESSING, pause_reason=None, step_started_at=now,
                          window_start=now, updated_at=now, message=f"resumed by {actor}")
        return Decision(Action.HOLD, resumed, route_for(spec, resumed), resumed.message, evidence,
                        "rollout.resume")
    moved = _advance(spec, status, now, f"resumed by {actor}", evidence)
    return replace(moved, event="rollout.resume" if moved.event == "rollout.step" else moved.event)


def _promote_verb(spec: RolloutSpec, status: RolloutStatus, actor: str, now: float) -> Decision:
    if status.phase is Phase.AWAITING_APPROVAL:
        raise Conflict("the rollout awaits approval; an admin other than the starter must approve")
    return _finish(spec, status, now, f"promoted by {actor}, skipping the remaining steps",
                   {"actor": actor, "skipped_from_step": status.step_index})


def _abort_verb(spec: RolloutSpec, status: RolloutStatus, actor: str, now: float) -> Decision:
    return _rollback(spec, status, Phase.ABORTED, now, f"aborted by {actor}", {"actor": actor})


def _approve_verb(spec: RolloutSpec, status: RolloutStatus, actor: str, now: float) -> Decision:
    if status.phase is not Phase.AWAITING_APPROVAL:
        raise Conflict(f"nothing awaits approval: the rollout is {status.phase}")
    if actor == status.started_by:
        raise Conflict(f"{actor} started this rollout and cannot approve it; "
                       f"another admin must approve")
    return _promote(spec, replace(status, approved_by=actor), now, f"approved by {actor}",
                    {"actor": actor})


_VERBS = {Verb.PAUSE: _pause_verb, Verb.RESUME: _resume_verb, Verb.PROMOTE: _promote_verb,
          Verb.ABORT: _abort_verb, Verb.APPROVE: _approve_verb}


def _closing_window(spec: RolloutSpec, status: RolloutStatus, observation: Observation | None,
                    now: float) -> tuple[Assessment | None, bool]:
    """The assessment of the window if it closes now: at its end, or early when it already failed
    with enough requests (fail fast: a bad candidate does not wait out the window)."""
    if now <= status.window_start:
        return None, False  # an empty window (a repeated tick at the same instant) judges nothing
    assessment = assess(spec.analysis, observation, compare_arms=status.candidate_weight < 100)
    if now - status.window_start >= spec.window_s:
        return assessment, False
    if assessment.fails_fast:
        return assessment, True
    return None, False


def _record(status: RolloutStatus, assessment: Assessment, early: bool, now: float) -> RolloutStatus:
    verdict = assessment.verdict
    entry = {"step": status.step_index, "start": status.window_start, "end": now,
             "candidate_weight": status.candidate_weight, "early": early, **assessment.to_dict()}
    failed, errored = verdict is Verdict.FAILED, verdict is Verdict.ERROR
    return replace(
        status, window_start=now, windows=status.windows + 1, updated_at=now,
        history=(*status.history, entry)[-HISTORY_LIMIT:],
        failures=status.failures + int(failed),
        consecutive_failures=status.consecutive_failures + 1 if failed else 0,
        consecutive_errors=status.consecutive_errors + 1 if errored else 0,
    )


def _on_failure(spec: RolloutSpec, status: RolloutStatus, assessment: Assessment,
                now: float) -> Decision:
    limit = spec.analysis.failure_limit
    evidence = {**assessment.to_dict(), "failures": status.failures, "failure_limit": limit}
    if status.failures >= limit:
        return _rollback(spec, status, Phase.ROLLED_BACK, now, f"analysis failed: {assessment.reason}",
                         evidence)
    reason = f"window failed ({status.failures} of {limit} allowed): {assessment.reason}"
    held = replace(status, message=reason)
    return Decision(Action.HOLD, held, route_for(spec, held), reason, evidence, "rollout.analysis_failed")


def _analysing(spec: RolloutSpec, status: RolloutStatus) -> bool:
    """True while a window's verdict decides the next move (a weight step that is progressing)."""
    return status.phase is Phase.PROGRESSING and isinstance(_step(spec, status), WeightStep)


def _step(spec: RolloutSpec, status: RolloutStatus) -> WeightStep | PauseStep | None:
    plan = spec.plan()
    return plan[status.step_index] if 0 <= status.step_index < len(plan) else None


def _after_time(spec: RolloutSpec, status: RolloutStatus, now: float) -> Decision | None:
    """Leaves a timed pause step once its time is up."""
    step = _step(spec, status)
    if status.phase is not Phase.PROGRESSING or not isinstance(step, PauseStep) or step.seconds is None:
        return None
    if now - status.step_started_at < step.seconds:
        return None
    return _advance(spec, status, now, f"pause of {step.seconds:g}s elapsed", {})


def _advance(spec: RolloutSpec, status: RolloutStatus, now: float, reason: str,
             evidence: Mapping[str, Any]) -> Decision:
    index = status.step_index + 1
    plan = spec.plan()
    if index >= len(plan):
        return _finish(spec, status, now, reason, evidence)
    step = plan[index]
    entered = replace(status, phase=Phase.PROGRESSING, step_index=index, step_started_at=now,
                      window_start=now, pause_reason=None, updated_at=now)
    if isinstance(step, PauseStep) and step.seconds is None:
        return _pause(spec, entered, PauseReason.STEP, now, f"{reason}; step {index}: paused until resumed",
                      evidence)
    if isinstance(step, PauseStep):
        entered = replace(entered, message=f"{reason}; step {index}: pause {step.seconds:g}s")
        return Decision(Action.HOLD, entered, route_for(spec, entered), entered.message, evidence,
                        "rollout.step")
    moved = replace(entered, candidate_weight=step.weight,
                    message=f"{reason}; step {index}: candidate at {step.weight}%")
    action = Action.SET_WEIGHTS if step.weight != status.candidate_weight else Action.HOLD
    return Decision(action, moved, route_for(spec, moved), moved.message, evidence, "rollout.step")


def _finish(spec: RolloutSpec, status: RolloutStatus, now: float, reason: str,
            evidence: Mapping[str, Any]) -> Decision:
    if spec.approval == AUTO:
        return _promote(spec, status, now, reason, evidence)
    waiting = replace(status, phase=Phase.AWAITING_APPROVAL, step_index=len(spec.plan()),
                      step_started_at=now, window_start=now, pause_reason=None, updated_at=now,
                      message=f"{reason}; awaiting approval by an admin other than {status.started_by}")
    return Decision(Action.PAUSE, waiting, route_for(spec, waiting), waiting.message, evidence,
                    "rollout.awaiting_approval")


def _promote(spec: RolloutSpec, status: RolloutStatus, now: float, reason: str,
             evidence: Mapping[str, Any]) -> Decision:
    done = replace(status, phase=Phase.PROMOTED, candidate_weight=100, finished_at=now,
                   pause_reason=None, updated_at=now, message=f"{reason}; {status.candidate} promoted")
    return Decision(Action.PROMOTE, done, route_for(spec, done), done.message, evidence, "rollout.promote")


def _pause(spec: RolloutSpec, status: RolloutStatus, why: PauseReason, now: float, reason: str,
           evidence: Mapping[str, Any]) -> Decision:
    paused = replace(status, phase=Phase.PAUSED, pause_reason=why, updated_at=now, message=reason)
    return Decision(Action.PAUSE, paused, route_for(spec, paused), reason, evidence, "rollout.pause")


def _rollback(spec: RolloutSpec, status: RolloutStatus, phase: Phase, now: float, reason: str,
              evidence: Mapping[str, Any]) -> Decision:
    done = replace(status, phase=phase, candidate_weight=0, finished_at=now, pause_reason=None,
                   updated_at=now, message=reason)
    event = "rollout.abort" if phase is Phase.ABORTED else "rollout.rollback"
    return Decision(Action.ROLLBACK, done, route_for(spec, done), reason, evidence, event)


def _hold(spec: RolloutSpec, status: RolloutStatus, reason: str) -> Decision:
    return Decision(Action.HOLD, status, route_for(spec, status), reason, {})


def _check_actor(actor: str) -> None:
    if not isinstance(actor, str) or not actor.strip():
        raise InvalidSpec("actor", "expected the name of who acts")
