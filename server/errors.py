"""Domain errors of the service and the one mapping from errors to gRPC status codes.

Store, validation and engine code raise these (or :class:`engine.errors.InputError`);
:func:`status_of` turns any exception into ``(code, details)``. Details name the
field and the reason and never include another participant's data; unexpected
exceptions become ``INTERNAL`` with a generic message (the traceback is logged).
"""

from __future__ import annotations

import logging

import grpc

from dsomarket.engine.errors import InputError

log = logging.getLogger("dsomarket.server")


class ServiceError(Exception):
    """Base of the service's errors; ``code`` is the gRPC status the caller sees."""

    code = grpc.StatusCode.INTERNAL


class InvalidArgument(ServiceError):
    """A request field is malformed: names the field and why.

    Parameters
    ----------
    field
        Dotted path of the field in the request, with an index for repeated
        fields, e.g. ``bids.price[3]``.
    reason
        What is wrong, in words the caller can act on.
    """

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class NotFound(ServiceError):
    """An id that does not exist (for the caller)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ServiceError):
    """A caller-chosen id that is already used."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ServiceError):
    """Wrong market state, or an interval's gate has closed."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(ServiceError):
    """The caller's role may not make this call, or the data is not theirs."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(ServiceError):
    """Missing, malformed or unknown token."""

    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(ServiceError):
    """A request or a participant's data is over a size limit."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(ServiceError):
    """The solver hit its time limit."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unavailable(ServiceError):
    """The server is shutting down; the client should reconnect."""

    code = grpc.StatusCode.UNAVAILABLE


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and details a caller sees for ``exc``."""
    if isinstance(exc, ServiceError):
        return exc.code, str(exc)
    if isinstance(exc, InputError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    log.exception("internal error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal error (logged on the server)"
