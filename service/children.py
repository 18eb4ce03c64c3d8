"""Child matching (SPEC 2.1): NHS number, then LA child id, then UPN, then normalised family
name + date of birth; otherwise a new child.

Matching runs in the database (`neglect_resolve_child`, service/children.sql), in the caller's
transaction; the census import resolves a batch at once with `neglect_resolve_children`. Both
find the child holding each identifier sent and decide the match by `neglect_child_match`, the
rule's one definition, and a test holds the batch to the same children as these calls one at a
time. Concurrency: it first takes an
advisory lock on every key it will match or create on, in one fixed order, so two requests for the
same new child serialise and the second finds the first's row; the partial unique indexes are the
backstop. The locks are released at commit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, Final, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.children import ChildTimelineEntry, ChildWithTimeline
from schemas.identifiers import normalise_family_name
from service.audit import record_access
from service.auth.caller import Caller
from service.auth.scopes import READ_ALL_REFERRALS
from service.db import function_call
from service.errors import NotFound


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

    def arguments(self, names: tuple[str, ...]) -> dict[str, Any]:
        """These fields (`family_name_key` included) by name, as statement parameters."""
        return {name: getattr(self, name) for name in names}


# Matching itself is the database function `neglect_resolve_child` (children.sql): it takes the
# child's advisory locks, matches in SPEC 2.1's order, learns identifiers and creates the child,
# all in the caller's transaction, so every create path shares one definition and one round trip.
RESOLVE_ARGUMENTS: Final = (
    "nhs_number",
    "la_child_id",
    "upn",
    "given_name",
    "family_name",
    "family_name_key",
    "date_of_birth",
    "expected_date_of_birth",
    "sex",
    "ethnicity",
)
"""`neglect_resolve_child`'s parameters (each `p_<name>`)."""
_LOCK_ARGUMENTS: Final = ("nhs_number", "la_child_id", "upn", "family_name_key", "date_of_birth")
"""`neglect_lock_child`'s parameters: the keys a child is matched on."""

_RESOLVE_CHILD = function_call("neglect_resolve_child", RESOLVE_ARGUMENTS)
_LOCK_CHILD = function_call("neglect_lock_child", _LOCK_ARGUMENTS)


async def resolve_child(session: AsyncSession, identity: ChildIdentity) -> uuid.UUID:
    """The id of the matching child, creating the child when none matches.

    The child's advisory locks are held until the session's transaction ends.
    """
    child_id = await session.scalar(_RESOLVE_CHILD, identity.arguments(RESOLVE_ARGUMENTS))
    if not isinstance(child_id, uuid.UUID):
        raise TypeError("neglect_resolve_child returned no child id")
    return child_id


async def lock_child(session: AsyncSession, identity: ChildIdentity) -> None:
    """Take the advisory locks `resolve_child` takes for this child, until the transaction ends."""
    await session.execute(_LOCK_CHILD, identity.arguments(_LOCK_ARGUMENTS))


# --- the child as a caller sees it ---------------------------------------------------------------


_CHILD = text(
    "SELECT id, given_name, family_name, date_of_birth, expected_date_of_birth, sex, "
    "nhs_number, la_child_id, upn FROM child WHERE id = :child_id"
)
# `:agency_name` NULL means the caller may see every agency's records. Each record brings the
# child as its agency described them: a partner sees the child only as its own agency did.
_REFERRALS = text(
    "SELECT id, received_at, status, agency_name, concern_categories, decision_outcome, urgent, "
    "body -> 'child' AS child FROM referral WHERE child_id = :child_id "
    "AND (CAST(:agency_name AS text) IS NULL OR agency_name = :agency_name)"
)
_ASSESSMENTS = text(
    "SELECT id, completed_on, level_of_need, agency_name, toolkit_id, toolkit_version, "
    "created_at, body -> 'child' AS child FROM assessment WHERE child_id = :child_id "
    "AND (CAST(:agency_name AS text) IS NULL OR agency_name = :agency_name)"
)
_CASE_EVENTS = text("SELECT id, event_type, occurred_on FROM case_event WHERE child_id = :child_id")

IDENTITY_FIELDS: Final = (
    "given_name",
    "family_name",
    "date_of_birth",
    "expected_date_of_birth",
    "sex",
    "nhs_number",
    "la_child_id",
    "upn",
)
"""What a record says about who the child is, and what `GET /v1/children/{id}` shows of it."""


def _start_of(day: date) -> datetime:
    # Dated records sort with timestamped ones at the start of their day.
    return datetime.combine(day, time.min, tzinfo=UTC)


def _referral_entry(row: Any) -> ChildTimelineEntry:
    if row.concern_categories is None:
        # Imported from the CIN census, which records no concerns.
        summary = f"Episode of need from {row.agency_name}"
    else:
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


@dataclass(frozen=True)
class _Described:
    """A record's description of the child, and when the record was made."""

    child: dict[str, Any] | None
    at: datetime


def _as_described(records: list[_Described]) -> dict[str, Any]:
    """The child as the newest of these records described them."""
    described = max(records, key=lambda record: record.at).child or {}
    return {field: described.get(field) for field in IDENTITY_FIELDS}


async def get_child_timeline(
    session: AsyncSession, caller: Caller, child_id: uuid.UUID
) -> ChildWithTimeline:
    """The child and the records about them the caller may see, newest first.

    Referrals and assessments are visible to their own agency, or to every agency's records with
    `referrals:read:all` (the Front Door), who alone sees the child's whole identity and the
    case events (the council's own record). A partner sees the child as its own agency described
    them in its newest record, never what another agency sent. A child with nothing visible is
    `NotFound`, exactly like a missing one, after the same queries, so neither the answer nor
    its time tells a caller that another agency knows the child. The read is audited.
    """
    read_all = caller.has(READ_ALL_REFERRALS)
    scope = {"child_id": child_id, "agency_name": None if read_all else caller.agency_name}
    referrals = list(await session.execute(_REFERRALS, scope))
    assessments = list(await session.execute(_ASSESSMENTS, scope))
    timeline = [_referral_entry(row) for row in referrals]
    timeline += [_assessment_entry(row) for row in assessments]
    identity: dict[str, Any] | None
    if read_all:
        child = (await session.execute(_CHILD, {"child_id": child_id})).one_or_none()
        events = await session.execute(_CASE_EVENTS, {"child_id": child_id})
        timeline += [_case_event_entry(row) for row in events]
        identity = None if child is None else {f: getattr(child, f) for f in IDENTITY_FIELDS}
    else:
        described = [_Described(row.child, row.received_at) for row in referrals]
        described += [_Described(row.child, row.created_at) for row in assessments]
        identity = _as_described(described) if described else None
    if identity is None or not timeline:
        raise NotFound("no such child", resource_type="child", resource_id=child_id)
    timeline.sort(key=lambda entry: (entry.occurred_at, str(entry.id)), reverse=True)
    await record_access(session, caller, "read", "child", child_id, child_id)
    return ChildWithTimeline.model_validate({"id": child_id, **identity, "timeline": timeline})
