"""Types shared by every wire schema."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Final, Generic, TypeVar
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StringConstraints,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

UK_TIME_ZONE: Final = ZoneInfo("Europe/London")
CLOCK_SKEW: Final = timedelta(seconds=60)
"""How far ahead of our clock a sender's timestamp may be before it counts as in the future."""


def today_in_uk() -> date:
    """Today's date in England, which is what a date of birth means to the people sending it."""
    return datetime.now(UK_TIME_ZONE).date()


def refuse_nul(value: str) -> str:
    """PostgreSQL cannot store NUL in text (nor in JSONB): refuse it at the edge with a 422."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


@dataclass(frozen=True)
class DocumentedPattern:
    """Says in the JSON schema (`pattern`) what a validator enforces with its own message, so that
    a client generating valid data from the OpenAPI document (Schemathesis among them) knows which
    text is refused with 422. With `keep_existing`, a pattern already stated (a stricter one of
    `StringConstraints`) stays; otherwise this one replaces it and must be at least as strict."""

    pattern: str
    keep_existing: bool = False

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        if not (self.keep_existing and "pattern" in schema):
            schema["pattern"] = self.pattern
        return schema


NO_NUL_PATTERN: Final = "^[^\\u0000]*$"
"""Text without NUL (`refuse_nul`)."""

# What `str.strip()` removes: the characters for which `str.isspace()` is true.
_PYTHON_WHITESPACE: Final = (
    "\\t\\n\\u000b\\u000c\\r\\u001c-\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a"
    "\\u2028\\u2029\\u202f\\u205f\\u3000"
)
NOT_BLANK_PATTERN: Final = f"^[^\\u0000]*[^\\u0000{_PYTHON_WHITESPACE}][^\\u0000]*$"
"""Text without NUL holding at least one character that is not whitespace."""

NUL_FREE: Final = (
    AfterValidator(refuse_nul),
    DocumentedPattern(NO_NUL_PATTERN, keep_existing=True),
)
"""Annotated metadata for text that PostgreSQL will store: refused with NUL, and documented so."""


D = TypeVar("D", bound=date)


def not_in_future(message: str = "must not be in the future") -> Callable[[D | None], D | None]:
    """A validator refusing a date after today in England, or an instant more than `CLOCK_SKEW`
    ahead of now, with `message`; None passes."""

    def refuse_future(value: D | None) -> D | None:
        if isinstance(value, datetime):
            future = value > datetime.now(UTC) + CLOCK_SKEW
        else:
            future = value is not None and value > today_in_uk()
        if future:
            raise ValueError(message)
        return value

    return refuse_future


PastDate = Annotated[date, AfterValidator(not_in_future())]
"""A calendar date no later than today in England."""


ShortText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    *NUL_FREE,
]
"""A name, role or label: 1-200 characters, no NUL."""

LongText = Annotated[str, StringConstraints(max_length=10_000), *NUL_FREE]
"""Free text written by a practitioner: at most 10,000 characters, no NUL."""


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _iso_text(value: object) -> object:
    # pydantic would read "0.5", "1700000000" or a JSON number as a Unix time; a date on the wire
    # must be ISO 8601 text.
    if isinstance(value, str):
        if not _ISO_DATE.match(value):
            raise ValueError("must be an ISO 8601 date (YYYY-MM-DD...)")
    elif not isinstance(value, date):
        raise ValueError("must be an ISO 8601 date (YYYY-MM-DD...) given as text")
    return value


IsoDate = Annotated[date, BeforeValidator(_iso_text)]
"""A date given as ISO 8601 text (query parameters, and body dates that must not be numbers)."""


_FIRST_INSTANT = datetime.min.replace(tzinfo=UTC)
_LAST_INSTANT = datetime.max.replace(tzinfo=UTC)


def _refuse_unrepresentable_instant(value: datetime) -> datetime:
    # 9999-12-31T23:59:59-14:00 parses, but is in the year 10000 once converted to UTC, which
    # Python cannot hold: comparing it with a stored instant, or sending it to the database, fails
    # with an OverflowError (a 500). The driver (asyncpg) sends Python's first and last instants
    # in UTC as -infinity and infinity, and reads them back as naive datetimes, so those two are
    # refused as well. PostgreSQL's timestamptz holds every instant in between.
    try:
        inside = _FIRST_INSTANT < value.astimezone(UTC) < _LAST_INSTANT
    except OverflowError:
        inside = False
    if not inside:
        raise ValueError(
            "must lie after 0001-01-01T00:00:00Z and before 9999-12-31T23:59:59.999999Z "
            "once converted to UTC"
        )
    return value


Instant = Annotated[AwareDatetime, AfterValidator(_refuse_unrepresentable_instant)]
"""An instant with a UTC offset strictly inside years 1 to 9999 once converted to UTC; every
instant the API reads, in a body or a query, is one of these."""

PastInstant = Annotated[Instant, AfterValidator(not_in_future())]
"""A timestamp with a UTC offset, not in the future (60 s of clock skew allowed)."""

IsoDateTime = Annotated[Instant, BeforeValidator(_iso_text)]
"""An instant with a UTC offset, given as ISO 8601 text (query parameters)."""


class StrictModel(BaseModel):
    """Base of every request body: unknown fields are refused, so nothing is mass-assigned."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class PublicModel(BaseModel):
    """Base of every response body."""

    model_config = ConfigDict(from_attributes=True)


T = TypeVar("T")


class Page(PublicModel, Generic[T]):
    """One page of a list; pass `next_cursor` back as `cursor` to get the next page."""

    items: list[T]
    next_cursor: str | None = Field(default=None, description="Opaque cursor of the next page")


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
    errors: list[dict[str, object]] | None = None
