"""Types shared by every wire schema."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Generic, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)


def _refuse_nul(value: str) -> str:
    # PostgreSQL cannot store NUL in text; refuse it at the edge with a 422.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


ShortText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_refuse_nul),
]
"""A name, role or label: 1-200 characters, no NUL."""

LongText = Annotated[str, StringConstraints(max_length=10_000), AfterValidator(_refuse_nul)]
"""Free text written by a practitioner: at most 10,000 characters, no NUL."""


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _iso_text(value: object) -> object:
    # pydantic would read "0.5" or "1700000000" as a Unix time; a query string must be ISO 8601.
    if isinstance(value, str) and not _ISO_DATE.match(value):
        raise ValueError("must be an ISO 8601 date (YYYY-MM-DD...)")
    return value


IsoDate = Annotated[date, BeforeValidator(_iso_text)]
"""A date given as ISO 8601 text (query parameters)."""

IsoDateTime = Annotated[AwareDatetime, BeforeValidator(_iso_text)]
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
