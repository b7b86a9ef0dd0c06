"""An in-memory `ControlPlane` for tests of the admin API and the CLI.

It keeps models, route tables, rollouts, faults and an audit list; every call is recorded in `calls`
as (method, args). `fail_next(method, exc)` makes the next call of that method raise `exc`, so tests
can check how each error reaches the caller.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from rollout.errors import Conflict, InvalidSpec, NotFound
from rollout.policy import parse_traffic, single
from rollout.spec import parse_spec

JSON = dict[str, Any]
LIVE = ("progressing", "paused", "awaiting_approval")
VERB_PHASES = {"pause": "paused", "resume": "progressing", "promote": "promoted", "abort": "aborted",
               "approve": "promoted"}


class FakeControlPlane:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self._models: dict[str, JSON] = {}
        self._rollouts: dict[str, JSON] = {}
        self._faults: dict[tuple[str, str], JSON] = {}
        self.entries: list[JSON] = []
        self._failures: dict[str, Exception] = {}

    # --- test controls -----------------------------------------------------------------------------

    def add_model(self, name: str, versions: dict[str, str]) -> None:
        """A model with versions (version -> stage); the first production version takes all traffic."""
        production = next((v for v, s in versions.items() if s == "production"), None)
        self._models[name] = {
            "name": name,
            "versions": [{"version": v, "stage": s, "state": "ready"} for v, s in versions.items()],
            "traffic": single(name, production).to_dict() if production else None,
        }

    def fail_next(self, method: str, exc: Exception) -> None:
        self._failures[method] = exc

    def _enter(self, method: str, *args: Any) -> None:
        self.calls.append((method, args))
        exc = self._failures.pop(method, None)
        if exc is not None:
            raise exc

    def _model(self, name: str) -> JSON:
        found = self._models.get(name)
        if found is None:
            raise NotFound(f"unknown model {name!r}")
        return found

    def _version(self, model: str, version: str) -> JSON:
        for item in self._model(model)["versions"]:
            if item["version"] == version:
                return dict(item)
        raise NotFound(f"model {model!r} has no version {version!r}")

    def _audit(self, actor: str, action: str, model: str, detail: JSON) -> None:
        self.entries.append({"seq": len(self.entries) + 1, "ts": time.time(), "actor": actor,
                             "action": action, "model": model, "detail": detail})

    # --- the ControlPlane port ---------------------------------------------------------------------

    async def models(self) -> list[JSON]:
        self._enter("models")
        return [self._summary(name) for name in sorted(self._models)]

    def _summary(self, name: str) -> JSON:
        rollout = self._rollouts.get(name)
        brief = None if rollout is None else {k: rollout["status"][k] for k in ("phase", "candidate", "stable",
                                                                                 "step_index")}
        return {**copy.deepcopy(self._models[name]), "rollout": brief}

    async def model(self, model: str) -> JSON:
        self._enter("model", model)
        self._model(model)
        return {**self._summary(model), "rollout": copy.deepcopy(self._rollouts.get(model))}

    async def register(self, model: str, body: JSON, actor: str) -> JSON:
        self._enter("register", model, body, actor)
        record = self._models.setdefault(model, {"name": model, "versions": [], "traffic": None})
        if any(v["version"] == body["version"] for v in record["versions"]):
            raise Conflict(f"model {model!r} already has a version {body['version']!r}")
        version = {"version": body["version"], "stage": "validated", "state": "ready",
                   "artifact": body["artifact"], "metadata": body.get("metadata", {}),
                   "validation": {"passed": True, "gates": []}}
        record["versions"].append(version)
        self._audit(actor, "registry.register", model, {"version": body["version"]})
        return dict(version)

    async def set_stage(self, model: str, version: str, stage: str, reason: str, actor: str) -> JSON:
        self._enter("set_stage", model, version, stage, reason, actor)
        self._version(model, version)
        for item in self._model(model)["versions"]:
            if item["version"] == version:
                item["stage"] = stage
        self._audit(actor, "registry.stage", model, {"version": version, "stage": stage, "reason": reason})
        return self._version(model, version)

    async def set_traffic(self, model: str, body: JSON, actor: str) -> JSON:
        self._enter("set_traffic", model, body, actor)
        self._model(model)
        table = parse_traffic(model, body).to_dict()
        self._models[model]["traffic"] = table
        self._audit(actor, "traffic.set", model, table)
        return dict(table)

    async def start_rollout(self, model: str, spec: JSON | str, actor: str) -> JSON:
        self._enter("start_rollout", model, spec, actor)
        record = self._model(model)
        parsed = parse_spec(spec)
        if model in self._rollouts and self._rollouts[model]["status"]["phase"] in LIVE:
            raise Conflict(f"model {model!r} already has a live rollout")
        stable = next((v["version"] for v in record["versions"] if v["stage"] == "production"), None)
        status: JSON = {"model": model, "phase": "progressing", "candidate": parsed.candidate, "stable": stable,
                        "step_index": 0, "weights": {}, "started_by": actor, "started_at": time.time(),
                        "history": []}
        self._rollouts[model] = {"spec": parsed.to_dict(), "status": status}
        self._audit(actor, "rollout.start", model, {"candidate": parsed.candidate})
        return copy.deepcopy(self._rollouts[model])

    async def rollout(self, model: str) -> JSON:
        self._enter("rollout", model)
        self._model(model)
        if model not in self._rollouts:
            raise NotFound(f"model {model!r} has no rollout")
        return copy.deepcopy(self._rollouts[model])

    async def rollout_verb(self, model: str, verb: str, actor: str) -> JSON:
        self._enter("rollout_verb", model, verb, actor)
        if model not in self._rollouts:
            raise NotFound(f"model {model!r} has no rollout")
        if verb not in VERB_PHASES:
            raise InvalidSpec("verb", f"unknown verb {verb!r}")
        status = self._rollouts[model]["status"]
        if status["phase"] not in LIVE:
            raise Conflict(f"the rollout is {status['phase']}; {verb} is refused")
        status["phase"] = VERB_PHASES[verb]
        self._audit(actor, f"rollout.{verb}", model, {"phase": status["phase"]})
        return copy.deepcopy(self._rollouts[model])

    async def audit(self, model: str | None, since: float | None, limit: int) -> list[JSON]:
        self._enter("audit", model, since, limit)
        found = [e for e in reversed(self.entries)
                 if (model is None or e["model"] == model) and (since is None or e["ts"] >= since)]
        return copy.deepcopy(found[:limit])

    async def verify_audit(self) -> JSON:
        self._enter("verify_audit")
        return {"ok": True, "checked": len(self.entries), "broken_at": None, "reason": ""}

    async def drift(self, model: str, version: str, window_s: float) -> JSON:
        self._enter("drift", model, version, window_s)
        self._version(model, version)
        features = [{"feature": "f0", "psi": 0.31, "js": 0.05, "ks": 0.2},
                    {"feature": "f1", "psi": 0.02, "js": 0.01, "ks": 0.03}]
        return {"model": model, "version": version, "window_s": window_s, "requests": 120,
                "features": features, "top": ["f0"]}

    async def faults(self, model: str, version: str) -> JSON:
        self._enter("faults", model, version)
        self._version(model, version)
        return copy.deepcopy(self._faults.get((model, version), {}))

    async def set_faults(self, model: str, version: str, body: JSON, actor: str) -> JSON:
        self._enter("set_faults", model, version, body, actor)
        self._version(model, version)
        self._faults[(model, version)] = dict(body)
        self._audit(actor, "faults.set", model, {"version": version, **body})
        return dict(body)

    async def clear_faults(self, model: str, version: str, actor: str) -> JSON:
        self._enter("clear_faults", model, version, actor)
        self._version(model, version)
        self._faults.pop((model, version), None)
        self._audit(actor, "faults.clear", model, {"version": version})
        return {}
