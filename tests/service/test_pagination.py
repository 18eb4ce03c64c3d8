"""The one cursor format: what a list issues it reads back; anything else is refused."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from pydantic import AwareDatetime

from service.pagination import CursorInvalid, Keyset, PageRequest

POSITION = tuple[AwareDatetime, uuid.UUID]


def test_a_cursor_reads_back_the_position_it_was_issued_for() -> None:
    keyset = Keyset[tuple[datetime, uuid.UUID]](POSITION)
    position = (datetime(2025, 4, 1, 10, 0, tzinfo=UTC), uuid.uuid4())

    cursor = keyset.encode(position)

    assert keyset.after(PageRequest(cursor=cursor)) == position
    assert "=" not in cursor


def test_the_first_page_starts_nowhere() -> None:
    assert Keyset[tuple[int]](tuple[int]).after(PageRequest()) is None


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor",
        "W10",  # []
        "WyJ4IiwgInkiXQ",  # ["x", "y"]
        "WyIyMDI1LTA0LTAxVDEwOjAwOjAwIiwgIjEyMyJd",  # a naive time and no UUID
    ],
)
def test_a_cursor_not_issued_for_the_list_is_refused(cursor: str) -> None:
    keyset = Keyset[tuple[datetime, uuid.UUID]](POSITION)

    with pytest.raises(CursorInvalid) as refused:
        keyset.after(PageRequest(cursor=cursor))

    assert refused.value.extra["errors"] == [
        {
            "field": "query.cursor",
            "message": "the cursor is not one this service issued; start again without one",
            "code": "cursor",
        }
    ]


def test_a_page_has_a_next_cursor_only_when_more_rows_follow() -> None:
    keyset = Keyset[tuple[int]](tuple[int])
    page = PageRequest(limit=2)

    full = keyset.page([1, 2, 3], page, lambda row: (row,), str)
    last = keyset.page([1, 2], page, lambda row: (row,), str)

    assert full.items == ["1", "2"]
    assert keyset.after(PageRequest(cursor=full.next_cursor)) == (2,)
    assert (last.items, last.next_cursor) == (["1", "2"], None)
