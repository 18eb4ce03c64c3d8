"""Multi-agency case audits for tests: a valid body, and a create through the API."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import httpx

from tests.builders.referrals import next_nhs_number
from tests.conftest import RegisteredClient

AUDIT_SCOPES = ["audits:write", "audits:read"]


def case_audit_body(**overrides: Any) -> dict[str, Any]:
    """A valid audit of a child protection plan for neglect, graded good, of a new child (a fresh
    NHS number) unless `child` is given."""
    body: dict[str, Any] = {
        "child": {"nhs_number": next_nhs_number()},
        "audited_work": "child_protection_plan",
        "neglect_featured": True,
        "audited_on": date(2024, 3, 14).isoformat(),
        "panel_agencies": ["local_authority", "health", "police"],
        "practice_grade": "good",
        "impact_grade": "good",
        "toolkit_used": True,
        "toolkit_use_effective": True,
        "learning": "The chronology showed the cumulative impact of neglect.",
    }
    body.update(overrides)
    return body


def audit_headers(registered: RegisteredClient, key: str | None = None) -> dict[str, str]:
    return {**registered.headers, "Idempotency-Key": key or uuid.uuid4().hex}


async def post_case_audit(
    client: httpx.AsyncClient, registered: RegisteredClient, body: dict[str, Any]
) -> dict[str, Any]:
    """POST an audit that must be accepted; its stored representation."""
    response = await client.post("/v1/case-audits", json=body, headers=audit_headers(registered))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created
