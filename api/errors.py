"""One place that renders every error as RFC 9457 problem+json."""

from __future__ import annotations

import logging
import re
import traceback
from typing import Any, cast

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.audit import record_denied
from service.auth.caller import Caller
from service.errors import (
    DatabaseBusy,
    DatabaseUnavailable,
    DomainError,
    InsufficientScope,
    NotFound,
    OAuthError,
    ValidationFailed,
    field_problem,
)
from service.logs import request_id_var

logger = logging.getLogger("neglect_service.errors")

PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_S = "5"
ODATA_PREFIX = "/odata"

_HTTP_TITLES = {
    400: "Bad request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    410: "Gone",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Validation failed",
    429: "Too many requests",
    500: "Internal server error",
    501: "Not implemented",
    503: "Service unavailable",
}


def problem_response(
    status: int,
    title: str,
    detail: str | None = None,
    problem_type: str = "about:blank",
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {"type": problem_type, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    request_id = request_id_var.get()
    if request_id:
        body["request_id"] = request_id
    body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def is_odata(path: str) -> bool:
    """Whether the path is the OData feed's, whose errors are OData's JSON errors."""
    return path == ODATA_PREFIX or path.startswith(ODATA_PREFIX + "/")


def odata_error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error as OData clients read it (OData JSON Format 4.0, section 21): `error` with a
    `code` and a `message` a BI tool shows its user. A 401 carries the challenges a Power Query
    credential type answers: Basic (client id and feed key) and Bearer, naming the Entra ID
    authorize endpoint when one is configured (Power BI's "Organizational account")."""
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    request_id = request_id_var.get()
    if request_id:
        body["error"]["innererror"] = {"request_id": request_id}
    # Also here, not only in the middleware: a 500 is sent from outside it.
    response = JSONResponse(
        body, status_code=status, headers={**(headers or {}), "OData-Version": "4.0"}
    )
    if status == 401:
        authorization_uri = request.app.state.settings.feed_authorization_uri
        del response.headers["WWW-Authenticate"]
        bearer = (
            f'Bearer authorization_uri="{authorization_uri}"'
            if authorization_uri
            else 'Bearer error="invalid_token"'
        )
        response.headers.append("WWW-Authenticate", bearer)
        response.headers.append("WWW-Authenticate", 'Basic realm="neglect-service feed"')
    return response


def _busy_reason(exc: BaseException) -> str | None:
    """Why a reachable database did not serve in time, or None: the engine's pool had no free
    connection within its timeout; the driver pool timed out (a bare TimeoutError, as asyncpg
    raises it for an acquire and for a statement it cancelled past its command timeout); or the
    server cancelled a statement for the statement timeout. Checked before the connection
    failures: TimeoutError is an OSError."""
    if isinstance(exc, PoolTimeoutError):
        return "every database connection is in use; retry shortly"
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    cause = getattr(orig, "__cause__", None) or orig
    if isinstance(cause, asyncpg.QueryCanceledError) or isinstance(exc, TimeoutError):
        return "the database did not answer in time; retry shortly"
    return None


def _is_connection_failure(exc: BaseException) -> bool:
    if isinstance(exc, OSError | asyncpg.CannotConnectNowError):
        return True
    if isinstance(exc, asyncpg.PostgresConnectionError | asyncpg.InterfaceError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError):
            return True
        orig = getattr(exc.orig, "__cause__", None) or exc.orig
        return isinstance(
            orig,
            OSError
            | asyncpg.CannotConnectNowError
            | asyncpg.PostgresConnectionError
            | asyncpg.InterfaceError
            | asyncpg.AdminShutdownError,
        )
    if isinstance(exc, asyncpg.AdminShutdownError | ConnectionError):
        return True
    return False


def _is_unstorable_text(exc: BaseException) -> bool:
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    cause = getattr(orig, "__cause__", None) or orig
    return isinstance(
        cause, asyncpg.CharacterNotInRepertoireError | asyncpg.UntranslatableCharacterError
    )


def _where(exc: BaseException) -> str:
    # File and line only: exception messages from the driver can quote personal data.
    frames = traceback.extract_tb(exc.__traceback__)
    return " <- ".join(
        f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}" for frame in frames[-3:]
    )


NOT_VISIBLE = "not visible to the caller's agency, or no such record"


async def _audit_refusal(request: Request, exc: DomainError) -> None:
    """A `denied` audit event for a refused access to a record or a route, whoever's it was and
    whether or not it exists (the same work either way, so the time tells the caller nothing)."""
    caller: Caller | None = getattr(request.state, "caller", None)
    if caller is None:
        return
    if isinstance(exc, NotFound) and exc.resource_type is not None:
        resource_type, resource_id, reason = exc.resource_type, exc.resource_id, NOT_VISIBLE
    elif isinstance(exc, InsufficientScope):
        route = request.scope.get("route")
        resource_type = getattr(route, "path", "route")
        resource_id = next(iter(request.path_params.values()), None)
        reason = exc.detail
    else:
        return
    try:
        await record_denied(request.app.state.pool, caller, resource_type, resource_id, reason)
    except Exception as failure:
        logger.warning("denied access not audited", extra={"error": type(failure).__name__})


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    exc = cast(DomainError, exc)
    await _audit_refusal(request, exc)
    headers: dict[str, str] = {}
    status = exc.status
    if isinstance(exc, OAuthError):
        status = exc.http_status
        headers["Cache-Control"] = "no-store"
        if status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="neglect-service"'
    elif exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    elif exc.status == 403:
        scope = str(exc.extra.get("scope", ""))
        headers["WWW-Authenticate"] = f'Bearer error="insufficient_scope", scope="{scope}"'
    elif exc.status == 503:
        headers["Retry-After"] = RETRY_AFTER_S
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(exc.retry_after_s)
    if is_odata(request.url.path):
        return odata_error_response(request, status, exc.problem, exc.detail, headers)
    return problem_response(status, exc.title, exc.detail, exc.type_uri, headers, **exc.extra)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    exc = cast(RequestValidationError, exc)
    # Never echo `input`: it may be a child's name or NHS number.
    problems = [
        field_problem(
            ".".join(str(part) for part in error.get("loc", ())),
            error.get("msg", ""),
            error.get("type", ""),
        )
        for error in exc.errors()
    ]
    refused = ValidationFailed("the request does not match the schema; see `errors`", problems)
    return await _domain_error(request, refused)


def _allowed_methods(request: Request) -> str:
    """Every method the path accepts. Starlette names only the first matching route's methods,
    which is wrong when GET and POST on one path are separate routes, so ask the OpenAPI paths."""
    methods: set[str] = set()
    for template, item in request.app.openapi().get("paths", {}).items():
        if re.fullmatch(re.sub(r"\\{[^/]+\\}", "[^/]+", re.escape(template)), request.url.path):
            methods |= {method.upper() for method in item if method != "parameters"}
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    exc = cast(StarletteHTTPException, exc)
    title = _HTTP_TITLES.get(exc.status_code, "Error")
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != title else None
    headers = dict(exc.headers or {})
    if is_odata(request.url.path):
        code = title.lower().replace(" ", "-")
        return odata_error_response(request, exc.status_code, code, detail or title, headers)
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return problem_response(exc.status_code, title, detail, headers=headers)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    if _is_unstorable_text(exc):
        # A value that slipped past validation with a NUL or an invalid character: the
        # transaction is rolled back, so nothing changed; the caller must fix the input.
        unstorable = ValidationFailed(
            "a text value contains a character that cannot be stored (such as NUL)", []
        )
        return await _domain_error(request, unstorable)
    busy = _busy_reason(exc)
    if busy is not None:
        logger.warning("database busy", extra={"error": type(exc).__name__})
        return await _domain_error(request, DatabaseBusy(busy))
    if _is_connection_failure(exc):
        logger.warning("database unavailable", extra={"error": type(exc).__name__})
        unavailable = DatabaseUnavailable("the database cannot be reached; retry shortly")
        return await _domain_error(request, unavailable)
    logger.error("unexpected error", extra={"error": type(exc).__name__, "where": _where(exc)})
    if is_odata(request.url.path):
        return odata_error_response(request, 500, "internal", "the error has been logged")
    return problem_response(500, "Internal server error", "the error has been logged")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Driver and pool errors are handled inside the app (not by the outermost 500 middleware,
    # which re-raises): most are a database that went away, answered 503 with Retry-After.
    for driver_error in (DBAPIError, PoolTimeoutError, OSError, asyncpg.PostgresError):
        app.add_exception_handler(driver_error, _unexpected_error)
    app.add_exception_handler(Exception, _unexpected_error)
