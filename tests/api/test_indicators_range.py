"""The range of an indicator series at the ends of the calendar: a 422 naming the parameter,
never a 500 (issue 10, finding 8 for dates). The driver sends 0001-01-01 as -infinity, and a year
before a `to` in year 1 does not exist."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import ClientMaker

INDICATOR = "neglect_referral_share"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "0001-01-01", "to": "0002-02-01"}, "query.from"),
        ({"from": "0001-12-31", "to": "0002-03-01", "period": "quarter"}, "query.from"),
        ({"to": "0001-01-01"}, "query.to"),
        ({"to": "0001-06-30"}, "query.to"),
        ({"from": "9999-12-01", "to": "9999-12-31"}, "query.to"),
    ],
)
async def test_a_range_at_the_ends_of_the_calendar_is_422_naming_the_parameter(
    client: httpx.AsyncClient, make_client: ClientMaker, params: dict[str, str], field: str
) -> None:
    reader = await make_client(["indicators:read"])
    response = await client.get(
        f"/v1/indicators/{INDICATOR}", params=params, headers=reader.headers
    )
    assert response.status_code == 422, response.text
    assert [error["field"] for error in response.json()["errors"]] == [field]


async def test_the_earliest_range_is_computed(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    reader = await make_client(["indicators:read"])
    response = await client.get(
        f"/v1/indicators/{INDICATOR}",
        params={"from": "0002-01-01", "to": "0002-02-01"},
        headers=reader.headers,
    )
    assert response.status_code == 200, response.text
    assert [point["label"] for point in response.json()["series"]] == ["0002-01", "0002-02"]
