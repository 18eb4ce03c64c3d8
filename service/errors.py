"""Domain errors with their HTTP status and RFC 9457 problem type; api/errors.py renders them."""

from __future__ import annotations

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


class Conflict(DomainError):
    status = 409
    problem = "conflict"
    title = "Conflict"


class InvalidTransition(Conflict):
    problem = "invalid-transition"
    title = "This change is not allowed in the record's current state"


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


class Unprocessable(DomainError):
    """A body that is well-formed but refers to things that do not fit (unknown toolkit item...)."""

    status = 422
    problem = "unprocessable"
    title = "The request cannot be processed"


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
