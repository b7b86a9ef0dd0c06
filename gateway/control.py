"""The control-plane use cases that the admin API and the CLI drive (registry, traffic, rollouts, audit).

`ControlPlane` is the port the admin layer programs against; the gateway's composition root provides
the implementation. Every mutating method takes the acting principal's name (`actor`), is audited,
and returns the new state as a JSON-ready dict. Errors are the rollout and serving error trees
(NotFound, Conflict, InvalidSpec, ValidationFailed, StoreUnavailable, ModelNotReady ...).
"""

from __future__ import annotations

from typing import Any, Protocol

JSON = dict[str, Any]


class ControlPlane(Protocol):
    async def models(self) -> list[JSON]:
        """Every model: `{"name", "versions": [{"version", "stage", "state", ...}], "traffic", "rollout"}`.

        `traffic` is the route table in the shape `PUT .../traffic` takes; `rollout` is a summary
        (`{"phase", "candidate", "stable", "step"}`) or None."""
        ...

    async def model(self, model: str) -> JSON:
        """One model in full: versions (stage, state, provider, sha256, artifact, metadata, validation
        report), `traffic` (route table), `rollout` (status or None)."""
        ...

    async def register(self, model: str, body: JSON, actor: str) -> JSON:
        """Registers a version from `{"version", "artifact", "metadata"?, "holdout"?, "reference"?,
        "breaking"?}`; runs the validation gates; returns the version with its report."""
        ...

    async def set_stage(self, model: str, version: str, stage: str, reason: str, actor: str) -> JSON:
        """An explicit stage change (admin); returns the version."""
        ...

    async def set_traffic(self, model: str, body: JSON, actor: str) -> JSON:
        """Validates and applies a route table (loading any version it names first); returns it."""
        ...

    async def start_rollout(self, model: str, spec: JSON | str, actor: str) -> JSON:
        """Starts a rollout from a spec (a dict, or YAML/JSON text); returns its status."""
        ...

    async def rollout(self, model: str) -> JSON:
        """The current (or last) rollout: phase, step, weights, every window's measurements and verdict."""
        ...

    async def rollout_verb(self, model: str, verb: str, actor: str) -> JSON:
        """pause | resume | promote | abort | approve; returns the new status."""
        ...

    async def audit(self, model: str | None, since: float | None, limit: int) -> list[JSON]:
        """Audit entries, newest first."""
        ...

    async def verify_audit(self) -> JSON:
        """`{"ok": bool, "checked": n, "broken_at": seq | None, "reason": str}`."""
        ...

    async def drift(self, model: str, version: str, window_s: float) -> JSON:
        """Every feature's drift statistics for the window, and the top drifting features."""
        ...

    async def faults(self, model: str, version: str) -> JSON:
        """The faults injected into a version (empty when none)."""
        ...

    async def set_faults(self, model: str, version: str, body: JSON, actor: str) -> JSON:
        """Injects faults (latency, error rate, output corruption) that expire on their own."""
        ...

    async def clear_faults(self, model: str, version: str, actor: str) -> JSON:
        ...
