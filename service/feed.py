"""The OData feed's domain: which rows an entity set holds, reading its query options, and paging
through them so that every row comes exactly once while data arrives.

Rows. `IndicatorPoints` holds, for every indicator offering the requested period, its series
without a breakdown and with each breakdown it offers, over one window (custom query options
`period`, `from` and `to`; by default monthly over the last `feed_months` months), exactly as
`compute_series` gives them to the JSON API. `Indicators` is the catalogue.

Exactly once. An indicator point is computed, not stored: its figures change when a case event
arrives, and a breakdown can gain a group. Paging over live figures would mix two states of the
data and could skip or repeat a group. So the first page of an `IndicatorPoints` query computes
every row the query can return, in one REPEATABLE READ transaction (one consistent state of the
database), and stores them as a snapshot (`feed_snapshot_point`), numbered in the feed's order.
Every later page names that snapshot in its `$skiptoken` and reads the next rows of the same,
immutable, totally ordered set (`$orderby` columns, then the row's number), so pages can neither
overlap nor leave a gap, whatever is written meanwhile. A snapshot lives `feed_snapshot_ttl_s`;
after that its token answers 410 and the client starts again. The next pull (a new first page)
sees the new data.

`$filter` is parsed by odata-query (a maintained OData grammar) and translated by its SQLAlchemy
visitor; before translation the tree is checked here, so that only the documented properties,
literals of their type, the comparison and logical operators and startswith/endswith/contains
reach SQL. Anything else is refused: 400 when it cannot be read, 501 when it is valid OData this
feed does not implement. Conjuncts that pin `IndicatorId` or `Breakdown` also limit what is
computed (a filter that Power Query folded costs only what it asks for).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Final

import orjson
import sqlalchemy as sa
from odata_query import ast
from odata_query import exceptions as odata_errors
from odata_query.grammar import ODataLexer, ODataParser
from odata_query.sqlalchemy.core import AstToSqlAlchemyCoreVisitor
from sqlalchemy import ColumnElement, text
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.feed import INDICATOR_POINTS, EntityProperty, EntitySet
from schemas.indicators import PERIODS, Breakdown, Period
from schemas.open_data import time_identifier, time_period
from service.auth.caller import Caller
from service.errors import (
    QueryOptionInvalid,
    QueryOptionNotImplemented,
    SnapshotExpired,
    Unprocessable,
)
from service.indicators.catalogue import load_catalogue
from service.indicators.compute import compute_series
from service.models import FeedSnapshot, FeedSnapshotPoint
from service.replica import ReadSessions

SUPPORTED_OPTIONS: Final = frozenset(
    {"$select", "$filter", "$orderby", "$top", "$skip", "$count", "$skiptoken", "$format"}
)
WINDOW_OPTIONS: Final = ("period", "from", "to")
"""Custom query options of IndicatorPoints: the series every row belongs to."""
_JSON_FORMATS: Final = frozenset({"json", "application/json"})
_STRING_FUNCTIONS: Final = frozenset({"startswith", "endswith", "contains"})
_INT32: Final = 2**31
_MAX_OPTION_LENGTH: Final = 2000

_LITERALS_BY_TYPE: Final[dict[str, tuple[type[ast._Literal], ...]]] = {
    "Edm.String": (ast.String,),
    "Edm.Int32": (ast.Integer, ast.Float),
    "Edm.Double": (ast.Integer, ast.Float),
    "Edm.Boolean": (ast.Boolean,),
    "Edm.Date": (ast.Date,),
}
_COMPARATORS: Final = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)


# --- Reading the query options ------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    period: Period
    start: date
    end: date


@dataclass(frozen=True)
class FeedQuery:
    """The query options of one request, checked against its entity set."""

    entity_set: EntitySet
    select: tuple[str, ...] | None
    filter_text: str | None
    filter_tree: ast._Node | None
    orderby: tuple[tuple[str, bool], ...]
    """(property, descending)"""
    top: int | None
    skip: int
    count: bool
    skiptoken: str | None
    window: Window | None = None
    narrowed: dict[str, frozenset[str | None]] = field(default_factory=dict)
    """Property -> the only values a row may have, for IndicatorId and Breakdown."""

    def fingerprint(self) -> str:
        """What decides the rows and their order: a page token is only valid for the query it
        came from."""
        document = [
            self.entity_set.name,
            self.filter_text,
            list(self.orderby),
            self.top,
            self.skip,
            None
            if self.window is None
            else [self.window.period, self.window.start.isoformat(), self.window.end.isoformat()],
        ]
        return hashlib.sha256(orjson.dumps(document)).hexdigest()


def _single(params: Sequence[tuple[str, str]]) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, value in params:
        if name in values:
            raise QueryOptionInvalid(f"{name} is given more than once")
        if len(value) > _MAX_OPTION_LENGTH:
            raise QueryOptionInvalid(f"{name} is longer than {_MAX_OPTION_LENGTH} characters")
        values[name] = value
    return values


def _non_negative(name: str, raw: str) -> int:
    if not raw.isdigit() or len(raw) > 9:
        raise QueryOptionInvalid(f"{name} must be a whole number from 0 to 999999999")
    return int(raw)


def _property(entity_set: EntitySet, name: str, option: str) -> EntityProperty:
    prop = entity_set.property(name)
    if prop is None:
        raise QueryOptionInvalid(
            f"{option}: {entity_set.entity_type} has no property {name!r}; $metadata lists them"
        )
    return prop


def _parse_select(entity_set: EntitySet, raw: str) -> tuple[str, ...] | None:
    names = [part.strip() for part in raw.split(",")]
    if names == ["*"]:
        return None
    for name in names:
        if "/" in name or "(" in name:
            raise QueryOptionNotImplemented(f"$select: {name!r}: only property names are supported")
        _property(entity_set, name, "$select")
    return tuple(dict.fromkeys(names))


def _parse_orderby(entity_set: EntitySet, raw: str) -> tuple[tuple[str, bool], ...]:
    items: list[tuple[str, bool]] = []
    for item in raw.split(","):
        words = item.split()
        if not words or len(words) > 2:
            raise QueryOptionInvalid(f"$orderby: {item.strip()!r} is not 'Property [asc|desc]'")
        if len(words) == 2 and words[1] not in ("asc", "desc"):
            raise QueryOptionInvalid(f"$orderby: {words[1]!r} must be asc or desc")
        if "(" in words[0] or "/" in words[0]:
            raise QueryOptionNotImplemented(
                f"$orderby: {words[0]!r}: only property names are supported"
            )
        _property(entity_set, words[0], "$orderby")
        items.append((words[0], len(words) == 2 and words[1] == "desc"))
    return tuple(items)


def _parse_window(values: dict[str, str], default_months: int, today: date) -> Window:
    raw_period = values.get("period", "month")
    if raw_period not in PERIODS:
        raise QueryOptionInvalid(f"period must be one of {', '.join(PERIODS)}")
    period: Period = raw_period  # checked just above
    try:
        end = date.fromisoformat(values["to"]) if "to" in values else today
        first_month = _add_months(today.replace(day=1), 1 - default_months)
        start = date.fromisoformat(values["from"]) if "from" in values else first_month
    except ValueError as exc:
        raise QueryOptionInvalid("from and to must be dates, e.g. 2024-01-31") from exc
    if start > end:
        raise QueryOptionInvalid("from must be on or before to")
    return Window(period=period, start=start, end=end)


def _add_months(first_of_month: date, months: int) -> date:
    index = first_of_month.year * 12 + first_of_month.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def parse_query(
    entity_set: EntitySet,
    params: Sequence[tuple[str, str]],
    *,
    default_months: int,
    today: date,
) -> FeedQuery:
    """The checked query options. Raises QueryOptionNotImplemented (501) for any option, system
    or custom, this feed does not implement, and QueryOptionInvalid (400) for one it cannot read.
    """
    values = _single(params)
    custom = WINDOW_OPTIONS if entity_set is INDICATOR_POINTS else ()
    unknown = sorted(name for name in values if name not in SUPPORTED_OPTIONS | set(custom))
    if unknown:
        raise QueryOptionNotImplemented(f"query options not implemented: {', '.join(unknown)}")
    if "$format" in values and values["$format"].split(";")[0].strip() not in _JSON_FORMATS:
        raise QueryOptionNotImplemented("$format: only json is implemented")
    raw_count = values.get("$count", "false")
    if raw_count not in ("true", "false"):
        raise QueryOptionInvalid("$count must be true or false")
    filter_text = values.get("$filter")
    tree = parse_filter(entity_set, filter_text) if filter_text is not None else None
    return FeedQuery(
        entity_set=entity_set,
        select=_parse_select(entity_set, values["$select"]) if "$select" in values else None,
        filter_text=filter_text,
        filter_tree=tree,
        orderby=_parse_orderby(entity_set, values["$orderby"]) if "$orderby" in values else (),
        top=_non_negative("$top", values["$top"]) if "$top" in values else None,
        skip=_non_negative("$skip", values["$skip"]) if "$skip" in values else 0,
        count=raw_count == "true",
        skiptoken=values.get("$skiptoken"),
        window=_parse_window(values, default_months, today) if custom else None,
        narrowed=_narrowing(tree) if tree is not None else {},
    )


# --- $filter ------------------------------------------------------------------------------------


def parse_filter(entity_set: EntitySet, raw: str) -> ast._Node:
    """The checked syntax tree of a `$filter`."""
    try:
        tree: ast._Node = ODataParser().parse(ODataLexer().tokenize(raw))
    except odata_errors.UnknownFunctionException as exc:
        raise QueryOptionNotImplemented(f"$filter: {exc}") from exc
    except odata_errors.ODataException as exc:
        raise QueryOptionInvalid(f"$filter: {exc}") from exc
    if tree is None:
        raise QueryOptionInvalid("$filter is empty")
    _check_boolean(entity_set, tree)
    return tree


def _check_boolean(entity_set: EntitySet, node: ast._Node) -> None:
    """`node` must be a condition made of what this feed implements."""
    if isinstance(node, ast.BoolOp):
        _check_boolean(entity_set, node.left)
        _check_boolean(entity_set, node.right)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        _check_boolean(entity_set, node.operand)
    elif isinstance(node, ast.Compare):
        _check_comparison(entity_set, node)
    elif isinstance(node, ast.Call):
        _check_call(entity_set, node)
    elif isinstance(node, ast.Identifier):
        if _property(entity_set, node.name, "$filter").edm_type != "Edm.Boolean":
            raise QueryOptionInvalid(f"$filter: {node.name} is not a condition")
    elif isinstance(node, ast.Boolean):
        return
    elif isinstance(node, ast._Literal):
        raise QueryOptionInvalid("$filter must be a condition")
    else:
        raise QueryOptionNotImplemented(f"$filter: {type(node).__name__} is not implemented")


def _operand(entity_set: EntitySet, node: ast._Node) -> EntityProperty | None:
    """The property an operand names, None for a literal; anything else is not implemented."""
    if isinstance(node, ast.Identifier):
        if node.namespace:
            raise QueryOptionNotImplemented("$filter: qualified names are not implemented")
        return _property(entity_set, node.name, "$filter")
    if isinstance(node, ast._Literal):
        return None
    raise QueryOptionNotImplemented(
        f"$filter: {type(node).__name__} is not implemented; compare properties with literals"
    )


def _check_literal(prop: EntityProperty, literal: ast._Node, allow_null: bool) -> None:
    if isinstance(literal, ast.Null):
        if allow_null:
            return
        raise QueryOptionInvalid(f"$filter: null can only be compared with eq or ne ({prop.name})")
    accepted = _LITERALS_BY_TYPE[prop.edm_type]
    if not isinstance(literal, accepted):
        raise QueryOptionInvalid(
            f"$filter: {prop.name} is {prop.edm_type}; it cannot be compared with "
            f"{type(literal).__name__.lower()} {getattr(literal, 'val', '')!r}"
        )
    try:
        value = literal.py_val
    except (ValueError, OverflowError) as exc:
        raise QueryOptionInvalid(f"$filter: {getattr(literal, 'val', '')!r} is not valid") from exc
    if isinstance(value, float) and not math.isfinite(value):
        raise QueryOptionInvalid("$filter: numbers must be finite")
    if isinstance(value, int) and not isinstance(value, bool) and not -_INT32 <= value < _INT32:
        raise QueryOptionInvalid("$filter: whole numbers must fit in 32 bits")
    if isinstance(value, str) and "\x00" in value:
        raise QueryOptionInvalid("$filter: text cannot hold NUL")


def _check_comparison(entity_set: EntitySet, node: ast.Compare) -> None:
    left = _operand(entity_set, node.left)
    if isinstance(node.comparator, ast.In):
        if left is None or not isinstance(node.right, ast.List) or not node.right.val:
            raise QueryOptionInvalid("$filter: in needs a property and a list of literals")
        for item in node.right.val:
            _check_literal(left, item, allow_null=False)
        return
    if not isinstance(node.comparator, _COMPARATORS):
        raise QueryOptionNotImplemented(
            f"$filter: {type(node.comparator).__name__} is not implemented"
        )
    right = _operand(entity_set, node.right)
    allow_null = isinstance(node.comparator, ast.Eq | ast.NotEq)
    if left is not None and right is not None:
        if left.edm_type != right.edm_type and {left.edm_type, right.edm_type} != {
            "Edm.Int32",
            "Edm.Double",
        }:
            raise QueryOptionInvalid(f"$filter: {left.name} and {right.name} differ in type")
    elif left is not None:
        _check_literal(left, node.right, allow_null)
    elif right is not None:
        _check_literal(right, node.left, allow_null)
    else:
        raise QueryOptionInvalid("$filter: a comparison needs a property")


def _check_call(entity_set: EntitySet, node: ast.Call) -> None:
    name = node.func.name
    if name not in _STRING_FUNCTIONS:
        raise QueryOptionNotImplemented(
            f"$filter: the function {name} is not implemented; startswith, endswith and "
            "contains are"
        )
    if len(node.args) != 2 or not isinstance(node.args[1], ast.String):
        raise QueryOptionInvalid(f"$filter: {name}(Property, 'text')")
    prop = _operand(entity_set, node.args[0])
    if prop is None or prop.edm_type != "Edm.String":
        raise QueryOptionInvalid(f"$filter: {name} needs a text property first")
    _check_literal(prop, node.args[1], allow_null=False)


def _narrowing(tree: ast._Node) -> dict[str, frozenset[str | None]]:
    narrowed = {}
    for name in ("IndicatorId", "Breakdown"):
        values = _allowed_values(tree, name)
        if values is not None:
            narrowed[name] = values
    return narrowed


def _literal_value(node: ast._Node) -> tuple[bool, str | None]:
    if isinstance(node, ast.Null):
        return True, None
    if isinstance(node, ast.String):
        return True, node.py_val
    return False, None


def _allowed_values(node: ast._Node, name: str) -> frozenset[str | None] | None:
    """The only values of property `name` a row matching `node` can have; None: any."""
    if isinstance(node, ast.BoolOp):
        left, right = _allowed_values(node.left, name), _allowed_values(node.right, name)
        if isinstance(node.op, ast.And):
            if left is None or right is None:
                return left if right is None else right
            return left & right
        return None if left is None or right is None else left | right
    if not isinstance(node, ast.Compare):
        return None
    sides = [(node.left, node.right), (node.right, node.left)]
    for identifier, other in sides:
        if not (isinstance(identifier, ast.Identifier) and identifier.name == name):
            continue
        if isinstance(node.comparator, ast.Eq):
            known, value = _literal_value(other)
            return frozenset({value}) if known else None
        if isinstance(node.comparator, ast.In) and isinstance(other, ast.List):
            found = [_literal_value(item) for item in other.val]
            if all(known for known, _ in found):
                return frozenset(value for _, value in found)
    return None


class _FilterToSql(AstToSqlAlchemyCoreVisitor):
    """odata-query's translation with two corrections.

    Null: in OData a comparison with a null operand is false (`Value gt 20` on a suppressed
    point), except that `ne` is true; SQL makes it unknown, and `not` of unknown stays unknown, so
    `not (Value gt 20)` would drop the suppressed points OData keeps. Every comparison and string
    function is therefore coalesced to OData's answer.

    Text: startswith, endswith and contains match their argument literally; odata-query's own
    pass `%` and `_` on as LIKE wildcards, and indicator ids hold underscores.
    """

    def visit_Compare(self, node: ast.Compare) -> Any:
        clause: ColumnElement[bool] = super().visit_Compare(node)
        if isinstance(node.comparator, ast.Eq | ast.NotEq) and (
            isinstance(node.left, ast.Null) or isinstance(node.right, ast.Null)
        ):
            return clause  # IS NULL / IS NOT NULL: never unknown
        when_null = sa.true() if isinstance(node.comparator, ast.NotEq) else sa.false()
        return sa.func.coalesce(clause, when_null)

    def _literal_text(self, field_node: ast._Node, text_node: ast._Node) -> tuple[Any, str]:
        column = self.visit(field_node)
        assert isinstance(text_node, ast.String)  # noqa: S101  # checked by _check_call
        return column, text_node.py_val

    def func_contains(self, field: ast._Node, substr: ast._Node) -> ColumnElement[bool]:
        column, value = self._literal_text(field, substr)
        return sa.func.coalesce(column.contains(value, autoescape=True), sa.false())

    def func_startswith(self, field: ast._Node, substr: ast._Node) -> ColumnElement[bool]:
        column, value = self._literal_text(field, substr)
        return sa.func.coalesce(column.startswith(value, autoescape=True), sa.false())

    def func_endswith(self, field: ast._Node, substr: ast._Node) -> ColumnElement[bool]:
        column, value = self._literal_text(field, substr)
        return sa.func.coalesce(column.endswith(value, autoescape=True), sa.false())


# --- Page tokens --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PagePosition:
    snapshot_id: uuid.UUID | None
    offset: int


def encode_skiptoken(position: PagePosition) -> str:
    raw = orjson.dumps(
        [str(position.snapshot_id) if position.snapshot_id else None, position.offset]
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_skiptoken(token: str) -> PagePosition:
    """The position a `$skiptoken` names; QueryOptionInvalid for one this feed did not write."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        snapshot, offset = orjson.loads(raw)
        if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset < 2**31:
            raise ValueError("offset")
        return PagePosition(uuid.UUID(snapshot) if snapshot is not None else None, offset)
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError) as exc:
        raise QueryOptionInvalid("$skiptoken was not written by this feed") from exc


# --- Rows ---------------------------------------------------------------------------------------


def catalogue_rows() -> list[dict[str, Any]]:
    return [
        {
            "id": meta.id,
            "title": meta.title,
            "definition": meta.definition,
            "numerator": meta.numerator,
            "denominator": meta.denominator,
            "unit": meta.unit,
            "polarity": meta.polarity,
            "source_measure": meta.source_measure,
            "timing": meta.timing,
            "breakdowns": ",".join(meta.breakdowns),
            "periods": ",".join(meta.periods),
            "position": position,
        }
        for position, meta in enumerate(load_catalogue().values())
    ]


def _series_wanted(query: FeedQuery) -> list[tuple[str, Breakdown | None]]:
    assert query.window is not None  # noqa: S101  # IndicatorPoints always has a window
    indicators = query.narrowed.get("IndicatorId")
    breakdowns = query.narrowed.get("Breakdown")
    wanted: list[tuple[str, Breakdown | None]] = []
    for meta in load_catalogue().values():
        if query.window.period not in meta.periods:
            continue
        if indicators is not None and meta.id not in indicators:
            continue
        for breakdown in (None, *meta.breakdowns):
            if breakdowns is None or breakdown in breakdowns:
                wanted.append((meta.id, breakdown))
    return wanted


async def compute_points(
    session: AsyncSession, query: FeedQuery, *, unsuppressed: bool
) -> list[dict[str, Any]]:
    """Every row of `IndicatorPoints` the query can return (before `$filter`), in the feed's
    order: catalogue order, each indicator's total series first, then its breakdowns in
    catalogue order, each series in its own order (period, then group)."""
    window = query.window
    assert window is not None  # noqa: S101  # IndicatorPoints always has a window
    catalogue = load_catalogue()
    rows: list[dict[str, Any]] = []
    for indicator_id, breakdown in _series_wanted(query):
        meta = catalogue[indicator_id]
        try:
            series = await compute_series(
                session,
                meta,
                start=window.start,
                end=window.end,
                period=window.period,
                breakdown=breakdown,
                unsuppressed=unsuppressed,
            )
        except Unprocessable as exc:
            raise QueryOptionInvalid(f"{exc.detail} (custom options from, to, period)") from exc
        for point in series.points:
            rows.append(
                {
                    "point_id": "|".join(
                        (
                            indicator_id,
                            window.period,
                            point.label,
                            breakdown or "",
                            point.group or "",
                        )
                    ),
                    "indicator_id": indicator_id,
                    "indicator_title": meta.title,
                    "unit": meta.unit,
                    "period": window.period,
                    "period_start": point.period_start,
                    "period_end": point.period_end,
                    "label": point.label,
                    "time_period": time_period(window.period, point.period_start, point.period_end),
                    "time_identifier": time_identifier(
                        window.period, point.period_start, point.period_end
                    ),
                    "breakdown": breakdown,
                    "breakdown_group": point.group,
                    "numerator": point.numerator,
                    "denominator": point.denominator,
                    "value": None if point.value is None else float(point.value),
                    "suppressed": point.suppressed,
                }
            )
    return rows


async def compute_points_consistently(
    reads: ReadSessions, query: FeedQuery, *, unsuppressed: bool
) -> list[dict[str, Any]]:
    """`compute_points` in a READ ONLY, REPEATABLE READ transaction of its own, so that every
    series of the snapshot counts the same committed data, whatever is written while they run:
    on the read replica when one serves (`service.replica`); the snapshot itself is stored, and
    its pages read, on the primary."""
    async with reads.session(isolation_level="REPEATABLE READ") as session:
        return await compute_points(session, query, unsuppressed=unsuppressed)


_POINT_COLUMNS: Final = tuple(prop.column for prop in INDICATOR_POINTS.properties)
_SQL_TYPES: Final = {
    "Edm.String": "text",
    "Edm.Int32": "integer",
    "Edm.Double": "double precision",
    "Edm.Boolean": "boolean",
    "Edm.Date": "date",
}
# One statement for any number of rows: each column travels as one array. The names come from
# the entity type, never from a request.
_INSERT_POINTS: Final = text(
    "INSERT INTO feed_snapshot_point (snapshot_id, position, "  # noqa: S608
    + ", ".join(_POINT_COLUMNS)
    + ") SELECT :snapshot_id, position - 1, "
    + ", ".join(_POINT_COLUMNS)
    + " FROM unnest("
    + ", ".join(
        f"CAST(:{prop.column} AS {_SQL_TYPES[prop.edm_type]}[])"
        for prop in INDICATOR_POINTS.properties
    )
    + ") WITH ORDINALITY AS p("
    + ", ".join(_POINT_COLUMNS)
    + ", position)"
)
_PURGE: Final = text(
    "DELETE FROM feed_snapshot WHERE created_at < now() - make_interval(secs => :ttl_s)"
)


async def store_snapshot(
    session: AsyncSession,
    caller: Caller,
    query: FeedQuery,
    rows: list[dict[str, Any]],
    *,
    suppressed: bool,
    ttl_s: int,
) -> uuid.UUID:
    """Store the rows as a new snapshot of this caller's query; expired snapshots go first."""
    await session.execute(_PURGE, {"ttl_s": ttl_s})
    snapshot = FeedSnapshot.model_validate(
        {
            "snapshot_id": uuid.uuid4(),
            "client_id": caller.client_id,
            "query_sha256": query.fingerprint(),
            "suppressed": suppressed,
        }
    )
    session.add(snapshot)
    await session.flush()
    if rows:
        columns = {name: [row[name] for row in rows] for name in _POINT_COLUMNS}
        await session.execute(_INSERT_POINTS, {"snapshot_id": snapshot.snapshot_id, **columns})
    return snapshot.snapshot_id


_SNAPSHOT: Final = text(
    "SELECT query_sha256 FROM feed_snapshot WHERE snapshot_id = :snapshot_id "
    "AND client_id = :client_id AND suppressed = :suppressed "
    "AND created_at >= now() - make_interval(secs => :ttl_s)"
)


async def check_snapshot(
    session: AsyncSession,
    caller: Caller,
    query: FeedQuery,
    snapshot_id: uuid.UUID,
    *,
    suppressed: bool,
    ttl_s: int,
) -> None:
    """The snapshot a `$skiptoken` names must exist, be younger than `ttl_s`, and belong to this
    caller, this query and this level of disclosure control."""
    fingerprint = await session.scalar(
        _SNAPSHOT,
        {
            "snapshot_id": snapshot_id,
            "client_id": caller.client_id,
            "suppressed": suppressed,
            "ttl_s": ttl_s,
        },
    )
    if fingerprint is None:
        raise SnapshotExpired(
            "this page's snapshot has expired or is not yours; request the first page again"
        )
    if fingerprint != query.fingerprint():
        raise QueryOptionInvalid(
            "$skiptoken belongs to another query; keep every option of the nextLink"
        )


# --- Reading a page -----------------------------------------------------------------------------


def _source(query: FeedQuery, snapshot_id: uuid.UUID | None) -> sa.Subquery:
    """The entity set as a table whose columns carry the OData property names, plus `_position`,
    the feed's own order."""
    props = query.entity_set.properties
    if query.entity_set is INDICATOR_POINTS:
        table = FeedSnapshotPoint.__table__  # type: ignore[attr-defined]
        return (
            sa.select(
                *(table.c[prop.column].label(prop.name) for prop in props),
                table.c.position.label("_position"),
            )
            .where(table.c.snapshot_id == snapshot_id)
            .subquery("rows")
        )
    columns = [sa.column(prop.column, sa.Text) for prop in props]
    values = sa.values(*columns, sa.column("position", sa.Integer), name="catalogue").data(
        [(*(row[prop.column] for prop in props), row["position"]) for row in catalogue_rows()]
    )
    return sa.select(
        *(values.c[prop.column].label(prop.name) for prop in props),
        values.c.position.label("_position"),
    ).subquery("rows")


def _where(query: FeedQuery, source: sa.Subquery) -> ColumnElement[bool] | None:
    if query.filter_tree is None:
        return None
    try:
        # The visitor only reads `.c[name]`, which a subquery has as a table does.
        visitor = _FilterToSql(source)  # type: ignore[arg-type]
        clause: ColumnElement[bool] = visitor.visit(query.filter_tree)
    except odata_errors.ODataException as exc:
        raise QueryOptionInvalid(f"$filter: {exc}") from exc
    return clause


def _ordering(query: FeedQuery, source: sa.Subquery) -> list[Any]:
    # OData sorts null before every other value; the row number makes the order total.
    order: list[Any] = []
    for name, descending in query.orderby:
        column = source.c[name]
        order.append(column.desc().nulls_last() if descending else column.asc().nulls_first())
    order.append(source.c["_position"])
    return order


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    next_offset: int | None
    """Where the next page starts within the client's window; None on the last page."""
    count: int | None


async def read_page(
    session: AsyncSession,
    query: FeedQuery,
    snapshot_id: uuid.UUID | None,
    *,
    offset: int,
    page_size: int,
) -> Page:
    """Rows `$skip + offset` onwards of the filtered, ordered set, at most `page_size` of them
    and never past `$top`; with `$count=true`, the count of the whole filtered set."""
    source = _source(query, snapshot_id)
    where = _where(query, source)
    limit = page_size
    if query.top is not None:
        limit = max(0, min(page_size, query.top - offset))
    names = query.select or tuple(prop.name for prop in query.entity_set.properties)
    statement = sa.select(*(source.c[name] for name in names))
    if where is not None:
        statement = statement.where(where)
    statement = statement.order_by(*_ordering(query, source))
    statement = statement.offset(query.skip + offset).limit(limit + 1)
    # Plain str keys: a label SQLAlchemy must quote ("Group") comes back as a str subclass.
    found = (
        [dict(zip(names, row, strict=True)) for row in (await session.execute(statement)).all()]
        if limit
        else []
    )
    more = len(found) > limit and (query.top is None or offset + limit < query.top)
    count = await count_rows(session, query, snapshot_id) if query.count else None
    return Page(rows=found[:limit], next_offset=offset + limit if more else None, count=count)


async def count_rows(session: AsyncSession, query: FeedQuery, snapshot_id: uuid.UUID | None) -> int:
    """The number of rows matching `$filter` (ignoring `$top` and `$skip`, as OData says)."""
    source = _source(query, snapshot_id)
    statement = sa.select(sa.func.count()).select_from(source)
    where = _where(query, source)
    if where is not None:
        statement = statement.where(where)
    return int(await session.scalar(statement) or 0)
