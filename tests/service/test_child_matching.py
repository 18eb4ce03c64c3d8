"""Child matching (SPEC 2.1): NHS number, LA child id, UPN, then family name + date of birth."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date, timedelta
from typing import Any

from sqlalchemy import text

from schemas.common import today_in_uk
from service.children import ChildIdentity, resolve_child
from service.db import SessionFactory, transaction
from tests.builders.referrals import (
    count_children_with_nhs_number,
    next_nhs_number,
    unique_family_name,
)

BORN_ON = date(2019, 5, 17)


def identity(**fields: Any) -> ChildIdentity:
    defaults: dict[str, Any] = {
        "family_name": unique_family_name(),
        "date_of_birth": BORN_ON,
        "sex": "F",
    }
    return ChildIdentity(**(defaults | fields))


def la_child_id() -> str:
    return "LA" + uuid.uuid4().hex[:12]


def upn() -> str:
    return "A" + str(uuid.uuid4().int)[:12]


async def resolve(factory: SessionFactory, child: ChildIdentity) -> uuid.UUID:
    async with transaction(factory) as session:
        return await resolve_child(session, child)


async def stored(factory: SessionFactory, child_id: uuid.UUID) -> Any:
    async with factory() as session:
        return (
            await session.execute(text("SELECT * FROM child WHERE id = :id"), {"id": child_id})
        ).one()


async def test_a_new_child_is_created_with_what_was_sent(session_factory: SessionFactory) -> None:
    nhs = next_nhs_number()
    child_id = await resolve(session_factory, identity(nhs_number=nhs, family_name="O'Brien-Smith"))
    row = await stored(session_factory, child_id)
    assert (row.nhs_number, row.family_name, row.family_name_key) == (
        nhs,
        "O'Brien-Smith",
        "obriensmith",
    )


async def test_the_same_nhs_number_matches_the_same_child(session_factory: SessionFactory) -> None:
    nhs = next_nhs_number()
    first = await resolve(session_factory, identity(nhs_number=nhs))
    second = await resolve(session_factory, identity(nhs_number=nhs, family_name="Different"))
    assert first == second


async def test_the_la_child_id_matches_when_no_nhs_number_is_sent(
    session_factory: SessionFactory,
) -> None:
    local_id = la_child_id()
    first = await resolve(
        session_factory, identity(nhs_number=next_nhs_number(), la_child_id=local_id)
    )
    second = await resolve(session_factory, identity(la_child_id=local_id))
    assert first == second


async def test_the_upn_matches_when_nothing_stronger_is_sent(
    session_factory: SessionFactory,
) -> None:
    pupil = upn()
    first = await resolve(session_factory, identity(upn=pupil))
    second = await resolve(session_factory, identity(upn=pupil, date_of_birth=None))
    assert first == second


async def test_family_name_and_date_of_birth_match_after_normalising(
    session_factory: SessionFactory,
) -> None:
    name = unique_family_name()
    first = await resolve(session_factory, identity(family_name=f"{name}-Ó'"))
    second = await resolve(session_factory, identity(family_name=f" {name.upper()} o"))
    assert first == second


async def test_family_name_with_another_date_of_birth_is_another_child(
    session_factory: SessionFactory,
) -> None:
    name = unique_family_name()
    first = await resolve(session_factory, identity(family_name=name))
    second = await resolve(
        session_factory, identity(family_name=name, date_of_birth=BORN_ON + timedelta(days=1))
    )
    assert first != second


async def test_the_nhs_number_outranks_the_la_child_id(session_factory: SessionFactory) -> None:
    by_nhs_number = await resolve(session_factory, identity(nhs_number=(nhs := next_nhs_number())))
    local_id = la_child_id()
    by_local_id = await resolve(session_factory, identity(la_child_id=local_id))
    matched = await resolve(session_factory, identity(nhs_number=nhs, la_child_id=local_id))
    assert matched == by_nhs_number != by_local_id


async def test_an_nhs_number_match_stands_when_the_la_child_id_differs(
    session_factory: SessionFactory,
) -> None:
    nhs = next_nhs_number()
    first = await resolve(session_factory, identity(nhs_number=nhs, la_child_id=la_child_id()))
    second = await resolve(session_factory, identity(nhs_number=nhs, la_child_id=la_child_id()))
    assert first == second
    assert await count_children_with_nhs_number(session_factory, nhs) == 1


async def test_twins_with_different_nhs_numbers_stay_two_children(
    session_factory: SessionFactory,
) -> None:
    name = unique_family_name()
    first = await resolve(session_factory, identity(family_name=name, nhs_number=next_nhs_number()))
    second = await resolve(
        session_factory, identity(family_name=name, nhs_number=next_nhs_number())
    )
    assert first != second


async def test_a_name_and_birth_match_is_refused_when_the_upns_differ(
    session_factory: SessionFactory,
) -> None:
    name = unique_family_name()
    first = await resolve(session_factory, identity(family_name=name, upn=upn()))
    second = await resolve(session_factory, identity(family_name=name, upn=upn()))
    assert first != second


async def test_a_child_known_by_name_only_learns_the_nhs_number_sent_later(
    session_factory: SessionFactory,
) -> None:
    name, nhs = unique_family_name(), next_nhs_number()
    first = await resolve(session_factory, identity(family_name=name))
    second = await resolve(session_factory, identity(family_name=name, nhs_number=nhs))
    assert first == second
    assert (await stored(session_factory, first)).nhs_number == nhs


async def test_an_identifier_held_by_another_child_is_not_copied_onto_the_match(
    session_factory: SessionFactory,
) -> None:
    local_id = la_child_id()
    holder = await resolve(
        session_factory, identity(nhs_number=next_nhs_number(), la_child_id=local_id)
    )
    nhs = next_nhs_number()
    other = await resolve(session_factory, identity(nhs_number=nhs))
    matched = await resolve(session_factory, identity(nhs_number=nhs, la_child_id=local_id))
    assert matched == other != holder
    assert (await stored(session_factory, other)).la_child_id is None


async def test_a_new_child_whose_la_child_id_another_child_holds_is_created_without_it(
    session_factory: SessionFactory,
) -> None:
    local_id = la_child_id()
    holder = await resolve(
        session_factory, identity(nhs_number=next_nhs_number(), la_child_id=local_id)
    )
    nhs = next_nhs_number()
    created = await resolve(session_factory, identity(nhs_number=nhs, la_child_id=local_id))
    assert created != holder
    row = await stored(session_factory, created)
    assert (row.nhs_number, row.la_child_id) == (nhs, None)


async def test_an_unborn_child_then_born_is_one_child_with_the_birth_recorded(
    session_factory: SessionFactory,
) -> None:
    nhs, name = next_nhs_number(), unique_family_name()
    due = today_in_uk() + timedelta(days=60)
    unborn = await resolve(
        session_factory,
        identity(
            nhs_number=nhs,
            family_name=name,
            date_of_birth=None,
            expected_date_of_birth=due,
            sex="U",
        ),
    )
    born_on = today_in_uk()
    born = await resolve(
        session_factory, identity(nhs_number=nhs, family_name=name, date_of_birth=born_on, sex="M")
    )
    assert born == unborn
    row = await stored(session_factory, born)
    assert (row.date_of_birth, row.sex, row.expected_date_of_birth) == (born_on, "M", due)


async def test_an_unborn_child_without_identifiers_is_not_matched_by_name_alone(
    session_factory: SessionFactory,
) -> None:
    name = unique_family_name()
    unborn = identity(family_name=name, date_of_birth=None, sex="U")
    first = await resolve(session_factory, unborn)
    second = await resolve(session_factory, unborn)
    assert first != second


async def test_concurrent_first_sightings_of_a_child_by_name_create_one_child(
    session_factory: SessionFactory,
) -> None:
    child = identity()
    ids = await asyncio.gather(*(resolve(session_factory, child) for _ in range(10)))
    assert len(set(ids)) == 1


async def test_concurrent_sightings_by_different_identifiers_do_not_deadlock(
    session_factory: SessionFactory,
) -> None:
    nhs, local_id, pupil = next_nhs_number(), la_child_id(), upn()
    variants = [
        identity(nhs_number=nhs, la_child_id=local_id, upn=pupil),
        identity(upn=pupil, la_child_id=local_id),
        identity(nhs_number=nhs, upn=pupil),
        identity(la_child_id=local_id, nhs_number=nhs),
    ]
    ids = await asyncio.wait_for(
        asyncio.gather(*(resolve(session_factory, variant) for variant in variants * 3)), timeout=30
    )
    assert len(set(ids)) == 1
