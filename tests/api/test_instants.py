"""Instants at the edge of what can be represented (issue 10, finding 8): an instant outside years
1-9999 once converted to UTC, or on either end of that range (which the driver sends as -infinity
and infinity), is a 422 naming its parameter or field, never a 500."""

from __future__ import annotations

import httpx
import pytest

from tests.bodies import valid_decision_body
from tests.builders.referrals import create_referral, post_referral, referral_body
from tests.conftest import ClientMaker

# Each is valid ISO 8601 with an offset, but is in the year 10000 or 0 in UTC.
PAST_THE_END = "9999-12-31T23:59:59-14:00"
BEFORE_THE_START = "0001-01-01T00:00:00+14:00"
# The driver would send these as infinity and -infinity.
LAST_PYTHON_INSTANT = "9999-12-31T23:59:59.999999+00:00"
FIRST_PYTHON_INSTANT = "0001-01-01T00:00:00Z"
# The instants just inside them stay valid input.
LAST_INSTANT = "9999-12-31T23:59:59.999998Z"
FIRST_INSTANT = "0001-01-01T00:00:00-14:00"


# Both listings whose range is given as two instants.
RANGE_PARAMETERS = pytest.mark.parametrize(
    ("path", "scopes", "start", "end"),
    [
        ("/v1/referrals", ["referrals:read"], "received_from", "received_to"),
        ("/v1/audit-events", ["audit:read"], "occurred_from", "occurred_to"),
    ],
)


def assert_problem_names(response: httpx.Response, *fields: str) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    named = {error["field"] for error in response.json()["errors"]}
    assert named == set(fields)


@RANGE_PARAMETERS
async def test_instants_out_of_range_in_utc_are_422_naming_the_parameters(
    client: httpx.AsyncClient,
    make_client: ClientMaker,
    path: str,
    scopes: list[str],
    start: str,
    end: str,
) -> None:
    reader = await make_client(scopes)
    response = await client.get(
        path, params={start: PAST_THE_END, end: BEFORE_THE_START}, headers=reader.headers
    )
    assert_problem_names(response, f"query.{start}", f"query.{end}")


@RANGE_PARAMETERS
async def test_the_instants_the_driver_sends_as_infinity_are_422(
    client: httpx.AsyncClient,
    make_client: ClientMaker,
    path: str,
    scopes: list[str],
    start: str,
    end: str,
) -> None:
    reader = await make_client(scopes)
    response = await client.get(
        path,
        params={start: FIRST_PYTHON_INSTANT, end: LAST_PYTHON_INSTANT},
        headers=reader.headers,
    )
    assert_problem_names(response, f"query.{start}", f"query.{end}")


@RANGE_PARAMETERS
async def test_the_first_and_last_representable_instants_are_accepted(
    client: httpx.AsyncClient,
    make_client: ClientMaker,
    path: str,
    scopes: list[str],
    start: str,
    end: str,
) -> None:
    reader = await make_client(scopes)
    response = await client.get(
        path, params={start: FIRST_INSTANT, end: LAST_INSTANT}, headers=reader.headers
    )
    assert response.status_code == 200, response.text
    assert isinstance(response.json()["items"], list)


async def test_a_received_at_before_year_one_in_utc_is_422(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    school = await make_client(["referrals:write"])
    response = await post_referral(client, school, referral_body(received_at=BEFORE_THE_START))
    assert_problem_names(response, "body.received_at")


async def test_a_received_at_of_minus_infinity_for_the_driver_is_422(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    school = await make_client(["referrals:write"])
    response = await post_referral(client, school, referral_body(received_at=FIRST_PYTHON_INSTANT))
    assert_problem_names(response, "body.received_at")


async def test_a_received_at_just_after_the_first_instant_is_stored_as_given(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    school = await make_client(["referrals:write"])
    created = await create_referral(client, school, referral_body(received_at=FIRST_INSTANT))
    assert created["received_at"] == "0001-01-01T14:00:00Z"
    assert created["decision_due_at"] == "0001-01-02T14:00:00Z"


async def test_a_decided_at_before_year_one_in_utc_is_422(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    school = await make_client(["referrals:write", "referrals:read"])
    front_door = await make_client(["referrals:decide"], agency_type="front_door")
    referral = await create_referral(client, school)
    response = await client.post(
        f"/v1/referrals/{referral['id']}/decision",
        json=valid_decision_body(decided_at=BEFORE_THE_START),
        headers=front_door.headers,
    )
    assert_problem_names(response, "body.decided_at")
