"""The two error tables: domain errors to gRPC status codes and to HTTP statuses, looked up by class.

Applied in one place per protocol (the gRPC handler guard, the HTTP server's exception handler).
Anything not in a table is an internal error whose details are logged, not sent.
"""

from __future__ import annotations

import grpc

from gateway import errors as e
from rollout import errors as r

GRPC_CODES: dict[type[Exception], grpc.StatusCode] = {
    e.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    e.PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    e.ModelNotFound: grpc.StatusCode.NOT_FOUND,
    e.ModelNotReady: grpc.StatusCode.UNAVAILABLE,
    e.ServerNotReady: grpc.StatusCode.UNAVAILABLE,
    e.Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    e.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    e.InferenceFailed: grpc.StatusCode.INTERNAL,
    e.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    e.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    e.Unsupported: grpc.StatusCode.UNIMPLEMENTED,
}

HTTP_STATUS: dict[type[Exception], int] = {
    e.InvalidInput: 400,
    e.PayloadTooLarge: 413,
    e.ModelNotFound: 404,
    e.ModelNotReady: 503,
    e.ServerNotReady: 503,
    e.Overloaded: 503,
    e.DeadlineExceeded: 504,
    e.InferenceFailed: 500,
    e.Unauthenticated: 401,
    e.PermissionDenied: 403,
    e.Unsupported: 501,
    r.InvalidSpec: 400,
    r.NotFound: 404,
    r.Conflict: 409,
    r.ValidationFailed: 422,
    r.StoreUnavailable: 503,
}


def grpc_code(exc: BaseException) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        code = GRPC_CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def http_status(exc: BaseException) -> int:
    for cls in type(exc).__mro__:
        status = HTTP_STATUS.get(cls)
        if status is not None:
            return status
    return 500


def is_known(exc: BaseException) -> bool:
    return isinstance(exc, e.ServingError | r.RolloutError)
