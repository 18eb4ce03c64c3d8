"""Keyset pagination, the same for every list: a page request (limit and cursor), one cursor
format, and one way to cut a page.

A cursor names the position of the last item of a page: the base64url (unpadded) text of a JSON
array of that item's sort key, or of its id where the list looks the position up. Clients treat
it as opaque. One that does not decode to the list's position is refused with a 422 naming
`query.cursor`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from pydantic import TypeAdapter, ValidationError

from schemas.common import Page
from service.errors import FieldInvalid

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 100
MAX_CURSOR_LENGTH: Final = 200

K = TypeVar("K")
R = TypeVar("R")
T = TypeVar("T")


class CursorInvalid(FieldInvalid):
    """A cursor this service did not issue for this list."""

    def __init__(self) -> None:
        super().__init__(
            "query.cursor",
            "the cursor is not one this service issued; start again without one",
            "cursor",
        )


@dataclass(frozen=True)
class PageRequest:
    """Which page to answer: at most `limit` items after the position `cursor` names."""

    limit: int = DEFAULT_LIMIT
    cursor: str | None = None

    @property
    def fetch(self) -> int:
        """How many rows to read: one more than a page, to tell whether another page follows."""
        return self.limit + 1


class Keyset(Generic[K]):
    """The position a list pages by (a tuple type, such as `tuple[AwareDatetime, uuid.UUID]`),
    and its cursor."""

    def __init__(self, position: Any) -> None:
        self._adapter: TypeAdapter[K] = TypeAdapter(position)

    def encode(self, position: K) -> str:
        raw = self._adapter.dump_json(position)
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def after(self, page: PageRequest) -> K | None:
        """The position the page starts after; None for the first page."""
        if page.cursor is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(page.cursor + "=" * (-len(page.cursor) % 4))
            return self._adapter.validate_json(raw)
        except (binascii.Error, ValueError, ValidationError) as exc:
            raise CursorInvalid from exc

    def page(
        self,
        rows: Sequence[R],
        page: PageRequest,
        position: Callable[[R], K],
        item: Callable[[R], T],
    ) -> Page[T]:
        """The page of `rows` (read with `limit=page.fetch`), with the cursor of the next page
        when there is one."""
        shown = rows[: page.limit]
        more = len(rows) > page.limit and shown
        return Page[T](
            items=[item(row) for row in shown],
            next_cursor=self.encode(position(shown[-1])) if more else None,
        )
