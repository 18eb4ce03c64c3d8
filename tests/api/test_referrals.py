"""Referrals over HTTP: create, idempotency, re-referral, scoping, listing, decision, withdrawal."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from schemas.children import add_months
from schemas.referrals import IMMEDIATE_RISK_GUIDANCE
from service.db import SessionFactory
from tests.bodies import valid_decision_body, valid_withdraw_body
from tests.builders.referrals import (
    PROBLEMS,
    count_audit_events,
    count_referrals,
    count_rows,
    create_referral,
    next_nhs_number,
    post_referral,
    referral_body,
)
from tests.conftest import ClientMaker, RegisteredClient

REFERRER_SCOPES = ["referrals:write", "referrals:read"]
FRONT_DOOR_SCOPES = ["referrals:read", "referrals:read:all", "referrals:decide"]


@pytest.fixture
async def school(make_client: ClientMaker) -> RegisteredClient:
    return await make_client(REFERRER_SCOPES, agency_type="school")


@pytest.fixture
async def other_school(make_client: ClientMaker) -> RegisteredClient:
    return await make_client(REFERRER_SCOPES, agency_type="school")


@pytest.fixture
async def front_door(make_client: ClientMaker) -> RegisteredClient:
    return await make_client(FRONT_DOOR_SCOPES, agency_type="local_authority")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def months_ago(months: int) -> str:
    """An instant `months` calendar months before now (at the same time of day), as ISO text."""
    now = datetime.now(UTC)
    day = add_months(now.date(), -months)
    return datetime.combine(day, now.timetz()).isoformat()


def not_informed(**changes: Any) -> dict[str, Any]:
    awareness = {
        "informed": False,
        "consent": "not_sought",
        "reason_not_informed": "Telling the mother's partner would put the child at risk.",
    }
    awareness.update(changes)
    return awareness


async def decide(
    client: httpx.AsyncClient, decider: RegisteredClient, referral_id: str, **changes: Any
) -> httpx.Response:
    return await client.post(
        f"/v1/referrals/{referral_id}/decision",
        json=valid_decision_body(**changes),
        headers=decider.headers,
    )


async def withdraw(
    client: httpx.AsyncClient, referrer: RegisteredClient, referral_id: str
) -> httpx.Response:
    return await client.post(
        f"/v1/referrals/{referral_id}/withdraw",
        json=valid_withdraw_body(),
        headers=referrer.headers,
    )


async def list_ids(client: httpx.AsyncClient, reader: RegisteredClient, **params: Any) -> list[str]:
    response = await client.get("/v1/referrals", params=params, headers=reader.headers)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


# --- create --------------------------------------------------------------------------------------


async def test_created_referral_is_received_with_its_clock_and_child(
    client: httpx.AsyncClient, school: RegisteredClient
) -> None:
    before = datetime.now(UTC)
    created = await create_referral(client, school)
    received_at = at(created["received_at"])
    assert created["status"] == "received"
    assert before <= received_at <= datetime.now(UTC)
    assert at(created["decision_due_at"]) == received_at + timedelta(hours=24)
    assert uuid.UUID(created["child_id"])
    assert (created["rereferral"], created["rereferral_count"]) == (False, 0)
    assert created["decision"] is None


async def test_created_referral_takes_its_agency_from_the_client_registry(
    client: httpx.AsyncClient, school: RegisteredClient
) -> None:
    created = await create_referral(client, school)
    assert created["agency_name"] == school.agency_name
    assert created["client_id"] == school.client_id
    assert created["referrer"]["agency_name"] == "Sampletown Primary School"


async def test_created_referral_echoes_what_was_sent(
    client: httpx.AsyncClient, school: RegisteredClient
) -> None:
    body = referral_body()
    created = await create_referral(client, school, body)
    assert created["external_reference"] == body["external_reference"]
    assert created["child"]["nhs_number"] == body["child"]["nhs_number"]
    assert created["concerns"]["neglect_forms"] == ["nutritional", "physical"]
    assert created["household"][0]["relationship"] == "mother"


async def test_back_loaded_referral_keeps_its_received_at_and_is_due_a_day_later(
    client: httpx.AsyncClient, school: RegisteredClient
) -> None:
    created = await create_referral(
        client, school, referral_body(received_at="2025-02-03T09:30:00+00:00")
    )
    assert at(created["received_at"]) == datetime(2025, 2, 3, 9, 30, tzinfo=UTC)
    assert at(created["decision_due_at"]) == datetime(2025, 2, 4, 9, 30, tzinfo=UTC)


async def test_immediate_risk_marks_the_referral_urgent_with_999_guidance(
    client: httpx.AsyncClient, school: RegisteredClient
) -> None:
    created = await create_referral(client, school, referral_body(immediate_risk=True))
    assert created["urgent"] is True
    assert created["immediate_risk_guidance"] == IMMEDIATE_RISK_GUIDANCE


async def test_referral_without_immediate_risk_is_not_urgent(
    client: httpx.AsyncClient, school: RegisteredClient
) -> None:
    created = await create_referral(client, school)
    assert (created["urgent"], created["immediate_risk_guidance"]) == (False, None)


async def test_create_appends_one_audit_create_event_naming_the_child(
    client: httpx.AsyncClient, school: RegisteredClient, session_factory: SessionFactory
) -> None:
    created = await create_referral(client, school)
    assert (
        await count_rows(
            session_factory,
            "SELECT count(*) FROM audit_event WHERE action = 'create' AND resource_id = :rid "
            "AND child_id = :cid AND client_id = :client",
            rid=created["id"],
            cid=uuid.UUID(created["child_id"]),
            client=school.client_id,
        )
        == 1
    )


async def test_the_create_audit_event_carries_the_request_id_and_access_reason(
    client: httpx.AsyncClient, school: RegisteredClient, session_factory: SessionFactory
) -> None:
    request_id = uuid.uuid4().hex
    response = await client.post(
        "/v1/referrals",
        json=referral_body(),
        headers={
            **school.headers,
            "Idempotency-Key": uuid.uuid4().hex,
            "X-Request-ID": request_id,
            "X-Access-Reason": "New concern from class teacher",
        },
    )
    assert (
        await count_rows(
            session_factory,
            "SELECT count(*) FROM audit_event WHERE action = 'create' AND resource_id = :rid "
            "AND resource_type = 'referral' AND request_id = :request_id "
            "AND access_reason = 'New concern from class teacher' AND agency_name = :agency",
            rid=response.json()["id"],
            request_id=request_id,
            agency=school.agency_name,
        )
        == 1
    )


async def test_create_without_the_write_scope_is_403(
    client: httpx.AsyncClient, front_door: RegisteredClient, session_factory: SessionFactory
) -> None:
    before = await count_referrals(session_factory)
    response = await post_referral(client, front_door)
    assert response.status_code == 403
    assert await count_referrals(session_factory) == before


# --- idempotency ---------------------------------------------------------------------------------


async def test_create_without_an_idempotency_key_is_400_and_stores_nothing(
    client: httpx.AsyncClient, school: RegisteredClient, session_factory: SessionFactory
) -> None:
    before = await count_referrals(session_factory)
    response = await client.post("/v1/referrals", json=referral_body(), headers=school.headers)
    assert response.status_code == 400
    assert response.json()["type"] == PROBLEMS + "idempotency-key-missing"
    assert await count_referrals(session_factory) == before


async def test_same_key_and_body_replays_the_first_response_with_its_status(
    client: httpx.AsyncClient, school: RegisteredClient, session_factory: SessionFactory
) -> None:
    body, key = referral_body(), uuid.uuid4().hex
    first = await post_referral(client, school, body, key)
    before = await count_referrals(session_factory)
    again = await post_referral(client, school, body, key)
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await count_referrals(session_factory) == before


async def test_a_replay_is_audited_as_a_read_not_a_create(
    client: httpx.AsyncClient, school: RegisteredClient, session_factory: SessionFactory
) -> None:
    body, key = referral_body(), uuid.uuid4().hex
    first = (await post_referral(client, school, body, key)).json()
    await post_referral(client, school, body, key)
    assert await count_audit_events(session_factory, "create", first["id"]) == 1
    assert await count_audit_events(session_factory, "read", first["id"]) == 1


async def test_same_key_with_a_different_body_is_422(
    client: httpx.AsyncClient, school: RegisteredClient
) -> None:
    key = uuid.uuid4().hex
    await post_referral(client, school, referral_body(), key)
    response = await post_referral(client, school, referral_body(), key)
    assert response.status_code == 422
    assert response.json()["type"] == PROBLEMS + "idempotency-key-reused"


async def test_idempotency_keys_are_scoped_to_the_client(
    client: httpx.AsyncClient, school: RegisteredClient, other_school: RegisteredClient
) -> None:
    body, key = referral_body(), uuid.uuid4().hex
    first = await post_referral(client, school, body, key)
    second = await post_referral(client, other_school, body, key)
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["id"] != second.json()["id"]
    assert first.json()["child_id"] == second.json()["child_id"]


async def test_repeated_external_reference_is_409_naming_the_existing_referral(
    client: httpx.AsyncClient, school: RegisteredClient, session_factory: SessionFactory
) -> None:
    first = await create_referral(client, school)
    repeat = referral_body(external_reference=first["external_reference"])
    before = await count_referrals(session_factory)
    response = await post_referral(client, school, repeat)
    assert response.status_code == 409
    problem = response.json()
    assert problem["type"] == PROBLEMS + "duplicate-external-reference"
    assert problem["existing_id"] == first["id"]
    assert await count_referrals(session_factory) == before


async def test_repeated_external_reference_leaves_no_new_child_behind(
    client: httpx.AsyncClient, school: RegisteredClient, session_factory: SessionFactory
) -> None:
    first = await create_referral(client, school)
    repeat = referral_body(external_reference=first["external_reference"])
    await post_referral(client, school, repeat)
    assert (
        await count_rows(
            session_factory,
            "SELECT count(*) FROM child WHERE nhs_number = :nhs",
            nhs=repeat["child"]["nhs_number"],
        )
        == 0
    )


async def test_external_reference_is_unique_per_client_not_across_clients(
    client: httpx.AsyncClient, school: RegisteredClient, other_school: RegisteredClient
) -> None:
    first = await create_referral(client, school)
    same_reference = referral_body(external_reference=first["external_reference"])
    response = await post_referral(client, other_school, same_reference)
    assert response.status_code == 201


# --- re-referral ---------------------------------------------------------------------------------


async def test_referral_11_months_after_another_for_the_child_is_a_rereferral(
    client: httpx.AsyncClient, school: RegisteredClient
) -> None:
    nhs = next_nhs_number()
    await create_referral(client, school, referral_body(nhs_number=nhs, received_at=months_ago(11)))
    created = await create_referral(client, school, referral_body(nhs_number=nhs))
    assert (created["rereferral"], created["rereferral_count"]) == (True, 1)


async def test_referral_13_months_after_another_for_the_child_is_not_a_rereferral(
    client: httpx.AsyncClient, school: RegisteredClient
) -> None:
    nhs = next_nhs_number()
    await create_referral(client, school, referral_body(nhs_number=nhs, received_at=months_ago(13)))
    created = await create_referral(client, school, referral_body(nhs_number=nhs))
    assert (created["rereferral"], created["rereferral_count"]) == (False, 0)


async def test_rereferral_count_holds_every_referral_of_the_previous_12_months(
    client: httpx.AsyncClient,
    school: RegisteredClient,
    other_school: RegisteredClient,
    front_door: RegisteredClient,
) -> None:
    nhs = next_nhs_number()
    for months, sender in ((13, school), (9, school), (2, other_school)):
        body = referral_body(nhs_number=nhs, received_at=months_ago(months))
        await create_referral(client, sender, body)
    created = await create_referral(client, school, referral_body(nhs_number=nhs))
    as_front_door = await client.get(f"/v1/referrals/{created['id']}", headers=front_door.headers)
    # Every agency's referrals count for the Front Door; the school sees only its own (issue 10).
    assert (as_front_door.json()["rereferral"], as_front_door.json()["rereferral_count"]) == (
        True,
        2,
    )
    assert (created["rereferral"], created["rereferral_count"]) == (True, 1)


async def test_the_create_function_counts_rereferrals_by_calendar_months_at_the_edges(
    client: httpx.AsyncClient, school: RegisteredClient
) -> None:
    nhs = next_nhs_number()
    received = [
        datetime(2024, 2, 28, 9, 59, 59, tzinfo=UTC),
        datetime(2024, 2, 28, 10, 0, tzinfo=UTC),
        datetime(2024, 2, 29, 10, 0, tzinfo=UTC),
        datetime(2025, 2, 28, 10, 0, tzinfo=UTC),
        datetime(2025, 3, 1, 10, 0, tzinfo=UTC),
    ]
    counts = []
    for moment in received:
        body = referral_body(nhs_number=nhs, received_at=moment.isoformat())
        counts.append((await create_referral(client, school, body))["rereferral_count"])

    # 28 February 2025 reaches back to 10:00 on 28 February 2024 (not the second before it),
    # 1 March 2025 to 1 March 2024 (past the leap day).
    assert counts == [0, 1, 2, 2, 1]


async def test_a_referral_for_another_child_does_not_make_a_rereferral(
    client: httpx.AsyncClient, school: RegisteredClient
) -> None:
    await create_referral(client, school, referral_body(received_at=months_ago(1)))
    created = await create_referral(client, school)
    assert created["rereferral"] is False


async def test_a_withdrawn_referral_does_not_count_towards_rereferral(
    client: httpx.AsyncClient, school: RegisteredClient
) -> None:
    nhs = next_nhs_number()
    earlier = await create_referral(
        client, school, referral_body(nhs_number=nhs, received_at=months_ago(3))
    )
    assert (await withdraw(client, school, earlier["id"])).status_code == 200
    created = await create_referral(client, school, referral_body(nhs_number=nhs))
    assert (created["rereferral"], created["rereferral_count"]) == (False, 0)


async def test_rereferral_is_stored_and_read_back(
    client: httpx.AsyncClient, school: RegisteredClient
) -> None:
    nhs = next_nhs_number()
    await create_referral(client, school, referral_body(nhs_number=nhs, received_at=months_ago(6)))
    created = await create_referral(client, school, referral_body(nhs_number=nhs))
    read = await client.get(f"/v1/referrals/{created['id']}", headers=school.headers)
    assert (read.json()["rereferral"], read.json()["rereferral_count"]) == (True, 1)


# --- reading and record scoping ------------------------------------------------------------------


async def test_the_referring_agency_reads_its_referral_back(
    client: httpx.AsyncClient, school: RegisteredClient
) -> None:
    created = await create_referral(client, school)
    response = await client.get(f"/v1/referrals/{created['id']}", headers=school.headers)
    assert response.status_code == 200
    assert response.json() == created


async def test_another_client_of_the_same_agency_reads_the_referral(
    client: httpx.AsyncClient, school: RegisteredClient, make_client: ClientMaker
) -> None:
    colleague = await make_client(["referrals:read"], agency_name=school.agency_name)
    created = await create_referral(client, school)
    response = await client.get(f"/v1/referrals/{created['id']}", headers=colleague.headers)
    assert response.status_code == 200


async def test_another_agency_gets_404_exactly_like_a_missing_referral(
    client: httpx.AsyncClient, school: RegisteredClient, other_school: RegisteredClient
) -> None:
    created = await create_referral(client, school)
    hidden = await client.get(f"/v1/referrals/{created['id']}", headers=other_school.headers)
    missing = await client.get(f"/v1/referrals/{uuid.uuid4()}", headers=other_school.headers)
    assert (hidden.status_code, missing.status_code) == (404, 404)
    strip = ("request_id",)
    assert {k: v for k, v in hidden.json().items() if k not in strip} == {
        k: v for k, v in missing.json().items() if k not in strip
    }


async def test_another_agency_does_not_see_the_referral_in_lists(
    client: httpx.AsyncClient, school: RegisteredClient, other_school: RegisteredClient
) -> None:
    created = await create_referral(client, school)
    own = await create_referral(client, other_school)
    listed = await list_ids(client, other_school, limit=100)
    assert own["id"] in listed
    assert created["id"] not in listed
    by_child = await list_ids(client, other_school, child_id=created["child_id"])
    assert by_child == []


async def test_the_front_door_reads_and_lists_every_agencys_referrals(
    client: httpx.AsyncClient,
    school: RegisteredClient,
    other_school: RegisteredClient,
    front_door: RegisteredClient,
) -> None:
    nhs = next_nhs_number()
    first = await create_referral(client, school, referral_body(nhs_number=nhs))
    second = await create_referral(client, other_school, referral_body(nhs_number=nhs))
    for referral in (first, second):
        response = await client.get(f"/v1/referrals/{referral['id']}", headers=front_door.headers)
        assert response.status_code == 200
    listed = await list_ids(client, front_door, child_id=first["child_id"])
    assert listed == [second["id"], first["id"]]


async def test_a_read_appends_an_audit_event_with_the_access_reason(
    client: httpx.AsyncClient,
    school: RegisteredClient,
    front_door: RegisteredClient,
    session_factory: SessionFactory,
) -> None:
    created = await create_referral(client, school)
    headers = {**front_door.headers, "X-Access-Reason": "MASH screening"}
    await client.get(f"/v1/referrals/{created['id']}", headers=headers)
    assert (
        await count_rows(
            session_factory,
            "SELECT count(*) FROM audit_event WHERE action = 'read' AND resource_id = :rid "
            "AND client_id = :client AND access_reason = 'MASH screening'",
            rid=created["id"],
            client=front_door.client_id,
        )
        == 1
    )


async def test_a_list_appends_one_audit_event(
    client: httpx.AsyncClient, school: RegisteredClient, session_factory: SessionFactory
) -> None:
    await create_referral(client, school)
    await list_ids(client, school)
    assert await count_audit_events(session_factory, "list", client_id=school.client_id) == 1


async def test_a_hidden_referral_read_is_not_audited_as_a_read(
    client: httpx.AsyncClient,
    school: RegisteredClient,
    other_school: RegisteredClient,
    session_factory: SessionFactory,
) -> None:
    created = await create_referral(client, school)
    await client.get(f"/v1/referrals/{created['id']}", headers=other_school.headers)
    assert await count_audit_events(session_factory, "read", created["id"]) == 0


async def test_read_of_a_malformed_id_is_422(
    client: httpx.AsyncClient, school: RegisteredClient
) -> None:
    response = await client.get("/v1/referrals/not-a-uuid", headers=school.headers)
    assert response.status_code == 422


# --- list filters and pagination -----------------------------------------------------------------


async def test_list_filters_by_status(client: httpx.AsyncClient, school: RegisteredClient) -> None:
    received = await create_referral(client, school)
    withdrawn = await create_referral(client, school)
    await withdraw(client, school, withdrawn["id"])
    assert await list_ids(client, school, status="withdrawn") == [withdrawn["id"]]
    assert await list_ids(client, school, status="received") == [received["id"]]


async def test_list_filters_by_received_range_from_inclusive_to_exclusive(
    client: httpx.AsyncClient, school: RegisteredClient
) -> None:
    first, _ = [
        await create_referral(client, school, referral_body(received_at=received_at))
        for received_at in ("2025-03-01T09:00:00+00:00", "2025-03-02T09:00:00+00:00")
    ]
    inside = await list_ids(
        client,
        school,
        received_from="2025-03-01T09:00:00+00:00",
        received_to="2025-03-02T09:00:00+00:00",
    )
    assert inside == [first["id"]]


async def test_list_range_needs_a_utc_offset(
    client: httpx.AsyncClient, school: RegisteredClient
) -> None:
    response = await client.get(
        "/v1/referrals", params={"received_from": "2025-03-01T09:00:00"}, headers=school.headers
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "query.received_from"


async def test_list_filters_by_child(client: httpx.AsyncClient, school: RegisteredClient) -> None:
    wanted = await create_referral(client, school)
    await create_referral(client, school)
    assert await list_ids(client, school, child_id=wanted["child_id"]) == [wanted["id"]]


async def test_list_filters_overdue_referrals(
    client: httpx.AsyncClient, school: RegisteredClient, front_door: RegisteredClient
) -> None:
    overdue = await create_referral(client, school, referral_body(received_at=months_ago(1)))
    decided = await create_referral(client, school, referral_body(received_at=months_ago(1)))
    await decide(client, front_door, decided["id"])
    fresh = await create_referral(client, school)
    assert await list_ids(client, school, overdue="true") == [overdue["id"]]
    assert await list_ids(client, school, overdue="false") == [fresh["id"], decided["id"]]


async def test_list_filters_urgent_referrals(
    client: httpx.AsyncClient, school: RegisteredClient
) -> None:
    urgent = await create_referral(client, school, referral_body(immediate_risk=True))
    calm = await create_referral(client, school)
    assert await list_ids(client, school, urgent="true") == [urgent["id"]]
    assert await list_ids(client, school, urgent="false") == [calm["id"]]


async def test_list_pages_newest_first_with_a_cursor(
    client: httpx.AsyncClient, school: RegisteredClient
) -> None:
    created = [
        await create_referral(
            client, school, referral_body(received_at=f"2025-04-0{day}T10:00:00+00:00")
        )
        for day in (1, 2, 3, 4, 5)
    ]
    newest_first = [referral["id"] for referral in reversed(created)]
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(3):
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/v1/referrals", params=params, headers=school.headers)).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
    assert seen == newest_first
    assert cursor is None


async def test_list_pages_keep_referrals_received_at_the_same_instant_apart(
    client: httpx.AsyncClient, school: RegisteredClient
) -> None:
    same = "2025-05-01T10:00:00+00:00"
    ids = {
        (await create_referral(client, school, referral_body(received_at=same)))["id"]
        for _ in range(3)
    }
    first = (await client.get("/v1/referrals", params={"limit": 2}, headers=school.headers)).json()
    second = (
        await client.get(
            "/v1/referrals",
            params={"limit": 2, "cursor": first["next_cursor"]},
            headers=school.headers,
        )
    ).json()
    seen = [item["id"] for item in first["items"] + second["items"]]
    assert sorted(seen) == sorted(ids)


# The last: a well-formed position whose instant is past year 9999 once in UTC.
@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        "W10",
        "WyJ4IiwgInkiXQ",
        "WyI5OTk5LTEyLTMxVDIzOjU5OjU5LTE0OjAwIiwgIjAwMDAwMDAwLTAwMDAtNDAwMC04MDAwLTAwMDAwMDAwMDAwMCJd",
    ],
)
async def test_list_with_a_cursor_it_did_not_issue_is_422_naming_the_cursor(
    client: httpx.AsyncClient, school: RegisteredClient, cursor: str
) -> None:
    response = await client.get("/v1/referrals", params={"cursor": cursor}, headers=school.headers)
    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == ["query.cursor"]


async def test_list_limit_is_capped_at_100(
    client: httpx.AsyncClient, school: RegisteredClient
) -> None:
    response = await client.get("/v1/referrals", params={"limit": 101}, headers=school.headers)
    assert response.status_code == 422


# --- decision ------------------------------------------------------------------------------------


async def test_decision_marks_the_referral_decided_and_the_referrer_reads_it(
    client: httpx.AsyncClient, school: RegisteredClient, front_door: RegisteredClient
) -> None:
    created = await create_referral(client, school)
    response = await decide(client, front_door, created["id"], outcome="early_help")
    assert response.status_code == 200
    read = (await client.get(f"/v1/referrals/{created['id']}", headers=school.headers)).json()
    assert read["status"] == "decided"
    assert read["decision"]["outcome"] == "early_help"
    assert read["decision"]["decided_by"] == "Front Door team manager"
    assert read["decision"]["strategy_discussion_due_at"] is None


async def test_decided_at_defaults_to_now(
    client: httpx.AsyncClient, school: RegisteredClient, front_door: RegisteredClient
) -> None:
    created = await create_referral(client, school)
    before = datetime.now(UTC)
    decided = (await decide(client, front_door, created["id"])).json()
    assert before <= at(decided["decision"]["decided_at"]) <= datetime.now(UTC)


async def test_section47_decision_sets_the_strategy_discussion_24_hours_after_receipt(
    client: httpx.AsyncClient, school: RegisteredClient, front_door: RegisteredClient
) -> None:
    created = await create_referral(
        client, school, referral_body(received_at="2025-06-02T08:00:00+00:00")
    )
    response = await decide(
        client,
        front_door,
        created["id"],
        outcome="section47_strategy_discussion",
        decided_at="2025-06-02T15:00:00+01:00",
    )
    decision = response.json()["decision"]
    assert at(decision["strategy_discussion_due_at"]) == datetime(2025, 6, 3, 8, tzinfo=UTC)
    assert at(decision["decided_at"]) == datetime(2025, 6, 2, 14, tzinfo=UTC)


async def test_non_section47_decision_without_parental_awareness_is_409(
    client: httpx.AsyncClient, school: RegisteredClient, front_door: RegisteredClient
) -> None:
    created = await create_referral(
        client, school, referral_body(parental_awareness=not_informed())
    )
    response = await decide(client, front_door, created["id"], outcome="early_help")
    assert response.status_code == 409
    assert response.json()["type"] == PROBLEMS + "parental-awareness-required"
    read = (await client.get(f"/v1/referrals/{created['id']}", headers=school.headers)).json()
    assert read["status"] == "received"


async def test_section47_decision_without_parental_awareness_succeeds(
    client: httpx.AsyncClient, school: RegisteredClient, front_door: RegisteredClient
) -> None:
    created = await create_referral(
        client, school, referral_body(parental_awareness=not_informed())
    )
    response = await decide(
        client, front_door, created["id"], outcome="section47_strategy_discussion"
    )
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "decided"
    expected = at(created["received_at"]) + timedelta(hours=24)
    assert at(body["decision"]["strategy_discussion_due_at"]) == expected


async def test_parents_not_informed_but_consenting_allow_any_outcome(
    client: httpx.AsyncClient, school: RegisteredClient, front_door: RegisteredClient
) -> None:
    created = await create_referral(
        client, school, referral_body(parental_awareness=not_informed(consent="given"))
    )
    response = await decide(client, front_door, created["id"], outcome="no_further_action")
    assert response.status_code == 200


async def test_parents_informed_but_refusing_consent_allow_any_outcome(
    client: httpx.AsyncClient, school: RegisteredClient, front_door: RegisteredClient
) -> None:
    awareness = {"informed": True, "consent": "refused"}
    created = await create_referral(client, school, referral_body(parental_awareness=awareness))
    response = await decide(client, front_door, created["id"], outcome="signposted_universal")
    assert response.status_code == 200


async def test_a_second_decision_is_409(
    client: httpx.AsyncClient, school: RegisteredClient, front_door: RegisteredClient
) -> None:
    created = await create_referral(client, school)
    await decide(client, front_door, created["id"])
    response = await decide(client, front_door, created["id"], outcome="no_further_action")
    assert response.status_code == 409
    assert response.json()["type"] == PROBLEMS + "invalid-transition"


async def test_decided_at_before_received_at_is_422_naming_decided_at(
    client: httpx.AsyncClient, school: RegisteredClient, front_door: RegisteredClient
) -> None:
    created = await create_referral(
        client, school, referral_body(received_at="2025-06-02T08:00:00+00:00")
    )
    response = await decide(
        client, front_door, created["id"], decided_at="2025-06-02T07:59:00+00:00"
    )
    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == ["body.decided_at"]


async def test_decided_at_in_the_future_is_422(
    client: httpx.AsyncClient, school: RegisteredClient, front_door: RegisteredClient
) -> None:
    created = await create_referral(client, school)
    future = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    response = await decide(client, front_door, created["id"], decided_at=future)
    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == ["body.decided_at"]


async def test_decision_on_a_missing_referral_is_404(
    client: httpx.AsyncClient, front_door: RegisteredClient
) -> None:
    response = await decide(client, front_door, str(uuid.uuid4()))
    assert response.status_code == 404


async def test_decision_needs_the_decide_scope(
    client: httpx.AsyncClient, school: RegisteredClient
) -> None:
    created = await create_referral(client, school)
    response = await decide(client, school, created["id"])
    assert response.status_code == 403


async def test_a_decision_is_audited_as_an_update(
    client: httpx.AsyncClient,
    school: RegisteredClient,
    front_door: RegisteredClient,
    session_factory: SessionFactory,
) -> None:
    created = await create_referral(client, school)
    await decide(client, front_door, created["id"])
    assert await count_audit_events(session_factory, "update", created["id"]) == 1


# --- withdrawal ----------------------------------------------------------------------------------


async def test_the_referrer_withdraws_an_undecided_referral(
    client: httpx.AsyncClient, school: RegisteredClient
) -> None:
    created = await create_referral(client, school)
    response = await withdraw(client, school, created["id"])
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "withdrawn"
    assert body["withdrawal_reason"].startswith("Sent in error")
    assert at(body["withdrawn_at"]) >= at(created["created_at"])


async def test_withdrawing_a_decided_referral_is_409(
    client: httpx.AsyncClient, school: RegisteredClient, front_door: RegisteredClient
) -> None:
    created = await create_referral(client, school)
    await decide(client, front_door, created["id"])
    response = await withdraw(client, school, created["id"])
    assert response.status_code == 409
    assert response.json()["type"] == PROBLEMS + "invalid-transition"


async def test_deciding_a_withdrawn_referral_is_409(
    client: httpx.AsyncClient, school: RegisteredClient, front_door: RegisteredClient
) -> None:
    created = await create_referral(client, school)
    await withdraw(client, school, created["id"])
    response = await decide(client, front_door, created["id"])
    assert response.status_code == 409


async def test_withdrawing_twice_is_409(
    client: httpx.AsyncClient, school: RegisteredClient
) -> None:
    created = await create_referral(client, school)
    await withdraw(client, school, created["id"])
    response = await withdraw(client, school, created["id"])
    assert response.status_code == 409


async def test_another_agency_cannot_withdraw_and_gets_404(
    client: httpx.AsyncClient, school: RegisteredClient, other_school: RegisteredClient
) -> None:
    created = await create_referral(client, school)
    response = await withdraw(client, other_school, created["id"])
    assert response.status_code == 404
    read = (await client.get(f"/v1/referrals/{created['id']}", headers=school.headers)).json()
    assert read["status"] == "received"


async def test_withdraw_with_a_blank_reason_is_422(
    client: httpx.AsyncClient, school: RegisteredClient
) -> None:
    created = await create_referral(client, school)
    response = await client.post(
        f"/v1/referrals/{created['id']}/withdraw", json={"reason": " "}, headers=school.headers
    )
    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == ["body.reason"]
