"""Every referral validation rule, through the HTTP API: 422 naming the field, nothing stored.

Each case starts from a valid referral for a new child, breaks one thing, and checks that the
problem's `errors` name exactly the field at fault and that neither a referral nor the child was
written (the schema refuses the body before the route runs, so the idempotency key stays unused).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from schemas.children import add_months
from schemas.common import today_in_uk
from service.db import SessionFactory
from tests.bodies import valid_unborn_child_body
from tests.builders.referrals import (
    count_children_with_nhs_number,
    count_referrals,
    count_rows,
    post_referral,
    referral_body,
)
from tests.conftest import ClientMaker

Body = dict[str, Any]
Path = tuple[str | int, ...]
_DROP = object()


def days_from_today(days: int) -> str:
    return (today_in_uk() + timedelta(days=days)).isoformat()


def put(path: Path, value: Any) -> Callable[[Body], None]:
    """A change setting (or with _DROP removing) the value at `path`."""

    def change(body: Body) -> None:
        parent: Any = body
        for key in path[:-1]:
            parent = parent[key]
        if value is _DROP:
            del parent[path[-1]]
        else:
            parent[path[-1]] = value

    return change


def both(*changes: Callable[[Body], None]) -> Callable[[Body], None]:
    def change(body: Body) -> None:
        for each in changes:
            each(body)

    return change


def unborn(**overrides: Any) -> Callable[[Body], None]:
    """Make the child unborn (keeping its NHS number), with `overrides` applied."""

    def change(body: Body) -> None:
        nhs = body["child"]["nhs_number"]
        body["child"] = valid_unborn_child_body(nhs_number=nhs, **overrides)

    return change


def wrong_check_digit(body: Body) -> None:
    nhs = body["child"]["nhs_number"]
    body["child"]["nhs_number"] = nhs[:9] + str((int(nhs[9]) + 1) % 10)


@dataclass(frozen=True)
class Case:
    rule: str
    change: Callable[[Body], None]
    field: str


NOT_INFORMED = {"informed": False, "consent": "not_sought"}

CASES = [
    # identifiers
    Case("nhs number check digit", wrong_check_digit, "body.child.nhs_number"),
    Case("nhs number length", put(("child", "nhs_number"), "99912345"), "body.child.nhs_number"),
    Case(
        "nhs number spaces", put(("child", "nhs_number"), "999 123 4567"), "body.child.nhs_number"
    ),
    Case("upn too short", put(("child", "upn"), "A1234"), "body.child.upn"),
    Case("upn starts with digit", put(("child", "upn"), "1234567890123"), "body.child.upn"),
    Case("upn letter inside", put(("child", "upn"), "A12345X789012"), "body.child.upn"),
    Case("la child id too long", put(("child", "la_child_id"), "L" * 21), "body.child.la_child_id"),
    Case(
        "la child id punctuation", put(("child", "la_child_id"), "LA-123"), "body.child.la_child_id"
    ),
    # unborn children and dates of birth
    Case("unborn with sex F", unborn(sex="F"), "body.child.sex"),
    Case(
        "unborn due more than 31 days ago",
        unborn(expected_date_of_birth=days_from_today(-32)),
        "body.child.expected_date_of_birth",
    ),
    Case(
        "unborn due more than 10 months ahead",
        unborn(
            expected_date_of_birth=(add_months(today_in_uk(), 10) + timedelta(days=1)).isoformat()
        ),
        "body.child.expected_date_of_birth",
    ),
    Case(
        "born and unborn at once",
        put(("child", "expected_date_of_birth"), days_from_today(30)),
        "body.child.expected_date_of_birth",
    ),
    Case(
        "neither born nor unborn",
        put(("child", "date_of_birth"), _DROP),
        "body.child.expected_date_of_birth",
    ),
    Case(
        "date of birth in future",
        put(("child", "date_of_birth"), days_from_today(1)),
        "body.child.date_of_birth",
    ),
    Case(
        "child aged 18",
        put(("child", "date_of_birth"), add_months(today_in_uk(), -18 * 12).isoformat()),
        "body.child.date_of_birth",
    ),
    Case(
        "received_at in future",
        put(("received_at",), (datetime.now(UTC) + timedelta(minutes=10)).isoformat()),
        "body.received_at",
    ),
    Case(
        "received_at without offset",
        put(("received_at",), "2025-01-06T09:00:00"),
        "body.received_at",
    ),
    Case(
        "household member born in future",
        put(("household", 0, "date_of_birth"), days_from_today(3)),
        "body.household.0.date_of_birth",
    ),
    # concerns
    Case(
        "neglect without forms",
        put(("concerns", "neglect_forms"), []),
        "body.concerns.neglect_forms",
    ),
    Case(
        "forms without neglect",
        put(("concerns", "categories"), ["emotional_abuse"]),
        "body.concerns.neglect_forms",
    ),
    Case(
        "unknown neglect form",
        put(("concerns", "neglect_forms"), ["financial"]),
        "body.concerns.neglect_forms.0",
    ),
    Case("no categories", put(("concerns", "categories"), []), "body.concerns.categories"),
    Case(
        "unknown category",
        put(("concerns", "categories"), ["neglect", "bad_vibes"]),
        "body.concerns.categories.1",
    ),
    Case(
        "unknown risk factor",
        put(("concerns", "risk_factors"), ["bad_luck"]),
        "body.concerns.risk_factors.0",
    ),
    Case(
        "unknown vulnerability",
        put(("concerns", "vulnerabilities"), ["teen"]),
        "body.concerns.vulnerabilities.0",
    ),
    Case(
        "repeated neglect form",
        put(("concerns", "neglect_forms"), ["medical", "medical"]),
        "body.concerns.neglect_forms",
    ),
    # parental awareness
    Case(
        "not informed without reason",
        put(("parental_awareness",), NOT_INFORMED),
        "body.parental_awareness.reason_not_informed",
    ),
    Case(
        "not informed with blank reason",
        put(("parental_awareness",), {**NOT_INFORMED, "reason_not_informed": "  "}),
        "body.parental_awareness.reason_not_informed",
    ),
    Case(
        "unknown consent",
        put(("parental_awareness", "consent"), "yes"),
        "body.parental_awareness.consent",
    ),
    # CIN codes
    Case("ethnicity not a CIN code", put(("child", "ethnicity"), "BRIT"), "body.child.ethnicity"),
    Case(
        "disability not a CIN code",
        put(("child", "disabilities"), ["MOB", "WINGS"]),
        "body.child.disabilities.1",
    ),
    Case(
        "disability NONE with another",
        put(("child", "disabilities"), ["NONE", "AUT"]),
        "body.child.disabilities",
    ),
    Case(
        "source code not a CIN code",
        put(("referrer", "source_code"), "11"),
        "body.referrer.source_code",
    ),
    Case("sex not M F or U", put(("child", "sex"), "X"), "body.child.sex"),
    # free-text limits and NUL
    Case("summary over 10000", put(("concerns", "summary"), "x" * 10_001), "body.concerns.summary"),
    Case("summary blank", put(("concerns", "summary"), " \n "), "body.concerns.summary"),
    Case(
        "child views over 10000",
        put(("concerns", "child_views"), "x" * 10_001),
        "body.concerns.child_views",
    ),
    Case("given name over 200", put(("child", "given_name"), "A" * 201), "body.child.given_name"),
    Case("family name empty", put(("child", "family_name"), ""), "body.child.family_name"),
    Case(
        "external reference over 100",
        put(("external_reference",), "R" * 101),
        "body.external_reference",
    ),
    Case(
        "too many aliases",
        put(("child", "aliases"), [f"Alias{i}" for i in range(21)]),
        "body.child.aliases",
    ),
    Case(
        "summary with NUL", put(("concerns", "summary"), "before\x00after"), "body.concerns.summary"
    ),
    Case(
        "family name with NUL",
        put(("child", "family_name"), "Test\x00erton"),
        "body.child.family_name",
    ),
    Case(
        "external reference with NUL",
        put(("external_reference",), "RFS\x001"),
        "body.external_reference",
    ),
    Case(
        "household name with NUL", put(("household", 0, "name"), "Sam\x00"), "body.household.0.name"
    ),
    Case(
        "reason not informed with NUL",
        put(("parental_awareness",), {**NOT_INFORMED, "reason_not_informed": "risk\x00"}),
        "body.parental_awareness.reason_not_informed",
    ),
    # referrer contact
    Case(
        "no email and no phone",
        both(put(("referrer", "email"), None), put(("referrer", "phone"), None)),
        "body.referrer.phone",
    ),
    Case("email malformed", put(("referrer", "email"), "not-an-email"), "body.referrer.email"),
    Case("phone malformed", put(("referrer", "phone"), "call me"), "body.referrer.phone"),
    Case(
        "postcode malformed",
        put(("child", "address", "postcode"), "12345"),
        "body.child.address.postcode",
    ),
    # required fields and mass assignment
    Case("immediate risk missing", put(("immediate_risk",), _DROP), "body.immediate_risk"),
    Case("dsl consulted missing", put(("dsl_consulted",), _DROP), "body.dsl_consulted"),
    Case("status set by caller", put(("status",), "decided"), "body.status"),
    Case("agency set by caller", put(("agency_name",), "Someone Else"), "body.agency_name"),
    Case("id set by caller", put(("id",), "1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed"), "body.id"),
    Case(
        "unknown field in child",
        put(("child", "favourite_colour"), "blue"),
        "body.child.favourite_colour",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.rule for case in CASES])
async def test_invalid_referral_is_422_naming_the_field_and_stores_nothing(
    client: httpx.AsyncClient,
    make_client: ClientMaker,
    session_factory: SessionFactory,
    case: Case,
) -> None:
    referrer = await make_client(["referrals:write"])
    body = referral_body()
    nhs = body["child"]["nhs_number"]
    case.change(body)
    referrals_before = await count_referrals(session_factory)

    response = await post_referral(client, referrer, body)

    assert response.status_code == 422, response.text
    problem = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    fields = [error["field"] for error in problem["errors"]]
    assert fields == [case.field], problem["errors"]
    assert await count_referrals(session_factory) == referrals_before
    assert await count_children_with_nhs_number(session_factory, nhs) == 0
    assert (
        await count_rows(
            session_factory,
            "SELECT count(*) FROM idempotency_record WHERE client_id = :client",
            client=referrer.client_id,
        )
        == 0
    )


async def test_the_valid_starting_body_is_accepted(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    referrer = await make_client(["referrals:write"])
    response = await post_referral(client, referrer, referral_body())
    assert response.status_code == 201, response.text


async def test_an_unborn_child_with_sex_u_is_accepted(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    referrer = await make_client(["referrals:write"])
    body = referral_body()
    unborn()(body)
    response = await post_referral(client, referrer, body)
    assert response.status_code == 201, response.text
    assert response.json()["child"]["expected_date_of_birth"] is not None


async def test_validation_errors_do_not_echo_the_value_sent(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    referrer = await make_client(["referrals:write"])
    body = referral_body()
    wrong_check_digit(body)
    response = await post_referral(client, referrer, body)
    assert body["child"]["nhs_number"] not in response.text
