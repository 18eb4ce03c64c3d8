"""The OData v4 feed (`/odata/`) for Power BI, Excel and any other OData client: the service
document, `$metadata` (CSDL XML), and the entity sets `IndicatorPoints` and `Indicators`, read-only.

Every answer carries `OData-Version: 4.0` (the middleware adds it) and every error is an OData JSON
error (api/errors.py). What the rows are, how the query options are read and how pages stay
exact while data arrives is in service/feed.py. These routes are left out of `openapi.yaml`: the
contract of an OData service is its `$metadata`, and the README says how to connect.

Authentication: a bearer token with `indicators:read`, a feed key (`feed_key` query parameter or
HTTP Basic), or a user's delegated Entra ID token from Power BI's "Organizational account", see
`authenticate_reader`. Like `GET /v1/indicators/{id}`, a series read with
`indicators:read:unsuppressed` is recorded as an `export` audit event; feed keys and users'
delegated tokens never read unsuppressed figures.

Replica: a pull's first page computes its figures on the read replica when one is configured and
close enough behind (`service.replica`), like the JSON series; the snapshot it stores, and every
later page read from it, are on the primary, where the snapshot was just written.
"""

from __future__ import annotations

from typing import Annotated, Any, Final
from urllib.parse import quote, urlencode
from xml.sax.saxutils import quoteattr

import orjson
from fastapi import APIRouter, Depends, Request, Response, Security

from schemas.common import today_in_uk
from schemas.feed import ENTITY_SETS, INDICATOR_POINTS, INDICATORS, NAMESPACE, EntitySet
from service.audit import record_access
from service.auth.caller import Caller
from service.errors import QueryOptionInvalid, QueryOptionNotImplemented
from service.feed import (
    WINDOW_OPTIONS,
    FeedQuery,
    Page,
    PagePosition,
    check_snapshot,
    compute_points_consistently,
    count_rows,
    decode_skiptoken,
    encode_skiptoken,
    parse_query,
    read_page,
    store_snapshot,
)
from service.settings import Settings

from .deps import FEED_KEY_PARAMETER, SessionDep, authenticate_reader, enforce_api_quota

router = APIRouter(
    prefix="/odata",
    tags=["odata"],
    include_in_schema=False,
    dependencies=[Depends(enforce_api_quota)],
)

FeedReader = Annotated[Caller, Security(authenticate_reader, scopes=["indicators:read"])]

UNSUPPRESSED_SCOPE: Final = "indicators:read:unsuppressed"
JSON_MEDIA_TYPE: Final = (
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false"
)
_CACHING: Final = {"Cache-Control": "private, no-cache", "Vary": "Authorization"}


def _service_root(request: Request) -> str:
    return str(request.base_url) + "odata/"


def _json(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(
        content=orjson.dumps(body),
        media_type=JSON_MEDIA_TYPE,
        headers={**_CACHING, **(headers or {})},
    )


def _check_document_options(request: Request, formats: frozenset[str]) -> None:
    """The service and metadata documents take no query option but `$format`; the custom
    options of IndicatorPoints are let through, since a client may send them with every request
    (Power Query's `Query` option)."""
    for name, value in _query_params(request):
        if name in WINDOW_OPTIONS:
            continue
        if name == "$format" and value.split(";")[0].strip() in formats:
            continue
        raise QueryOptionNotImplemented(f"{name} is not implemented on this document")


@router.get("")
@router.get("/")
async def get_service_document(request: Request, caller: FeedReader) -> Response:
    """The OData service document: the entity sets."""
    _check_document_options(request, frozenset({"json", "application/json"}))
    root = _service_root(request)
    return _json(
        {
            "@odata.context": root + "$metadata",
            "value": [
                {"name": entity_set.name, "kind": "EntitySet", "url": entity_set.name}
                for entity_set in ENTITY_SETS
            ],
        }
    )


def render_metadata() -> str:
    """The CSDL (XML) of the entity model."""
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">',
        "  <edmx:DataServices>",
        f'    <Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="{NAMESPACE}">',
    ]
    for entity_set in ENTITY_SETS:
        lines += [
            f"      <EntityType Name={quoteattr(entity_set.entity_type)}>",
            f"        <Key><PropertyRef Name={quoteattr(entity_set.key)}/></Key>",
        ]
        for prop in entity_set.properties:
            nullable = "" if prop.nullable else ' Nullable="false"'
            lines.append(
                f"        <Property Name={quoteattr(prop.name)} "
                f"Type={quoteattr(prop.edm_type)}{nullable}/>"
            )
        lines.append("      </EntityType>")
    lines.append('      <EntityContainer Name="Container">')
    for entity_set in ENTITY_SETS:
        lines.append(
            f"        <EntitySet Name={quoteattr(entity_set.name)} "
            f"EntityType={quoteattr(NAMESPACE + '.' + entity_set.entity_type)}/>"
        )
    lines += [
        "      </EntityContainer>",
        "    </Schema>",
        "  </edmx:DataServices>",
        "</edmx:Edmx>",
        "",
    ]
    return "\n".join(lines)


_METADATA: Final = render_metadata()


@router.get("/$metadata")
async def get_metadata(request: Request, caller: FeedReader) -> Response:
    """The CSDL document describing every entity type and set."""
    _check_document_options(request, frozenset({"xml", "application/xml"}))
    return Response(content=_METADATA, media_type="application/xml", headers=_CACHING)


def _query_params(request: Request) -> list[tuple[str, str]]:
    """Every query option but the credential, which is no query option."""
    return [
        (name, value)
        for name, value in request.query_params.multi_items()
        if name != FEED_KEY_PARAMETER
    ]


def _parse(request: Request, entity_set: EntitySet) -> FeedQuery:
    settings: Settings = request.app.state.settings
    return parse_query(
        entity_set,
        _query_params(request),
        default_months=settings.feed_months,
        today=today_in_uk(),
    )


def _page_size(request: Request) -> tuple[int, dict[str, str]]:
    """The server's page size, or the client's smaller `Prefer: odata.maxpagesize`, echoed in
    `Preference-Applied` as OData 4.0 (Protocol 8.2.8.3) asks."""
    settings: Settings = request.app.state.settings
    for preference in request.headers.get("prefer", "").split(","):
        name, _, value = preference.strip().partition("=")
        if name.strip().lower() == "odata.maxpagesize" and value.strip().isdigit():
            wanted = max(1, min(int(value.strip()), settings.feed_page_size))
            return wanted, {"Preference-Applied": f"odata.maxpagesize={wanted}"}
    return settings.feed_page_size, {}


def _next_link(request: Request, position: PagePosition) -> str:
    """The request again, every option kept (but `$skiptoken` and the credential), with the
    token of the next page."""
    params = [(name, value) for name, value in _query_params(request) if name != "$skiptoken"]
    params.append(("$skiptoken", encode_skiptoken(position)))
    base = str(request.url.replace(query=""))
    return base + "?" + urlencode(params, quote_via=quote)


def _context(request: Request, query: FeedQuery) -> str:
    selected = f"({','.join(query.select)})" if query.select else ""
    return f"{_service_root(request)}$metadata#{query.entity_set.name}{selected}"


async def _snapshot_for(
    request: Request, session: SessionDep, caller: Caller, query: FeedQuery
) -> tuple[Any, int]:
    """The snapshot and offset a request reads: the one its `$skiptoken` names, or, on a first
    page, a new one of every row the query can return. None for the static catalogue."""
    settings: Settings = request.app.state.settings
    unsuppressed = caller.has(UNSUPPRESSED_SCOPE)
    position = decode_skiptoken(query.skiptoken) if query.skiptoken else PagePosition(None, 0)
    if query.entity_set is not INDICATOR_POINTS:
        if position.snapshot_id is not None:
            raise QueryOptionInvalid("$skiptoken belongs to another entity set")
        return None, position.offset
    if unsuppressed:
        await record_access(session, caller, "export", "indicator", "odata:IndicatorPoints")
    if position.snapshot_id is not None:
        await check_snapshot(
            session,
            caller,
            query,
            position.snapshot_id,
            suppressed=not unsuppressed,
            ttl_s=settings.feed_snapshot_ttl_s,
        )
        return position.snapshot_id, position.offset
    if query.skiptoken:
        raise QueryOptionInvalid("$skiptoken belongs to another entity set")
    rows = await compute_points_consistently(
        request.app.state.reads, query, unsuppressed=unsuppressed
    )
    snapshot_id = await store_snapshot(
        session,
        caller,
        query,
        rows,
        suppressed=not unsuppressed,
        ttl_s=settings.feed_snapshot_ttl_s,
    )
    return snapshot_id, 0


async def _collection(
    request: Request, session: SessionDep, caller: Caller, entity_set: EntitySet
) -> Response:
    query = _parse(request, entity_set)
    snapshot_id, offset = await _snapshot_for(request, session, caller, query)
    page_size, preference = _page_size(request)
    page: Page = await read_page(session, query, snapshot_id, offset=offset, page_size=page_size)
    body: dict[str, Any] = {"@odata.context": _context(request, query)}
    if page.count is not None:
        body["@odata.count"] = page.count
    body["value"] = page.rows
    if page.next_offset is not None:
        body["@odata.nextLink"] = _next_link(request, PagePosition(snapshot_id, page.next_offset))
    return _json(body, preference)


async def _count(
    request: Request, session: SessionDep, caller: Caller, entity_set: EntitySet
) -> Response:
    query = _parse(request, entity_set)
    snapshot_id, _ = await _snapshot_for(request, session, caller, query)
    total = await count_rows(session, query, snapshot_id)
    return Response(content=str(total), media_type="text/plain", headers=_CACHING)


@router.get("/IndicatorPoints")
async def list_indicator_points(
    request: Request, session: SessionDep, caller: FeedReader
) -> Response:
    """Indicator points, one per indicator, period and breakdown cell, in pages."""
    return await _collection(request, session, caller, INDICATOR_POINTS)


@router.get("/IndicatorPoints/$count")
async def count_indicator_points(
    request: Request, session: SessionDep, caller: FeedReader
) -> Response:
    """How many indicator points match `$filter`, as plain text."""
    return await _count(request, session, caller, INDICATOR_POINTS)


@router.get("/Indicators")
async def list_catalogue(request: Request, session: SessionDep, caller: FeedReader) -> Response:
    """The indicator catalogue, in pages."""
    return await _collection(request, session, caller, INDICATORS)


@router.get("/Indicators/$count")
async def count_catalogue(request: Request, session: SessionDep, caller: FeedReader) -> Response:
    """How many catalogue entries match `$filter`, as plain text."""
    return await _count(request, session, caller, INDICATORS)
