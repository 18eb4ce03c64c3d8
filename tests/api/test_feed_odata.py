"""The OData v4 feed (issue 13): read by a real OData client with a feed key, its rows equal to the
JSON API's, query options answering what the same filter on the JSON API answers, unsupported
options 501, bad properties 400.

One synthetic partnership is loaded for the whole module (nothing here writes domain data).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import date
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from odatapy.client import AsyncEdmEnabledODataClient, AsyncHttpxTransport, BasicAuth
from odatapy.edm.names import FullQualifiedName

from schemas.feed import INDICATOR_POINTS, INDICATORS
from tests.builders.feed import (
    WINDOW,
    Row,
    basic,
    issue_feed_key,
    json_rows,
    load_partnership,
    row_of,
    same_rows,
)
from tests.conftest import ClientMaker, assert_errors_are_problems

EDM = "{http://docs.oasis-open.org/odata/ns/edm}"


@pytest.fixture(scope="module", autouse=True)
async def partnership(database_url: str) -> None:
    await load_partnership(database_url)


@pytest.fixture(scope="module")
async def reader(app: FastAPI) -> dict[str, Any]:
    """A client allowed to read indicators, its bearer headers and a feed key."""
    registered = await ClientMaker(app)(["indicators:read"], agency_type="local_authority")
    key = await issue_feed_key(app, registered)
    return {"client": registered, "key": key, "basic": basic(registered.client_id, key)}


@pytest.fixture(scope="module")
async def expected(app: FastAPI, reader: dict[str, Any]) -> list[Row]:
    async with _client(app) as http:
        return await json_rows(http, reader["client"].headers)


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://test",
        event_hooks={"response": [assert_errors_are_problems]},
    )


async def _walk(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], params: dict[str, str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every row of a query, following `@odata.nextLink`; (rows, page bodies)."""
    response = await client.get(url, params=params, headers=headers)
    pages = []
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body)
        if "@odata.nextLink" not in body:
            break
        response = await client.get(body["@odata.nextLink"], headers=headers)
    return [row for page in pages for row in page["value"]], pages


# --- Acceptance 1: a real OData client ----------------------------------------------------------


async def test_a_real_odata_client_lists_the_sets_reads_metadata_and_pages_every_point(
    app: FastAPI, reader: dict[str, Any], expected: list[Row]
) -> None:
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=120
    )
    transport = AsyncHttpxTransport(
        http,
        auth=BasicAuth(reader["client"].client_id, reader["key"]),
        headers={"Prefer": "odata.maxpagesize=250"},
    )
    odata = AsyncEdmEnabledODataClient("http://test/odata", transport)
    try:
        document = await odata.get_service_document()
        edm = await odata.get_edm()
        pages = [
            page
            async for page in odata.iter_pages(
                odata.entity_set_uri("IndicatorPoints")
                .custom("from", WINDOW["from"])
                .custom("to", WINDOW["to"])
                .custom("period", WINDOW["period"])
            )
        ]
    finally:
        await http.aclose()

    assert set(document.entity_sets) == {"IndicatorPoints", "Indicators"}
    point_type = edm.get_entity_type(FullQualifiedName("Neglect", "IndicatorPoint"))
    assert point_type.property_names == [prop.name for prop in INDICATOR_POINTS.properties]
    assert len(pages) > 2, "the walk must cross several pages"
    rows = [
        {prop.name: entity.get_value(prop.name) for prop in INDICATOR_POINTS.properties}
        for page in pages
        for entity in page.entities
    ]
    assert len({row["PointId"] for row in rows}) == len(rows)
    assert any(row["Suppressed"] for row in rows), "the data must exercise suppression"
    assert same_rows([row_of(row) for row in rows], expected)


async def test_the_web_api_key_parameter_opens_the_feed_and_stays_out_of_next_links(
    client: httpx.AsyncClient, reader: dict[str, Any]
) -> None:
    key = {"feed_key": reader["key"]}

    root = await client.get("/odata/", params=key)
    first = await client.get(
        "/odata/IndicatorPoints",
        params={**key, **WINDOW},
        headers={"Prefer": "odata.maxpagesize=10"},
    )

    assert root.status_code == 200
    assert root.headers["odata-version"] == "4.0"
    assert first.status_code == 200
    assert first.headers["preference-applied"] == "odata.maxpagesize=10"
    next_link = first.json()["@odata.nextLink"]
    assert next_link.startswith("http://test/odata/IndicatorPoints?")
    assert reader["key"] not in next_link
    # As Power Query does: the key parameter added to the link it follows.
    second = await client.get(next_link + "&feed_key=" + reader["key"])
    assert second.status_code == 200
    assert {row["PointId"] for row in first.json()["value"]}.isdisjoint(
        row["PointId"] for row in second.json()["value"]
    )


# --- Documents ----------------------------------------------------------------------------------


async def test_the_service_document_names_every_entity_set(
    client: httpx.AsyncClient, reader: dict[str, Any]
) -> None:
    response = await client.get("/odata/", headers=reader["basic"])

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json;odata.metadata=minimal")
    assert response.json() == {
        "@odata.context": "http://test/odata/$metadata",
        "value": [
            {"name": "IndicatorPoints", "kind": "EntitySet", "url": "IndicatorPoints"},
            {"name": "Indicators", "kind": "EntitySet", "url": "Indicators"},
        ],
    }


async def test_metadata_declares_every_property_with_its_type_and_the_key(
    client: httpx.AsyncClient, reader: dict[str, Any]
) -> None:
    response = await client.get("/odata/$metadata", headers=reader["basic"])

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    assert response.headers["odata-version"] == "4.0"
    # Our own document, not untrusted input.
    schema = ET.fromstring(response.content).find(f".//{EDM}Schema")  # noqa: S314
    assert schema is not None
    for entity_set in (INDICATOR_POINTS, INDICATORS):
        entity_type = schema.find(f"{EDM}EntityType[@Name='{entity_set.entity_type}']")
        assert entity_type is not None
        key = entity_type.find(f"{EDM}Key/{EDM}PropertyRef")
        assert key is not None
        assert key.get("Name") == entity_set.key
        declared = {
            prop.get("Name"): (prop.get("Type"), prop.get("Nullable", "true"))
            for prop in entity_type.findall(f"{EDM}Property")
        }
        assert declared == {
            prop.name: (prop.edm_type, "true" if prop.nullable else "false")
            for prop in entity_set.properties
        }


@pytest.mark.parametrize("path", ["/odata/", "/odata/$metadata"])
async def test_the_documents_refuse_query_options_they_do_not_implement(
    client: httpx.AsyncClient, reader: dict[str, Any], path: str
) -> None:
    with_window = await client.get(path, params=WINDOW, headers=reader["basic"])
    filtered = await client.get(path, params={"$filter": "Id eq 'x'"}, headers=reader["basic"])

    assert with_window.status_code == 200
    assert filtered.status_code == 501


async def test_the_catalogue_set_is_the_json_catalogue(
    client: httpx.AsyncClient, reader: dict[str, Any]
) -> None:
    catalogue = (await client.get("/v1/indicators", headers=reader["client"].headers)).json()

    rows, _ = await _walk(client, "/odata/Indicators", reader["basic"], {})

    assert [(row["Id"], row["Unit"], row["Breakdowns"]) for row in rows] == [
        (item["id"], item["unit"], ",".join(item["breakdowns"])) for item in catalogue["indicators"]
    ]


# --- Acceptance 2: query options equal the JSON API ---------------------------------------------


def _json_points(expected: list[Row], indicator: str, breakdown: str | None) -> list[Row]:
    return [row for row in expected if row[0] == indicator and row[1] == breakdown]


async def test_filter_select_orderby_top_skip_and_count_answer_as_the_json_api_does(
    client: httpx.AsyncClient, reader: dict[str, Any], expected: list[Row]
) -> None:
    params = {
        **WINDOW,
        "$filter": "IndicatorId eq 'toolkit_assessments' and Breakdown eq 'sex' "
        "and Suppressed eq false",
        "$select": "Label,Group,Numerator",
        "$orderby": "Numerator desc,Label",
        "$top": "7",
        "$skip": "2",
        "$count": "true",
    }

    rows, pages = await _walk(
        client,
        "/odata/IndicatorPoints",
        {**reader["basic"], "Prefer": "odata.maxpagesize=3"},
        params,
    )

    shown = [row for row in _json_points(expected, "toolkit_assessments", "sex") if not row[7]]
    ordered = sorted(shown, key=lambda row: (-row[4], row[2]))
    assert len(shown) > 9, "the window must hold enough unsuppressed cells"
    assert rows == [{"Label": r[2], "Group": r[3], "Numerator": r[4]} for r in ordered[2:9]]
    assert [len(page["value"]) for page in pages] == [3, 3, 1]
    assert all(page["@odata.count"] == len(shown) for page in pages)
    assert pages[0]["@odata.context"] == (
        "http://test/odata/$metadata#IndicatorPoints(Label,Group,Numerator)"
    )


async def test_logical_and_comparison_operators_filter_as_python_does(
    client: httpx.AsyncClient, reader: dict[str, Any], expected: list[Row]
) -> None:
    params = {
        **WINDOW,
        "$filter": "IndicatorId in ('neglect_referral_share', 'rereferral_rate_12m') "
        "and Breakdown eq null and ((PeriodStart ge 2024-04-01 and PeriodEnd le 2024-09-30) "
        "or not (Value gt 20.5)) and Label ne '2024-05'",
    }

    rows, _ = await _walk(client, "/odata/IndicatorPoints", reader["basic"], params)

    def wanted(row: Row) -> bool:
        month = int(row[2][5:])
        value = row[6]
        return (
            row[0] in ("neglect_referral_share", "rereferral_rate_12m")
            and row[1] is None
            and (4 <= month <= 9 or not (value is not None and value > 20.5))
            and row[2] != "2024-05"
        )

    matches = [row for row in expected if wanted(row)]
    assert matches, "the filter must select something"
    assert same_rows([row_of(row) for row in rows], matches)


async def test_count_segment_counts_the_filtered_rows_as_plain_text(
    client: httpx.AsyncClient, reader: dict[str, Any], expected: list[Row]
) -> None:
    response = await client.get(
        "/odata/IndicatorPoints/$count",
        params={**WINDOW, "$filter": "Breakdown eq 'age_band'", "$top": "1"},
        headers=reader["basic"],
    )

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert int(response.text) == sum(1 for row in expected if row[1] == "age_band")


async def test_contains_matches_underscores_literally(
    client: httpx.AsyncClient, reader: dict[str, Any], expected: list[Row]
) -> None:
    params = {
        **WINDOW,
        "$filter": "contains(IndicatorId, 'plan_neglect') and Breakdown eq null",
        "$select": "IndicatorId",
    }

    rows, _ = await _walk(client, "/odata/IndicatorPoints", reader["basic"], params)

    assert {row["IndicatorId"] for row in rows} == {
        row[0] for row in expected if "plan_neglect" in row[0]
    }
    assert "cp_plan_neglect_share" in {row["IndicatorId"] for row in rows}


async def test_other_periods_come_from_the_period_option(
    client: httpx.AsyncClient, reader: dict[str, Any]
) -> None:
    window = {"from": "2023-04-01", "to": "2024-03-31", "period": "financial_year"}
    json_series = (
        await client.get(
            "/v1/indicators/toolkit_assessments", params=window, headers=reader["client"].headers
        )
    ).json()["series"]

    rows, _ = await _walk(
        client,
        "/odata/IndicatorPoints",
        reader["basic"],
        {**window, "$filter": "IndicatorId eq 'toolkit_assessments' and Breakdown eq null"},
    )

    assert [(r["Label"], r["TimePeriod"], r["TimeIdentifier"], r["Numerator"]) for r in rows] == [
        (p["label"], 202324, "Financial year", p["numerator"]) for p in json_series
    ]


# --- Refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option",
    [
        {"$expand": "Indicator"},
        {"$apply": "groupby((IndicatorId))"},
        {"$search": "neglect"},
        {"$compute": "Numerator add 1 as N"},
        {"$levels": "2"},
        {"$format": "xml"},
        {"filter": "IndicatorId eq 'x'"},
        {"@p": "1"},
        {"$filter": "year(PeriodStart) eq 2024"},
        {"$filter": "Numerator add 1 gt 5"},
        {"$orderby": "length(Label)"},
    ],
    ids=lambda option: next(iter(option.items()))[0] + "=" + next(iter(option.values())),
)
async def test_an_unimplemented_option_is_501(
    client: httpx.AsyncClient, reader: dict[str, Any], option: dict[str, str]
) -> None:
    response = await client.get(
        "/odata/IndicatorPoints", params={**WINDOW, **option}, headers=reader["basic"]
    )

    assert response.status_code == 501
    assert response.json()["error"]["code"] == "query-option-not-implemented"


@pytest.mark.parametrize(
    "option",
    [
        {"$select": "PointId,Secret"},
        {"$filter": "Secret eq 1"},
        {"$orderby": "Secret desc"},
        {"$filter": "Numerator eq 'many'"},
        {"$filter": "PeriodStart ge 2024-02-30"},
        {"$filter": "Numerator gt 99999999999"},
        {"$filter": "IndicatorId eq"},
        {"$filter": "Label"},
        {"$top": "-1"},
        {"$skip": "many"},
        {"$count": "yes"},
        {"$skiptoken": "not-ours"},
        {"period": "fortnight"},
        {"from": "2024-13-01"},
    ],
    ids=lambda option: next(iter(option.items()))[0] + "=" + next(iter(option.values())),
)
async def test_a_bad_property_or_value_is_400(
    client: httpx.AsyncClient, reader: dict[str, Any], option: dict[str, str]
) -> None:
    response = await client.get(
        "/odata/IndicatorPoints", params={**WINDOW, **option}, headers=reader["basic"]
    )

    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "query-option-invalid"


async def test_a_page_token_only_continues_its_own_query(
    client: httpx.AsyncClient, reader: dict[str, Any]
) -> None:
    first = await client.get(
        "/odata/IndicatorPoints",
        params={**WINDOW, "$filter": "Breakdown eq null"},
        headers={**reader["basic"], "Prefer": "odata.maxpagesize=5"},
    )
    token = httpx.URL(first.json()["@odata.nextLink"]).params["$skiptoken"]

    other = await client.get(
        "/odata/IndicatorPoints",
        params={**WINDOW, "$filter": "Breakdown eq 'sex'", "$skiptoken": token},
        headers=reader["basic"],
    )

    assert other.status_code == 400
    assert "another query" in other.json()["error"]["message"]


async def test_another_clients_page_token_is_refused(
    client: httpx.AsyncClient, reader: dict[str, Any], make_client: ClientMaker
) -> None:
    first = await client.get(
        "/odata/IndicatorPoints",
        params={**WINDOW, "$filter": "Breakdown eq null"},
        headers={**reader["basic"], "Prefer": "odata.maxpagesize=5"},
    )
    someone_else = await make_client(["indicators:read"])

    response = await client.get(first.json()["@odata.nextLink"], headers=someone_else.headers)

    assert response.status_code == 410


# --- Credentials --------------------------------------------------------------------------------


async def test_without_a_credential_the_feed_answers_401_with_basic_and_bearer_challenges(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/odata/")

    assert response.status_code == 401
    assert response.headers["odata-version"] == "4.0"
    challenges = response.headers.get_list("www-authenticate")
    assert 'Basic realm="neglect-service feed"' in challenges
    assert 'Bearer error="invalid_token"' in challenges


async def test_an_entra_issuer_adds_the_authorization_uri_challenge_power_bi_signs_in_with(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    uri = "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/oauth2/authorize"
    # Set and put back by hand: pytest's monkeypatch deletes a Starlette State attribute on undo.
    configured = app.state.settings
    app.state.settings = configured.model_copy(update={"feed_authorization_uri": uri})
    try:
        # What Power BI's "Organizational account" sends first: an empty bearer token.
        response = await client.get("/odata/", headers={"Authorization": "Bearer"})
    finally:
        app.state.settings = configured

    assert response.status_code == 401
    assert f'Bearer authorization_uri="{uri}"' in response.headers.get_list("www-authenticate")


async def test_a_bearer_token_reads_the_feed_too(
    client: httpx.AsyncClient, reader: dict[str, Any]
) -> None:
    response = await client.get(
        "/odata/IndicatorPoints",
        params={**WINDOW, "$filter": "Breakdown eq null", "$top": "3"},
        headers=reader["client"].headers,
    )

    assert response.status_code == 200
    assert len(response.json()["value"]) == 3


async def test_dates_are_iso_dates_and_numbers_are_numbers(
    client: httpx.AsyncClient, reader: dict[str, Any]
) -> None:
    response = await client.get(
        "/odata/IndicatorPoints",
        params={
            **WINDOW,
            "$filter": "Unit eq 'percent' and Breakdown eq null "
            "and Suppressed eq false and Denominator gt 0",
            "$top": "1",
        },
        headers=reader["basic"],
    )

    [row] = response.json()["value"]
    start, end = date.fromisoformat(row["PeriodStart"]), date.fromisoformat(row["PeriodEnd"])
    assert (start.day, end.month, end.year) == (1, start.month, start.year)
    assert row["TimePeriod"] == start.year
    assert row["TimeIdentifier"] == start.strftime("%B")
    assert isinstance(row["Numerator"], int)
    assert isinstance(row["Denominator"], int)
    assert isinstance(row["Value"], float)
