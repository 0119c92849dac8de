"""Error <-> gRPC status mapping, so a client sees the same error class the server raised."""

from __future__ import annotations

import grpc

from .. import errors

_TO_CODE: list[tuple[type[errors.ReconcilerError], grpc.StatusCode]] = [
    (errors.PathEscapes, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.StorageFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.CorruptData, grpc.StatusCode.DATA_LOSS),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.ProtocolMismatch, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.QuiesceFailed, grpc.StatusCode.ABORTED),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
]

_FROM_CODE: dict[grpc.StatusCode, type[errors.ReconcilerError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: errors.PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.StorageFull,
    grpc.StatusCode.DATA_LOSS: errors.CorruptData,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.Unavailable,
    grpc.StatusCode.CANCELLED: errors.Unavailable,
    grpc.StatusCode.ABORTED: errors.QuiesceFailed,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
}


def code_for(exc: BaseException) -> grpc.StatusCode:
    for cls, code in _TO_CODE:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def abort(context: grpc.ServicerContext, exc: BaseException) -> None:
    """Abort the RPC with the status for `exc` (raises)."""
    msg = (
        str(exc)
        if isinstance(exc, errors.ReconcilerError)
        else f"internal error: {type(exc).__name__}: {exc}"
    )
    context.abort(code_for(exc), msg)


def from_rpc_error(err: grpc.RpcError, *, where: str) -> errors.ReconcilerError:
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    cls = _FROM_CODE.get(code, errors.ReconcilerError)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return errors.Unavailable(f"{where}: {code.name.lower()}: {details}")
    return cls(f"{where}: {details}")
