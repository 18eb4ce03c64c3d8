"""The indicator CSV in the layout of the DfE's open-data standard (issue 13, acceptance 5).

It loads in DuckDB and pandas with integer counts (each told that `c` and `z` are the standard's
symbols for a withheld and a not-applicable figure), has a `Total` row per period equal to the
figure without the breakdown, and passes these checks of the standard (DfE analysts' guide, "Open
data standards", and its data screener), each a test below:

- mandatory_columns: time_period, time_identifier, geographic_level, country_code and country_name
  come first, then the columns the geographic level requires;
- time_period_format: four digits, or six for consecutive years (202324);
- time_identifier_allowed: an allowable value, one kind of year per file;
- geography_columns: the level is allowable and its code and name columns are present;
- column_names: snake_case, no spaces or special characters, not starting with a digit, at most
  50 characters;
- filter_totals: every filter has a `Total` row in every period;
- symbols_only: a figure is a number or one of the GSS symbols (here `c` and `z`), never empty;
- unique_rows: no two rows for the same period, area and filter values;
- metadata_file: the metadata CSV has exactly the standard's columns and one row per filter and
  indicator column, with a col_type, a label of at most 80 characters, an allowed unit and a
  number of decimal places.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any, Final

import duckdb
import httpx
import pandas as pd
import pytest

from api.indicators import render_tidy_csv
from service.indicators.catalogue import load_catalogue
from service.indicators.compute import IndicatorSeries, SeriesPoint
from tests.builders.feed import load_partnership
from tests.conftest import ClientMaker, RegisteredClient

MANDATORY: Final = (
    "time_period",
    "time_identifier",
    "geographic_level",
    "country_code",
    "country_name",
)
LA_COLUMNS: Final = ("old_la_code", "new_la_code", "la_name")
TIME_IDENTIFIERS: Final = {
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
    "Calendar year",
    "Calendar year Q1",
    "Calendar year Q2",
    "Calendar year Q3",
    "Calendar year Q4",
    "Financial year",
}
SYMBOLS: Final = {"c", "z", "x", "low", "u"}
META_COLUMNS: Final = (
    "col_name",
    "col_type",
    "label",
    "indicator_grouping",
    "indicator_unit",
    "indicator_dp",
    "filter_hint",
    "filter_grouping_column",
)
YEAR: Final = {"from": "2024-01-01", "to": "2024-12-31", "period": "month"}
COUNT_BY_AGENCY: Final = ("toolkit_assessments", "agency_type")
PERCENT_BY_SEX: Final = ("neglect_referral_share", "sex")


@pytest.fixture(scope="module", autouse=True)
async def partnership(database_url: str) -> None:
    await load_partnership(database_url)


@pytest.fixture
async def reader(make_client: ClientMaker) -> RegisteredClient:
    return await make_client(["indicators:read"])


async def _csv(
    client: httpx.AsyncClient, reader: RegisteredClient, indicator: str, **params: str
) -> httpx.Response:
    response = await client.get(
        f"/v1/indicators/{indicator}",
        params={**YEAR, **params},
        headers={**reader.headers, "Accept": "text/csv"},
    )
    assert response.status_code == 200, response.text
    return response


def _rows(response: httpx.Response) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(response.text)))


async def _series(
    client: httpx.AsyncClient, reader: RegisteredClient, indicator: str, **params: str
) -> list[dict[str, Any]]:
    response = await client.get(
        f"/v1/indicators/{indicator}", params={**YEAR, **params}, headers=reader.headers
    )
    series: list[dict[str, Any]] = response.json()["series"]
    return series


# --- Loading ------------------------------------------------------------------------------------


async def test_it_loads_in_duckdb_with_integer_counts_and_a_plain_breakdown_column(
    client: httpx.AsyncClient, reader: RegisteredClient, tmp_path: Path
) -> None:
    indicator, breakdown = COUNT_BY_AGENCY
    path = tmp_path / "toolkit_assessments_by_agency_type.csv"
    path.write_bytes((await _csv(client, reader, indicator, breakdown=breakdown)).content)

    connection = duckdb.connect()
    relation = connection.execute(
        # The column is named by what it is: no quoting, unlike `group`.
        "SELECT time_period, time_identifier, agency_type, value_count "
        "FROM read_csv(?, nullstr = ['c', 'z'])",
        [str(path)],
    )
    types = {column[0]: str(column[1]) for column in relation.description}
    rows = relation.fetchall()

    assert types["value_count"] in {"BIGINT", "INTEGER"}
    assert types["time_period"] in {"BIGINT", "INTEGER"}
    assert len(rows) > 12
    assert {row[2] for row in rows} >= {"Total"}


async def test_it_loads_in_pandas_with_integer_counts_whether_or_not_a_cell_is_suppressed(
    client: httpx.AsyncClient, reader: RegisteredClient
) -> None:
    indicator, breakdown = PERCENT_BY_SEX
    response = await _csv(client, reader, indicator, breakdown=breakdown)

    frame = pd.read_csv(
        io.StringIO(response.text),
        na_values=["c", "z"],
        keep_default_na=False,
        dtype_backend="numpy_nullable",
    )

    assert any(row["numerator_count"] == "c" for row in _rows(response)), "needs a suppressed cell"
    assert str(frame["numerator_count"].dtype) == "Int64"
    assert str(frame["denominator_count"].dtype) == "Int64"
    assert str(frame["time_period"].dtype) == "Int64"
    assert str(frame["value_percent"].dtype) == "Float64"
    assert frame["numerator_count"].isna().any()


# --- Totals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("indicator", "breakdown"), [COUNT_BY_AGENCY, PERCENT_BY_SEX])
async def test_each_period_has_a_total_row_equal_to_the_figure_without_the_breakdown(
    client: httpx.AsyncClient, reader: RegisteredClient, indicator: str, breakdown: str
) -> None:
    rows = _rows(await _csv(client, reader, indicator, breakdown=breakdown))
    unbroken = await _series(client, reader, indicator)

    totals = [row for row in rows if row[breakdown] == "Total"]
    figure = "value_count" if "value_count" in rows[0] else "numerator_count"

    def shown(number: Any, suppressed: bool) -> str:
        return "c" if suppressed else ("z" if number is None else str(number))

    assert [(row["time_identifier"], row[figure]) for row in totals] == [
        (
            date.fromisoformat(point["period_start"]).strftime("%B"),
            shown(point["numerator"], point["suppressed"]),
        )
        for point in unbroken
    ]
    # ...and each Total row comes first in its period, before the groups.
    assert [row[breakdown] for row in rows[:: len(rows) // len(totals)]] == ["Total"] * len(totals)


async def test_cells_equal_the_json_series(
    client: httpx.AsyncClient, reader: RegisteredClient
) -> None:
    indicator, breakdown = PERCENT_BY_SEX
    rows = _rows(await _csv(client, reader, indicator, breakdown=breakdown))
    series = await _series(client, reader, indicator, breakdown=breakdown)

    def shown(number: Any, suppressed: bool) -> str:
        return "c" if suppressed else ("z" if number is None else str(number))

    assert [
        (row[breakdown], row["numerator_count"], row["denominator_count"], row["value_percent"])
        for row in rows
        if row[breakdown] != "Total"
    ] == [
        (
            point["group"],
            shown(point["numerator"], point["suppressed"]),
            shown(point["denominator"], point["suppressed"]),
            shown(point["value"], point["suppressed"]),
        )
        for point in series
    ]


# --- The standard's checks ----------------------------------------------------------------------


@pytest.fixture
async def open_data(client: httpx.AsyncClient, reader: RegisteredClient) -> dict[str, Any]:
    indicator, breakdown = PERCENT_BY_SEX
    data = await _csv(client, reader, indicator, breakdown=breakdown)
    meta = await client.get(
        f"/v1/indicators/{indicator}/meta.csv",
        params={"breakdown": breakdown},
        headers=reader.headers,
    )
    assert meta.status_code == 200
    header = next(csv.reader(io.StringIO(data.text)))
    return {
        "header": header,
        "rows": _rows(data),
        "meta": _rows(meta),
        "meta_header": next(csv.reader(io.StringIO(meta.text))),
        "filters": [breakdown],
        "disposition": (data.headers["content-disposition"], meta.headers["content-disposition"]),
    }


def test_mandatory_columns(open_data: dict[str, Any]) -> None:
    assert tuple(open_data["header"][:5]) == MANDATORY


def test_time_period_format(open_data: dict[str, Any]) -> None:
    for row in open_data["rows"]:
        period = row["time_period"]
        assert re.fullmatch(r"\d{4}|\d{6}", period), period
        if len(period) == 6:
            assert (int(period[:4]) + 1) % 100 == int(period[4:])


def test_time_identifier_allowed(open_data: dict[str, Any]) -> None:
    identifiers = {row["time_identifier"] for row in open_data["rows"]}
    assert identifiers <= TIME_IDENTIFIERS
    kinds = {
        "month"
        if i in TIME_IDENTIFIERS - {"Calendar year", "Financial year"} and " Q" not in i
        else i
        for i in identifiers
    }
    assert len(kinds) == 1, f"one kind of period per file: {identifiers}"


def test_geography_columns(open_data: dict[str, Any]) -> None:
    levels = {row["geographic_level"] for row in open_data["rows"]}
    assert levels == {"Local authority"}
    assert tuple(open_data["header"][5:8]) == LA_COLUMNS
    assert {row["country_code"] for row in open_data["rows"]} == {"E92000001"}


def test_column_names(open_data: dict[str, Any]) -> None:
    for name in open_data["header"] + open_data["meta_header"]:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", name), name
        assert len(name) <= 50


def test_filter_totals(open_data: dict[str, Any]) -> None:
    for column in open_data["filters"]:
        periods = {row["time_period"] + row["time_identifier"] for row in open_data["rows"]}
        totals = Counter(
            row["time_period"] + row["time_identifier"]
            for row in open_data["rows"]
            if row[column] == "Total"
        )
        assert totals == Counter(periods)


def test_symbols_only(open_data: dict[str, Any]) -> None:
    indicators = [m["col_name"] for m in open_data["meta"] if m["col_type"] == "Indicator"]
    for row in open_data["rows"]:
        for column in indicators:
            cell = row[column]
            assert cell in SYMBOLS or re.fullmatch(r"-?\d+(\.\d+)?", cell), (column, cell)
            if column.endswith("_count") and cell not in SYMBOLS:
                assert cell.isdigit(), f"a count must be a whole number: {cell}"


def test_unique_rows(open_data: dict[str, Any]) -> None:
    keys = [
        tuple(row[c] for c in (*MANDATORY, *LA_COLUMNS, *open_data["filters"]))
        for row in open_data["rows"]
    ]
    assert len(keys) == len(set(keys))


def test_metadata_file(open_data: dict[str, Any]) -> None:
    assert tuple(open_data["meta_header"]) == META_COLUMNS
    described = [row["col_name"] for row in open_data["meta"]]
    own = [c for c in open_data["header"] if c not in (*MANDATORY, *LA_COLUMNS)]
    assert described == own
    for row in open_data["meta"]:
        assert row["col_type"] in {"Filter", "Indicator"}
        assert 0 < len(row["label"]) <= 80
        assert row["indicator_unit"] in {"", "%", "£", "£m", "pp"}
        if row["col_type"] == "Indicator":
            assert row["indicator_dp"].isdigit()
    data_name, meta_name = open_data["disposition"]
    assert 'filename="neglect_referral_share_by_sex.csv"' in data_name
    assert 'filename="neglect_referral_share_by_sex.meta.csv"' in meta_name


# --- Other shapes -------------------------------------------------------------------------------


async def test_without_a_breakdown_there_is_no_filter_column(
    client: httpx.AsyncClient, reader: RegisteredClient
) -> None:
    rows = _rows(await _csv(client, reader, "toolkit_assessments"))

    assert list(rows[0]) == [*MANDATORY, *LA_COLUMNS, "value_count"]
    assert len(rows) == 12


async def test_the_legacy_layout_is_still_there_behind_a_parameter(
    client: httpx.AsyncClient, reader: RegisteredClient
) -> None:
    response = await _csv(client, reader, "toolkit_assessments", csv_layout="legacy")

    assert response.text.startswith("indicator_id,period_start,period_end,label,group,")


def test_the_area_comes_from_the_settings_at_any_level(settings: Any) -> None:
    meta = load_catalogue()["toolkit_assessments"]
    series = IndicatorSeries(
        indicator=meta,
        period="quarter",
        breakdown=None,
        suppression_applied=True,
        points=[
            SeriesPoint(
                period_start=date(2024, 4, 1),
                period_end=date(2024, 6, 30),
                label="2024-Q2",
                group=None,
                numerator=12,
                denominator=None,
                value=12,
                suppressed=False,
            )
        ],
    )
    regional = settings.model_copy(
        update={"area_level": "Regional", "area_code": "E12000001", "area_name": "North East"}
    )

    rows = list(csv.reader(io.StringIO(render_tidy_csv(series, None, regional))))

    assert rows == [
        [*MANDATORY, "region_code", "region_name", "value_count"],
        [
            "2024",
            "Calendar year Q2",
            "Regional",
            "E92000001",
            "England",
            "E12000001",
            "North East",
            "12",
        ],
    ]


def test_a_period_without_any_group_still_has_its_total_row(settings: Any) -> None:
    meta = load_catalogue()["toolkit_assessments"]

    def point(month: int, group: str | None, count: int) -> SeriesPoint:
        start = date(2024, month, 1)
        return SeriesPoint(
            start, date(2024, month, 28), f"2024-{month:02d}", group, count, None, count, False
        )

    by_ethnicity = IndicatorSeries(meta, "month", "ethnicity", True, [point(2, "WBRI", 7)])
    totals = IndicatorSeries(meta, "month", None, True, [point(1, None, 0), point(2, None, 7)])

    rows = list(csv.DictReader(io.StringIO(render_tidy_csv(by_ethnicity, totals, settings))))

    assert [(r["time_identifier"], r["ethnicity"], r["value_count"]) for r in rows] == [
        ("January", "Total", "0"),
        ("February", "Total", "7"),
        ("February", "WBRI", "7"),
    ]
