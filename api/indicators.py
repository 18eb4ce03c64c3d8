"""Routes for the partnership's indicators (SPEC 2.5): the catalogue, and one indicator's series as
JSON or, for `Accept: text/csv`, CSV with the same figures.

Caching: every series response carries a strong ETag, the hash of the exact bytes sent (so the JSON
and CSV representations have different tags), and `Cache-Control: private, no-cache`, so a BI tool
revalidates each time and gets 304 Not Modified while the figures are unchanged.

Audit decision: indicator figures are aggregates, not personal data, so routine reads are not
audited (BI tools poll them; the trail would fill with noise). A series requested with
`indicators:read:unsuppressed` is different: exact small numbers about few children can identify
them to someone who knows the family, so each such response, JSON or CSV alike, is recorded as an
`export` audit event (resource type `indicator`, resource id the indicator id).

Replica: the figures are read in a READ ONLY session, on the read replica when one is configured
and close enough behind (`service.replica`), and `X-Data-Lag-Seconds` says how old they may be;
the caller's client check and the export audit event use the primary.
"""

from __future__ import annotations

import csv
import hashlib
import io
from datetime import date, timedelta
from typing import Annotated, Final

from fastapi import APIRouter, Header, Path, Query, Response, Security

from api.deps import SessionDep, authenticate
from api.reads import DATA_LAG_DOC, DATA_LAG_HEADER, ReadSessionDep, data_lag
from api.responses import problems
from schemas.common import IsoDate, today_in_uk
from schemas.indicators import (
    Breakdown,
    BreakdownPublic,
    IndicatorCatalogue,
    IndicatorPublic,
    IndicatorSeriesPublic,
    Period,
    SeriesPointPublic,
)
from service.audit import record_access
from service.auth.caller import Caller
from service.indicators.catalogue import IndicatorMeta, load_breakdown_definitions, load_catalogue
from service.indicators.compute import IndicatorSeries, compute_series, get_indicator

router = APIRouter(prefix="/v1", tags=["indicators"])

IndicatorsReader = Annotated[Caller, Security(authenticate, scopes=["indicators:read"])]

UNSUPPRESSED_SCOPE: Final = "indicators:read:unsuppressed"
CSV_MEDIA_TYPE: Final = "text/csv"
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
        },
    },
    304: {"description": "Not modified: the figures match the `If-None-Match` tag"},
}


def _public(meta: IndicatorMeta) -> IndicatorPublic:
    return IndicatorPublic.model_validate(meta.model_dump())


@router.get("/indicators", response_model=IndicatorCatalogue, responses=problems(401, 403, 503))
async def list_indicators(caller: IndicatorsReader) -> IndicatorCatalogue:
    """The indicator catalogue: what each indicator means, and the breakdowns offered."""
    return IndicatorCatalogue(
        indicators=[_public(meta) for meta in load_catalogue().values()],
        breakdowns=[
            BreakdownPublic(id=breakdown, definition=definition)
            for breakdown, definition in load_breakdown_definitions().items()
        ],
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
    return IndicatorSeriesPublic(
        indicator=_public(series.indicator),
        period=series.period,
        breakdown=series.breakdown,
        suppression_applied=series.suppression_applied,
        series=[
            SeriesPointPublic(
                period_start=point.period_start,
                period_end=point.period_end,
                label=point.label,
                group=point.group,
                numerator=point.numerator,
                denominator=point.denominator,
                value=point.value,
                suppressed=point.suppressed,
            )
            for point in series.points
        ],
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
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """One indicator's series over whole periods covering `from`..`to`, with small numbers
    suppressed unless the caller holds indicators:read:unsuppressed. JSON, or CSV for
    `Accept: text/csv`; send the ETag back in `If-None-Match` to get 304 while unchanged."""
    meta = get_indicator(indicator_id)
    end = to or today_in_uk()
    start = from_ or _a_year_before(end)
    unsuppressed = caller.has(UNSUPPRESSED_SCOPE)
    series = await compute_series(
        reads,
        meta,
        start=start,
        end=end,
        period=period,
        breakdown=breakdown,
        unsuppressed=unsuppressed,
    )
    if unsuppressed:
        await record_access(session, caller, "export", "indicator", meta.id)
    body = _series_public(series)
    if _prefers_csv(accept):
        content, media_type = render_csv(body).encode(), f"{CSV_MEDIA_TYPE}; charset=utf-8"
    else:
        content, media_type = body.model_dump_json().encode(), "application/json"
    headers = {
        "ETag": _entity_tag(content),
        "Cache-Control": "private, no-cache",
        "Vary": "Accept, Authorization",
        DATA_LAG_HEADER: data_lag(reads),
    }
    if _matches(if_none_match, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    if media_type.startswith(CSV_MEDIA_TYPE):
        headers["Content-Disposition"] = f'attachment; filename="{meta.id}.csv"'
    return Response(content=content, media_type=media_type, headers=headers)


def _a_year_before(day: date) -> date:
    """The day after the same date a year earlier, so the default range is exactly a year."""
    if day.year == 1:  # no year before it; the range check refuses a `to` this early
        return day
    try:
        return day.replace(year=day.year - 1) + timedelta(days=1)
    except ValueError:  # 29 February
        return date(day.year - 1, 3, 1)
