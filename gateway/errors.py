"""The serving error tree. Protocol modules map these to status codes in one table each.

    ServingError
    ├── InvalidInput        a request field is wrong (name, datatype, shape, size, framing)
    ├── PayloadTooLarge     the body is over the configured limit (rejected before buffering)
    ├── ModelNotFound       no such model, or no such version of it
    ├── ModelNotReady       the version exists but is loading, failed to load, or is unloaded
    ├── ServerNotReady      the gateway is starting or draining
    ├── Overloaded          a bounded queue is full: fail fast instead of queueing without bound
    ├── DeadlineExceeded    the caller's deadline passed before the work was done
    ├── InferenceFailed     the runtime raised while running a valid batch
    ├── Unauthenticated     no credentials, or credentials that do not verify
    ├── PermissionDenied    verified credentials without the needed role
    └── Unsupported         a protocol feature servegate does not offer

No protocol imports here: the adapters own the mapping.
"""

from __future__ import annotations


class ServingError(Exception):
    """Base of every error the data plane reports to a caller; `str(err)` is the client message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ServingError):
    pass


class PayloadTooLarge(ServingError):
    pass


class ModelNotFound(ServingError):
    pass


class ModelNotReady(ServingError):
    pass


class ServerNotReady(ServingError):
    pass


class Overloaded(ServingError):
    pass


class DeadlineExceeded(ServingError):
    pass


class InferenceFailed(ServingError):
    pass


class Unauthenticated(ServingError):
    pass


class PermissionDenied(ServingError):
    pass


class Unsupported(ServingError):
    pass
