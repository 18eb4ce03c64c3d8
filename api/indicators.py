"""Routes for the partnership's indicators (SPEC 2.5): the catalogue, and one indicator's series as
JSON or, for `Accept: text/csv`, CSV with the same figures.

Caching: every series response carries a strong ETag, the hash of the exact bytes sent (so the JSON
and CSV representations have different tags), and `Cache-Control: private, no-cache`, so a BI tool
revalidates each time and gets 304 Not Modified while the figures are unchanged.

CSV: by default the layout of the DfE's open-data standard (Explore Education Statistics), which
statistics teams already know: `time_period`, `time_identifier`, `geographic_level` and the
partnership's area (settings), the breakdown column named by what it is (`sex`, `age_band`...),
a `Total` row for every period when a breakdown is asked for (the figure without the breakdown),
integer counts, and `c` for a suppressed figure (`z` for a rate with no denominator). Its
metadata file, one row per column, is `GET /v1/indicators/{id}/meta.csv`. The CSV of earlier
releases stays available for this release as `csv_layout=legacy`.

Callers: a bearer token with `indicators:read`, a feed key, or a Power BI user's delegated Entra
ID token (see `authenticate_reader`).

Audit decision: indicator figures are aggregates, not personal data, so routine reads are not
audited (BI tools poll them; the trail would fill with noise), except that every use of a feed
key or of a user's delegated token is recorded (`authenticate_reader`). A series requested with
`indicators:read:unsuppressed` is different: exact small numbers about few children can identify
them to someone who knows the family, so each such response, JSON or CSV alike, is recorded as an
`export` audit event (resource type `indicator`, resource id the indicator id).

Rollup: the figures come from the indicator rollup (`service.indicators.rollup`) while it is exact,
or, after writes it does not hold yet, while it is at most `NEGLECT_INDICATOR_MAX_STALENESS_S` old;
then the body's `figures_as_of` (and the `X-Figures-As-Of` header, also on CSV) says when they were
computed, so the ETag changes when the figures may. Otherwise they are computed live.

Replica: the figures are read in a READ ONLY session, on the read replica when one is configured
and close enough behind (`service.replica`), and `X-Data-Lag-Seconds` says how old they may be;
the caller's client check and the export audit event use the primary.
"""

from __future__ import annotations

import csv
import hashlib
import io
from datetime import date, timedelta
from typing import Annotated, Final, Literal

from fastapi import APIRouter, Header, Path, Query, Request, Response, Security

from api.deps import (
    DATA_LAG_DOC,
    DATA_LAG_HEADER,
    ReadSessionDep,
    SessionDep,
    authenticate_reader,
    data_lag,
)
from api.responses import problems
from schemas.common import IsoDate, today_in_uk
from schemas.indicators import (
    Breakdown,
    BreakdownPublic,
    DisclosureControlPublic,
    IndicatorCatalogue,
    IndicatorPublic,
    IndicatorSeriesPublic,
    Period,
)
from schemas.open_data import (
    AREA_COLUMNS,
    COUNTRY_CODE,
    COUNTRY_NAME,
    NOT_APPLICABLE,
    SUPPRESSED,
    TOTAL,
    time_identifier,
    time_period,
)
from service.audit import record_access
from service.auth.caller import Caller
from service.indicators.catalogue import (
    IndicatorMeta,
    load_breakdown_definitions,
    load_catalogue,
    load_disclosure_control,
)
from service.indicators.compute import (
    IndicatorParameterInvalid,
    IndicatorSeries,
    SeriesPoint,
    compute_series,
    get_indicator,
)
from service.settings import Settings

router = APIRouter(prefix="/v1", tags=["indicators"])

IndicatorsReader = Annotated[Caller, Security(authenticate_reader, scopes=["indicators:read"])]

UNSUPPRESSED_SCOPE: Final = "indicators:read:unsuppressed"
CSV_MEDIA_TYPE: Final = "text/csv"
FIGURES_AS_OF_HEADER: Final = "X-Figures-As-Of"
CSV_COLUMNS: Final = (
    "indicator_id",
    "period_start",
    "period_end",
    "label",
    "group",
    "numerator",
    "denominator",
    "value",
    "suppressed",
)
# Spreadsheets run a cell starting with one of these as a formula, also after leading spaces or
# line breaks, and some (Excel in East Asian locales) read the full-width forms as the ASCII ones.
_FORMULA_STARTS: Final = frozenset("=+-@\uff1d\uff0b\uff0d\uff20")
# OWASP's list also has these two at the very start: they can hide what follows.
_CONTROL_STARTS: Final = ("\t", "\r")

_SERIES_RESPONSES: Final = {
    **problems(401, 403, 404, 422, 503),
    200: {
        "description": "The series as JSON, or as CSV (one row per point) for `Accept: text/csv`",
        "content": {CSV_MEDIA_TYPE: {"schema": {"type": "string"}}},
        "headers": {
            "ETag": {"description": "Strong tag of this body", "schema": {"type": "string"}},
            **DATA_LAG_DOC,
            FIGURES_AS_OF_HEADER: {
                "description": "Present when the figures may be older than the data: when they "
                "were computed (the body's `figures_as_of`; see README, indicator rollup)",
                "schema": {"type": "string", "format": "date-time"},
            },
        },
    },
    304: {"description": "Not modified: the figures match the `If-None-Match` tag"},
}


def _public(meta: IndicatorMeta) -> IndicatorPublic:
    return IndicatorPublic.model_validate(meta.model_dump())


@router.get("/indicators", response_model=IndicatorCatalogue, responses=problems(401, 403, 503))
async def list_indicators(caller: IndicatorsReader) -> IndicatorCatalogue:
    """The indicator catalogue: what each indicator means, the breakdowns offered, and how
    published figures are protected (suppression, and the cell-key perturbation table)."""
    return IndicatorCatalogue(
        indicators=[_public(meta) for meta in load_catalogue().values()],
        breakdowns=[
            BreakdownPublic(id=breakdown, definition=definition)
            for breakdown, definition in load_breakdown_definitions().items()
        ],
        disclosure_control=DisclosureControlPublic.model_validate(
            load_disclosure_control().model_dump()
        ),
    )


def _prefers_csv(accept: str | None) -> bool:
    """Whether `Accept` asks for text/csv at least as strongly as for application/json."""
    weights: dict[str, float] = {}
    for media_range in (accept or "").split(","):
        media_type, *parameters = (part.strip() for part in media_range.split(";"))
        weight = 1.0
        for parameter in parameters:
            name, _, raw = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(raw)
                except ValueError:
                    weight = 0.0
        weights[media_type.lower()] = max(weight, weights.get(media_type.lower(), 0.0))
    csv_weight = weights.get(CSV_MEDIA_TYPE, 0.0)
    return csv_weight > 0 and csv_weight >= weights.get("application/json", 0.0)


def _series_public(series: IndicatorSeries) -> IndicatorSeriesPublic:
    # One validation of the whole body in pydantic's core, the points as dicts (faster there
    # than reading a point's attributes, and than a constructor call per point): a series with
    # a breakdown has hundreds of points.
    return IndicatorSeriesPublic.model_validate(
        {
            "indicator": _public(series.indicator),
            "period": series.period,
            "breakdown": series.breakdown,
            "suppression_applied": series.suppression_applied,
            "figures_as_of": series.figures_as_of,
            "series": [point._asdict() for point in series.points],
        }
    )


def neutralise_csv_cell(cell: str | None) -> str:
    """A text cell a spreadsheet shows as text: one that could start a formula gets a leading
    apostrophe, which spreadsheets hide and treat as "this is text"."""
    if cell is None:
        return ""
    if cell.startswith(_CONTROL_STARTS) or cell.lstrip()[:1] in _FORMULA_STARTS:
        return "'" + cell
    return cell


def _csv_number(number: int | float | None) -> str:
    return "" if number is None else str(number)


def render_csv(body: IndicatorSeriesPublic) -> str:
    """The series as CSV: a header row, then one row per point; suppressed figures are empty."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for point in body.series:
        writer.writerow(
            (
                body.indicator.id,
                point.period_start.isoformat(),
                point.period_end.isoformat(),
                neutralise_csv_cell(point.label),
                neutralise_csv_cell(point.group),
                _csv_number(point.numerator),
                _csv_number(point.denominator),
                _csv_number(point.value),
                "true" if point.suppressed else "false",
            )
        )
    return out.getvalue()


CsvLayout = Literal["tidy", "legacy"]
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
_LABEL_LIMIT: Final = 80


def measure_columns(meta: IndicatorMeta) -> tuple[str, ...]:
    """The indicator columns of the open-data CSV, named `{title}_{data type}` as the standard
    asks: a count is one whole number; a percent and a mean keep the numbers behind them."""
    if meta.unit == "count":
        return ("value_count",)
    if meta.unit == "percent":
        return ("numerator_count", "denominator_count", "value_percent")
    return ("numerator_sum", "denominator_count", "value_average")


def _figure(number: int | float | None, suppressed: bool) -> str:
    if suppressed:
        return SUPPRESSED
    return NOT_APPLICABLE if number is None else str(number)


def _measures(meta: IndicatorMeta, point: SeriesPoint) -> tuple[str, ...]:
    if meta.unit == "count":
        return (_figure(point.numerator, point.suppressed),)
    return (
        _figure(point.numerator, point.suppressed),
        _figure(point.denominator, point.suppressed),
        _figure(point.value, point.suppressed),
    )


def _area(settings: Settings) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The geography columns and their values, the same on every row."""
    level = settings.area_level
    columns = ("geographic_level", "country_code", "country_name", *AREA_COLUMNS[level])
    area: tuple[str, ...] = ()
    if level == "Local authority":
        area = (settings.area_old_la_code, settings.area_code, settings.area_name)
    elif AREA_COLUMNS[level]:
        area = (settings.area_code, settings.area_name)
    values = tuple(
        neutralise_csv_cell(value) for value in (level, COUNTRY_CODE, COUNTRY_NAME, *area)
    )
    return columns, values


def render_tidy_csv(
    series: IndicatorSeries, totals: IndicatorSeries | None, settings: Settings
) -> str:
    """The series in the open-data layout: per period, the `Total` row (from `totals`, the same
    indicator without the breakdown) and then one row per breakdown group."""
    meta = series.indicator
    area_columns, area = _area(settings)
    breakdown_columns = (series.breakdown,) if series.breakdown else ()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(
        (
            "time_period",
            "time_identifier",
            *area_columns,
            *breakdown_columns,
            *measure_columns(meta),
        )
    )

    def row(point: SeriesPoint, group: tuple[str, ...]) -> tuple[str, ...]:
        when = (
            str(time_period(series.period, point.period_start, point.period_end)),
            time_identifier(series.period, point.period_start, point.period_end),
        )
        return when + area + group + _measures(meta, point)

    if series.breakdown is None:
        for point in series.points:
            writer.writerow(row(point, ()))
        return out.getvalue()
    by_period: dict[date, list[tuple[SeriesPoint, str]]] = {}
    # Every period has its Total first, even one where no group has a row.
    for total in totals.points if totals else []:
        by_period.setdefault(total.period_start, []).append((total, TOTAL))
    for point in series.points:
        group = neutralise_csv_cell(point.group)
        by_period.setdefault(point.period_start, []).append((point, group))
    for period_rows in by_period.values():
        for point, group in period_rows:
            writer.writerow(row(point, (group,)))
    return out.getvalue()


def _short(label: str) -> str:
    return label if len(label) <= _LABEL_LIMIT else label[: _LABEL_LIMIT - 1].rstrip() + "…"


def render_metadata_csv(meta: IndicatorMeta, breakdown: Breakdown | None) -> str:
    """The open-data metadata file: one row per filter and indicator column of the CSV."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(META_COLUMNS)
    if breakdown is not None:
        name = breakdown.replace("_", " ")
        hint = f"Filter by {name}"
        if breakdown == "neglect_form":
            hint += "; a record citing several forms counts under each, so groups overlap"
        writer.writerow((breakdown, "Filter", name.capitalize(), "", "", "", hint, ""))
    labels = {
        "value_count": (meta.title, "", "0"),
        "numerator_count": (meta.numerator, "", "0"),
        "numerator_sum": (meta.numerator, "", "0"),
        "denominator_count": (meta.denominator or "", "", "0"),
        "value_percent": (meta.title, "%", "1"),
        "value_average": (meta.title, "", "2"),
    }
    for column in measure_columns(meta):
        label, unit, places = labels[column]
        writer.writerow(
            (column, "Indicator", neutralise_csv_cell(_short(label)), "", unit, places, "", "")
        )
    return out.getvalue()


def _csv_name(meta: IndicatorMeta, breakdown: Breakdown | None) -> str:
    return meta.id + (f"_by_{breakdown}" if breakdown else "")


def _entity_tag(content: bytes) -> str:
    return '"' + hashlib.sha256(content).hexdigest()[:40] + '"'


def _matches(if_none_match: str | None, tag: str) -> bool:
    """RFC 9110 weak comparison, as If-None-Match uses."""
    if if_none_match is None:
        return False
    candidates = [candidate.strip() for candidate in if_none_match.split(",")]
    return "*" in candidates or tag in (candidate.removeprefix("W/") for candidate in candidates)


@router.get(
    "/indicators/{indicator_id}",
    response_model=IndicatorSeriesPublic,
    responses=_SERIES_RESPONSES,
)
async def get_indicator_series(
    indicator_id: Annotated[str, Path(max_length=64)],
    session: SessionDep,
    reads: ReadSessionDep,
    caller: IndicatorsReader,
    from_: Annotated[
        IsoDate | None,
        Query(alias="from", description="First day of the range; default: a year before `to`"),
    ] = None,
    to: Annotated[
        IsoDate | None, Query(description="Last day of the range; default: today")
    ] = None,
    period: Annotated[
        Period,
        Query(description="Bucket size; `snapshot` is the last day of each month"),
    ] = "month",
    breakdown: Annotated[
        Breakdown | None, Query(description="Split each period by this; see GET /v1/indicators")
    ] = None,
    csv_layout: Annotated[
        CsvLayout,
        Query(
            description="CSV only: `tidy`, the DfE open-data layout (its metadata file is "
            "`.../meta.csv`), or `legacy`, the layout of earlier releases (to be removed)"
        ),
    ] = "tidy",
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
    if_none_match: Annotated[str | None, Header()] = None,
    *,
    request: Request,
) -> Response:
    """One indicator's series over whole periods covering `from`..`to`, with small numbers
    suppressed and other counts perturbed unless the caller holds indicators:read:unsuppressed.
    JSON, or CSV for `Accept: text/csv`; send the ETag back in `If-None-Match` to get 304 while
    unchanged."""
    meta = get_indicator(indicator_id)
    end = to or today_in_uk()
    start = from_ or _a_year_before(end)
    unsuppressed = caller.has(UNSUPPRESSED_SCOPE)
    settings: Settings = request.app.state.settings
    series = await compute_series(
        reads,
        meta,
        start=start,
        end=end,
        period=period,
        breakdown=breakdown,
        unsuppressed=unsuppressed,
        max_staleness_s=settings.indicator_max_staleness_s,
    )
    if unsuppressed:
        await record_access(session, caller, "export", "indicator", meta.id)
    body = _series_public(series)
    totals: IndicatorSeries | None = None
    if _prefers_csv(accept) and csv_layout == "tidy":
        if breakdown is not None:
            totals = await compute_series(
                reads,
                meta,
                start=start,
                end=end,
                period=period,
                breakdown=None,
                unsuppressed=unsuppressed,
                max_staleness_s=settings.indicator_max_staleness_s,
            )
        content = render_tidy_csv(series, totals, settings).encode()
        media_type = f"{CSV_MEDIA_TYPE}; charset=utf-8"
    elif _prefers_csv(accept):
        content, media_type = render_csv(body).encode(), f"{CSV_MEDIA_TYPE}; charset=utf-8"
    else:
        content, media_type = body.model_dump_json().encode(), "application/json"
    headers = {
        "ETag": _entity_tag(content),
        "Cache-Control": "private, no-cache",
        "Vary": "Accept, Authorization",
        DATA_LAG_HEADER: data_lag(reads),
    }
    figures_as_of = series.figures_as_of or (totals.figures_as_of if totals else None)
    if figures_as_of is not None:
        headers[FIGURES_AS_OF_HEADER] = figures_as_of.isoformat()
    if _matches(if_none_match, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    if media_type.startswith(CSV_MEDIA_TYPE):
        name = _csv_name(meta, breakdown) if csv_layout == "tidy" else meta.id
        headers["Content-Disposition"] = f'attachment; filename="{name}.csv"'
    return Response(content=content, media_type=media_type, headers=headers)


@router.get(
    "/indicators/{indicator_id}/meta.csv",
    response_class=Response,
    responses={
        **problems(401, 403, 404, 422, 503),
        200: {
            "description": "The open-data metadata file of the tidy CSV",
            "content": {CSV_MEDIA_TYPE: {"schema": {"type": "string"}}},
        },
    },
)
async def get_indicator_csv_metadata(
    indicator_id: Annotated[str, Path(max_length=64)],
    caller: IndicatorsReader,
    breakdown: Annotated[
        Breakdown | None, Query(description="The breakdown of the CSV it describes")
    ] = None,
) -> Response:
    """The metadata file (`col_name`, `col_type`, `label`, ...) of the indicator's open-data
    CSV: one row per filter and indicator column."""
    meta = get_indicator(indicator_id)
    if breakdown is not None and breakdown not in meta.breakdowns:
        raise IndicatorParameterInvalid(
            "breakdown", f"this indicator offers the breakdowns {', '.join(meta.breakdowns)}"
        )
    name = _csv_name(meta, breakdown)
    return Response(
        content=render_metadata_csv(meta, breakdown).encode(),
        media_type=f"{CSV_MEDIA_TYPE}; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{name}.meta.csv"',
            "Cache-Control": "private, no-cache",
        },
    )


def _a_year_before(day: date) -> date:
    """The day after the same date a year earlier, so the default range is exactly a year."""
    if day.year == 1:  # no year before it; the range check refuses a `to` this early
        return day
    try:
        return day.replace(year=day.year - 1) + timedelta(days=1)
    except ValueError:  # 29 February
        return date(day.year - 1, 3, 1)
