"""Child matching (SPEC 2.1): NHS number, then LA child id, then UPN, then normalised family
name + date of birth; otherwise a new child.

Concurrency: the transaction first takes an advisory lock on every key it will match or create
on, in sorted order, so two requests for the same new child serialise and the second finds the
first's row; the partial unique indexes are the backstop. The lock is released at commit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.errors import NotFound
from service.identifiers import normalise_family_name
from service.models import Child


@dataclass(frozen=True)
class ChildIdentity:
    """What a referral, assessment or case event tells us about who the child is."""

    nhs_number: str | None = None
    la_child_id: str | None = None
    upn: str | None = None
    family_name: str | None = None
    given_name: str | None = None
    date_of_birth: date | None = None
    expected_date_of_birth: date | None = None
    sex: str | None = None
    ethnicity: str | None = None

    @property
    def family_name_key(self) -> str | None:
        key = normalise_family_name(self.family_name) if self.family_name else ""
        return key or None

    def lock_keys(self) -> list[str]:
        keys = []
        if self.nhs_number:
            keys.append(f"child:nhs:{self.nhs_number}")
        if self.la_child_id:
            keys.append(f"child:la:{self.la_child_id}")
        if self.upn:
            keys.append(f"child:upn:{self.upn}")
        if self.family_name_key and self.date_of_birth:
            keys.append(f"child:name:{self.family_name_key}:{self.date_of_birth.isoformat()}")
        return sorted(keys)


_IDENTIFIERS = ("nhs_number", "la_child_id", "upn")

_LOCK = text(
    "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) "
    "FROM unnest(CAST(:keys AS text[])) WITH ORDINALITY AS t(k, n)"
)
_CANDIDATES = text(
    "SELECT id, nhs_number, la_child_id, upn, family_name_key, date_of_birth FROM child "
    "WHERE nhs_number = :nhs_number OR la_child_id = :la_child_id OR upn = :upn "
    "OR (family_name_key = :family_name_key AND date_of_birth = :date_of_birth)"
)


def _conflicts(row: Any, identity: ChildIdentity) -> bool:
    """Two different strong identifiers mean two different children (twins share name and dob)."""
    return any(
        getattr(identity, name)
        and getattr(row, name)
        and getattr(identity, name) != getattr(row, name)
        for name in _IDENTIFIERS
    )


def _pick(rows: list[Any], identity: ChildIdentity) -> Any | None:
    for name in _IDENTIFIERS:
        value = getattr(identity, name)
        if value:
            for row in rows:
                if getattr(row, name) == value and not _conflicts(row, identity):
                    return row
    key, dob = identity.family_name_key, identity.date_of_birth
    if key and dob:
        for row in rows:
            if (
                row.family_name_key == key
                and row.date_of_birth == dob
                and not _conflicts(row, identity)
            ):
                return row
    return None


async def resolve_child(session: AsyncSession, identity: ChildIdentity) -> uuid.UUID:
    """The id of the matching child, creating the child when none matches."""
    keys = identity.lock_keys()
    if keys:
        await session.execute(_LOCK, {"keys": keys})
        rows = list(
            await session.execute(
                _CANDIDATES,
                {
                    "nhs_number": identity.nhs_number,
                    "la_child_id": identity.la_child_id,
                    "upn": identity.upn,
                    "family_name_key": identity.family_name_key,
                    "date_of_birth": identity.date_of_birth,
                },
            )
        )
        match = _pick(rows, identity)
        if match is not None:
            await _fill_missing_identifiers(session, match, rows, identity)
            child_id: uuid.UUID = match.id
            return child_id
    new_id = uuid.uuid4()
    await session.execute(
        text(
            "INSERT INTO child (id, nhs_number, la_child_id, upn, given_name, family_name, "
            "family_name_key, date_of_birth, expected_date_of_birth, sex, ethnicity) VALUES "
            "(:id, :nhs_number, :la_child_id, :upn, :given_name, :family_name, :family_name_key, "
            ":date_of_birth, :expected_date_of_birth, :sex, :ethnicity)"
        ),
        {
            "id": new_id,
            "nhs_number": identity.nhs_number,
            "la_child_id": identity.la_child_id,
            "upn": identity.upn,
            "given_name": identity.given_name,
            "family_name": identity.family_name,
            "family_name_key": identity.family_name_key,
            "date_of_birth": identity.date_of_birth,
            "expected_date_of_birth": identity.expected_date_of_birth,
            "sex": identity.sex,
            "ethnicity": identity.ethnicity,
        },
    )
    return new_id


async def _fill_missing_identifiers(
    session: AsyncSession, match: Any, rows: list[Any], identity: ChildIdentity
) -> None:
    """Learn identifiers the matched child lacked, unless another child already holds them."""
    updates: dict[str, Any] = {}
    for name in _IDENTIFIERS:
        value = getattr(identity, name)
        held_elsewhere = any(getattr(row, name) == value and row.id != match.id for row in rows)
        if value and getattr(match, name) is None and not held_elsewhere:
            updates[name] = value
    if identity.date_of_birth and match.date_of_birth is None:
        # A child born since an unborn referral: record the birth.
        updates["date_of_birth"] = identity.date_of_birth
        updates["sex"] = identity.sex
    if not updates:
        return
    assignments = ", ".join(f"{name} = :{name}" for name in updates)
    await session.execute(
        text(f"UPDATE child SET {assignments}, updated_at = now() WHERE id = :id"),  # noqa: S608 - names are fixed
        {**updates, "id": match.id},
    )


async def get_child(session: AsyncSession, child_id: uuid.UUID) -> Child:
    child = await session.get(Child, child_id)
    if child is None:
        raise NotFound("no such child")
    return child
