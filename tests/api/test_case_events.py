"""POST /v1/case-events: per-event results, idempotency on event_id, and the consistency rules."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date
from typing import Any

import httpx
from sqlalchemy import text

from service.db import SessionFactory, transaction
from service.demo.generator import case_event_fingerprint
from service.fingerprint import ascii_escaped_fingerprint, fingerprint
from tests.builders.case_events import (
    child_ref,
    cin_plan_ended,
    cin_plan_started,
    cp_plan_category_changed,
    cp_plan_ended,
    cp_plan_started,
    early_help_assessment_completed,
    feedback_received,
    health_appointment,
    icpc_held,
    post_case_events,
    section47_started,
    stepped_up_to_social_care,
)
from tests.builders.indicators import fresh_nhs_number, insert_child
from tests.conftest import ClientMaker, RegisteredClient

WRITE = ["case-events:write"]


async def writer(make_client: ClientMaker) -> RegisteredClient:
    return await make_client(WRITE, agency_name="Sampletown Children's Services", agency_type="la")


def new_child() -> dict[str, Any]:
    return child_ref(fresh_nhs_number())


async def count_rows(factory: SessionFactory, sql: str, **params: Any) -> int:
    async with transaction(factory) as session:
        return int(await session.scalar(text(sql), params) or 0)


async def post_one(
    client: httpx.AsyncClient, registered: RegisteredClient, event: dict[str, Any]
) -> dict[str, Any]:
    body = await post_case_events(client, registered.headers, [event])
    result: dict[str, Any] = body["results"][0]
    return result


def every_event_type(child: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        section47_started(
            child, date(2024, 1, 8), "S47-1", strategy_discussion_on=date(2024, 1, 5)
        ),
        icpc_held(child, date(2024, 1, 26), "S47-1", categories=["NEG", "EMO"]),
        cp_plan_started(child, date(2024, 1, 26), "CP-1", domestic_abuse_focus=True),
        cp_plan_category_changed(child, date(2024, 3, 1), "CP-1", "MUL"),
        cp_plan_ended(child, date(2024, 9, 30), "CP-1"),
        cin_plan_started(child, date(2024, 9, 30), "CIN-1"),
        cin_plan_ended(child, date(2025, 3, 31), "CIN-1"),
        early_help_assessment_completed(child, date(2023, 11, 1), "EH-1"),
        stepped_up_to_social_care(child, date(2023, 12, 1), from_ref="EH-1"),
        health_appointment(child, date(2024, 2, 2), attended=True, kind="medical"),
        feedback_received(child, date(2024, 10, 1), 4),
    ]


async def test_a_batch_of_every_event_type_is_stored_in_order(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    registered = await writer(make_client)
    events = every_event_type(new_child())

    body = await post_case_events(client, registered.headers, events)

    assert body["counts"] == {"stored": 11, "duplicate": 0, "rejected": 0}
    assert [result["index"] for result in body["results"]] == list(range(11))
    assert [result["event_id"] for result in body["results"]] == [e["event_id"] for e in events]
    assert all(uuid.UUID(result["id"]) for result in body["results"])
    stored = await count_rows(
        session_factory,
        "SELECT count(*) FROM case_event WHERE client_id = :c",
        c=registered.client_id,
    )
    assert stored == 11


async def test_events_are_linked_to_the_child_already_known_by_nhs_number(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    registered = await writer(make_client)
    child = await insert_child(session_factory)

    result = await post_one(
        client, registered, health_appointment(child.ref, date(2024, 5, 1), attended=True)
    )

    async with transaction(session_factory) as session:
        child_id = await session.scalar(
            text("SELECT child_id FROM case_event WHERE id = :id"), {"id": result["id"]}
        )
    assert child_id == child.id


async def test_the_projection_holds_the_plan_as_its_events_describe_it(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    registered = await writer(make_client)
    child = await insert_child(session_factory)
    await post_case_events(
        client,
        registered.headers,
        [
            cp_plan_started(child.ref, date(2024, 1, 10), "CP-9", initial_category="PHY"),
            cp_plan_category_changed(child.ref, date(2024, 4, 1), "CP-9", "NEG"),
            cp_plan_category_changed(child.ref, date(2024, 2, 1), "CP-9", "EMO"),
            cp_plan_ended(child.ref, date(2024, 6, 1), "CP-9"),
        ],
    )

    async with transaction(session_factory) as session:
        plan = (
            await session.execute(
                text(
                    "SELECT started_on, ended_on, initial_category, latest_category "
                    "FROM care_plan WHERE child_id = :c"
                ),
                {"c": child.id},
            )
        ).one()
    # The change dated latest wins, whatever order the changes arrived in.
    assert tuple(plan) == (date(2024, 1, 10), date(2024, 6, 1), "PHY", "NEG")


async def test_a_bad_batch_stores_the_good_events_and_gives_each_bad_one_its_reason(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    registered = await writer(make_client)
    child = new_child()
    good_start = cp_plan_started(child, date(2024, 3, 1), "CP-1")
    inconsistent_end = cp_plan_ended(child, date(2024, 2, 1), "CP-1")
    unknown_type = {**health_appointment(child, date(2024, 3, 5), attended=True), "type": "visit"}
    good_feedback = feedback_received(child, date(2024, 3, 9), 5)

    body = await post_case_events(
        client, registered.headers, [good_start, inconsistent_end, unknown_type, good_feedback]
    )

    statuses = [(result["status"], result["event_id"]) for result in body["results"]]
    assert statuses == [
        ("stored", good_start["event_id"]),
        ("rejected", inconsistent_end["event_id"]),
        ("rejected", unknown_type["event_id"]),
        ("stored", good_feedback["event_id"]),
    ]
    assert "cannot end before it starts" in body["results"][1]["reason"]
    assert body["results"][2]["reason"].startswith("type:")
    assert "visit" in body["results"][2]["reason"]
    assert body["counts"] == {"stored": 2, "duplicate": 0, "rejected": 2}
    stored_ids = await count_rows(
        session_factory,
        "SELECT count(*) FROM case_event WHERE client_id = :c AND event_id IN (:a, :b)",
        c=registered.client_id,
        a=good_start["event_id"],
        b=good_feedback["event_id"],
    )
    assert stored_ids == 2


async def test_resending_a_bad_batch_stores_nothing_new(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    registered = await writer(make_client)
    child = new_child()
    batch = [
        cp_plan_started(child, date(2024, 3, 1), "CP-1"),
        cp_plan_ended(child, date(2024, 3, 1), "CP-1"),
        {**feedback_received(child, date(2024, 3, 9), 3), "type": "complaint"},
        feedback_received(child, date(2024, 3, 9), 5),
    ]
    await post_case_events(client, registered.headers, batch)
    before = await count_rows(
        session_factory,
        "SELECT count(*) FROM case_event WHERE client_id = :c",
        c=registered.client_id,
    )

    again = await post_case_events(client, registered.headers, batch)

    after = await count_rows(
        session_factory,
        "SELECT count(*) FROM case_event WHERE client_id = :c",
        c=registered.client_id,
    )
    assert (before, after) == (2, 2)
    assert [result["status"] for result in again["results"]] == [
        "duplicate",
        "rejected",
        "rejected",
        "duplicate",
    ]
    assert again["counts"] == {"stored": 0, "duplicate": 2, "rejected": 2}


async def test_a_duplicate_reports_the_id_of_the_event_stored_first(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await writer(make_client)
    event = health_appointment(new_child(), date(2024, 5, 1), attended=False)
    first = await post_one(client, registered, event)

    second = await post_one(client, registered, event)

    assert (second["status"], second["id"]) == ("duplicate", first["id"])


async def test_the_same_event_twice_in_one_batch_is_stored_once(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await writer(make_client)
    event = feedback_received(new_child(), date(2024, 5, 1), 2)

    body = await post_case_events(client, registered.headers, [event, event])

    assert [result["status"] for result in body["results"]] == ["stored", "duplicate"]


async def test_reusing_an_event_id_for_other_content_is_rejected(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await writer(make_client)
    child = new_child()
    await post_one(
        client, registered, feedback_received(child, date(2024, 5, 1), 2, event_id="F-1")
    )

    result = await post_one(
        client, registered, feedback_received(child, date(2024, 5, 1), 4, event_id="F-1")
    )

    assert result["status"] == "rejected"
    assert result["reason"].startswith("event_id: already used by this client")


async def test_event_ids_belong_to_their_client(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    first, second = await writer(make_client), await writer(make_client)
    event = feedback_received(new_child(), date(2024, 5, 1), 2, event_id="SHARED-1")
    await post_one(client, first, event)

    result = await post_one(client, second, event)

    assert result["status"] == "stored"


async def test_an_event_resent_with_its_fields_in_another_order_is_a_duplicate(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await writer(make_client)
    event = feedback_received(new_child(), date(2024, 5, 1), 2)
    await post_one(client, registered, event)
    reordered = dict(reversed(list(event.items())))

    result = await post_one(client, registered, reordered)

    assert result["status"] == "duplicate"


NON_ASCII_ABOUT = "L'aide à domicile — très appréciée"


def non_ascii_feedback(nhs_number: str) -> dict[str, Any]:
    event = feedback_received(child_ref(nhs_number), date(2024, 5, 1), 4)
    return event | {"about": NON_ASCII_ABOUT}


async def stored_fingerprint(factory: SessionFactory, event_id: str) -> str:
    async with transaction(factory) as session:
        stored = await session.scalar(
            text("SELECT payload_sha256 FROM case_event WHERE event_id = :event_id"),
            {"event_id": event_id},
        )
    assert isinstance(stored, str)
    return stored


async def test_a_non_ascii_event_has_the_demo_fingerprint_and_a_resend_is_a_duplicate(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    registered = await writer(make_client)
    nhs_number = fresh_nhs_number()
    event = non_ascii_feedback(nhs_number)
    first = await post_one(client, registered, event)
    validated_child = {
        "nhs_number": nhs_number,
        "la_child_id": None,
        "upn": None,
        "family_name": None,
        "date_of_birth": None,
    }
    demo = case_event_fingerprint(
        event["event_id"],
        validated_child,
        "feedback_received",
        date(2024, 5, 1),
        {"from_whom": "parent_carer", "rating": 4, "about": NON_ASCII_ABOUT},
    )

    again = await post_one(client, registered, event)

    assert first["status"] == "stored"
    assert await stored_fingerprint(session_factory, event["event_id"]) == demo
    assert (again["status"], again["id"]) == ("duplicate", first["id"])


async def test_an_event_stored_with_the_old_ascii_fingerprint_is_a_duplicate_when_resent(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    registered = await writer(make_client)
    event = non_ascii_feedback(fresh_nhs_number())
    first = await post_one(client, registered, event)
    stored = await stored_fingerprint(session_factory, event["event_id"])
    async with transaction(session_factory) as session:
        payload = (
            await session.execute(
                text("SELECT details FROM case_event WHERE event_id = :event_id"),
                {"event_id": event["event_id"]},
            )
        ).scalar_one()
        validated = {
            "event_id": event["event_id"],
            "child": {
                "nhs_number": event["child"]["nhs_number"],
                "la_child_id": None,
                "upn": None,
                "family_name": None,
                "date_of_birth": None,
            },
            "occurred_on": event["occurred_on"],
            "type": event["type"],
            **payload,
        }
        await session.execute(
            text("UPDATE case_event SET payload_sha256 = :old WHERE event_id = :event_id"),
            {"old": ascii_escaped_fingerprint(validated), "event_id": event["event_id"]},
        )

    again = await post_one(client, registered, event)

    assert stored == fingerprint(validated) != ascii_escaped_fingerprint(validated)
    assert (again["status"], again["id"]) == ("duplicate", first["id"])


async def test_an_invalid_event_is_rejected_naming_the_field(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await writer(make_client)
    event = feedback_received(new_child(), date(2024, 5, 1), 9)

    result = await post_one(client, registered, event)

    assert result["status"] == "rejected"
    assert result["reason"].startswith("rating:")
    assert result["event_id"] == event["event_id"]


async def test_an_event_without_an_event_id_is_rejected_with_a_null_event_id(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await writer(make_client)
    event = feedback_received(new_child(), date(2024, 5, 1), 3)
    del event["event_id"]

    result = await post_one(client, registered, event)

    assert (result["status"], result["event_id"], result["id"]) == ("rejected", None, None)
    assert result["reason"].startswith("event_id:")


async def test_a_cp_plan_cannot_end_on_the_day_it_starts(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await writer(make_client)
    child = new_child()
    await post_one(client, registered, cp_plan_started(child, date(2024, 3, 1), "CP-1"))

    result = await post_one(client, registered, cp_plan_ended(child, date(2024, 3, 1), "CP-1"))

    assert result["status"] == "rejected"
    assert "on the day it starts" in result["reason"]


async def test_an_ended_plan_cannot_end_again(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await writer(make_client)
    child = new_child()
    await post_case_events(
        client,
        registered.headers,
        [
            cp_plan_started(child, date(2024, 3, 1), "CP-1"),
            cp_plan_ended(child, date(2024, 6, 1), "CP-1"),
        ],
    )

    result = await post_one(client, registered, cp_plan_ended(child, date(2024, 7, 1), "CP-1"))

    assert result["status"] == "rejected"
    assert "already ended on 2024-06-01" in result["reason"]


async def test_a_second_open_cp_plan_for_a_child_is_rejected(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await writer(make_client)
    child = new_child()
    await post_one(client, registered, cp_plan_started(child, date(2024, 3, 1), "CP-1"))

    result = await post_one(client, registered, cp_plan_started(child, date(2024, 5, 1), "CP-2"))

    assert result["status"] == "rejected"
    assert "already has an open child protection plan" in result["reason"]


async def test_a_cp_plan_cannot_start_while_an_earlier_recorded_plan_was_open(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await writer(make_client)
    child = new_child()
    await post_case_events(
        client,
        registered.headers,
        [
            cp_plan_started(child, date(2024, 3, 1), "CP-1"),
            cp_plan_ended(child, date(2024, 9, 1), "CP-1"),
        ],
    )

    result = await post_one(client, registered, cp_plan_started(child, date(2024, 1, 1), "CP-0"))

    assert result["status"] == "rejected"
    assert "cannot overlap" in result["reason"]


async def test_a_cp_plan_may_start_on_the_day_the_previous_one_ended(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await writer(make_client)
    child = new_child()

    body = await post_case_events(
        client,
        registered.headers,
        [
            cp_plan_started(child, date(2024, 3, 1), "CP-1"),
            cp_plan_ended(child, date(2024, 9, 1), "CP-1"),
            cp_plan_started(child, date(2024, 9, 1), "CP-2", initial_category="EMO"),
        ],
    )

    assert body["counts"]["stored"] == 3


async def test_one_child_may_have_a_cp_plan_and_a_cin_plan_open_together(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await writer(make_client)
    child = new_child()

    body = await post_case_events(
        client,
        registered.headers,
        [
            cp_plan_started(child, date(2024, 3, 1), "P-1"),
            cin_plan_started(child, date(2024, 3, 1), "P-1"),
        ],
    )

    assert body["counts"]["stored"] == 2


async def test_a_plan_ref_names_one_plan_per_child(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await writer(make_client)
    child = new_child()
    await post_case_events(
        client,
        registered.headers,
        [
            cin_plan_started(child, date(2024, 3, 1), "CIN-1"),
            cin_plan_ended(child, date(2024, 5, 1), "CIN-1"),
        ],
    )

    result = await post_one(client, registered, cin_plan_started(child, date(2024, 6, 1), "CIN-1"))

    assert result["status"] == "rejected"
    assert "plan with this plan_ref is already recorded" in result["reason"]


async def test_a_category_change_needs_an_open_plan(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await writer(make_client)
    child = new_child()
    await post_case_events(
        client,
        registered.headers,
        [
            cp_plan_started(child, date(2024, 3, 1), "CP-1"),
            cp_plan_ended(child, date(2024, 6, 1), "CP-1"),
        ],
    )

    result = await post_one(
        client, registered, cp_plan_category_changed(child, date(2024, 6, 1), "CP-1", "EMO")
    )

    assert result["status"] == "rejected"
    assert "needs an open plan" in result["reason"]


async def test_a_category_change_before_the_plan_started_is_rejected(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await writer(make_client)
    child = new_child()
    await post_one(client, registered, cp_plan_started(child, date(2024, 3, 1), "CP-1"))

    result = await post_one(
        client, registered, cp_plan_category_changed(child, date(2024, 2, 28), "CP-1", "EMO")
    )

    assert result["status"] == "rejected"
    assert "starts on 2024-03-01" in result["reason"]


async def test_an_event_about_an_unknown_plan_is_rejected(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await writer(make_client)

    result = await post_one(
        client, registered, cp_plan_category_changed(new_child(), date(2024, 6, 1), "CP-X", "EMO")
    )

    assert result["status"] == "rejected"
    assert result["reason"].startswith("plan_ref: no child protection plan")


async def test_a_cin_plan_end_needs_its_start(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await writer(make_client)

    result = await post_one(client, registered, cin_plan_ended(new_child(), date(2024, 6, 1), "C"))

    assert result["status"] == "rejected"
    assert result["reason"].startswith("plan_ref: no child in need plan")


async def test_a_plan_cannot_end_on_or_before_a_recorded_category_change(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await writer(make_client)
    child = new_child()
    await post_case_events(
        client,
        registered.headers,
        [
            cp_plan_started(child, date(2024, 3, 1), "CP-1"),
            cp_plan_category_changed(child, date(2024, 5, 1), "CP-1", "EMO"),
        ],
    )

    result = await post_one(client, registered, cp_plan_ended(child, date(2024, 4, 1), "CP-1"))

    assert result["status"] == "rejected"
    assert "category changed on 2024-05-01" in result["reason"]


async def test_an_icpc_cannot_be_held_before_its_section47_started(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await writer(make_client)
    child = new_child()
    await post_one(client, registered, section47_started(child, date(2024, 3, 10), "S47-1"))

    result = await post_one(client, registered, icpc_held(child, date(2024, 3, 9), "S47-1"))

    assert result["status"] == "rejected"
    assert "before its Section 47 enquiry started" in result["reason"]


async def test_a_section47_start_after_its_recorded_icpc_is_rejected(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await writer(make_client)
    child = new_child()
    await post_one(client, registered, icpc_held(child, date(2024, 3, 9), "S47-1"))

    result = await post_one(
        client, registered, section47_started(child, date(2024, 3, 10), "S47-1")
    )

    assert result["status"] == "rejected"
    assert "held on 2024-03-09" in result["reason"]


async def test_an_enquiry_has_one_initial_conference(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await writer(make_client)
    child = new_child()
    await post_one(client, registered, icpc_held(child, date(2024, 3, 9), "S47-1"))

    result = await post_one(client, registered, icpc_held(child, date(2024, 3, 19), "S47-1"))

    assert result["status"] == "rejected"
    assert "ICPC is already recorded" in result["reason"]


async def test_a_section47_enquiry_ref_is_recorded_once_per_child(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await writer(make_client)
    child = new_child()
    await post_one(client, registered, section47_started(child, date(2024, 3, 9), "S47-1"))

    result = await post_one(client, registered, section47_started(child, date(2024, 4, 9), "S47-1"))

    assert result["status"] == "rejected"
    assert "already recorded for the child" in result["reason"]


async def test_an_early_help_assessment_ref_is_recorded_once_per_child(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await writer(make_client)
    child = new_child()
    await post_one(
        client, registered, early_help_assessment_completed(child, date(2024, 3, 9), "E")
    )

    result = await post_one(
        client, registered, early_help_assessment_completed(child, date(2024, 4, 9), "E")
    )

    assert result["status"] == "rejected"
    assert "early help assessment with this assessment_ref" in result["reason"]


async def test_a_rejected_event_leaves_no_child_behind(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    registered = await writer(make_client)
    nhs_number = fresh_nhs_number()

    await post_one(client, registered, cp_plan_ended(child_ref(nhs_number), date(2024, 6, 1), "X"))

    children = await count_rows(
        session_factory, "SELECT count(*) FROM child WHERE nhs_number = :n", n=nhs_number
    )
    assert children == 0


async def test_each_stored_event_is_audited_as_a_create(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    registered = await writer(make_client)
    child = new_child()

    body = await post_case_events(
        client,
        registered.headers,
        [
            feedback_received(child, date(2024, 5, 1), 2),
            cp_plan_ended(child, date(2024, 5, 1), "nope"),
            health_appointment(child, date(2024, 5, 2), attended=True),
        ],
    )

    audited = await count_rows(
        session_factory,
        "SELECT count(*) FROM audit_event WHERE client_id = :c AND action = 'create' "
        "AND resource_type = 'case_event' AND child_id IS NOT NULL",
        c=registered.client_id,
    )
    assert (body["counts"]["stored"], audited) == (2, 2)


async def test_a_batch_over_a_thousand_events_is_refused_whole(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await writer(make_client)
    child = new_child()
    events = [feedback_received(child, date(2024, 5, 1), 3) for _ in range(1001)]

    response = await client.post(
        "/v1/case-events", json={"events": events}, headers=registered.headers
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.events"


async def test_case_events_need_the_case_events_write_scope(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await make_client(["referrals:write"])

    response = await client.post(
        "/v1/case-events",
        json={"events": [feedback_received(new_child(), date(2024, 5, 1), 3)]},
        headers=registered.headers,
    )

    assert response.status_code == 403


async def test_concurrent_batches_cannot_open_two_cp_plans_for_one_child(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    first, second = await writer(make_client), await writer(make_client)
    child = await insert_child(session_factory)

    bodies = await asyncio.gather(
        post_case_events(
            client, first.headers, [cp_plan_started(child.ref, date(2024, 3, 1), "CP-A")]
        ),
        post_case_events(
            client, second.headers, [cp_plan_started(child.ref, date(2024, 4, 1), "CP-B")]
        ),
    )

    statuses = sorted(body["results"][0]["status"] for body in bodies)
    open_plans = await count_rows(
        session_factory,
        "SELECT count(*) FROM care_plan WHERE child_id = :c AND ended_on IS NULL",
        c=child.id,
    )
    assert (statuses, open_plans) == (["rejected", "stored"], 1)
