"""Case event bodies for `POST /v1/case-events`, and a helper that posts a batch.

Every builder takes the child reference (`{"nhs_number": ...}` is enough), the date and the
type-specific fields, with sensible defaults; `event_id` defaults to a fresh unique id.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import httpx


def child_ref(nhs_number: str) -> dict[str, Any]:
    """A child reference naming the child by NHS number only."""
    return {"nhs_number": nhs_number}


def _event(
    event_type: str, child: dict[str, Any], occurred_on: date, event_id: str | None, **fields: Any
) -> dict[str, Any]:
    return {
        "type": event_type,
        "event_id": event_id or f"EV-{uuid.uuid4().hex}",
        "child": child,
        "occurred_on": occurred_on.isoformat(),
        **fields,
    }


def section47_started(
    child: dict[str, Any],
    occurred_on: date,
    enquiry_ref: str,
    *,
    strategy_discussion_on: date | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    return _event(
        "section47_started",
        child,
        occurred_on,
        event_id,
        enquiry_ref=enquiry_ref,
        strategy_discussion_on=(strategy_discussion_on or occurred_on).isoformat(),
    )


def icpc_held(
    child: dict[str, Any],
    occurred_on: date,
    enquiry_ref: str,
    *,
    categories: list[str] | None = None,
    outcome: str = "cp_plan",
    event_id: str | None = None,
) -> dict[str, Any]:
    return _event(
        "icpc_held",
        child,
        occurred_on,
        event_id,
        enquiry_ref=enquiry_ref,
        outcome=outcome,
        categories=categories if categories is not None else ["NEG"],
    )


def cp_plan_started(
    child: dict[str, Any],
    occurred_on: date,
    plan_ref: str,
    *,
    initial_category: str = "NEG",
    domestic_abuse_focus: bool = False,
    event_id: str | None = None,
) -> dict[str, Any]:
    return _event(
        "cp_plan_started",
        child,
        occurred_on,
        event_id,
        plan_ref=plan_ref,
        initial_category=initial_category,
        domestic_abuse_focus=domestic_abuse_focus,
    )


def cp_plan_category_changed(
    child: dict[str, Any],
    occurred_on: date,
    plan_ref: str,
    category: str,
    *,
    event_id: str | None = None,
) -> dict[str, Any]:
    return _event(
        "cp_plan_category_changed",
        child,
        occurred_on,
        event_id,
        plan_ref=plan_ref,
        category=category,
    )


def cp_plan_ended(
    child: dict[str, Any], occurred_on: date, plan_ref: str, *, event_id: str | None = None
) -> dict[str, Any]:
    return _event("cp_plan_ended", child, occurred_on, event_id, plan_ref=plan_ref)


def cin_plan_started(
    child: dict[str, Any],
    occurred_on: date,
    plan_ref: str,
    *,
    neglect: bool = True,
    event_id: str | None = None,
) -> dict[str, Any]:
    return _event(
        "cin_plan_started", child, occurred_on, event_id, plan_ref=plan_ref, neglect=neglect
    )


def cin_plan_ended(
    child: dict[str, Any], occurred_on: date, plan_ref: str, *, event_id: str | None = None
) -> dict[str, Any]:
    return _event("cin_plan_ended", child, occurred_on, event_id, plan_ref=plan_ref)


def early_help_assessment_completed(
    child: dict[str, Any],
    occurred_on: date,
    assessment_ref: str,
    *,
    neglect_considered: bool = True,
    neglect_identified: bool = True,
    event_id: str | None = None,
) -> dict[str, Any]:
    return _event(
        "early_help_assessment_completed",
        child,
        occurred_on,
        event_id,
        assessment_ref=assessment_ref,
        neglect_considered=neglect_considered,
        neglect_identified=neglect_identified,
    )


def stepped_up_to_social_care(
    child: dict[str, Any],
    occurred_on: date,
    *,
    from_ref: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    return _event(
        "stepped_up_to_social_care",
        child,
        occurred_on,
        event_id,
        from_ref=from_ref,
        reason="Neglect persisted despite early help",
    )


def health_appointment(
    child: dict[str, Any],
    occurred_on: date,
    *,
    attended: bool,
    kind: str = "dental",
    event_id: str | None = None,
) -> dict[str, Any]:
    return _event("health_appointment", child, occurred_on, event_id, kind=kind, attended=attended)


def feedback_received(
    child: dict[str, Any],
    occurred_on: date,
    rating: int,
    *,
    from_whom: str = "parent_carer",
    event_id: str | None = None,
) -> dict[str, Any]:
    return _event(
        "feedback_received",
        child,
        occurred_on,
        event_id,
        from_whom=from_whom,
        rating=rating,
        about="Support from the family help team",
    )


async def post_case_events(
    client: httpx.AsyncClient, headers: dict[str, str], events: list[dict[str, Any]]
) -> dict[str, Any]:
    """Post one batch and return the response body; fails the test unless the answer is 200."""
    response = await client.post("/v1/case-events", json={"events": events}, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def post_case_events_all_stored(
    client: httpx.AsyncClient, headers: dict[str, str], events: list[dict[str, Any]]
) -> None:
    """Post one batch in chunks of 1,000 and fail the test unless every event was stored."""
    for start in range(0, len(events), 1000):
        body = await post_case_events(client, headers, events[start : start + 1000])
        rejected = [result for result in body["results"] if result["status"] != "stored"]
        assert not rejected, rejected
