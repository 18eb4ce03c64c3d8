"""Matching a batch of children in one statement (`neglect_resolve_children`): the same children,
identifiers and new children as resolving the batch's items one at a time in order with
`neglect_resolve_child`, whichever way the items and the stored children share identifiers."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from service.children import RESOLVE_ARGUMENTS
from service.db import SessionFactory, transaction
from tests.builders.plans import scans_costed_at_nothing, seq_scans

_COLUMNS = RESOLVE_ARGUMENTS
_ARRAY_TYPES = ("text", "text", "text", "text", "text", "text", "date", "date", "text", "text")
_TYPED = list(zip(_COLUMNS, _ARRAY_TYPES, strict=True))
_ARRAYS = ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in _TYPED)
_VALUES = ", ".join(f"CAST(:{name} AS {kind})" for name, kind in _TYPED)
_BATCH = text(f"SELECT item, child_id FROM neglect_resolve_children({_ARRAYS})")  # noqa: S608
_ONE = text(f"SELECT neglect_resolve_child({_VALUES})")
# The batch as asyncpg sends it: positional parameters.
_POSITIONAL = ", ".join(f"${n}::{kind}[]" for n, kind in enumerate(_ARRAY_TYPES, start=1))
_RESOLVE = f"SELECT item, child_id FROM neglect_resolve_children({_POSITIONAL})"  # noqa: S608
_INSERT = text(
    "INSERT INTO child (id, nhs_number, la_child_id, upn, family_name_key, date_of_birth, sex) "
    "VALUES (:id, :nhs_number, :la_child_id, :upn, :family_name_key, :date_of_birth, 'F')"
)
_ROWS = text(
    "SELECT id, nhs_number, la_child_id, upn, given_name, family_name, family_name_key, "
    "date_of_birth, expected_date_of_birth, sex, ethnicity FROM child WHERE id = ANY(:ids)"
)
BORN_ON = date(2018, 3, 9)


@dataclass(frozen=True)
class Item:
    """One child as a caller describes it (`None`: not sent)."""

    nhs_number: str | None = None
    la_child_id: str | None = None
    upn: str | None = None
    family_name_key: str | None = None
    date_of_birth: date | None = None
    sex: str | None = "M"

    def values(self, index: int) -> dict[str, Any]:
        return {
            "nhs_number": self.nhs_number,
            "la_child_id": self.la_child_id,
            "upn": self.upn,
            "given_name": f"Given{index}",
            "family_name": self.family_name_key and self.family_name_key.title(),
            "family_name_key": self.family_name_key,
            "date_of_birth": self.date_of_birth,
            "expected_date_of_birth": None if self.date_of_birth else BORN_ON,
            "sex": self.sex,
            "ethnicity": "WBRI",
        }


def arrays(items: list[Item]) -> dict[str, list[Any]]:
    rows = [item.values(index) for index, item in enumerate(items)]
    return {name: [row[name] for row in rows] for name in _COLUMNS}


async def store(session: AsyncSession, stored: list[Item]) -> list[uuid.UUID]:
    # The same ids in every run: a match on name and birth takes the earliest created, then the
    # lowest id, and these are created in one transaction.
    ids = [uuid.UUID(int=index + 1) for index in range(len(stored))]
    for child_id, item in zip(ids, stored, strict=True):
        await session.execute(
            _INSERT,
            {
                "id": child_id,
                "nhs_number": item.nhs_number,
                "la_child_id": item.la_child_id,
                "upn": item.upn,
                "family_name_key": item.family_name_key,
                "date_of_birth": item.date_of_birth,
            },
        )
    return ids


async def outcome(
    factory: SessionFactory, stored: list[Item], items: list[Item], *, one_at_a_time: bool
) -> tuple[list[str], dict[str, tuple[Any, ...]]]:
    """Which child each item resolved to ("stored 2", or "new 5": the child item 5 created
    first) and every such child's stored values, with nothing kept (rolled back)."""
    async with factory() as session:
        stored_ids = await store(session, stored)
        if one_at_a_time:
            resolved = [
                await session.scalar(_ONE, item.values(index)) for index, item in enumerate(items)
            ]
        else:
            rows = (await session.execute(_BATCH, arrays(items))).all()
            assert sorted(row.item for row in rows) == list(range(1, len(items) + 1))
            by_item = {row.item: row.child_id for row in rows}
            resolved = [by_item[index + 1] for index in range(len(items))]
        labels: dict[uuid.UUID, str] = {
            child_id: f"stored {index}" for index, child_id in enumerate(stored_ids)
        }
        for index, child_id in enumerate(resolved):
            labels.setdefault(child_id, f"new {index}")
        children = (await session.execute(_ROWS, {"ids": list(labels)})).all()
        await session.rollback()
    return [labels[child_id] for child_id in resolved], {
        labels[row.id]: tuple(row[1:]) for row in children
    }


def values(prefix: str, kind: str, count: int) -> list[str]:
    return [f"{prefix}{kind}{number}" for number in range(count)]


@pytest.mark.parametrize("seed", range(12))
async def test_a_batch_resolves_as_its_items_one_at_a_time(
    session_factory: SessionFactory, seed: int
) -> None:
    """Random stored children and batches drawn from a few identifiers, so that items share
    identifiers with each other and with stored children in every way the rule distinguishes;
    a third of the batches also match on family name and birth."""
    rng = random.Random(seed)
    prefix = uuid.uuid4().hex[:7]
    nhs, local, pupil = values(prefix, "n", 5), values(prefix, "l", 5), values(prefix, "u", 5)
    names = values(prefix, "f", 2)
    births = [BORN_ON, BORN_ON + timedelta(days=1), None]
    by_name = seed % 3 == 0

    def pick(pool: list[str], chance: float) -> str | None:
        return rng.choice(pool) if rng.random() < chance else None

    stored: list[Item] = []
    taken: set[str] = set()
    for _ in range(4):
        candidate = Item(
            nhs_number=pick(nhs, 0.3),
            la_child_id=pick(local, 0.5),
            upn=pick(pupil, 0.5),
            family_name_key=rng.choice(names) if by_name else None,
            date_of_birth=rng.choice(births),
        )
        held = {
            value
            for value in (candidate.nhs_number, candidate.la_child_id, candidate.upn)
            if value is not None
        }
        if held & taken:
            continue
        taken |= held
        stored.append(candidate)
    items = [
        Item(
            nhs_number=pick(nhs, 0.3),
            la_child_id=pick(local, 0.7),
            upn=pick(pupil, 0.5),
            family_name_key=rng.choice(names) if by_name and rng.random() < 0.7 else None,
            date_of_birth=rng.choice(births),
            sex=rng.choice("MF"),
        )
        for _ in range(14)
    ]
    one_at_a_time = await outcome(session_factory, stored, items, one_at_a_time=True)
    together = await outcome(session_factory, stored, items, one_at_a_time=False)
    assert together == one_at_a_time


async def test_items_that_share_nothing_are_matched_learn_and_are_created_together(
    session_factory: SessionFactory,
) -> None:
    prefix = uuid.uuid4().hex[:7]
    stored = [
        Item(la_child_id=f"{prefix}l0"),
        Item(upn=f"{prefix}u1", date_of_birth=BORN_ON),
        Item(nhs_number=f"{prefix}n9", la_child_id=f"{prefix}l9"),
    ]
    items = [
        # Matched on the LA child id; learns the UPN and the birth.
        Item(la_child_id=f"{prefix}l0", upn=f"{prefix}u0", date_of_birth=BORN_ON),
        # Matched on the UPN; learns the LA child id.
        Item(la_child_id=f"{prefix}l1", upn=f"{prefix}u1"),
        # New; its NHS number is free, its LA child id is not (stored 2 holds it).
        Item(nhs_number=f"{prefix}n2", la_child_id=f"{prefix}l9"),
    ]
    together = await outcome(session_factory, stored, items, one_at_a_time=False)
    assert together == await outcome(session_factory, stored, items, one_at_a_time=True)
    resolved, children = together
    assert resolved == ["stored 0", "stored 1", "new 2"]
    assert children["stored 0"][:3] == (None, f"{prefix}l0", f"{prefix}u0")
    assert children["stored 0"][6] == BORN_ON
    assert children["stored 1"][:3] == (None, f"{prefix}l1", f"{prefix}u1")
    assert children["new 2"][:3] == (f"{prefix}n2", None, None)


async def test_items_sharing_an_identifier_are_one_child_resolved_in_order(
    session_factory: SessionFactory,
) -> None:
    prefix = uuid.uuid4().hex[:7]
    items = [
        Item(la_child_id=f"{prefix}l0"),
        Item(la_child_id=f"{prefix}l0", upn=f"{prefix}u0", nhs_number=f"{prefix}n0"),
        Item(la_child_id=f"{prefix}l1"),
    ]
    resolved, children = await outcome(session_factory, [], items, one_at_a_time=False)
    assert resolved == ["new 0", "new 0", "new 2"]
    assert children["new 0"][:3] == (f"{prefix}n0", f"{prefix}l0", f"{prefix}u0")


async def test_a_batch_holds_every_key_of_its_children_locked(
    session_factory: SessionFactory,
) -> None:
    prefix = uuid.uuid4().hex[:7]
    items = [
        Item(la_child_id=f"{prefix}l0", upn=f"{prefix}u0"),
        Item(la_child_id=f"{prefix}l0", family_name_key=f"{prefix}f", date_of_birth=BORN_ON),
        Item(nhs_number=f"{prefix}n1", upn=""),
    ]
    async with transaction(session_factory) as session:
        await session.execute(_BATCH, arrays(items))
        locked = await session.scalar(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                "AND pid = pg_backend_pid() AND granted"
            )
        )
    # child:la:l0, child:upn:u0, child:name:f:2018-03-09, child:nhs:n1 (an empty UPN is no key)
    assert locked == 4


async def test_an_empty_batch_resolves_nothing(session_factory: SessionFactory) -> None:
    async with transaction(session_factory) as session:
        rows = (await session.execute(_BATCH, arrays([]))).all()
    assert rows == []


async def test_arrays_of_different_lengths_are_refused(session_factory: SessionFactory) -> None:
    batch = arrays([Item(la_child_id=uuid.uuid4().hex[:12])])
    batch["upn"] = [None, None]
    with pytest.raises(DBAPIError, match="differ in length"):
        async with transaction(session_factory) as session:
            await session.execute(_BATCH, batch)


async def test_a_batch_finds_children_by_key_however_small_child_looked_when_planned(
    runtime_database_url: str,
) -> None:
    # The function's plans are generic, made at a session's first call and kept while `child`
    # grows: planned with scans made to cost nothing, as if `child` were tiny, a batch must
    # still find each holder and match through an index, not read the table whole.
    prefix = uuid.uuid4().hex[:7]
    stored = [Item(la_child_id=f"{prefix}l{n}", upn=f"{prefix}u{n}") for n in range(20)]
    items = [*stored[::2], *(Item(la_child_id=f"{prefix}new{n}") for n in range(10))]
    async with scans_costed_at_nothing(runtime_database_url) as connection:
        first = await connection.fetch(_RESOLVE, *arrays(stored).values())
        before = await seq_scans(connection, ["child"])
        rows = await connection.fetch(_RESOLVE, *arrays(items).values())
        after = await seq_scans(connection, ["child"])
    by_item = {row["item"]: row["child_id"] for row in first}
    assert [row["child_id"] for row in sorted(rows)][:10] == [by_item[n] for n in range(1, 21, 2)]
    assert after == before
