"""Child matching (SPEC 2.1): NHS number, then LA child id, then UPN, then normalised family
name + date of birth; otherwise a new child.

Concurrency: the transaction first takes an advisory lock on every key it will match or create
on, in sorted order, so two requests for the same new child serialise and the second finds the
first's row; the partial unique indexes are the backstop. The lock is released at commit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, Final, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.children import ChildTimelineEntry, ChildWithTimeline
from service.audit import record_access
from service.auth.caller import Caller
from service.auth.scopes import READ_ALL_REFERRALS
from service.errors import NotFound
from service.identifiers import normalise_family_name
from service.models import Child


class ChildRefLike(Protocol):
    """The identifying fields every child reference carries."""

    @property
    def nhs_number(self) -> str | None: ...
    @property
    def la_child_id(self) -> str | None: ...
    @property
    def upn(self) -> str | None: ...
    @property
    def family_name(self) -> str | None: ...
    @property
    def date_of_birth(self) -> date | None: ...


def age_in_years(date_of_birth: date, on: date) -> int:
    """Whole years between a birth and a day; 0 when the day is before the birth."""
    years = (
        on.year
        - date_of_birth.year
        - ((on.month, on.day) < (date_of_birth.month, date_of_birth.day))
    )
    return max(years, 0)


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

    @classmethod
    def from_ref(cls, ref: ChildRefLike) -> ChildIdentity:
        """The identity a child reference (a `ChildRef`, a stored child row) gives."""
        return cls(
            nhs_number=ref.nhs_number,
            la_child_id=ref.la_child_id,
            upn=ref.upn,
            family_name=ref.family_name,
            date_of_birth=ref.date_of_birth,
        )

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

LOCK_CHILD_KEYS = text(
    "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) "
    "FROM unnest(CAST(:keys AS text[])) WITH ORDINALITY AS t(k, n)"
)
_CANDIDATES = text(
    "SELECT id, nhs_number, la_child_id, upn, family_name_key, date_of_birth FROM child "
    "WHERE nhs_number = :nhs_number OR la_child_id = :la_child_id OR upn = :upn "
    "OR (family_name_key = :family_name_key AND date_of_birth = :date_of_birth)"
)


def _conflicts(row: Any, identity: ChildIdentity, stronger: tuple[str, ...]) -> bool:
    """Two different values of an identifier that outranks the match mean two different children.

    Matching goes in SPEC 2.1's order, so an NHS number match stands even when the LA child id
    differs, while twins who share a name and date of birth stay apart by their NHS numbers.
    """
    return any(
        getattr(identity, name)
        and getattr(row, name)
        and getattr(identity, name) != getattr(row, name)
        for name in stronger
    )


def _pick(rows: list[Any], identity: ChildIdentity) -> Any | None:
    for rank, name in enumerate(_IDENTIFIERS):
        value = getattr(identity, name)
        if value:
            for row in rows:
                if getattr(row, name) == value and not _conflicts(
                    row, identity, _IDENTIFIERS[:rank]
                ):
                    return row
    key, dob = identity.family_name_key, identity.date_of_birth
    if key and dob:
        for row in rows:
            if (
                row.family_name_key == key
                and row.date_of_birth == dob
                and not _conflicts(row, identity, _IDENTIFIERS)
            ):
                return row
    return None


def _held_elsewhere(rows: list[Any], identity: ChildIdentity) -> set[str]:
    """The identifiers of `identity` that an existing child already holds (each is unique)."""
    return {
        name
        for name in _IDENTIFIERS
        if getattr(identity, name)
        and any(getattr(row, name) == getattr(identity, name) for row in rows)
    }


INSERT_CHILD_SQL: Final = (
    "INSERT INTO child (id, nhs_number, la_child_id, upn, given_name, family_name, "
    "family_name_key, date_of_birth, expected_date_of_birth, sex, ethnicity) VALUES "
    "(:new_child_id, :new_child_nhs_number, :new_child_la_child_id, :new_child_upn, "
    ":new_child_given_name, :new_child_family_name, :new_child_family_name_key, "
    ":new_child_date_of_birth, :new_child_expected_date_of_birth, :new_child_sex, "
    ":new_child_ethnicity)"
)
"""Creates the child a `ChildResolution` describes, with its `new_child` parameters.

Callers on a hot path may run it as a data-modifying CTE of their own INSERT, saving a round trip.
"""
_INSERT_CHILD = text(INSERT_CHILD_SQL)


@dataclass(frozen=True)
class ChildResolution:
    """The outcome of matching: a known child, or the parameters to create a new one."""

    child_id: uuid.UUID
    new_child: dict[str, Any] | None = None
    """`INSERT_CHILD_SQL` parameters when no child matched; the caller must run it."""


async def match_child(session: AsyncSession, identity: ChildIdentity) -> ChildResolution:
    """Match `identity` to a known child (learning identifiers it lacked), or describe a new one.

    The child's advisory locks are held until commit, so the caller must create a new child in
    the same transaction (`INSERT_CHILD_SQL`); `resolve_child` does both.
    """
    keys = identity.lock_keys()
    held: set[str] = set()
    if keys:
        await session.execute(LOCK_CHILD_KEYS, {"keys": keys})
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
            return ChildResolution(child_id=match.id)
        # Conflicting identifiers from a sender: the new child goes without the ones another
        # child holds, rather than breaking a unique index with a 500.
        held = _held_elsewhere(rows, identity)
    new_id = uuid.uuid4()
    return ChildResolution(
        child_id=new_id,
        new_child={
            "new_child_id": new_id,
            "new_child_nhs_number": None if "nhs_number" in held else identity.nhs_number,
            "new_child_la_child_id": None if "la_child_id" in held else identity.la_child_id,
            "new_child_upn": None if "upn" in held else identity.upn,
            "new_child_given_name": identity.given_name,
            "new_child_family_name": identity.family_name,
            "new_child_family_name_key": identity.family_name_key,
            "new_child_date_of_birth": identity.date_of_birth,
            "new_child_expected_date_of_birth": identity.expected_date_of_birth,
            "new_child_sex": identity.sex,
            "new_child_ethnicity": identity.ethnicity,
        },
    )


async def resolve_child(session: AsyncSession, identity: ChildIdentity) -> uuid.UUID:
    """The id of the matching child, creating the child when none matches."""
    resolution = await match_child(session, identity)
    if resolution.new_child is not None:
        await session.execute(_INSERT_CHILD, resolution.new_child)
    return resolution.child_id


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


# --- the child as a caller sees it ---------------------------------------------------------------


_CHILD = text(
    "SELECT id, given_name, family_name, date_of_birth, expected_date_of_birth, sex, "
    "nhs_number, la_child_id, upn FROM child WHERE id = :child_id"
)
# `:agency_name` NULL means the caller may see every agency's records.
_REFERRALS = text(
    "SELECT id, received_at, status, agency_name, concern_categories, decision_outcome, urgent "
    "FROM referral WHERE child_id = :child_id "
    "AND (CAST(:agency_name AS text) IS NULL OR agency_name = :agency_name)"
)
_ASSESSMENTS = text(
    "SELECT id, completed_on, level_of_need, agency_name, toolkit_id, toolkit_version "
    "FROM assessment WHERE child_id = :child_id "
    "AND (CAST(:agency_name AS text) IS NULL OR agency_name = :agency_name)"
)
_CASE_EVENTS = text("SELECT id, event_type, occurred_on FROM case_event WHERE child_id = :child_id")


def _start_of(day: date) -> datetime:
    # Dated records sort with timestamped ones at the start of their day.
    return datetime.combine(day, time.min, tzinfo=UTC)


def _referral_entry(row: Any) -> ChildTimelineEntry:
    summary = f"Referral ({', '.join(row.concern_categories)}) from {row.agency_name}"
    if row.urgent:
        summary += ", immediate risk"
    if row.decision_outcome:
        summary += f"; decided: {row.decision_outcome}"
    elif row.status != "received":
        summary += f"; {row.status}"
    return ChildTimelineEntry(
        kind="referral",
        id=row.id,
        occurred_at=row.received_at,
        summary=summary,
        status=row.status,
        agency_name=row.agency_name,
    )


def _assessment_entry(row: Any) -> ChildTimelineEntry:
    return ChildTimelineEntry(
        kind="assessment",
        id=row.id,
        occurred_at=_start_of(row.completed_on),
        summary=(
            f"Toolkit assessment ({row.toolkit_id} {row.toolkit_version}) by {row.agency_name}: "
            f"level of need {row.level_of_need}"
        ),
        level_of_need=row.level_of_need,
        agency_name=row.agency_name,
    )


def _case_event_entry(row: Any) -> ChildTimelineEntry:
    return ChildTimelineEntry(
        kind="case_event",
        id=row.id,
        occurred_at=_start_of(row.occurred_on),
        summary=f"Case event: {row.event_type.replace('_', ' ')}",
        event_type=row.event_type,
    )


async def get_child_timeline(
    session: AsyncSession, caller: Caller, child_id: uuid.UUID
) -> ChildWithTimeline:
    """The child's identity and the records about them the caller may see, newest first.

    Referrals and assessments are visible to their own agency, or to every agency's records with
    `referrals:read:all`; case events (the council's own record) only with `referrals:read:all`.
    A child with nothing visible is `NotFound`, exactly like a missing one, so a caller cannot
    learn that some other agency knows the child. The read is audited.
    """
    child = (await session.execute(_CHILD, {"child_id": child_id})).one_or_none()
    if child is None:
        raise NotFound("no such child")
    read_all = caller.has(READ_ALL_REFERRALS)
    scope = {"child_id": child_id, "agency_name": None if read_all else caller.agency_name}
    timeline = [_referral_entry(row) for row in await session.execute(_REFERRALS, scope)]
    timeline += [_assessment_entry(row) for row in await session.execute(_ASSESSMENTS, scope)]
    if read_all:
        events = await session.execute(_CASE_EVENTS, {"child_id": child_id})
        timeline += [_case_event_entry(row) for row in events]
    if not timeline:
        raise NotFound("no such child")
    timeline.sort(key=lambda entry: (entry.occurred_at, str(entry.id)), reverse=True)
    await record_access(session, caller, "read", "child", child_id, child_id)
    return ChildWithTimeline(
        id=child.id,
        given_name=child.given_name,
        family_name=child.family_name,
        date_of_birth=child.date_of_birth,
        expected_date_of_birth=child.expected_date_of_birth,
        sex=child.sex,
        nhs_number=child.nhs_number,
        la_child_id=child.la_child_id,
        upn=child.upn,
        timeline=timeline,
    )
