"""Disclosure control that survives differencing (issue 14): the four subtraction attacks that
recovered a suppressed 3 exactly no longer do, the same query always gives the same figures, every
shown count differs from the exact one by the stated table's noise for its cell key, and the
unsuppressed scope still sees exact figures.

The database draws each record's key at random. The attack tests fix the keys afterwards, by a
formula over the records in creation order, so that their outcome is the same on every run; the
formula is one under which none of the four attacks' noises cancel. With other keys they can
cancel (for a quarter minus two months about one time in five, `tests/service/
test_perturbation.py`), and the attacker then lands on the exact count without being able to tell
that result from any other: that uncertainty is the protection. Each attack test also checks
that the attack is exact on exact figures, so it is a real attack on this data, and that what the
analyst gets is the exact count plus the stated table's noise for the cells subtracted.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from service.db import SessionFactory, transaction
from tests.builders.case_audits import AUDIT_SCOPES, case_audit_body, post_case_audit
from tests.builders.case_events import cp_plan_started, icpc_held, section47_started
from tests.builders.disclosure import STATED_TABLE, key_sum, published_count, stated_noise
from tests.builders.indicators import (
    READ_UNSUPPRESSED,
    IndicatorApi,
    fetch_series,
    indicator_api,
    new_child,
    point_for,
    send_as_case_system,
    uk_time,
)
from tests.conftest import ClientMaker

pytestmark = pytest.mark.usefixtures("empty_domain_tables")

HIDDEN = 3
"""The small count every attack tries to recover."""
KEYED_TABLES = (
    "referral",
    "assessment",
    "child",
    "case_audit",
    "case_event",
    "icpc",
    "care_plan",
)


async def fix_keys(factory: SessionFactory, table: str, order: str) -> None:
    """Give the table's records keys by a fixed formula over their order."""
    async with transaction(factory) as session:
        await session.execute(
            text(
                f"UPDATE {table} t SET record_key = n.key "  # noqa: S608
                f"FROM (SELECT id, (row_number() OVER (ORDER BY {order}) * 113 + 17) % 256 AS key "
                f"FROM {table}) n WHERE n.id = t.id"
            )
        )


async def assessments_april_to_june(api: IndicatorApi, factory: SessionFactory) -> dict[str, int]:
    """Toolkit assessments of 2023: April 3 (girls: the cell to protect), May 10 (boys), June 12
    (6 boys, 6 girls); nothing in the other months. Returns each month's key sum."""
    for day, sex, count in (
        (date(2023, 4, 12), "F", HIDDEN),
        (date(2023, 5, 12), "M", 10),
        (date(2023, 6, 12), "M", 6),
        (date(2023, 6, 13), "F", 6),
    ):
        for _ in range(count):
            child = new_child(sex=sex)
            await api.refer(child, uk_time(date(2023, 1, 5)))  # records the sex
            await api.assess(child, day)
    await fix_keys(factory, "assessment", "completed_on, created_at")
    month = "SELECT record_key FROM assessment WHERE date_trunc('month', completed_on) = :month"
    return {
        label: await key_sum(factory, month, month=date(2023, number, 1))
        for label, number in (("2023-04", 4), ("2023-05", 5), ("2023-06", 6))
    }


async def series(
    client: httpx.AsyncClient, headers: dict[str, str], **params: str
) -> list[dict[str, Any]]:
    return await fetch_series(
        client, headers, "toolkit_assessments", from_="2023-01-01", to="2023-12-31", **params
    )


def shown(points: list[dict[str, Any]], like: list[dict[str, Any]] | None = None) -> int:
    """The sum of the cells shown, or of the cells `like` shows (to replay an analyst's attack
    on exact figures)."""
    visible = {(p["label"], p["group"]) for p in (like or points) if not p["suppressed"]}
    return sum(p["numerator"] for p in points if (p["label"], p["group"]) in visible)


async def test_a_quarter_minus_its_shown_months_is_not_the_hidden_month(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    api = await indicator_api(client, make_client, session_factory)
    keys = await assessments_april_to_june(api, session_factory)
    analyst = await make_client(["indicators:read"])
    exact = await make_client(READ_UNSUPPRESSED)

    def attack(quarters: list[dict[str, Any]], months: list[dict[str, Any]]) -> int:
        q2 = point_for(quarters, "2023-Q2")["numerator"]
        return int(q2) - shown([p for p in months if p["label"] in ("2023-05", "2023-06")])

    published = attack(
        await series(client, analyst.headers, period="quarter"),
        await series(client, analyst.headers, period="month"),
    )

    assert point_for(await series(client, analyst.headers), "2023-04")["suppressed"]
    assert (
        attack(
            await series(client, exact.headers, period="quarter"),
            await series(client, exact.headers, period="month"),
        )
        == HIDDEN
    )
    noise = (
        stated_noise(25, sum(keys.values()))
        - stated_noise(10, keys["2023-05"])
        - stated_noise(12, keys["2023-06"])
    )
    assert published == HIDDEN + noise
    assert published != HIDDEN


async def test_a_year_minus_its_shown_months_is_not_the_hidden_month(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    api = await indicator_api(client, make_client, session_factory)
    keys = await assessments_april_to_june(api, session_factory)
    analyst = await make_client(["indicators:read"])
    exact = await make_client(READ_UNSUPPRESSED)

    seen = await series(client, analyst.headers, period="month")

    async def attack(headers: dict[str, str]) -> int:
        [year] = await series(client, headers, period="year")
        return int(year["numerator"]) - shown(await series(client, headers, period="month"), seen)

    published = await attack(analyst.headers)

    assert await attack(exact.headers) == HIDDEN
    noise = (
        stated_noise(25, sum(keys.values()))
        - stated_noise(10, keys["2023-05"])
        - stated_noise(12, keys["2023-06"])
    )
    assert published == HIDDEN + noise
    assert published != HIDDEN


async def test_a_year_minus_its_shown_monthly_sex_cells_is_not_the_hidden_cell(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    api = await indicator_api(client, make_client, session_factory)
    keys = await assessments_april_to_june(api, session_factory)
    analyst = await make_client(["indicators:read"])
    exact = await make_client(READ_UNSUPPRESSED)

    seen = await series(client, analyst.headers, period="month", breakdown="sex")

    async def attack(headers: dict[str, str]) -> int:
        [year] = await series(client, headers, period="year")
        cells = await series(client, headers, period="month", breakdown="sex")
        return int(year["numerator"]) - shown(cells, seen)

    published = await attack(analyst.headers)

    assert [(p["label"], p["group"]) for p in seen if p["suppressed"]] == [("2023-04", "F")]
    assert await attack(exact.headers) == HIDDEN
    june_boys = await key_sum(
        session_factory, "SELECT record_key FROM assessment WHERE completed_on = '2023-06-12'"
    )
    noise = (
        stated_noise(25, sum(keys.values()))
        - stated_noise(10, keys["2023-05"])
        - stated_noise(6, june_boys)
        - stated_noise(6, keys["2023-06"] - june_boys)
    )
    assert published == HIDDEN + noise
    assert published != HIDDEN


async def test_an_agency_subtracting_its_own_referrals_from_the_total_does_not_get_the_rest(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    api = await indicator_api(client, make_client, session_factory)
    received = uk_time(date(2023, 9, 12))
    for index in range(10 + HIDDEN):
        agency = "school" if index < 10 else "police"
        await api.refer(new_child(), received + timedelta(minutes=index), agency_type=agency)
    await fix_keys(session_factory, "referral", "received_at")
    school = await make_client(["indicators:read"], agency_type="school")
    exact = await make_client(READ_UNSUPPRESSED)

    async def others(headers: dict[str, str]) -> int:
        # The school knows the 10 referrals it sent itself.
        [september] = await fetch_series(
            client,
            headers,
            "neglect_referral_share",
            from_="2023-09-01",
            to="2023-09-30",
        )
        return int(september["denominator"]) - 10

    published = await others(school.headers)

    by_agency = await fetch_series(
        client,
        school.headers,
        "neglect_referral_share",
        from_="2023-09-01",
        to="2023-09-30",
        breakdown="agency_type",
    )
    assert all(point["suppressed"] for point in by_agency)
    assert await others(exact.headers) == HIDDEN
    keys = await key_sum(session_factory, "SELECT record_key FROM referral")
    assert published == HIDDEN + stated_noise(13, keys)
    assert published != HIDDEN


# --- the same cell, the same noise; the noise within the table -------------------------------


async def test_the_same_query_twice_gives_the_same_figures(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    api = await indicator_api(client, make_client, session_factory)
    await assessments_april_to_june(api, session_factory)
    analyst = await make_client(["indicators:read"])
    params = {"from": "2023-01-01", "to": "2023-12-31", "breakdown": "sex"}

    first = await client.get(
        "/v1/indicators/toolkit_assessments", params=params, headers=analyst.headers
    )
    second = await client.get(
        "/v1/indicators/toolkit_assessments", params=params, headers=analyst.headers
    )

    assert first.status_code == 200
    assert second.json() == first.json()
    assert second.headers["etag"] == first.headers["etag"]


async def test_every_shown_count_is_the_exact_one_plus_the_stated_noise_for_its_cell_key(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    api = await indicator_api(client, make_client, session_factory)
    # The database's own random keys this time.
    for day, sex, count in (
        (date(2023, 2, 1), "M", 6),
        (date(2023, 2, 2), "F", 7),
        (date(2023, 3, 1), "M", 9),
        (date(2023, 3, 2), "F", 2),
    ):
        for _ in range(count):
            child = new_child(sex=sex)
            await api.refer(child, uk_time(date(2023, 1, 5)))
            await api.assess(child, day)
    analyst = await make_client(["indicators:read"])
    exact = await make_client(READ_UNSUPPRESSED)

    published = await series(client, analyst.headers, period="month", breakdown="sex")
    exact_figures = await series(client, exact.headers, period="month", breakdown="sex")

    checked = 0
    for shown_point, exact_point in zip(published, exact_figures, strict=True):
        assert (shown_point["label"], shown_point["group"]) == (
            exact_point["label"],
            exact_point["group"],
        )
        if shown_point["suppressed"]:
            assert 1 <= exact_point["numerator"] <= 5 or exact_point["group"] == "M"
            continue
        keys = await key_sum(
            session_factory,
            "SELECT a.record_key FROM assessment a JOIN child c ON c.id = a.child_id "
            "WHERE date_trunc('month', a.completed_on) = :month AND c.sex = :sex",
            month=date.fromisoformat(exact_point["period_start"]),
            sex=exact_point["group"],
        )
        count = exact_point["numerator"]
        assert shown_point["numerator"] == published_count(count, keys)
        assert shown_point["value"] == shown_point["numerator"]
        assert abs(shown_point["numerator"] - count) <= 2
        assert shown_point["numerator"] == 0 or shown_point["numerator"] >= 6
        checked += count > 0
    # February's 6 boys and 7 girls are both perturbed; March's 2 girls are hidden, and with them
    # March's 9 boys (the month's total is shown).
    assert checked == 2
    assert [p["group"] for p in published if p["suppressed"]] == ["M", "F"]


async def test_the_unsuppressed_scope_sees_every_figure_exactly(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    api = await indicator_api(client, make_client, session_factory)
    await assessments_april_to_june(api, session_factory)
    exact = await make_client(READ_UNSUPPRESSED)

    months = await series(client, exact.headers, period="month", breakdown="sex")

    assert [
        (p["label"], p["group"], p["numerator"], p["suppressed"]) for p in months if p["numerator"]
    ] == [
        ("2023-04", "F", 3, False),
        ("2023-05", "M", 10, False),
        ("2023-06", "M", 6, False),
        ("2023-06", "F", 6, False),
    ]


async def test_every_write_path_gives_each_record_a_key(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    api = await indicator_api(client, make_client, session_factory)
    events: list[dict[str, Any]] = []
    team = await make_client(AUDIT_SCOPES, agency_type="local_authority")
    for index in range(20):
        child = new_child()
        # The referral create function (PL/pgSQL), the ORM, the case-events inserts.
        await api.refer(child, uk_time(date(2023, 1, 5)) + timedelta(minutes=index))
        await api.assess(child, date(2023, 2, 1))
        await post_case_audit(client, team, case_audit_body(child=child.ref))
        events += [
            section47_started(child.ref, date(2023, 2, 2), "S47-1"),
            icpc_held(child.ref, date(2023, 2, 9), "S47-1"),
            cp_plan_started(child.ref, date(2023, 2, 9), "CP-1"),
        ]
    await send_as_case_system(client, make_client, events)

    async with transaction(session_factory) as session:
        keys = {
            table: list(
                await session.scalars(text(f"SELECT record_key FROM {table}"))  # noqa: S608
            )
            for table in KEYED_TABLES
        }

    assert {table: len(found) for table, found in keys.items()} == {
        "referral": 20,
        "assessment": 20,
        "child": 20,
        "case_audit": 20,
        "case_event": 60,
        "icpc": 20,
        "care_plan": 20,
    }
    assert all(0 <= key <= 255 for found in keys.values() for key in found)
    # Drawn at random: twenty referrals do not all share one key.
    assert all(len(set(found)) > 1 for found in keys.values())


async def test_the_catalogue_publishes_the_perturbation_table_and_both_rules(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    reader = await make_client(["indicators:read"])

    response = await client.get("/v1/indicators", headers=reader.headers)

    control = response.json()["disclosure_control"]
    assert control["cell_key_modulus"] == 256
    published: dict[int, list[tuple[int, int, int]]] = {}
    for row in control["perturbation_table"]:
        published.setdefault(row["count"], []).append(
            (row["first_key"], row["last_key"], row["noise"])
        )
    assert {count: tuple(rows) for count, rows in published.items()} == STATED_TABLE
    assert "1 to 5" in control["suppression"]
    assert "cell-key" in control["perturbation"]
