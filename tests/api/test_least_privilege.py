"""Least privilege (issue 10): another agency's record answers exactly as a missing one, on every
route that names a record, and child matching tells an agency nothing it did not send itself."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from service.db import SessionFactory
from tests.bodies import valid_decision_body, valid_withdraw_body
from tests.builders.assessments import assessment_body, child_ref, publish_demo, write_headers
from tests.builders.referrals import (
    count_audit_events,
    count_rows,
    create_referral,
    next_nhs_number,
    referral_body,
    unique_family_name,
)
from tests.conftest import ClientMaker, RegisteredClient

# Every scope a partner agency can hold, but not the Front Door's read-all.
PARTNER_SCOPES = [
    "referrals:write",
    "referrals:read",
    "referrals:decide",
    "assessments:write",
    "assessments:read",
]
FRONT_DOOR_SCOPES = ["referrals:read", "referrals:read:all", "referrals:decide", "assessments:read"]

# The path parameters that name an agency's record (or the child such records are about).
RECORD_PARAMETERS = {"referral_id", "child_id", "assessment_id"}


@dataclass(frozen=True)
class Records:
    """Agency A's records about one child."""

    referral_id: str
    child_id: str
    assessment_id: str


@pytest.fixture
async def agency_a(make_client: ClientMaker) -> RegisteredClient:
    return await make_client(PARTNER_SCOPES, agency_type="school")


@pytest.fixture
async def agency_b(make_client: ClientMaker) -> RegisteredClient:
    return await make_client(PARTNER_SCOPES, agency_type="health")


@pytest.fixture
async def front_door(make_client: ClientMaker) -> RegisteredClient:
    return await make_client(FRONT_DOOR_SCOPES, agency_type="front_door")


@pytest.fixture
async def records_of_a(
    client: httpx.AsyncClient, agency_a: RegisteredClient, session_factory: SessionFactory
) -> Records:
    await publish_demo(session_factory)
    child = child_ref()
    assessment = await client.post(
        "/v1/assessments", json=assessment_body(child=child), headers=write_headers(agency_a)
    )
    assert assessment.status_code == 201, assessment.text
    body = referral_body()
    body["child"].update(
        {key: child[key] for key in ("la_child_id", "family_name", "date_of_birth")}
    )
    referral = await create_referral(client, agency_a, body)
    assert referral["child_id"] == assessment.json()["child_id"]
    return Records(referral["id"], referral["child_id"], assessment.json()["id"])


Call = Callable[[httpx.AsyncClient, RegisteredClient, str], Awaitable[httpx.Response]]


def _get(path: str) -> Call:
    async def call(http: httpx.AsyncClient, who: RegisteredClient, record: str) -> httpx.Response:
        return await http.get(path.format(record), headers=who.headers)

    return call


def _post(path: str, body: Callable[[], dict[str, Any]]) -> Call:
    async def call(http: httpx.AsyncClient, who: RegisteredClient, record: str) -> httpx.Response:
        return await http.post(path.format(record), json=body(), headers=who.headers)

    return call


# (method, OpenAPI path template) -> (which of A's records it names, how to call it).
ROUTES: dict[tuple[str, str], tuple[str, Call]] = {
    ("get", "/v1/referrals/{referral_id}"): ("referral_id", _get("/v1/referrals/{}")),
    ("post", "/v1/referrals/{referral_id}/decision"): (
        "referral_id",
        _post("/v1/referrals/{}/decision", valid_decision_body),
    ),
    ("post", "/v1/referrals/{referral_id}/withdraw"): (
        "referral_id",
        _post("/v1/referrals/{}/withdraw", valid_withdraw_body),
    ),
    ("get", "/v1/children/{child_id}"): ("child_id", _get("/v1/children/{}")),
    ("get", "/v1/children/{child_id}/assessments"): (
        "child_id",
        _get("/v1/children/{}/assessments"),
    ),
    ("get", "/v1/assessments/{assessment_id}"): ("assessment_id", _get("/v1/assessments/{}")),
}
# Lists that filter by a record: another agency's child lists exactly as an unknown child does.
LISTS: dict[str, tuple[str, Call]] = {
    "/v1/referrals?child_id": ("child_id", _get("/v1/referrals?child_id={}")),
}


def _shape(response: httpx.Response) -> dict[str, Any]:
    """What a caller can tell apart: the status and the body without its request id."""
    body = response.json()
    if isinstance(body, dict):
        body.pop("request_id", None)
    return {"status": response.status_code, "body": body}


async def _state_of(factory: SessionFactory, records: Records) -> tuple[object, ...]:
    """The rows an action on A's records could change."""
    async with factory() as session:
        from sqlalchemy import text

        referral = (
            await session.execute(
                text(
                    "SELECT status, decision_outcome, withdrawn_at, decided_at FROM referral "
                    "WHERE id = :id"
                ),
                {"id": uuid.UUID(records.referral_id)},
            )
        ).one()
    children = await count_rows(factory, "SELECT count(*) FROM child")
    referrals = await count_rows(factory, "SELECT count(*) FROM referral")
    return (*referral, children, referrals)


def test_the_matrix_covers_every_route_that_names_a_record(app: FastAPI) -> None:
    named = {
        (method, path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
        if RECORD_PARAMETERS & {part.strip("{}") for part in path.split("/")}
    }
    assert named == set(ROUTES)


@pytest.mark.parametrize("route", sorted(ROUTES) + sorted(("list", p) for p in LISTS))
async def test_another_agency_gets_what_a_missing_id_gets_and_changes_nothing(
    client: httpx.AsyncClient,
    agency_b: RegisteredClient,
    records_of_a: Records,
    session_factory: SessionFactory,
    route: tuple[str, str],
) -> None:
    parameter, call = ROUTES[route] if route[0] != "list" else LISTS[route[1]]
    before = await _state_of(session_factory, records_of_a)

    theirs = await call(client, agency_b, getattr(records_of_a, parameter))
    missing = await call(client, agency_b, str(uuid.uuid4()))

    assert _shape(theirs) == _shape(missing)
    assert theirs.status_code in (200, 404)
    assert await _state_of(session_factory, records_of_a) == before


FRONT_DOOR_ROUTES = [
    ("get", "/v1/referrals/{referral_id}"),
    ("post", "/v1/referrals/{referral_id}/decision"),
    ("get", "/v1/children/{child_id}"),
    ("get", "/v1/children/{child_id}/assessments"),
    ("get", "/v1/assessments/{assessment_id}"),
]


@pytest.mark.parametrize("route", FRONT_DOOR_ROUTES)
async def test_the_front_door_sees_and_acts_on_every_agency_s_records(
    client: httpx.AsyncClient,
    front_door: RegisteredClient,
    records_of_a: Records,
    route: tuple[str, str],
) -> None:
    parameter, call = ROUTES[route]
    response = await call(client, front_door, getattr(records_of_a, parameter))
    assert response.status_code == 200, response.text
    if route[1] == "/v1/children/{child_id}/assessments":
        assert [item["id"] for item in response.json()["items"]] == [records_of_a.assessment_id]


async def test_denied_attempts_are_audited_once_each_without_telling_the_caller(
    client: httpx.AsyncClient,
    agency_b: RegisteredClient,
    records_of_a: Records,
    session_factory: SessionFactory,
) -> None:
    before = await count_audit_events(session_factory, "denied", client_id=agency_b.client_id)
    for parameter, call in ROUTES.values():
        response = await call(client, agency_b, getattr(records_of_a, parameter))
        assert "denied" not in response.text
    after = await count_audit_events(session_factory, "denied", client_id=agency_b.client_id)
    assert after - before == len(ROUTES)


async def test_a_missing_scope_is_audited_as_denied(
    client: httpx.AsyncClient,
    make_client: ClientMaker,
    records_of_a: Records,
    session_factory: SessionFactory,
) -> None:
    writer_only = await make_client(["referrals:write"])
    response = await client.get(
        f"/v1/referrals/{records_of_a.referral_id}", headers=writer_only.headers
    )
    assert response.status_code == 403
    assert await count_audit_events(session_factory, "denied", client_id=writer_only.client_id) == 1


async def test_a_decide_only_client_cannot_decide_read_or_learn_of_another_agency_s_referral(
    client: httpx.AsyncClient,
    make_client: ClientMaker,
    records_of_a: Records,
    session_factory: SessionFactory,
) -> None:
    decider = await make_client(["referrals:decide"], agency_type="health")
    before = await _state_of(session_factory, records_of_a)
    decide = _post("/v1/referrals/{}/decision", valid_decision_body)

    theirs = await decide(client, decider, records_of_a.referral_id)
    missing = await decide(client, decider, str(uuid.uuid4()))
    read = await client.get(f"/v1/referrals/{records_of_a.referral_id}", headers=decider.headers)

    assert _shape(theirs) == _shape(missing)
    assert theirs.status_code == 404
    assert read.status_code == 403
    assert await _state_of(session_factory, records_of_a) == before


async def test_a_second_decision_on_a_record_the_caller_cannot_see_is_404_not_409(
    client: httpx.AsyncClient,
    front_door: RegisteredClient,
    agency_b: RegisteredClient,
    records_of_a: Records,
) -> None:
    decide = _post("/v1/referrals/{}/decision", valid_decision_body)
    assert (await decide(client, front_door, records_of_a.referral_id)).status_code == 200
    again = await decide(client, agency_b, records_of_a.referral_id)
    missing = await decide(client, agency_b, str(uuid.uuid4()))
    assert again.status_code == 404
    assert _shape(again) == _shape(missing)


def _child_as_b_knows_it(nhs_number: str) -> dict[str, Any]:
    """B knows the child by NHS number with names and a birthday of its own, and no other id."""
    child: dict[str, Any] = referral_body(nhs_number=nhs_number)["child"]
    child.update(given_name="Robin", family_name="Elsewhere", date_of_birth="2016-02-29")
    del child["la_child_id"], child["upn"]
    return child


IDENTITY = ("given_name", "family_name", "date_of_birth", "nhs_number", "la_child_id", "upn")


async def test_a_partner_s_referral_about_another_agency_s_child_discloses_none_of_theirs(
    client: httpx.AsyncClient,
    agency_a: RegisteredClient,
    agency_b: RegisteredClient,
    front_door: RegisteredClient,
) -> None:
    nhs_number = next_nhs_number()
    a_body = referral_body(nhs_number=nhs_number)
    # Names no other part of any body can hold by chance, so finding them would be a disclosure.
    a_body["child"].update(given_name=unique_family_name(), family_name=unique_family_name())
    first = await create_referral(client, agency_a, a_body)
    await create_referral(client, agency_a, referral_body(nhs_number=nhs_number))
    b_body = referral_body(nhs_number=nhs_number)
    b_body["child"] = _child_as_b_knows_it(nhs_number)

    b_referral = await create_referral(client, agency_b, b_body)
    b_child = await client.get(f"/v1/children/{b_referral['child_id']}", headers=agency_b.headers)
    fd_child = await client.get(f"/v1/children/{first['child_id']}", headers=front_door.headers)
    fd_referral = await client.get(f"/v1/referrals/{b_referral['id']}", headers=front_door.headers)

    assert b_referral["child_id"] == first["child_id"]  # matched, never duplicated
    assert (b_referral["rereferral"], b_referral["rereferral_count"]) == (False, 0)
    assert b_referral["child"] == b_body["child"] | b_referral["child"]
    a_child = a_body["child"]
    for text in (
        a_child["given_name"],
        a_child["family_name"],
        a_child["la_child_id"],
        a_child["upn"],
    ):
        assert text not in b_child.text
        assert text not in str(b_referral)
    assert b_referral["child"]["date_of_birth"] == "2016-02-29" != a_child["date_of_birth"]
    shown = b_child.json()
    assert {key: shown[key] for key in IDENTITY} == {
        "given_name": "Robin",
        "family_name": "Elsewhere",
        "date_of_birth": "2016-02-29",
        "nhs_number": nhs_number,
        "la_child_id": None,
        "upn": None,
    }
    assert [entry["id"] for entry in shown["timeline"]] == [b_referral["id"]]
    # The Front Door sees the whole child and the re-referral context.
    assert fd_child.json()["la_child_id"] == a_child["la_child_id"]
    assert (fd_referral.json()["rereferral"], fd_referral.json()["rereferral_count"]) == (True, 2)


async def test_a_partner_s_own_history_is_its_re_referral_context(
    client: httpx.AsyncClient, agency_a: RegisteredClient, agency_b: RegisteredClient
) -> None:
    nhs_number = next_nhs_number()
    await create_referral(client, agency_a, referral_body(nhs_number=nhs_number))
    b_body = referral_body(nhs_number=nhs_number)
    b_body["child"] = _child_as_b_knows_it(nhs_number)
    await create_referral(client, agency_b, b_body)
    again = referral_body(nhs_number=nhs_number)
    again["child"] = _child_as_b_knows_it(nhs_number)

    second = await create_referral(client, agency_b, again)
    read = await client.get(f"/v1/referrals/{second['id']}", headers=agency_b.headers)

    assert (second["rereferral"], second["rereferral_count"]) == (True, 1)
    assert (read.json()["rereferral"], read.json()["rereferral_count"]) == (True, 1)


async def test_an_assessment_naming_only_an_nhs_number_gets_no_age_from_another_agency(
    client: httpx.AsyncClient,
    agency_a: RegisteredClient,
    agency_b: RegisteredClient,
    session_factory: SessionFactory,
) -> None:
    await publish_demo(session_factory)
    nhs_number = next_nhs_number()
    await create_referral(client, agency_a, referral_body(nhs_number=nhs_number))
    body = assessment_body()
    body["child"] = {"nhs_number": nhs_number}

    response = await client.post("/v1/assessments", json=body, headers=write_headers(agency_b))

    assert response.status_code == 201, response.text
    assert response.json()["child_age_years"] is None
