"""Recording batches of case events (SPEC 2.4).

Each event of a batch is handled on its own, in batch order, inside a SAVEPOINT: it is stored, or
reported as a duplicate of an event the same client sent before, or rejected with a reason, and a
rejected event leaves nothing behind while the rest of the batch is still stored. Order matters:
a plan's start must come before its end, in the same batch or an earlier one.

Consistency rules (each rejection names the rule broken):
- an `event_id` is the client's: resending the same event is a duplicate; sending other content
  under an `event_id` already used is rejected;
- at most one open child protection plan per child, and CP plans of one child never overlap: a
  CP plan cannot start while another is open, nor before an earlier recorded plan ended;
- a plan ref names one plan per child and plan type; an event about a plan needs that plan;
- a plan cannot end before it starts or on the day it starts, and an ended plan cannot end again;
- a category change needs a CP plan open on that day, and a plan cannot end on or before the
  day of a category change recorded for it;
- one Section 47 start and one ICPC per enquiry ref and child, and an ICPC is not held before the
  start of its enquiry; one early help assessment per assessment ref and child.

Events about one child are serialised by locking the child's row, so two batches cannot both
pass a check that only one of them may pass; the unique indexes and check constraints on the
projections are the backstop and are reported as rejections too.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any, Final

from pydantic import ValidationError
from sqlalchemy import insert, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.case_events import (
    CaseEvent,
    CaseEventBatchResult,
    CaseEventResult,
    CinPlanEndedEvent,
    CinPlanStartedEvent,
    CpPlanCategoryChangedEvent,
    CpPlanEndedEvent,
    CpPlanStartedEvent,
    EarlyHelpAssessmentCompletedEvent,
    IcpcHeldEvent,
    Section47StartedEvent,
    parse_case_event,
    summarise_validation_error,
)
from service.audit import record_access
from service.auth.caller import Caller
from service.case_event_rules import (
    PlanFacts,
    category_change_refusal,
    cp_plan_overlap,
    icpc_refusal,
    plan_end_refusal,
    repeated_plan_ref,
    section47_start_refusal,
    unknown_plan,
)
from service.children import ChildIdentity, resolve_child
from service.errors import DomainError
from service.fingerprint import ascii_escaped_fingerprint, fingerprint
from service.models.case_events import CarePlan, CarePlanCategoryChange, Icpc, Section47Enquiry

_MAX_EVENT_ID_CHARS: Final = 100
_DEADLOCK_SQLSTATES: Final = frozenset({"40P01", "40001"})

_CONSTRAINT_REASONS: Final = {
    "uq_care_plan_one_open_cp_plan": "the child already has an open child protection plan",
    "uq_care_plan_child_id_plan_type_plan_ref": (
        "a plan with this plan_ref is already recorded for the child"
    ),
    "ck_care_plan_ends_after_start": "a plan cannot end before it starts or on the day it starts",
    "uq_section47_enquiry_child_id_enquiry_ref": (
        "a Section 47 enquiry with this enquiry_ref is already recorded for the child"
    ),
    "uq_icpc_child_id_enquiry_ref": "an ICPC is already recorded for this enquiry_ref",
}

# Event types whose checks read other records about the child; the others need no lock.
_CHECKED_TYPES: Final = frozenset(
    {
        "section47_started",
        "icpc_held",
        "cp_plan_started",
        "cp_plan_category_changed",
        "cp_plan_ended",
        "cin_plan_started",
        "cin_plan_ended",
        "early_help_assessment_completed",
    }
)


class CaseEventsContention(DomainError):
    """Two batches locked the same children in opposite orders; resending the batch is safe."""

    status = 503
    problem = "case-events-contention"
    title = "Another batch is changing the same children; retry shortly"


class _Rejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _AlreadyStored(Exception):
    """Another transaction stored this client's event_id after we last looked."""


async def record_case_events(
    session: AsyncSession, caller: Caller, raw_events: Sequence[Mapping[str, Any]]
) -> CaseEventBatchResult:
    """Validate, check and store each event of a batch; one result per event, in batch order."""
    stored: list[tuple[uuid.UUID, uuid.UUID]] = []
    results = [
        await _record_event(session, caller, index, raw, stored)
        for index, raw in enumerate(raw_events)
    ]
    # Audited after every child lock of the batch: the audit insert locks the agency's audit
    # chain head until the commit, and taking it last everywhere (creates and decisions audit
    # last too) means no transaction waits for a child while holding a head others queue on.
    for row_id, child_id in stored:
        await record_access(session, caller, "create", "case_event", row_id, child_id)
    return CaseEventBatchResult.from_results(results)


def _usable_event_id(raw: Mapping[str, Any]) -> str | None:
    value = raw.get("event_id")
    if isinstance(value, str) and 0 < len(value) <= _MAX_EVENT_ID_CHARS:
        return value
    return None


def _rejected(index: int, event_id: str | None, reason: str) -> CaseEventResult:
    return CaseEventResult(index=index, event_id=event_id, status="rejected", reason=reason)


async def _record_event(
    session: AsyncSession,
    caller: Caller,
    index: int,
    raw: Mapping[str, Any],
    stored_rows: list[tuple[uuid.UUID, uuid.UUID]],
) -> CaseEventResult:
    event_id = _usable_event_id(raw)
    try:
        event = parse_case_event(raw)
    except ValidationError as error:
        return _rejected(index, event_id, summarise_validation_error(error))
    # The event as validated, so key order or letter case in a UPN do not matter.
    payload = event.model_dump(mode="json")
    payload_sha256 = fingerprint(payload)
    stored = await _find_stored(session, caller.client_id, event.event_id)
    if stored is not None:
        return _repeat_result(index, event.event_id, stored, payload)
    try:
        async with session.begin_nested():
            row_id, child_id = await _store(session, caller, event, payload_sha256)
    except _Rejected as rejection:
        return _rejected(index, event.event_id, rejection.reason)
    except _AlreadyStored:
        stored = await _find_stored(session, caller.client_id, event.event_id)
        if stored is None:
            # ON CONFLICT only skips a row another transaction committed, so it is there now.
            raise
        return _repeat_result(index, event.event_id, stored, payload)
    except IntegrityError as error:
        reason = _CONSTRAINT_REASONS.get(_constraint_name(error) or "")
        if reason is None:
            raise
        return _rejected(index, event.event_id, reason)
    except DBAPIError as error:
        if _sqlstate(error) in _DEADLOCK_SQLSTATES:
            raise CaseEventsContention(
                "another batch was changing the same children at the same time; nothing from "
                "this batch was stored, and resending it is safe"
            ) from error
        raise
    stored_rows.append((row_id, child_id))
    return CaseEventResult(index=index, event_id=event.event_id, status="stored", id=row_id)


async def _find_stored(
    session: AsyncSession, client_id: str, event_id: str
) -> tuple[uuid.UUID, str] | None:
    row = (
        await session.execute(
            text(
                "SELECT id, payload_sha256 FROM case_event "
                "WHERE client_id = :client_id AND event_id = :event_id"
            ),
            {"client_id": client_id, "event_id": event_id},
        )
    ).first()
    return None if row is None else (row.id, row.payload_sha256)


def _same_payload(stored_sha256: str, payload: Mapping[str, Any]) -> bool:
    if stored_sha256 == fingerprint(payload):
        return True
    # Events stored before the one canonical JSON carry an ASCII-escaped fingerprint, which
    # differs only for payloads holding characters from DEL up (an accented name, say).
    return stored_sha256 == ascii_escaped_fingerprint(payload)


def _repeat_result(
    index: int, event_id: str, stored: tuple[uuid.UUID, str], payload: Mapping[str, Any]
) -> CaseEventResult:
    stored_id, stored_sha256 = stored
    if not _same_payload(stored_sha256, payload):
        return _rejected(
            index,
            event_id,
            "event_id: already used by this client for a different event; an event_id names one "
            "event, so send a correction under a new event_id",
        )
    return CaseEventResult(index=index, event_id=event_id, status="duplicate", id=stored_id)


def _constraint_name(error: DBAPIError) -> str | None:
    for candidate in (error.orig, getattr(error.orig, "__cause__", None)):
        name = getattr(candidate, "constraint_name", None)
        if isinstance(name, str):
            return name
    return None


def _sqlstate(error: DBAPIError) -> str | None:
    for candidate in (error.orig, getattr(error.orig, "__cause__", None)):
        state = getattr(candidate, "sqlstate", None)
        if isinstance(state, str):
            return state
    return None


async def _store(
    session: AsyncSession, caller: Caller, event: CaseEvent, payload_sha256: str
) -> tuple[uuid.UUID, uuid.UUID]:
    """Store one event and its projection, returning its id and its child's; raises `_Rejected`
    when it breaks a rule. The caller audits it."""
    child_id = await resolve_child(session, ChildIdentity.from_ref(event.child))
    if event.type in _CHECKED_TYPES:
        await session.execute(
            text("SELECT 1 FROM child WHERE id = :id FOR NO KEY UPDATE"), {"id": child_id}
        )
    row_id = uuid.uuid4()
    inserted = await session.execute(
        text(
            "INSERT INTO case_event (id, client_id, agency_type, agency_name, event_id, "
            "payload_sha256, child_id, event_type, occurred_on, details) VALUES (:id, :client_id, "
            ":agency_type, :agency_name, :event_id, :payload_sha256, :child_id, :event_type, "
            ":occurred_on, CAST(:details AS jsonb)) "
            "ON CONFLICT (client_id, event_id) DO NOTHING RETURNING id"
        ),
        {
            "id": row_id,
            "client_id": caller.client_id,
            "agency_type": caller.agency_type,
            "agency_name": caller.agency_name,
            "event_id": event.event_id,
            "payload_sha256": payload_sha256,
            "child_id": child_id,
            "event_type": event.type,
            "occurred_on": event.occurred_on,
            "details": json.dumps(
                event.model_dump(mode="json", exclude={"event_id", "child", "occurred_on", "type"})
            ),
        },
    )
    if inserted.first() is None:
        raise _AlreadyStored
    await _project(session, child_id, row_id, event)
    return row_id, child_id


async def _project(
    session: AsyncSession, child_id: uuid.UUID, row_id: uuid.UUID, event: CaseEvent
) -> None:
    if isinstance(event, Section47StartedEvent):
        await _start_section47(session, child_id, row_id, event)
    elif isinstance(event, IcpcHeldEvent):
        await _hold_icpc(session, child_id, row_id, event)
    elif isinstance(event, CpPlanStartedEvent):
        await _start_cp_plan(session, child_id, row_id, event)
    elif isinstance(event, CpPlanCategoryChangedEvent):
        await _change_cp_category(session, child_id, row_id, event)
    elif isinstance(event, CinPlanStartedEvent):
        await _start_cin_plan(session, child_id, row_id, event)
    elif isinstance(event, CpPlanEndedEvent | CinPlanEndedEvent):
        await _end_plan(session, child_id, row_id, event)
    elif isinstance(event, EarlyHelpAssessmentCompletedEvent):
        await _check_early_help_assessment(session, child_id, row_id, event)
    # Step-ups, health appointments and feedback stand alone: there is nothing to contradict.


async def _start_section47(
    session: AsyncSession, child_id: uuid.UUID, row_id: uuid.UUID, event: Section47StartedEvent
) -> None:
    refs = {"child_id": child_id, "enquiry_ref": event.enquiry_ref}
    started_on = await session.scalar(
        text(
            "SELECT started_on FROM section47_enquiry "
            "WHERE child_id = :child_id AND enquiry_ref = :enquiry_ref"
        ),
        refs,
    )
    held_on = await session.scalar(
        text("SELECT held_on FROM icpc WHERE child_id = :child_id AND enquiry_ref = :enquiry_ref"),
        refs,
    )
    _refuse(section47_start_refusal(started_on, held_on, event.occurred_on))
    await session.execute(
        insert(Section47Enquiry).values(
            id=uuid.uuid4(),
            child_id=child_id,
            enquiry_ref=event.enquiry_ref,
            started_on=event.occurred_on,
            strategy_discussion_on=event.strategy_discussion_on,
            case_event_id=row_id,
        )
    )


async def _hold_icpc(
    session: AsyncSession, child_id: uuid.UUID, row_id: uuid.UUID, event: IcpcHeldEvent
) -> None:
    refs = {"child_id": child_id, "enquiry_ref": event.enquiry_ref}
    held_on = await session.scalar(
        text("SELECT held_on FROM icpc WHERE child_id = :child_id AND enquiry_ref = :enquiry_ref"),
        refs,
    )
    started_on = await session.scalar(
        text(
            "SELECT started_on FROM section47_enquiry "
            "WHERE child_id = :child_id AND enquiry_ref = :enquiry_ref"
        ),
        refs,
    )
    _refuse(icpc_refusal(held_on, started_on, event.occurred_on))
    await session.execute(
        insert(Icpc).values(
            id=uuid.uuid4(),
            child_id=child_id,
            enquiry_ref=event.enquiry_ref,
            held_on=event.occurred_on,
            outcome=event.outcome,
            categories=list(event.categories),
            case_event_id=row_id,
        )
    )


async def _find_plan(
    session: AsyncSession, child_id: uuid.UUID, plan_type: str, plan_ref: str
) -> Any:
    return (
        await session.execute(
            text(
                "SELECT id, plan_ref, started_on, ended_on FROM care_plan "
                "WHERE child_id = :child_id AND plan_type = :plan_type AND plan_ref = :plan_ref"
            ),
            {"child_id": child_id, "plan_type": plan_type, "plan_ref": plan_ref},
        )
    ).first()


def _refuse(reason: str | None) -> None:
    if reason is not None:
        raise _Rejected(reason)


def _facts(plan_type: str, plan: Any, last_change_on: date | None = None) -> PlanFacts:
    return PlanFacts(
        plan_type=plan_type,
        plan_ref=plan.plan_ref,
        started_on=plan.started_on,
        ended_on=plan.ended_on,
        last_change_on=last_change_on,
    )


async def _refuse_repeated_plan_ref(
    session: AsyncSession, child_id: uuid.UUID, plan_type: str, plan_ref: str
) -> None:
    plan = await _find_plan(session, child_id, plan_type, plan_ref)
    _refuse(repeated_plan_ref(plan_type, None if plan is None else _facts(plan_type, plan)))


async def _start_cp_plan(
    session: AsyncSession, child_id: uuid.UUID, row_id: uuid.UUID, event: CpPlanStartedEvent
) -> None:
    await _refuse_repeated_plan_ref(session, child_id, "cp", event.plan_ref)
    # The new plan is open from its start; it overlaps any plan still open then or later.
    clash = (
        await session.execute(
            text(
                "SELECT plan_ref, started_on, ended_on FROM care_plan "
                "WHERE child_id = :child_id AND plan_type = 'cp' "
                "AND (ended_on IS NULL OR ended_on > :starts_on) "
                "ORDER BY ended_on DESC NULLS FIRST LIMIT 1"
            ),
            {"child_id": child_id, "starts_on": event.occurred_on},
        )
    ).first()
    _refuse(cp_plan_overlap(event.occurred_on, [] if clash is None else [_facts("cp", clash)]))
    await session.execute(
        insert(CarePlan).values(
            id=uuid.uuid4(),
            child_id=child_id,
            plan_type="cp",
            plan_ref=event.plan_ref,
            started_on=event.occurred_on,
            initial_category=event.initial_category,
            latest_category=event.initial_category,
            domestic_abuse_focus=event.domestic_abuse_focus,
            started_event_id=row_id,
        )
    )


async def _start_cin_plan(
    session: AsyncSession, child_id: uuid.UUID, row_id: uuid.UUID, event: CinPlanStartedEvent
) -> None:
    await _refuse_repeated_plan_ref(session, child_id, "cin", event.plan_ref)
    await session.execute(
        insert(CarePlan).values(
            id=uuid.uuid4(),
            child_id=child_id,
            plan_type="cin",
            plan_ref=event.plan_ref,
            started_on=event.occurred_on,
            neglect=event.neglect,
            started_event_id=row_id,
        )
    )


async def _existing_plan(
    session: AsyncSession, child_id: uuid.UUID, plan_type: str, plan_ref: str
) -> Any:
    plan = await _find_plan(session, child_id, plan_type, plan_ref)
    if plan is None:
        raise _Rejected(unknown_plan(plan_type))
    return plan


async def _change_cp_category(
    session: AsyncSession,
    child_id: uuid.UUID,
    row_id: uuid.UUID,
    event: CpPlanCategoryChangedEvent,
) -> None:
    plan = await _existing_plan(session, child_id, "cp", event.plan_ref)
    _refuse(category_change_refusal(_facts("cp", plan), event.occurred_on))
    await session.execute(
        insert(CarePlanCategoryChange).values(
            care_plan_id=plan.id,
            changed_on=event.occurred_on,
            category=event.category,
            case_event_id=row_id,
        )
    )
    # Changes may arrive out of date order: the latest category is the latest-dated change's.
    await session.execute(
        text(
            "UPDATE care_plan SET latest_category = ("
            "SELECT category FROM care_plan_category_change WHERE care_plan_id = :plan_id "
            "ORDER BY changed_on DESC, id DESC LIMIT 1) WHERE id = :plan_id"
        ),
        {"plan_id": plan.id},
    )


async def _end_plan(
    session: AsyncSession,
    child_id: uuid.UUID,
    row_id: uuid.UUID,
    event: CpPlanEndedEvent | CinPlanEndedEvent,
) -> None:
    plan_type = "cp" if isinstance(event, CpPlanEndedEvent) else "cin"
    plan = await _existing_plan(session, child_id, plan_type, event.plan_ref)
    last_change: date | None = await session.scalar(
        text("SELECT max(changed_on) FROM care_plan_category_change WHERE care_plan_id = :plan_id"),
        {"plan_id": plan.id},
    )
    _refuse(plan_end_refusal(_facts(plan_type, plan, last_change), event.occurred_on))
    await session.execute(
        text("UPDATE care_plan SET ended_on = :ended_on, ended_event_id = :row_id WHERE id = :id"),
        {"ended_on": event.occurred_on, "row_id": row_id, "id": plan.id},
    )


async def _check_early_help_assessment(
    session: AsyncSession,
    child_id: uuid.UUID,
    row_id: uuid.UUID,
    event: EarlyHelpAssessmentCompletedEvent,
) -> None:
    recorded_on = await session.scalar(
        text(
            "SELECT occurred_on FROM case_event WHERE child_id = :child_id "
            "AND event_type = 'early_help_assessment_completed' "
            "AND details ->> 'assessment_ref' = :assessment_ref AND id <> :row_id LIMIT 1"
        ),
        {"child_id": child_id, "assessment_ref": event.assessment_ref, "row_id": row_id},
    )
    if recorded_on is not None:
        raise _Rejected(
            "an early help assessment with this assessment_ref is already recorded for the child "
            f"(completed on {recorded_on.isoformat()})"
        )
