"""Random histories for the property test, and sending one through the public API.

A history is a few children, each with records clustered around a day of their own (so that
their referrals, plans, assessments and step-ups fall within a year of each other, where the
12-month rules decide) and often exactly 0, 1, 364, 365 or 366 days from it (where the
boundaries of those rules are). Records run from a year before the requested range to three
months after it, so look-backs reach before the range and a financial year runs past its end.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from hypothesis import strategies as st

from schemas.case_audits import AUDIT_GRADES, AUDITED_WORK
from schemas.case_events import FEEDBACK_FROM
from schemas.vocabulary import NEGLECT_FORMS
from service.db import SessionFactory
from service.toolkits.definition import ToolkitDefinition
from service.toolkits.demo import load_demo_toolkit
from tests.builders.case_audits import case_audit_body, post_case_audit
from tests.builders.case_events import (
    cin_plan_ended,
    cin_plan_started,
    cp_plan_category_changed,
    cp_plan_ended,
    cp_plan_started,
    early_help_assessment_completed,
    feedback_received,
    health_appointment,
    icpc_held,
    post_case_events_all_stored,
    section47_started,
    stepped_up_to_social_care,
)
from tests.builders.indicators import IndicatorApi, KnownChild, insert_child
from tests.conftest import RegisteredClient

UK = ZoneInfo("Europe/London")

FIRST_DAY = date(2023, 1, 1)
LAST_DAY = date(2025, 12, 31)
"""The range every series is asked for (whole periods covering it)."""
HISTORY_FIRST = date(2022, 1, 1)
HISTORY_LAST = date(2026, 3, 31)
"""Records fall on these days and between them (all in the past)."""
HISTORY_DAYS = (HISTORY_LAST - HISTORY_FIRST).days + 1

BANK_HOLIDAYS = frozenset(
    date.fromisoformat(day)
    for day in (
        # England and Wales, as published on gov.uk (substitute days where one fell at a weekend).
        "2022-01-03", "2022-04-15", "2022-04-18", "2022-05-02", "2022-06-02", "2022-06-03",
        "2022-08-29", "2022-09-19", "2022-12-26", "2022-12-27",
        "2023-01-02", "2023-04-07", "2023-04-10", "2023-05-01", "2023-05-08", "2023-05-29",
        "2023-08-28", "2023-12-25", "2023-12-26",
        "2024-01-01", "2024-03-29", "2024-04-01", "2024-05-06", "2024-05-27", "2024-08-26",
        "2024-12-25", "2024-12-26",
        "2025-01-01", "2025-04-18", "2025-04-21", "2025-05-05", "2025-05-26", "2025-08-25",
        "2025-12-25", "2025-12-26",
        "2026-01-01", "2026-04-03", "2026-04-06", "2026-05-04", "2026-05-25", "2026-08-31",
    )
)  # fmt: skip
"""Written out here rather than taken from the service, so the reference checks its calendar."""

CATEGORIES = ("NEG", "PHY", "EMO", "SAB", "MUL")
_CATEGORIES = st.one_of(st.just("NEG"), st.sampled_from(CATEGORIES))
"""Neglect most often, so that the neglect indicators have something to count."""
DEMO_AREAS = tuple(area.id for area in load_demo_toolkit().areas)


def working_days_after(start: date, count: int) -> date:
    """The day `count` working days (Monday to Friday, not a bank holiday) after `start`."""
    day = start
    while count > 0:
        day += timedelta(days=1)
        if day.weekday() < 5 and day not in BANK_HOLIDAYS:
            count -= 1
    return day


# --- What a history is --------------------------------------------------------------------------


@dataclass(frozen=True)
class Referral:
    day: int
    hour: int
    categories: tuple[str, ...]
    forms: tuple[str, ...]
    source: str
    agency: str
    decision_after_hours: int | None
    withdrawn: bool
    disabilities: tuple[str, ...] | None


@dataclass(frozen=True)
class CpPlan:
    start: int
    """Days after the end of the child's plan before (or after the anchor, for the first)."""
    length: int | None
    ends_on_anchor: bool
    """Ends on the child's anchor instead, when that is after its start (the anchor is often a
    period's last day: a plan ending on it is no longer open on it)."""
    category: str
    changes: tuple[tuple[int, str], ...]
    """(days after the start, category), in the order sent: out of date order, same-day pairs."""
    domestic_abuse: bool


@dataclass(frozen=True)
class CinPlan:
    start: int
    length: int | None
    neglect: bool


@dataclass(frozen=True)
class Enquiry:
    start: int
    """Days from the anchor, or with `near_holiday` days before that bank holiday."""
    near_holiday: date | None
    start_recorded: bool
    icpc_after_working_days: int | None
    categories: tuple[str, ...]
    plan_follows: bool
    icpc_sent_first: bool


@dataclass(frozen=True)
class EarlyHelp:
    day: int
    considered: bool
    identified: bool


@dataclass(frozen=True)
class Assessment:
    day: int
    other_toolkit: bool
    grade: int | None
    """Every item's grade; None answers every item not known (demonstration toolkit only)."""
    override: tuple[str, int] | None
    agency: str
    names_previous: int | None
    """Names the n-th (modulo) earlier-sent assessment of the child with the same toolkit and
    agency as its previous one, when there is one."""


@dataclass(frozen=True)
class Audit:
    day: int
    work: str
    neglect_featured: bool
    practice: str
    impact: str
    toolkit_used: bool


@dataclass(frozen=True)
class ChildHistory:
    date_of_birth: date | None
    expected_date_of_birth: date | None
    sex: str
    ethnicity: str | None
    anchor: int
    referrals: tuple[Referral, ...]
    cp_plans: tuple[CpPlan, ...]
    cin_plans: tuple[CinPlan, ...]
    enquiries: tuple[Enquiry, ...]
    early_help: tuple[EarlyHelp, ...]
    step_ups: tuple[int, ...]
    """Days from the child's first early help assessment (from the anchor without one)."""
    appointments: tuple[tuple[int, str, bool], ...]
    feedback: tuple[tuple[int, str, int], ...]
    assessments: tuple[Assessment, ...]
    audits: tuple[Audit, ...]


@dataclass(frozen=True)
class History:
    children: tuple[ChildHistory, ...]
    seed: int
    """Orders the sending of referrals, withdrawals, case events and assessments (back-loading)."""


# --- Strategies ---------------------------------------------------------------------------------

_EDGE_DAYS = tuple(
    date.fromisoformat(day)
    for day in (
        "2022-04-01", "2023-01-01", "2024-02-29", "2025-12-31", "2026-01-01", "2026-03-31",
        # Clocks change in England: a referral's hour near midnight moves its day in UTC.
        "2023-03-26", "2023-10-29", "2024-03-31", "2024-10-27", "2025-03-30", "2025-10-26",
    )
)  # fmt: skip
"""Anchors where something changes: the first and last days of the range asked for (a
financial year's too), a leap day, and the days the clocks change."""
_HOLIDAYS_IN_HISTORY = sorted(day for day in BANK_HOLIDAYS if day <= HISTORY_LAST)
_OFFSETS = st.one_of(
    st.just(0), st.sampled_from((1, -1, 364, 365, 366, 367, -365, -366)), st.integers(-500, 500)
)
"""Days from the child's anchor (or another record): a third of them on it, many more where a
12-month rule changes its answer."""


@st.composite
def _referral(draw: st.DrawFn) -> Referral:
    neglect = draw(st.booleans())
    categories: tuple[str, ...] = ("neglect",) if neglect else ()
    categories += tuple(draw(st.sets(st.sampled_from(("physical_abuse", "emotional_abuse")))))
    decided = draw(st.one_of(st.none(), st.sampled_from((23, 24, 25)), st.integers(0, 60)))
    return Referral(
        day=draw(_OFFSETS),
        hour=draw(st.one_of(st.sampled_from((0, 23)), st.integers(0, 23))),
        categories=categories or ("other",),
        forms=(
            tuple(
                draw(st.lists(st.sampled_from(NEGLECT_FORMS), min_size=1, max_size=3, unique=True))
            )
            if neglect
            else ()
        ),
        source=draw(st.sampled_from(("2A", "3A", "6"))),
        agency=draw(st.sampled_from(("school", "police", "health"))),
        decision_after_hours=decided,
        withdrawn=decided is None and draw(st.booleans()),
        disabilities=draw(st.sampled_from((None, (), ("NONE",), ("AUT",), ("AUT", "LD")))),
    )


@st.composite
def _cp_plan(draw: st.DrawFn) -> CpPlan:
    length = draw(st.one_of(st.integers(1, 500), st.none()))
    room = 400 if length is None else length - 1
    changes = draw(st.lists(st.tuples(st.integers(0, room), _CATEGORIES), max_size=3))
    twice_on_a_day = draw(st.booleans())
    if changes and twice_on_a_day:
        changes.append((changes[0][0], draw(_CATEGORIES)))
    return CpPlan(
        start=draw(st.one_of(st.just(0), _OFFSETS)),
        length=length,
        ends_on_anchor=draw(st.booleans()),
        category=draw(_CATEGORIES),
        changes=tuple(changes),
        domestic_abuse=draw(st.booleans()),
    )


@st.composite
def _enquiry(draw: st.DrawFn) -> Enquiry:
    has_icpc = draw(st.booleans()) or draw(st.booleans())
    near_holiday = draw(st.booleans())
    return Enquiry(
        start=draw(st.one_of(st.integers(0, 60), _OFFSETS)),
        near_holiday=draw(st.sampled_from(_HOLIDAYS_IN_HISTORY)) if near_holiday else None,
        start_recorded=draw(st.booleans()) or draw(st.booleans()),
        icpc_after_working_days=(
            # On the last working day in time, or a day either side, most often.
            draw(st.one_of(st.just(15), st.sampled_from((14, 16)), st.integers(0, 30)))
            if has_icpc
            else None
        ),
        categories=tuple(draw(st.lists(_CATEGORIES, max_size=3, unique=True))),
        plan_follows=draw(st.booleans()),
        icpc_sent_first=draw(st.booleans()),
    )


@st.composite
def _assessment(draw: st.DrawFn) -> Assessment:
    other_toolkit = draw(st.booleans()) and draw(st.booleans())
    return Assessment(
        # Re-assessments a few weeks or months apart, several in one period.
        day=draw(st.one_of(st.integers(0, 150), _OFFSETS)),
        other_toolkit=other_toolkit,
        grade=draw(st.integers(1, 5) if other_toolkit else st.one_of(st.integers(1, 5), st.none())),
        override=(
            None
            if other_toolkit
            else draw(
                st.one_of(st.none(), st.tuples(st.sampled_from(DEMO_AREAS), st.integers(1, 5)))
            )
        ),
        agency=draw(st.sampled_from(("school", "health"))),
        # Often the first sent of the earlier ones, which need not be the latest earlier one.
        names_previous=draw(st.one_of(st.just(0), st.none(), st.integers(0, 3))),
    )


@st.composite
def _audit(draw: st.DrawFn) -> Audit:
    return Audit(
        day=draw(_OFFSETS),
        work=draw(st.sampled_from(AUDITED_WORK)),
        neglect_featured=draw(st.booleans()) or draw(st.booleans()),
        practice=draw(st.sampled_from(AUDIT_GRADES)),
        impact=draw(st.sampled_from(AUDIT_GRADES)),
        toolkit_used=draw(st.booleans()),
    )


@st.composite
def _child(draw: st.DrawFn) -> ChildHistory:
    born = draw(
        st.one_of(
            st.dates(date(2009, 6, 1), date(2025, 6, 30)),
            st.sampled_from((date(2012, 2, 29), date(2022, 2, 28))),
            st.none(),
        )
    )
    expected = (
        draw(st.one_of(st.none(), st.dates(date(2022, 6, 1), date(2026, 6, 30))))
        if born is None
        else None
    )
    return ChildHistory(
        date_of_birth=born,
        expected_date_of_birth=expected,
        sex=draw(st.sampled_from(("M", "F", "U"))),
        ethnicity=draw(st.sampled_from(("WBRI", "ABAN", None))),
        # The simplest anchor (0) is moved into the requested range.
        anchor=draw(
            st.one_of(
                st.integers(0, HISTORY_DAYS - 1).map(lambda day: (day + 500) % HISTORY_DAYS),
                st.sampled_from(_EDGE_DAYS).map(lambda day: (day - HISTORY_FIRST).days),
            )
        ),
        referrals=tuple(draw(st.lists(_referral(), min_size=2, max_size=4))),
        cp_plans=tuple(draw(st.lists(_cp_plan(), min_size=1, max_size=3))),
        cin_plans=tuple(
            draw(
                st.lists(
                    st.builds(
                        CinPlan, _OFFSETS, st.one_of(st.none(), st.integers(1, 500)), st.booleans()
                    ),
                    max_size=2,
                )
            )
        ),
        enquiries=tuple(draw(st.lists(_enquiry(), min_size=1, max_size=2))),
        early_help=tuple(
            draw(
                st.lists(
                    st.builds(
                        lambda day, considered, identified: EarlyHelp(
                            day, considered or identified, identified
                        ),
                        _OFFSETS,
                        st.booleans(),
                        st.booleans(),
                    ),
                    min_size=1,
                    max_size=2,
                )
            )
        ),
        step_ups=tuple(draw(st.lists(_OFFSETS, min_size=1, max_size=2))),
        appointments=tuple(
            draw(
                st.lists(
                    st.tuples(_OFFSETS, st.sampled_from(("medical", "dental")), st.booleans()),
                    min_size=1,
                    max_size=3,
                )
            )
        ),
        feedback=tuple(
            draw(
                st.lists(
                    st.tuples(_OFFSETS, st.sampled_from(FEEDBACK_FROM), st.integers(1, 5)),
                    min_size=1,
                    max_size=3,
                )
            )
        ),
        assessments=tuple(draw(st.lists(_assessment(), min_size=2, max_size=5))),
        audits=tuple(draw(st.lists(_audit(), min_size=1, max_size=2))),
    )


@st.composite
def histories(draw: st.DrawFn) -> History:
    return History(
        children=tuple(draw(st.lists(_child(), min_size=4, max_size=6))),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


# --- Sending one --------------------------------------------------------------------------------


def _on(child: ChildHistory, offset: int) -> date:
    """The day `offset` days from the child's anchor, kept within the history's days."""
    days = min(max(child.anchor + offset, 0), HISTORY_DAYS - 1)
    return HISTORY_FIRST + timedelta(days=days)


def _end(start: date, length: int | None) -> date | None:
    """A plan's end `length` days after its start, or None (still open) when that is too late."""
    if length is None or start + timedelta(days=length) > HISTORY_LAST:
        return None
    return start + timedelta(days=length)


def _plan_events(ref: dict[str, Any], child: ChildHistory) -> list[list[dict[str, Any]]]:
    """Each plan's events in the order they must be sent (start, changes, end). A child's CP
    plans are one sequence, each starting on or after the day the one before ended: the API
    refuses a plan's start while another is open, or one that ended after it."""
    cp_events: list[dict[str, Any]] = []
    follows: date | None = None
    for number, plan in enumerate(child.cp_plans):
        if follows is None and number > 0:
            break  # the plan before is still open
        starts = _on(child, plan.start) if follows is None else follows + timedelta(plan.start % 60)
        if starts > HISTORY_LAST:
            break
        ends = _end(starts, plan.length)
        if plan.ends_on_anchor and _on(child, 0) > starts:
            ends = _on(child, 0)
        plan_ref = f"CP-{number}"
        events = [
            cp_plan_started(
                ref,
                starts,
                plan_ref,
                initial_category=plan.category,
                domestic_abuse_focus=plan.domestic_abuse,
            )
        ]
        for offset, category in plan.changes:
            changed = starts + timedelta(days=offset)
            if changed <= HISTORY_LAST and (ends is None or changed < ends):
                events.append(cp_plan_category_changed(ref, changed, plan_ref, category))
        if ends is not None:
            events.append(cp_plan_ended(ref, ends, plan_ref))
        cp_events += events
        follows = ends
    plans = [cp_events]
    for number, cin in enumerate(child.cin_plans):
        starts = _on(child, cin.start)
        ends = _end(starts, cin.length)
        plan_ref = f"CIN-{number}"
        events = [cin_plan_started(ref, starts, plan_ref, neglect=cin.neglect)]
        if ends is not None:
            events.append(cin_plan_ended(ref, ends, plan_ref))
        plans.append(events)
    return plans


def _enquiry_events(ref: dict[str, Any], child: ChildHistory) -> list[list[dict[str, Any]]]:
    """Each enquiry's Section 47 start and ICPC, in the order they are sent."""
    enquiries = []
    for number, enquiry in enumerate(child.enquiries):
        starts = (
            _on(child, enquiry.start)
            if enquiry.near_holiday is None
            else enquiry.near_holiday - timedelta(days=enquiry.start % 21)
        )
        enquiry_ref = f"S47-{number}"
        events = []
        if enquiry.start_recorded:
            events.append(section47_started(ref, starts, enquiry_ref))
        if enquiry.icpc_after_working_days is not None:
            held = working_days_after(starts, enquiry.icpc_after_working_days)
            if held <= HISTORY_LAST:
                outcome = "cp_plan" if enquiry.plan_follows and enquiry.categories else "no_plan"
                icpc = icpc_held(
                    ref, held, enquiry_ref, categories=list(enquiry.categories), outcome=outcome
                )
                events.insert(0 if enquiry.icpc_sent_first else len(events), icpc)
        enquiries.append(events)
    return enquiries


def _single_events(ref: dict[str, Any], child: ChildHistory) -> list[dict[str, Any]]:
    events = [
        early_help_assessment_completed(
            ref,
            _on(child, help.day),
            f"EH-{number}",
            neglect_considered=help.considered,
            neglect_identified=help.identified,
        )
        for number, help in enumerate(child.early_help)
    ]
    helped = child.early_help[0].day if child.early_help else 0
    events += [stepped_up_to_social_care(ref, _on(child, helped + day)) for day in child.step_ups]
    events += [
        health_appointment(ref, _on(child, day), attended=attended, kind=kind)
        for day, kind, attended in child.appointments
    ]
    events += [
        feedback_received(ref, _on(child, day), rating, from_whom=from_whom)
        for day, from_whom, rating in child.feedback
    ]
    return events


def _interleave(
    order: random.Random, sequences: list[list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """One list holding every sequence's items in their own order, the sequences shuffled
    into each other."""
    pending = [list(sequence) for sequence in sequences if sequence]
    merged = []
    while pending:
        sequence = order.choice(pending)
        merged.append(sequence.pop(0))
        if not sequence:
            pending.remove(sequence)
    return merged


async def send_history(
    history: History,
    api: IndicatorApi,
    case_system: RegisteredClient,
    auditors: RegisteredClient,
    other_toolkit: ToolkitDefinition,
    client: httpx.AsyncClient,
    factory: SessionFactory,
) -> None:
    """Send the history the way the service's writers would, out of order: referrals in a shuffled
    order (decided as they are sent, withdrawn at the end), case events shuffled (keeping each
    plan's and enquiry's own order where the API needs it), assessments shuffled."""
    order = random.Random(history.seed)
    children: list[KnownChild] = [
        await insert_child(
            factory,
            date_of_birth=spec.date_of_birth,
            expected_date_of_birth=spec.expected_date_of_birth,
            sex=spec.sex,
            ethnicity=spec.ethnicity,
        )
        for spec in history.children
    ]
    referrals = [
        (children[index], spec, referral)
        for index, spec in enumerate(history.children)
        for referral in spec.referrals
    ]
    order.shuffle(referrals)
    withdrawals = []
    for known, spec, referral in referrals:
        received = datetime.combine(_on(spec, referral.day), time(referral.hour, 17), tzinfo=UK)
        decided = (
            None
            if referral.decision_after_hours is None
            else received + timedelta(hours=referral.decision_after_hours)
        )
        referral_id = await api.refer(
            known,
            received,
            categories=referral.categories,
            neglect_forms=referral.forms,
            referral_source=referral.source,
            agency_type=referral.agency,
            decided_at=decided,
            disabilities=referral.disabilities,
        )
        if referral.withdrawn:
            withdrawals.append((referral_id, referral.agency))
    order.shuffle(withdrawals)
    for referral_id, agency in withdrawals:
        await api.withdraw(referral_id, agency)

    sequences: list[list[dict[str, Any]]] = []
    for known, spec in zip(children, history.children, strict=True):
        sequences += _plan_events(known.ref, spec)
        sequences += _enquiry_events(known.ref, spec)
        sequences += [[event] for event in _single_events(known.ref, spec)]
    events = _interleave(order, sequences)
    if events:
        await post_case_events_all_stored(client, case_system.headers, events)

    assessments = [
        (index, assessment)
        for index, spec in enumerate(history.children)
        if spec.date_of_birth is not None
        for assessment in spec.assessments
        if _on(spec, assessment.day) >= spec.date_of_birth
    ]
    order.shuffle(assessments)
    sent: dict[tuple[int, bool, str], list[tuple[date, str]]] = {}
    for index, assessment in assessments:
        completed = _on(history.children[index], assessment.day)
        same_kind = sent.setdefault((index, assessment.other_toolkit, assessment.agency), [])
        # The API takes as previous only an assessment completed on or before this one.
        earlier = [sent_id for sent_on, sent_id in same_kind if sent_on <= completed]
        named = (
            earlier[assessment.names_previous % len(earlier)]
            if earlier and assessment.names_previous is not None
            else None
        )
        same_kind.append(
            (
                completed,
                await api.assess(
                    children[index],
                    completed,
                    highest_area_grade=assessment.grade,
                    agency_type=assessment.agency,
                    toolkit=other_toolkit if assessment.other_toolkit else None,
                    previous_assessment_id=named,
                    overrides=dict([assessment.override]) if assessment.override else None,
                ),
            )
        )

    for known, spec in zip(children, history.children, strict=True):
        for audit in spec.audits:
            await post_case_audit(
                client,
                auditors,
                case_audit_body(
                    child=known.ref,
                    audited_work=audit.work,
                    neglect_featured=audit.neglect_featured,
                    audited_on=_on(spec, audit.day).isoformat(),
                    practice_grade=audit.practice,
                    impact_grade=audit.impact,
                    toolkit_used=audit.toolkit_used,
                    toolkit_use_effective=True if audit.toolkit_used else None,
                ),
            )
