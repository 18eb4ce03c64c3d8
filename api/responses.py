"""`responses=` entries so openapi.yaml shows every problem a route can answer."""

from __future__ import annotations

from typing import Any

from schemas.common import Problem

_DESCRIPTIONS = {
    400: "Bad request (e.g. a missing Idempotency-Key)",
    401: "Missing, invalid or expired token, or an unregistered or disabled client",
    403: "The token lacks the required scope",
    404: "Not found, or not visible to this client",
    409: "Conflicts with the record's current state",
    413: "Body over 1 MiB",
    422: "The body or parameters are invalid; `errors` names each field",
    429: "The client's API quota is used up; retry after `Retry-After` seconds",
    503: "The database is unavailable; retry after `Retry-After` seconds",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {
            "description": _DESCRIPTIONS[status],
            "model": Problem,
            "content": {"application/problem+json": {}},
        }
        for status in statuses
    }
