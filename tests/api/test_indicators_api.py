"""GET /v1/indicators and /v1/indicators/{id}: the catalogue, parameters, periods, disclosure
control, CSV, ETags and the audit of unsuppressed figures."""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from service.db import SessionFactory, transaction
from service.indicators.catalogue import load_catalogue
from tests.builders.disclosure import key_sum, published_count
from tests.builders.indicators import (
    READ_UNSUPPRESSED,
    IndicatorApi,
    fetch_series,
    figures,
    indicator_api,
    new_child,
    point_for,
    uk_time,
)
from tests.conftest import ClientMaker

CATALOGUE = load_catalogue()


# Indicators count whole tables: each test starts from empty domain tables.
pytestmark = pytest.mark.usefixtures("empty_domain_tables")


async def test_the_catalogue_lists_every_indicator_and_breakdown(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    reader = await make_client(["indicators:read"])

    response = await client.get("/v1/indicators", headers=reader.headers)

    assert response.status_code == 200
    body = response.json()
    assert [item["id"] for item in body["indicators"]] == list(CATALOGUE)
    assert {item["id"] for item in body["breakdowns"]} == {
        "age_band",
        "sex",
        "ethnicity",
        "disability",
        "referral_source",
        "agency_type",
        "neglect_form",
        "plan_type",
        "feedback_from",
        "audited_work",
    }
    share = body["indicators"][0]
    assert (share["id"], share["unit"], share["denominator"]) == (
        "neglect_referral_share",
        "percent",
        "Referrals received in the period",
    )


async def test_an_unknown_indicator_is_404(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    reader = await make_client(["indicators:read"])

    response = await client.get("/v1/indicators/no_such_indicator", headers=reader.headers)

    assert response.status_code == 404


async def test_a_period_the_indicator_does_not_offer_is_422(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    reader = await make_client(["indicators:read"])

    response = await client.get(
        "/v1/indicators/neglect_referral_share",
        params={"period": "snapshot"},
        headers=reader.headers,
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "query.period"


async def test_a_breakdown_the_indicator_does_not_offer_is_422(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    reader = await make_client(["indicators:read"])

    response = await client.get(
        "/v1/indicators/cp_plan_neglect_share",
        params={"breakdown": "referral_source"},
        headers=reader.headers,
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "query.breakdown"


async def test_a_range_ending_before_it_starts_is_422(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    reader = await make_client(["indicators:read"])

    response = await client.get(
        "/v1/indicators/toolkit_assessments",
        params={"from": "2024-02-01", "to": "2024-01-01"},
        headers=reader.headers,
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "query.from"


async def test_an_unknown_period_name_is_422(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    reader = await make_client(["indicators:read"])

    response = await client.get(
        "/v1/indicators/toolkit_assessments", params={"period": "week"}, headers=reader.headers
    )

    assert response.status_code == 422


async def test_the_indicators_need_the_indicators_read_scope(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await make_client(["indicators:read:unsuppressed"])

    response = await client.get("/v1/indicators/toolkit_assessments", headers=registered.headers)

    assert response.status_code == 403


async def test_the_default_range_is_the_year_to_today_by_month(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    reader = await make_client(["indicators:read"])

    series = await fetch_series(client, reader.headers, "toolkit_assessments")

    today = date.today()
    assert len(series) in (12, 13)
    assert date.fromisoformat(series[-1]["period_start"]) <= today
    assert date.fromisoformat(series[-1]["period_end"]) >= today - timedelta(days=1)


async def test_financial_years_run_from_april_to_march_with_inclusive_ends(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    reader = await make_client(["indicators:read"])

    series = await fetch_series(
        client,
        reader.headers,
        "toolkit_assessments",
        from_="2023-03-31",
        to="2023-04-01",
        period="financial_year",
    )

    assert [(p["label"], p["period_start"], p["period_end"]) for p in series] == [
        ("2022-23", "2022-04-01", "2023-03-31"),
        ("2023-24", "2023-04-01", "2024-03-31"),
    ]


async def test_a_snapshot_is_the_last_day_of_each_month(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    reader = await make_client(["indicators:read"])

    series = await fetch_series(
        client,
        reader.headers,
        "neglect_plans_open",
        from_="2024-01-10",
        to="2024-02-10",
        period="snapshot",
    )

    assert [(p["label"], p["period_start"], p["period_end"]) for p in series] == [
        ("2024-01-31", "2024-01-31", "2024-01-31"),
        ("2024-02-29", "2024-02-29", "2024-02-29"),
    ]


# --- Disclosure control ----------------------------------------------------------------------


async def assessments_by_sex(api: IndicatorApi, counts: dict[str, int]) -> None:
    """Toolkit assessments completed in June 2023, `counts[sex]` for children of each sex.

    An assessment names a child without saying its sex, so each child is first referred (on 1
    June 2023), which records the sex; referrals do not count towards toolkit assessments.
    """
    for sex, count in counts.items():
        for _ in range(count):
            child = new_child(sex=sex)
            await api.refer(child, uk_time(date(2023, 6, 1)))
            await api.assess(child, date(2023, 6, 15))


async def test_a_cell_of_three_is_suppressed_with_another_and_a_zero_is_shown(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    api = await indicator_api(client, make_client, session_factory)
    await assessments_by_sex(api, {"M": 10, "F": 3})
    reader = await make_client(["indicators:read"])

    series = await fetch_series(
        client,
        reader.headers,
        "toolkit_assessments",
        from_="2023-01-01",
        to="2023-12-31",
        period="year",
        breakdown="sex",
    )

    cells = {point["group"]: point for point in series}
    assert list(cells) == ["M", "F", "U"]
    assert cells["F"]["suppressed"]
    assert figures(cells["F"]) == (None, None, None)
    assert cells["M"]["suppressed"]
    assert figures(cells["M"]) == (None, None, None)
    assert (cells["U"]["suppressed"], figures(cells["U"])) == (False, (0, None, 0))


async def test_the_total_of_thirteen_is_shown_without_a_breakdown(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    api = await indicator_api(client, make_client, session_factory)
    await assessments_by_sex(api, {"M": 10, "F": 3})
    reader = await make_client(["indicators:read"])

    series = await fetch_series(
        client,
        reader.headers,
        "toolkit_assessments",
        from_="2023-01-01",
        to="2023-12-31",
        period="year",
    )

    # Shown, and perturbed like every count shown without the unsuppressed scope.
    keys = await key_sum(session_factory, "SELECT record_key FROM assessment")
    shown = published_count(13, keys)
    assert [(figures(p), p["suppressed"]) for p in series] == [((shown, None, shown), False)]


async def test_the_unsuppressed_scope_sees_every_cell_exactly(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    api = await indicator_api(client, make_client, session_factory)
    await assessments_by_sex(api, {"M": 10, "F": 3})
    reader = await make_client(READ_UNSUPPRESSED)

    response = await client.get(
        "/v1/indicators/toolkit_assessments",
        params={"from": "2023-01-01", "to": "2023-12-31", "period": "year", "breakdown": "sex"},
        headers=reader.headers,
    )

    body = response.json()
    assert body["suppression_applied"] is False
    assert [(p["group"], figures(p), p["suppressed"]) for p in body["series"]] == [
        ("M", (10, None, 10), False),
        ("F", (3, None, 3), False),
        ("U", (0, None, 0), False),
    ]


async def test_a_small_total_without_a_breakdown_is_suppressed(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    api = await indicator_api(client, make_client, session_factory)
    await assessments_by_sex(api, {"F": 2})
    reader = await make_client(["indicators:read"])

    series = await fetch_series(
        client, reader.headers, "toolkit_assessments", from_="2023-06-01", to="2023-07-31"
    )

    assert [(p["label"], p["suppressed"], figures(p)) for p in series] == [
        ("2023-06", True, (None, None, None)),
        ("2023-07", False, (0, None, 0)),
    ]


async def test_unsuppressed_figures_are_audited_as_an_export(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    reader = await make_client(READ_UNSUPPRESSED)

    await fetch_series(client, reader.headers, "toolkit_assessments")

    async with transaction(session_factory) as session:
        rows = (
            await session.execute(
                text(
                    "SELECT action, resource_type, resource_id FROM audit_event "
                    "WHERE client_id = :c"
                ),
                {"c": reader.client_id},
            )
        ).all()
    assert [tuple(row) for row in rows] == [("export", "indicator", "toolkit_assessments")]


async def test_suppressed_figures_are_not_audited(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    reader = await make_client(["indicators:read"])

    await fetch_series(client, reader.headers, "toolkit_assessments")

    async with transaction(session_factory) as session:
        audited = await session.scalar(
            text("SELECT count(*) FROM audit_event WHERE client_id = :c"), {"c": reader.client_id}
        )
    assert audited == 0


# --- CSV and ETags -----------------------------------------------------------------------------

SEX_BREAKDOWN = {"from": "2023-01-01", "to": "2023-12-31", "period": "quarter", "breakdown": "sex"}


async def test_csv_and_json_carry_the_same_figures(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    api = await indicator_api(client, make_client, session_factory)
    await assessments_by_sex(api, {"M": 10, "F": 3})
    reader = await make_client(["indicators:read"])
    url = "/v1/indicators/toolkit_assessments"

    as_json = await client.get(url, params=SEX_BREAKDOWN, headers=reader.headers)
    # The layout of earlier releases, kept for one release behind csv_layout=legacy.
    as_csv = await client.get(
        url,
        params={**SEX_BREAKDOWN, "csv_layout": "legacy"},
        headers={**reader.headers, "Accept": "text/csv"},
    )

    assert as_csv.status_code == 200
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))

    def as_text(value: Any) -> str:
        return "" if value is None else str(value)

    from_json = [
        {
            "indicator_id": "toolkit_assessments",
            **{
                key: as_text(point[key]) for key in ("period_start", "period_end", "label", "group")
            },
            "numerator": as_text(point["numerator"]),
            "denominator": as_text(point["denominator"]),
            "value": as_text(point["value"]),
            "suppressed": "true" if point["suppressed"] else "false",
        }
        for point in as_json.json()["series"]
    ]
    assert rows == from_json
    assert len(rows) == 12
    assert (rows[4]["group"], rows[4]["numerator"], rows[4]["suppressed"]) == ("F", "", "true")


async def test_a_second_request_with_the_etag_gets_304(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    api = await indicator_api(client, make_client, session_factory)
    await assessments_by_sex(api, {"M": 7})
    reader = await make_client(["indicators:read"])
    url = "/v1/indicators/toolkit_assessments"
    first = await client.get(url, params=SEX_BREAKDOWN, headers=reader.headers)

    second = await client.get(
        url,
        params=SEX_BREAKDOWN,
        headers={**reader.headers, "If-None-Match": first.headers["etag"]},
    )

    assert second.status_code == 304
    assert second.content == b""
    assert second.headers["etag"] == first.headers["etag"]


async def test_the_etag_changes_when_the_figures_change(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    api = await indicator_api(client, make_client, session_factory)
    await assessments_by_sex(api, {"M": 7})
    reader = await make_client(READ_UNSUPPRESSED)
    url = "/v1/indicators/toolkit_assessments"
    first = await client.get(url, params=SEX_BREAKDOWN, headers=reader.headers)
    await assessments_by_sex(api, {"M": 1})

    second = await client.get(
        url,
        params=SEX_BREAKDOWN,
        headers={**reader.headers, "If-None-Match": first.headers["etag"]},
    )

    assert second.status_code == 200
    assert second.headers["etag"] != first.headers["etag"]
    assert point_for(second.json()["series"], "2023-Q2", "M")["numerator"] == 8


async def test_csv_and_json_have_different_etags(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    reader = await make_client(["indicators:read"])
    url = "/v1/indicators/toolkit_assessments"

    as_json = await client.get(url, params=SEX_BREAKDOWN, headers=reader.headers)
    as_csv = await client.get(
        url,
        params=SEX_BREAKDOWN,
        headers={**reader.headers, "Accept": "text/csv", "If-None-Match": as_json.headers["etag"]},
    )

    assert as_csv.status_code == 200
    assert as_csv.headers["etag"] != as_json.headers["etag"]
