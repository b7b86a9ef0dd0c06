"""The control-path error tree; the admin API maps each to an HTTP status in one table.

    RolloutError
    ├── InvalidSpec          a submitted document is wrong; `field` names the offending field (400)
    ├── NotFound             no such model, version, rollout or audit entry (404)
    ├── Conflict             the request contradicts current state (409), e.g. a second rollout,
    │   ├── TransitionNotAllowed   a stage change outside the allowed graph
    │   └── StaleWrite             compare-and-set lost against a concurrent writer
    ├── ValidationFailed     a registration gate failed; the report says which (422)
    └── StoreUnavailable     the state store cannot be reached; serving continues, control waits (503)
"""

from __future__ import annotations


class RolloutError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidSpec(RolloutError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class NotFound(RolloutError):
    pass


class Conflict(RolloutError):
    pass


class TransitionNotAllowed(Conflict):
    pass


class StaleWrite(Conflict):
    pass


class ValidationFailed(RolloutError):
    def __init__(self, message: str, report: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.report = report or {}


class StoreUnavailable(RolloutError):
    pass
