"""Domain errors with their HTTP status and RFC 9457 problem type; api/errors.py renders them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

PROBLEM_BASE = "https://neglect-service.example/problems/"


class DomainError(Exception):
    """Base of every expected failure the API reports as problem+json."""

    status: ClassVar[int] = 400
    problem: ClassVar[str] = "bad-request"
    title: ClassVar[str] = "Bad request"
    retry_after_s: int | None = None
    """Seconds for `Retry-After`, when trying again later can succeed."""

    def __init__(self, detail: str, **extra: object) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    @property
    def type_uri(self) -> str:
        return PROBLEM_BASE + self.problem


class NotFound(DomainError):
    status = 404
    problem = "not-found"
    title = "Not found"

    def __init__(
        self, detail: str, *, resource_type: str | None = None, resource_id: object = None
    ) -> None:
        super().__init__(detail)
        # Which record was asked for: the refusal is audited (never shown to the caller).
        self.resource_type = resource_type
        self.resource_id = resource_id


class Conflict(DomainError):
    status = 409
    problem = "conflict"
    title = "Conflict"


class InvalidTransition(Conflict):
    problem = "invalid-transition"
    title = "This change is not allowed in the record's current state"


class SelfDisable(Conflict):
    """409, not 422: the request is well-formed and names a real client; it conflicts with who
    is asking, since a client that disabled itself could not undo it."""

    problem = "self-disable"
    title = "A client cannot disable itself"


class IdempotencyKeyMissing(DomainError):
    status = 400
    problem = "idempotency-key-missing"
    title = "Idempotency-Key header required"


class IdempotencyKeyReused(DomainError):
    status = 422
    problem = "idempotency-key-reused"
    title = "Idempotency-Key already used with a different body"


class IdempotencyKeyInFlight(Conflict):
    problem = "idempotency-key-in-flight"
    title = "A request with this Idempotency-Key is still being processed"


FieldProblem = dict[str, str]
"""One entry of a 422's `errors`: `field` (spelled like `body.child.date_of_birth` or
`query.cursor`), `message` and `code`."""


def field_problem(field: str, message: str, code: str) -> FieldProblem:
    """An entry of `Unprocessable.errors`."""
    return {"field": field, "message": message, "code": code}


def problem_count(problems: Sequence[object]) -> str:
    """ "1 problem", "3 problems": for a detail that sends the reader to `errors`."""
    return f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"


class Unprocessable(DomainError):
    """A body that is well-formed but refers to things that do not fit (unknown toolkit item...).

    Every 422 is one of these; with `errors`, the problem lists each field at fault.
    """

    status = 422
    problem = "unprocessable"
    title = "The request cannot be processed"

    def __init__(
        self, detail: str, errors: Sequence[FieldProblem] | None = None, **extra: object
    ) -> None:
        if errors is not None:
            extra["errors"] = list(errors)
        super().__init__(detail, **extra)


class ValidationFailed(Unprocessable):
    """A request the schema refuses, or a field that passed the schema but not a check that
    needs the database; rendered alike, with `errors` naming each field."""

    problem = "validation"
    title = "Validation failed"


class FieldInvalid(ValidationFailed):
    """One field at fault."""

    def __init__(self, field: str, message: str, code: str) -> None:
        super().__init__(f"{field}: {message}", [field_problem(field, message, code)])


class AuthenticationFailed(DomainError):
    status = 401
    problem = "invalid-token"
    title = "Authentication failed"


class InsufficientScope(DomainError):
    status = 403
    problem = "insufficient-scope"
    title = "The token lacks a required scope"


class RateLimited(DomainError):
    status = 429
    problem = "rate-limited"
    title = "Too many requests"

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class DatabaseUnavailable(DomainError):
    status = 503
    problem = "database-unavailable"
    title = "The database is unavailable; retry shortly"


class DatabaseBusy(DomainError):
    """The database is reachable but could not serve the request in time: every connection of
    the pool was taken for longer than the pool timeout, or a statement ran past the statement
    timeout and was cancelled."""

    status = 503
    problem = "database-busy"
    title = "The database is busy; retry shortly"


class OAuthError(DomainError):
    """A token endpoint error (RFC 6749 section 5.2); the body also carries `error`."""

    problem = "oauth"
    title = "The token request was refused"

    def __init__(
        self, error: str, detail: str, status: int = 400, retry_after_s: int | None = None
    ) -> None:
        super().__init__(detail, error=error, error_description=detail)
        self.error = error
        self.http_status = status
        self.retry_after_s = retry_after_s


class QueryOptionInvalid(DomainError):
    """An OData query option that cannot be read: a property the entity does not have, a literal
    of the wrong type, a malformed expression or number."""

    status = 400
    problem = "query-option-invalid"
    title = "A query option is invalid"


class QueryOptionNotImplemented(DomainError):
    """An OData query option, function or operator this feed does not implement. Answered, never
    ignored: a BI tool that folded a filter into the URL would otherwise show unfiltered totals."""

    status = 501
    problem = "query-option-not-implemented"
    title = "A query option is not implemented"


class SnapshotExpired(DomainError):
    """A `$skiptoken` whose snapshot has expired (or was never this client's)."""

    status = 410
    problem = "snapshot-expired"
    title = "The paging snapshot has expired"
