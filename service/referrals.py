"""Referrals (Requests for Support): create, read, list, decide, withdraw (SPEC 2.2).

Record scoping (SPEC 2.6): a caller sees the referrals its own registered agency made, unless it
holds `referrals:read:all`; anyone else's referral is `NotFound`, exactly like a missing one.
The Front Door (`referrals:decide`) may decide any referral; only the referring agency may
withdraw one.

Re-referral (DfE C1): a referral is a re-referral when the same child had another referral received
in the 12 months up to and including its own `received_at`; the rule is one database function,
`neglect_rereferral_counts` (referrals.sql), which the create calls and bulk loads call too.
Withdrawn referrals are not counted: a referral sent in error and withdrawn was never a request the
Front Door acted on. The flag and
count are fixed when the referral is received; back-loading an older referral later, or withdrawing
an earlier one, does not rewrite referrals already stored, so a C1 figure over back-loaded data
should be computed from `received_at`, not from these stored flags.

`previous_received_at`, in contrast, is kept true: when the child's latest earlier non-withdrawn
referral was received. One database function, `neglect_relink_referrals` (referrals.sql), sets it
for all of a child's referrals after a create and after a withdrawal, under the child's advisory
locks, and for the demo data after its bulk load, so the re-referral indicator reads it instead of
a window over every child's referrals.

The create path is written for throughput, where round trips are the cost that matters: it is one
call of the database function `neglect_create_referral` on a plain asyncpg connection in autocommit,
and the response is built from what is already in memory rather than read back. A retry with the
same idempotency key is answered by rendering the referral as it was created, so the first answer
is never stored twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import asyncpg
import orjson
from sqlalchemy import RowMapping, Table, and_, func, not_, select, text, true, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.common import Instant, Page
from schemas.referrals import (
    SECTION47_OUTCOME,
    DecisionCreate,
    ParentalConsent,
    ReferralCreate,
    ReferralPublic,
    ReferralStatus,
    WithdrawCreate,
)
from service.audit import record_access, record_replay
from service.auth.caller import Caller
from service.auth.clients import raise_for_client_outcome
from service.auth.scopes import READ_ALL_REFERRALS, WRITE_REFERRALS
from service.children import RESOLVE_ARGUMENTS, ChildIdentity, lock_child
from service.db import DriverPool, driver_function_call, function_call
from service.errors import (
    Conflict,
    FieldInvalid,
    InvalidTransition,
    NotFound,
)
from service.idempotency import body_fingerprint, raise_for_claim_outcome
from service.models import metadata
from service.pagination import Keyset, PageRequest
from service.webhooks.outbox import enqueue_event

DECISION_WINDOW: Final = timedelta(hours=24)
"""Front Door decision due this long after receipt (SPEC 5: one working day, 24 h locally)."""
STRATEGY_DISCUSSION_WINDOW: Final = timedelta(hours=24)
"""A Section 47 outcome needs a strategy discussion this long after receipt."""

RESOURCE_TYPE: Final = "referral"

REFERRAL: Final[Table] = metadata.tables["referral"]


class DuplicateExternalReference(Conflict):
    """This client already sent a referral with this `external_reference`."""

    problem = "duplicate-external-reference"
    title = "A referral with this external_reference already exists"


class ParentalAwarenessRequired(Conflict):
    """Only a Section 47 outcome may proceed without the parents informed or consenting."""

    problem = "parental-awareness-required"
    title = "This outcome needs the parents informed or their consent given"


@dataclass(frozen=True)
class ReferralFilters:
    """`GET /v1/referrals` filters; None means "do not filter on this"."""

    status: ReferralStatus | None = None
    received_from: datetime | None = None
    """Inclusive."""
    received_to: datetime | None = None
    """Exclusive."""
    child_id: uuid.UUID | None = None
    overdue: bool | None = None
    """Still `received` after `decision_due_at`."""
    urgent: bool | None = None


# --- create --------------------------------------------------------------------------------------

OPERATION: Final = "referral.create"
"""The idempotency operation name of a referral create."""

# The whole create is the database function `neglect_create_referral` (referrals.sql), run as
# one statement in autocommit: one round trip does the client check, the key claim, the child,
# the referral, its audit event, its webhook event (the outbox) and the back-loading links, and
# either all of it commits or none.
_CREATE_ARGUMENTS: Final = (
    "client_id",
    "issuer",
    "default_issuer",
    "scope",
    "idempotency_key",
    "operation",
    "fingerprint",
    *RESOLVE_ARGUMENTS,
    "id",
    "external_reference",
    "urgent",
    "received_at",
    "decision_window",
    "referral_source",
    "concern_categories",
    "neglect_forms",
    "risk_factors",
    "vulnerabilities",
    "parents_informed",
    "parental_consent",
    "body",
    "request_id",
    "access_reason",
)
_CREATE: Final = driver_function_call("neglect_create_referral", _CREATE_ARGUMENTS, record=True)
_EXISTING_BY_REFERENCE: Final = (
    "SELECT id FROM referral WHERE client_id = $1 AND external_reference = $2"
)
_EXTERNAL_REFERENCE_CONSTRAINT: Final = "uq_referral_client_external_reference"


@dataclass(frozen=True)
class Sender:
    """Who sends a create, as far as their verified token says.

    The database function checks the registered client behind it with `neglect_check_client`,
    as `authenticate` does for every other route: enabled, registered with this issuer, and
    allowed the scope.
    """

    client_id: str
    issuer: str
    default_issuer: str
    """The issuer a client registered without one is expected to present (our own)."""
    request_id: str | None = None
    access_reason: str | None = None


@dataclass(frozen=True)
class Replay:
    """A retry of an earlier create: answer as the first request was answered."""

    caller: Caller
    referral_id: uuid.UUID | None
    stored_status: int | None = None
    stored_body: dict[str, Any] | None = None
    """Set only for a response stored before migration 0005, replayed as it was stored."""


async def create_referral(
    pool: DriverPool, sender: Sender, key: str, referral: ReferralCreate
) -> ReferralPublic | Replay:
    """Store a referral for the matched (or new) child and audit it, once per idempotency key.

    Raises `AuthenticationFailed` or `InsufficientScope` for a client that may not create
    referrals, `IdempotencyKeyReused` / `IdempotencyKeyInFlight` for a key used with another body
    or still in use, and `DuplicateExternalReference` (409, with `existing_id`) when this client
    already used the external reference. None of these stores anything.
    """
    sent = referral.model_dump(mode="json")
    concerns = sent["concerns"]
    awareness = sent["parental_awareness"]
    referral_id = uuid.uuid4()
    received_at = referral.received_at.astimezone(UTC) if referral.received_at else None
    arguments = {
        "client_id": sender.client_id,
        "issuer": sender.issuer,
        "default_issuer": sender.default_issuer,
        "scope": WRITE_REFERRALS,
        "idempotency_key": key,
        "operation": OPERATION,
        "fingerprint": body_fingerprint(OPERATION, sent),
        **_identity_of(referral).arguments(RESOLVE_ARGUMENTS),
        "id": referral_id,
        "external_reference": referral.external_reference,
        "urgent": referral.immediate_risk,
        "received_at": received_at,
        "decision_window": DECISION_WINDOW,
        "referral_source": sent["referrer"]["source_code"],
        "concern_categories": concerns["categories"],
        "neglect_forms": concerns["neglect_forms"],
        "risk_factors": concerns["risk_factors"],
        "vulnerabilities": concerns["vulnerabilities"],
        "parents_informed": awareness["informed"],
        "parental_consent": awareness["consent"],
        "body": orjson.dumps(sent).decode(),
        "request_id": sender.request_id,
        "access_reason": sender.access_reason,
    }
    async with pool.acquire() as connection:
        try:
            row = await connection.fetchrow(
                _CREATE, *(arguments[name] for name in _CREATE_ARGUMENTS)
            )
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != _EXTERNAL_REFERENCE_CONSTRAINT:
                raise
            existing_id = await connection.fetchval(
                _EXISTING_BY_REFERENCE, sender.client_id, referral.external_reference
            )
            raise DuplicateExternalReference(
                "this client already sent a referral with this external_reference",
                existing_id=str(existing_id),
            ) from None
    if row is None:
        raise TypeError("neglect_create_referral returned no row")
    outcome = row["outcome"]
    raise_for_client_outcome(outcome, (WRITE_REFERRALS,), (WRITE_REFERRALS,))
    raise_for_claim_outcome(outcome)
    caller = Caller(
        client_id=sender.client_id,
        agency_type=row["client_agency_type"],
        agency_name=row["client_agency_name"],
        scopes=frozenset({WRITE_REFERRALS}),
        request_id=sender.request_id,
        access_reason=sender.access_reason,
    )
    if outcome == "replay":
        stored_body = row["replay_body"]
        return Replay(
            caller=caller,
            referral_id=row["referral_id"],
            stored_status=row["replay_status"],
            stored_body=orjson.loads(stored_body) if stored_body is not None else None,
        )
    # The sender sees its own agency's history of the child, whoever else referred them.
    count = int(row["referral_agency_rereferral_count"])
    return ReferralPublic.model_validate(
        {
            **sent,
            "id": referral_id,
            "status": ReferralStatus.RECEIVED,
            "urgent": referral.immediate_risk,
            "received_at": row["referral_received_at"],
            "decision_due_at": row["referral_decision_due_at"],
            "child_id": row["referral_child_id"],
            "rereferral": count > 0,
            "rereferral_count": count,
            "agency_type": caller.agency_type,
            "agency_name": caller.agency_name,
            "client_id": caller.client_id,
            "created_at": row["referral_created_at"],
        }
    )


def _identity_of(referral: ReferralCreate) -> ChildIdentity:
    child = referral.child
    return ChildIdentity(
        nhs_number=child.nhs_number,
        la_child_id=child.la_child_id,
        upn=child.upn,
        family_name=child.family_name,
        given_name=child.given_name,
        date_of_birth=child.date_of_birth,
        expected_date_of_birth=child.expected_date_of_birth,
        sex=child.sex.value,
        ethnicity=child.ethnicity,
    )


async def replay_created(session: AsyncSession, replay: Replay) -> tuple[int, str]:
    """The first answer to a create, for its retry: (status, JSON body), audited as a read.

    The referral is shown as it was created (received, undecided), whatever happened to it since.
    """
    if replay.stored_body is not None:
        await record_replay(session, replay.caller, RESOURCE_TYPE, replay.stored_body)
        return replay.stored_status or 201, orjson.dumps(replay.stored_body).decode()
    row = (
        (await session.execute(select(REFERRAL).where(REFERRAL.c.id == replay.referral_id)))
        .mappings()
        .one()
    )
    await record_access(session, replay.caller, "read", RESOURCE_TYPE, row["id"], row["child_id"])
    as_created = {
        **row,
        "status": ReferralStatus.RECEIVED.value,
        "decision": None,
        "withdrawn_at": None,
        "withdrawal_reason": None,
    }
    # The create's own answer: the sender's view, as `create_referral` gave it.
    return 201, referral_to_public(as_created, reads_all=False).model_dump_json()


# --- read ----------------------------------------------------------------------------------------


def referral_to_public(row: Mapping[Any, Any], reads_all: bool) -> ReferralPublic:
    """The wire form of a stored referral row: the body as sent plus what the service owns.

    The re-referral context is the partnership's for the Front Door (`reads_all`), and the
    referring agency's own history of the child for anyone else (SPEC 2.2).
    """
    decision = row["decision"]
    count = row["rereferral_count"] if reads_all else row["agency_rereferral_count"]
    return ReferralPublic.model_validate(
        {
            **row["body"],
            "id": row["id"],
            "external_reference": row["external_reference"],
            "status": row["status"],
            "urgent": row["urgent"],
            "received_at": row["received_at"],
            "decision_due_at": row["decision_due_at"],
            "child_id": row["child_id"],
            "rereferral": count > 0,
            "rereferral_count": count,
            "agency_type": row["agency_type"],
            "agency_name": row["agency_name"],
            "client_id": row["client_id"],
            "decision": decision,
            "withdrawn_at": row["withdrawn_at"],
            "withdrawal_reason": row["withdrawal_reason"],
            "created_at": row["created_at"],
        }
    )


def _visible_to(caller: Caller) -> Any:
    """WHERE clause: the referrals the caller may read (all of them for the Front Door)."""
    if caller.has(READ_ALL_REFERRALS):
        return true()
    return REFERRAL.c.agency_name == caller.agency_name


async def get_referral(
    session: AsyncSession, caller: Caller, referral_id: uuid.UUID
) -> ReferralPublic:
    """One referral the caller may see, audited as a read; `NotFound` otherwise."""
    row = (
        (
            await session.execute(
                select(REFERRAL).where(REFERRAL.c.id == referral_id, _visible_to(caller))
            )
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise NotFound("no such referral", resource_type=RESOURCE_TYPE, resource_id=referral_id)
    await record_access(session, caller, "read", RESOURCE_TYPE, referral_id, row["child_id"])
    return referral_to_public(row, caller.has(READ_ALL_REFERRALS))


_KEYSET: Final = Keyset[tuple[datetime, uuid.UUID]](tuple[Instant, uuid.UUID])
"""Newest received first: a page starts after the (received_at, id) of the last one before."""


def _filter_clauses(filters: ReferralFilters) -> list[Any]:
    clauses: list[Any] = []
    if filters.status is not None:
        clauses.append(REFERRAL.c.status == filters.status.value)
    if filters.received_from is not None:
        clauses.append(REFERRAL.c.received_at >= filters.received_from)
    if filters.received_to is not None:
        clauses.append(REFERRAL.c.received_at < filters.received_to)
    if filters.child_id is not None:
        clauses.append(REFERRAL.c.child_id == filters.child_id)
    if filters.urgent is not None:
        clauses.append(REFERRAL.c.urgent.is_(filters.urgent))
    if filters.overdue is not None:
        overdue = and_(
            REFERRAL.c.status == ReferralStatus.RECEIVED.value,
            REFERRAL.c.decision_due_at < func.now(),
        )
        clauses.append(overdue if filters.overdue else not_(overdue))
    return clauses


async def list_referrals(
    session: AsyncSession, caller: Caller, filters: ReferralFilters, page: PageRequest
) -> Page[ReferralPublic]:
    """Referrals the caller may see, newest received first, one page at a time (keyset)."""
    query = select(REFERRAL).where(_visible_to(caller), *_filter_clauses(filters))
    after = _KEYSET.after(page)
    if after is not None:
        query = query.where(tuple_(REFERRAL.c.received_at, REFERRAL.c.id) < tuple_(*after))
    query = query.order_by(REFERRAL.c.received_at.desc(), REFERRAL.c.id.desc()).limit(page.fetch)
    rows = list((await session.execute(query)).mappings())
    await record_access(session, caller, "list", RESOURCE_TYPE, None, filters.child_id)
    reads_all = caller.has(READ_ALL_REFERRALS)
    return _KEYSET.page(
        rows,
        page,
        lambda row: (row["received_at"], row["id"]),
        lambda row: referral_to_public(row, reads_all),
    )


# --- lifecycle -----------------------------------------------------------------------------------


async def _lock_referral(session: AsyncSession, referral_id: uuid.UUID, *where: Any) -> RowMapping:
    """The referral row, locked until commit so transitions on it happen one at a time."""
    row = (
        (
            await session.execute(
                select(REFERRAL).where(REFERRAL.c.id == referral_id, *where).with_for_update()
            )
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise NotFound("no such referral", resource_type=RESOURCE_TYPE, resource_id=referral_id)
    if row["status"] != ReferralStatus.RECEIVED.value:
        raise InvalidTransition(
            f"the referral is {row['status']}; only a received one can be decided or withdrawn",
            current_status=row["status"],
        )
    return row


def parents_aware(parents_informed: bool, parental_consent: str) -> bool:
    """Whether the parental-awareness rule lets a non-Section-47 outcome go ahead."""
    return parents_informed or parental_consent == ParentalConsent.GIVEN.value


@dataclass(frozen=True)
class DecisionRecord:
    """A Front Door decision as stored on its referral."""

    decided_at: datetime
    strategy_discussion_due_at: datetime | None
    """Received + 24 h for a Section 47 outcome, None for any other."""
    stored: dict[str, Any]
    """The referral's `decision` column."""


def decision_record(
    *,
    received_at: datetime,
    parents_informed: bool,
    parental_consent: str,
    outcome: str,
    rationale: str,
    decided_by: str,
    decided_at: datetime,
) -> DecisionRecord:
    """The decision on a referral received at `received_at`, by the rules of SPEC 2.2.

    A Section 47 outcome needs a strategy discussion within `STRATEGY_DISCUSSION_WINDOW`; any
    other outcome needs the parents informed or consenting (`ParentalAwarenessRequired`).
    """
    section47 = outcome == SECTION47_OUTCOME
    if not section47 and not parents_aware(parents_informed, parental_consent):
        raise ParentalAwarenessRequired(
            "the parents were not informed and did not consent; only "
            f"{SECTION47_OUTCOME} can be decided without that"
        )
    strategy_due_at = received_at + STRATEGY_DISCUSSION_WINDOW if section47 else None
    return DecisionRecord(
        decided_at=decided_at,
        strategy_discussion_due_at=strategy_due_at,
        stored={
            "outcome": outcome,
            "rationale": rationale,
            "decided_by": decided_by,
            "decided_at": decided_at.isoformat(),
            "strategy_discussion_due_at": strategy_due_at.isoformat() if strategy_due_at else None,
        },
    )


async def decide_referral(
    session: AsyncSession, caller: Caller, referral_id: uuid.UUID, decision: DecisionCreate
) -> ReferralPublic:
    """Record the Front Door's decision on a received referral and audit it. Like every action,
    it is open only on a referral the caller may read (any agency's for the Front Door): anyone
    else gets `NotFound`, whatever its state, exactly as for a missing one.

    The outcome follows `decision_record`'s rules.
    """
    row = await _lock_referral(session, referral_id, _visible_to(caller))
    received_at: datetime = row["received_at"]
    decided_at = (decision.decided_at or datetime.now(UTC)).astimezone(UTC)
    if decided_at < received_at:
        raise FieldInvalid(
            "body.decided_at", "must not be before the referral's received_at", "before_received"
        )
    record = decision_record(
        received_at=received_at,
        parents_informed=row["parents_informed"],
        parental_consent=row["parental_consent"],
        outcome=decision.outcome,
        rationale=decision.rationale,
        decided_by=decision.decided_by,
        decided_at=decided_at,
    )
    updated = (
        (
            await session.execute(
                update(REFERRAL)
                .where(REFERRAL.c.id == referral_id)
                .values(
                    status=ReferralStatus.DECIDED.value,
                    decision=record.stored,
                    decision_outcome=decision.outcome,
                    decided_at=decided_at,
                    strategy_discussion_due_at=record.strategy_discussion_due_at,
                )
                .returning(*REFERRAL.c)
            )
        )
        .mappings()
        .one()
    )
    # To the referring agency's subscriptions only (the referral's, not the decider's agency).
    # Before the audit event, which locks the agency's audit chain head until the commit.
    await enqueue_event(
        session,
        "referral.decided",
        agency_name=updated["agency_name"],
        resource_id=referral_id,
        status=ReferralStatus.DECIDED.value,
    )
    await record_access(session, caller, "update", RESOURCE_TYPE, referral_id, row["child_id"])
    return referral_to_public(updated, caller.has(READ_ALL_REFERRALS))


_CHILD_OF_REFERRAL = text(
    "SELECT c.nhs_number, c.la_child_id, c.upn, c.family_name, c.date_of_birth "
    "FROM referral r JOIN child c ON c.id = r.child_id "
    "WHERE r.id = :referral_id AND r.agency_name = :agency_name"
)

# `previous_received_at` of the child's referrals: the database function that the create calls.
_RELINK = function_call("neglect_relink_referrals", ("child_ids",))


async def _lock_child_of(session: AsyncSession, caller: Caller, referral_id: uuid.UUID) -> None:
    """Take the advisory locks `create_referral` takes for the referral's child.

    Creates for the child relink its referrals under these locks, so a withdrawal takes them too,
    and before the referral's row lock, in the same order as a create.
    """
    child = (
        await session.execute(
            _CHILD_OF_REFERRAL, {"referral_id": referral_id, "agency_name": caller.agency_name}
        )
    ).one_or_none()
    if child is None:
        return  # `_lock_referral` reports it.
    await lock_child(session, ChildIdentity.from_ref(child))


async def withdraw_referral(
    session: AsyncSession, caller: Caller, referral_id: uuid.UUID, withdrawal: WithdrawCreate
) -> ReferralPublic:
    """The referring agency withdraws its own undecided referral; others get `NotFound`."""
    await _lock_child_of(session, caller, referral_id)
    await _lock_referral(session, referral_id, REFERRAL.c.agency_name == caller.agency_name)
    updated = (
        (
            await session.execute(
                update(REFERRAL)
                .where(REFERRAL.c.id == referral_id)
                .values(
                    status=ReferralStatus.WITHDRAWN.value,
                    withdrawn_at=func.now(),
                    withdrawal_reason=withdrawal.reason,
                )
                .returning(*REFERRAL.c)
            )
        )
        .mappings()
        .one()
    )
    await session.execute(_RELINK, {"child_ids": [updated["child_id"]]})
    # Before the audit event, which locks the agency's audit chain head until the commit.
    await enqueue_event(
        session,
        "referral.withdrawn",
        agency_name=updated["agency_name"],
        resource_id=referral_id,
        status=ReferralStatus.WITHDRAWN.value,
    )
    await record_access(session, caller, "update", RESOURCE_TYPE, referral_id, updated["child_id"])
    return referral_to_public(updated, caller.has(READ_ALL_REFERRALS))


__all__ = [
    "DuplicateExternalReference",
    "ParentalAwarenessRequired",
    "ReferralFilters",
    "create_referral",
    "decide_referral",
    "decision_record",
    "get_referral",
    "list_referrals",
    "parents_aware",
    "referral_to_public",
    "withdraw_referral",
]
