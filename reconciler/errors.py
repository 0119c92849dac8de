"""One small hierarchy of errors with stable codes and exit codes.

`retryable` decides what the executor does: temporary errors are retried with backoff,
permanent ones become a failed condition that waits for a config change or an operator.
"""

from __future__ import annotations


class ReconcilerError(Exception):
    code = "error"
    exit_code = 1
    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(ReconcilerError):
    """The config is invalid. `errors` holds every problem as `file:line:col: path: message`."""

    code = "config_invalid"
    exit_code = 1

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors) if errors else "invalid config")
        self.errors = errors


class InvalidArgument(ReconcilerError):
    code = "invalid_argument"
    exit_code = 2


class NotFound(ReconcilerError):
    code = "not_found"
    exit_code = 3


class AlreadyExists(ReconcilerError):
    code = "already_exists"
    exit_code = 4


class FailedPrecondition(ReconcilerError):
    """The request is valid but the state forbids it (immutable, held, ...)."""

    code = "failed_precondition"
    exit_code = 5


class PermissionDenied(ReconcilerError):
    code = "permission_denied"
    exit_code = 6


class PathEscapes(InvalidArgument):
    """A path leaves its pool through '..', an absolute path or a symlink."""

    code = "path_escapes_pool"


class CorruptData(ReconcilerError):
    code = "corrupt_data"
    exit_code = 7


class StorageFull(ReconcilerError):
    code = "storage_full"
    exit_code = 8
    retryable = True


class Unavailable(ReconcilerError):
    """A node or the daemon cannot be reached (or timed out). Retried with backoff."""

    code = "unavailable"
    exit_code = 9
    retryable = True


class ProtocolMismatch(ReconcilerError):
    code = "protocol_mismatch"
    exit_code = 10


class QuiesceFailed(ReconcilerError):
    code = "quiesce_failed"
    exit_code = 11
