"""Every indicator a history can move equals a straightforward reference over the raw tables.

Hypothesis draws small histories: children of every age band, sex and ethnicity; referrals from
several agencies and sources, sent out of order (back-loaded), some decided (late or in time),
some withdrawn, with disabilities recorded or not; child protection plans whose category changes
while they are open, some ending; child in need plans; toolkit assessments and re-assessments,
some naming the assessment before. The history goes in through the public API, the way the
service's writers send it. Then, for one period type per test, every indicator the history
touches, without a breakdown and with each it offers, is computed by the service
(`compute_series`, exact figures) and compared cell by cell with a reference computed in Python
from the rows as stored: the definitions of the catalogue, written as plainly as possible (a loop
over the periods and the things counted), never reading a column the service derives for speed
(`previous_received_at`, `rereferral`).

Deterministic (`derandomize`: the same examples every run) and bounded (a few examples per period
type), so the suite stays fast.
"""

from __future__ import annotations

import calendar
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from schemas.indicators import Period
from service.db import SessionFactory
from service.indicators.catalogue import load_catalogue
from service.indicators.compute import compute_series
from service.indicators.sql import FIXED_GROUPS
from tests.builders.assessments import publish_demo
from tests.builders.case_events import (
    cin_plan_ended,
    cin_plan_started,
    cp_plan_category_changed,
    cp_plan_ended,
    cp_plan_started,
    post_case_events_all_stored,
)
from tests.builders.indicators import (
    IndicatorApi,
    KnownChild,
    clear_domain_tables,
    insert_child,
)
from tests.conftest import ClientMaker, RegisteredClient

UK = ZoneInfo("Europe/London")
FIRST_DAY = date(2023, 1, 1)
LAST_DAY = date(2025, 12, 31)
SPAN_DAYS = (LAST_DAY - FIRST_DAY).days + 1
NOW = datetime.now(UTC)

INDICATORS = (
    "neglect_referral_share",
    "rereferral_rate_12m",
    "referral_decision_24h_share",
    "cp_plan_neglect_share",
    "cp_plan_starts_neglect_share",
    "cp_plan_neglect_domestic_abuse_share",
    "neglect_plans_open",
    "toolkit_assessments",
    "rereferral_after_toolkit_share",
    "toolkit_improvement_share",
    "toolkit_mean_grade_change",
)
"""The indicators these histories move: referrals, plans and toolkit assessments."""

# --- Histories ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChildSpec:
    date_of_birth: date
    sex: str
    ethnicity: str | None


@dataclass(frozen=True)
class ReferralSpec:
    child: int
    day: int
    hour: int
    neglect: bool
    forms: tuple[str, ...]
    source: str
    agency: str
    decision_after_hours: int | None
    withdrawn: bool
    disabilities: tuple[str, ...] | None


@dataclass(frozen=True)
class PlanSpec:
    child: int
    start: int
    length: int | None
    category: str
    changes: tuple[tuple[int, str], ...]
    domestic_abuse: bool
    cin_neglect: bool | None
    """None for a CP plan; for a CIN plan, whether neglect is its reason."""


@dataclass(frozen=True)
class AssessmentSpec:
    child: int
    first: int
    gaps: tuple[int, ...]
    grades: tuple[int, ...]
    agency: str
    names_previous: bool


@dataclass(frozen=True)
class History:
    children: tuple[ChildSpec, ...]
    referrals: tuple[ReferralSpec, ...]
    order: tuple[int, ...]
    """The order the referrals are sent in (a permutation: back-loading)."""
    plans: tuple[PlanSpec, ...]
    assessments: tuple[AssessmentSpec, ...]


_DAYS = st.integers(0, SPAN_DAYS - 1)
_CATEGORIES = st.sampled_from(("NEG", "PHY", "EMO", "SAB", "MUL"))


@st.composite
def _referral(draw: st.DrawFn, children: int) -> ReferralSpec:
    neglect = draw(st.booleans())
    decided = draw(st.one_of(st.none(), st.integers(0, 60)))
    return ReferralSpec(
        child=draw(st.integers(0, children - 1)),
        # Referrals of a child cluster within a year or so, where re-referral is decided.
        day=draw(st.one_of(_DAYS, st.integers(300, 420))),
        hour=draw(st.integers(0, 23)),
        neglect=neglect,
        forms=(
            tuple(
                draw(
                    st.lists(
                        st.sampled_from(("physical", "emotional", "supervision")),
                        min_size=1,
                        max_size=2,
                        unique=True,
                    )
                )
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
def _plan(draw: st.DrawFn, children: int, child: int) -> PlanSpec:
    start = draw(_DAYS)
    # Plans end within the range (nothing is recorded in the future) or stay open.
    length = draw(st.one_of(st.none(), st.integers(2, 500)))
    if length is not None and start + length >= SPAN_DAYS:
        length = None
    room = (length if length is not None else SPAN_DAYS - start) - 1
    change_days = sorted(draw(st.sets(st.integers(1, room), max_size=2))) if room >= 1 else []
    cin = draw(st.one_of(st.none(), st.booleans()))
    return PlanSpec(
        child=child,
        start=start,
        length=length,
        category=draw(_CATEGORIES),
        changes=tuple((day, draw(_CATEGORIES)) for day in change_days) if cin is None else (),
        domestic_abuse=draw(st.booleans()),
        cin_neglect=cin,
    )


@st.composite
def histories(draw: st.DrawFn) -> History:
    children = tuple(
        ChildSpec(
            date_of_birth=date(2009, 3, 1) + timedelta(days=draw(st.integers(0, 13 * 365))),
            sex=draw(st.sampled_from(("M", "F", "U"))),
            ethnicity=draw(st.sampled_from(("WBRI", "ABAN", None))),
        )
        for _ in range(draw(st.integers(1, 4)))
    )
    referrals = tuple(draw(st.lists(_referral(len(children)), max_size=8)))
    # At most one plan of each type per child, so no two CP plans of a child overlap.
    plans = tuple(
        plan
        for index in range(len(children))
        for plan in draw(st.lists(_plan(len(children), index), max_size=1))
    )
    assessments = tuple(
        AssessmentSpec(
            child=index,
            first=draw(st.integers(0, SPAN_DAYS - 400)),
            gaps=tuple(gaps := draw(st.lists(st.integers(1, 120), max_size=2))),
            grades=tuple(draw(st.lists(st.integers(1, 5), min_size=len(gaps) + 1,
                                       max_size=len(gaps) + 1))),
            agency=draw(st.sampled_from(("school", "health"))),
            names_previous=draw(st.booleans()),
        )
        for index in range(len(children))
        if draw(st.booleans())
    )  # fmt: skip
    order = tuple(draw(st.permutations(range(len(referrals)))))
    return History(children, referrals, order, plans, assessments)


# --- Sending a history ----------------------------------------------------------------------------


def _day(offset: int) -> date:
    return FIRST_DAY + timedelta(days=offset)


async def _send(
    history: History,
    api: IndicatorApi,
    case_system: RegisteredClient,
    client: httpx.AsyncClient,
    factory: SessionFactory,
) -> None:
    children: list[KnownChild] = []
    for spec in history.children:
        children.append(
            await insert_child(
                factory, date_of_birth=spec.date_of_birth, sex=spec.sex, ethnicity=spec.ethnicity
            )
        )
    for index in history.order:
        referral = history.referrals[index]
        received = datetime.combine(_day(referral.day), time(referral.hour, 17), tzinfo=UK)
        decided = (
            received + timedelta(hours=referral.decision_after_hours)
            if referral.decision_after_hours is not None
            else None
        )
        await api.refer(
            children[referral.child],
            received,
            categories=("neglect",) if referral.neglect else ("physical_abuse",),
            neglect_forms=referral.forms,
            referral_source=referral.source,
            agency_type=referral.agency,
            decided_at=decided if decided is not None and decided < NOW else None,
            withdrawn=referral.withdrawn,
            disabilities=referral.disabilities,
        )
    events: list[dict[str, Any]] = []
    for number, plan in enumerate(history.plans):
        ref = children[plan.child].ref
        starts = _day(plan.start)
        plan_ref = f"P-{number}"
        if plan.cin_neglect is None:
            events.append(
                cp_plan_started(
                    ref,
                    starts,
                    plan_ref,
                    initial_category=plan.category,
                    domestic_abuse_focus=plan.domestic_abuse,
                )
            )
            events += [
                cp_plan_category_changed(ref, starts + timedelta(days=offset), plan_ref, category)
                for offset, category in plan.changes
            ]
        else:
            events.append(cin_plan_started(ref, starts, plan_ref, neglect=plan.cin_neglect))
        if plan.length is not None:
            ends = starts + timedelta(days=plan.length)
            ender = cp_plan_ended if plan.cin_neglect is None else cin_plan_ended
            events.append(ender(ref, ends, plan_ref))
    if events:
        await post_case_events_all_stored(client, case_system.headers, events)
    for assessment in history.assessments:
        completed = _day(assessment.first)
        previous: str | None = None
        for grade, gap in zip(assessment.grades, (0, *assessment.gaps), strict=True):
            completed += timedelta(days=gap)
            previous_named = previous if assessment.names_previous else None
            previous = await api.assess(
                children[assessment.child],
                completed,
                highest_area_grade=grade,
                agency_type=assessment.agency,
                previous_assessment_id=previous_named,
            )


# --- The reference --------------------------------------------------------------------------------


def _years_before(day: date, years: int) -> date:
    """`day - interval 'N years'` as PostgreSQL computes it (29 February becomes 28); a negative
    N goes forward."""
    year = day.year - years
    return date(year, day.month, min(day.day, calendar.monthrange(year, day.month)[1]))


def _uk_day(moment: datetime) -> date:
    return moment.astimezone(UK).date()


def _uk_midnight(day: date) -> datetime:
    return datetime.combine(day, time(0, 0), tzinfo=UK)


@dataclass
class Unit:
    """One thing counted: on `day`, for `child`, adding `num` and `den`; `groups` by breakdown."""

    day: date
    child: uuid.UUID
    num: Decimal
    den: int
    groups: dict[str, list[str]] = field(default_factory=dict)
    order: tuple[Any, ...] = ()


@dataclass
class Rows:
    children: dict[uuid.UUID, Any]
    referrals: list[Any]
    plans: list[Any]
    changes: list[Any]
    assessments: list[Any]


async def _rows(factory: SessionFactory) -> Rows:
    async with factory() as session:

        async def fetch(sql: str) -> list[Any]:
            return list((await session.execute(text(sql))).all())

        return Rows(
            children={row.id: row for row in await fetch("SELECT * FROM child")},
            referrals=await fetch(
                "SELECT id, child_id, status, received_at, concern_categories, neglect_forms, "
                "referral_source, agency_type, decided_at, decision_due_at, "
                "body -> 'child' -> 'disabilities' AS disabilities FROM referral"
            ),
            plans=await fetch("SELECT * FROM care_plan"),
            changes=await fetch("SELECT * FROM care_plan_category_change"),
            assessments=await fetch("SELECT * FROM assessment"),
        )


def _age_band(child: Any, day: date) -> str:
    birth = child.date_of_birth or child.expected_date_of_birth
    if birth is None:
        return "not known"
    for years, band in ((1, "under 1"), (5, "1-4"), (10, "5-9"), (16, "10-15")):
        if birth > _years_before(day, years):
            return band
    return "16+"


def _disability_groups(rows: Rows, child_id: uuid.UUID) -> list[str]:
    """As recorded on the child's latest referral (withdrawn or not) that recorded any."""
    recorded = sorted(
        (
            referral
            for referral in rows.referrals
            if referral.child_id == child_id
            and isinstance(referral.disabilities, list)
            and referral.disabilities
        ),
        key=lambda referral: (referral.received_at, referral.id),
    )
    if not recorded:
        return ["not known"]
    codes = recorded[-1].disabilities
    if "NONE" in codes:
        return ["none"]
    return ["any", *codes]


def _child_groups(rows: Rows, unit: Unit) -> dict[str, list[str]]:
    child = rows.children[unit.child]
    return {
        "age_band": [_age_band(child, unit.day)],
        "sex": [child.sex or "U"],
        "ethnicity": [child.ethnicity or "not known"],
        "disability": _disability_groups(rows, unit.child),
    }


def _live_referrals(rows: Rows) -> list[Any]:
    return [referral for referral in rows.referrals if referral.status != "withdrawn"]


def _referral_unit(referral: Any, num: bool | int) -> Unit:
    return Unit(
        day=_uk_day(referral.received_at),
        child=referral.child_id,
        num=Decimal(int(num)),
        den=1,
        groups={
            "referral_source": [referral.referral_source],
            "agency_type": [referral.agency_type],
        },
    )


def _flow(units: Iterable[Unit]) -> Callable[[date, date], list[Unit]]:
    """Units counted in the period of days [first, last]."""
    kept = list(units)
    return lambda first, last: [unit for unit in kept if first <= unit.day <= last]


def _neglect_referral_share(rows: Rows) -> Callable[[date, date], list[Unit]]:
    units = []
    for referral in _live_referrals(rows):
        unit = _referral_unit(referral, "neglect" in referral.concern_categories)
        unit.groups["neglect_form"] = list(referral.neglect_forms)
        units.append(unit)
    return _flow(units)


def _rereferral_rate_12m(rows: Rows) -> Callable[[date, date], list[Unit]]:
    live = _live_referrals(rows)
    units = []
    for referral in live:
        day = _uk_day(referral.received_at)
        earlier = [
            other.received_at
            for other in live
            if other.child_id == referral.child_id and other.received_at < referral.received_at
        ]
        within = bool(earlier) and _uk_day(max(earlier)) >= _years_before(day, 1)
        units.append(_referral_unit(referral, within))
    return _flow(units)


def _referral_decision_24h_share(rows: Rows) -> Callable[[date, date], list[Unit]]:
    return _flow(
        _referral_unit(
            referral,
            referral.decided_at is not None and referral.decided_at <= referral.decision_due_at,
        )
        for referral in _live_referrals(rows)
        if referral.decided_at is not None or referral.decision_due_at <= NOW
    )


def _category_on(rows: Rows, plan: Any, day: date) -> str:
    changes = sorted(
        (change for change in rows.changes if change.care_plan_id == plan.id),
        key=lambda change: change.changed_on,
    )
    category: str = plan.initial_category
    for change in changes:
        if change.changed_on <= day:
            category = change.category
    return category


def _open_on(plan: Any, day: date) -> bool:
    return bool(plan.started_on <= day and (plan.ended_on is None or day < plan.ended_on))


def _at_period_end(
    count: Callable[[date], list[Unit]],
) -> Callable[[date, date], list[Unit]]:
    return lambda first, last: count(last)


def _cp_plan_neglect_share(rows: Rows) -> Callable[[date, date], list[Unit]]:
    def on(day: date) -> list[Unit]:
        return [
            Unit(day, plan.child_id, Decimal(_category_on(rows, plan, day) == "NEG"), 1)
            for plan in rows.plans
            if plan.plan_type == "cp" and _open_on(plan, day)
        ]

    return _at_period_end(on)


def _neglect_plans_open(rows: Rows) -> Callable[[date, date], list[Unit]]:
    def on(day: date) -> list[Unit]:
        return [
            Unit(day, plan.child_id, Decimal(1), 0, {"plan_type": [plan.plan_type]})
            for plan in rows.plans
            if _open_on(plan, day)
            and (
                _category_on(rows, plan, day) == "NEG"
                if plan.plan_type == "cp"
                else bool(plan.neglect)
            )
        ]

    return _at_period_end(on)


def _cp_plan_starts_neglect_share(rows: Rows) -> Callable[[date, date], list[Unit]]:
    return _flow(
        Unit(plan.started_on, plan.child_id, Decimal(plan.initial_category == "NEG"), 1)
        for plan in rows.plans
        if plan.plan_type == "cp"
    )


def _cp_plan_neglect_domestic_abuse_share(rows: Rows) -> Callable[[date, date], list[Unit]]:
    return _flow(
        Unit(plan.started_on, plan.child_id, Decimal(bool(plan.domestic_abuse_focus)), 1)
        for plan in rows.plans
        if plan.plan_type == "cp" and plan.initial_category == "NEG"
    )


def _toolkit_assessments(rows: Rows) -> Callable[[date, date], list[Unit]]:
    return _flow(
        Unit(a.completed_on, a.child_id, Decimal(1), 0, {"agency_type": [a.agency_type]})
        for a in rows.assessments
    )


def _per_child(units: list[Unit], pick: Callable[[list[Unit]], Unit]) -> list[Unit]:
    by_child: dict[uuid.UUID, list[Unit]] = defaultdict(list)
    for unit in units:
        by_child[unit.child].append(unit)
    return [pick(child_units) for child_units in by_child.values()]


def _rereferral_after_toolkit_share(rows: Rows) -> Callable[[date, date], list[Unit]]:
    live = _live_referrals(rows)

    def in_period(first: date, last: date) -> list[Unit]:
        featured = sorted(
            (
                a
                for a in rows.assessments
                if a.areas_at_concern > 0 and first <= a.completed_on <= last
            ),
            key=lambda a: (a.completed_on, a.created_at),
        )
        firsts: dict[uuid.UUID, Any] = {}
        for assessment in featured:
            firsts.setdefault(assessment.child_id, assessment)
        units = []
        for child_id, assessment in firsts.items():
            # Received from the day after the assessment to the same date a year on.
            day = assessment.completed_on
            window_end = _years_before(day, -1)
            referred = any(
                other.child_id == child_id
                and _uk_midnight(day + timedelta(days=1))
                <= other.received_at
                < _uk_midnight(window_end + timedelta(days=1))
                for other in live
            )
            units.append(
                Unit(day, child_id, Decimal(referred), 1, {"agency_type": [assessment.agency_type]})
            )
        return units

    return in_period


def _reassessments(
    rows: Rows, num: Callable[[int, int], int]
) -> Callable[[date, date], list[Unit]]:
    by_id = {a.id: a for a in rows.assessments}

    def previous_grade(assessment: Any) -> int | None:
        if assessment.previous_assessment_id is not None:
            grade: int | None = by_id[assessment.previous_assessment_id].highest_area_grade
            return grade
        earlier = [
            other
            for other in rows.assessments
            if other.child_id == assessment.child_id
            and other.toolkit_id == assessment.toolkit_id
            and (other.completed_on, other.created_at)
            < (assessment.completed_on, assessment.created_at)
        ]
        if not earlier:
            return None
        latest = max(earlier, key=lambda other: (other.completed_on, other.created_at))
        grade = latest.highest_area_grade
        return grade

    def in_period(first: date, last: date) -> list[Unit]:
        comparable = [
            (a, previous_grade(a))
            for a in rows.assessments
            if first <= a.completed_on <= last and a.highest_area_grade is not None
        ]
        units = [
            Unit(
                a.completed_on,
                a.child_id,
                Decimal(num(a.highest_area_grade, before)),
                1,
                {"agency_type": [a.agency_type]},
                order=(a.completed_on, a.created_at),
            )
            for a, before in comparable
            if before is not None
        ]
        # Each child's last re-assessment in the period.
        return _per_child(units, lambda child_units: max(child_units, key=lambda u: u.order))

    return in_period


REFERENCES: dict[str, Callable[[Rows], Callable[[date, date], list[Unit]]]] = {
    "neglect_referral_share": _neglect_referral_share,
    "rereferral_rate_12m": _rereferral_rate_12m,
    "referral_decision_24h_share": _referral_decision_24h_share,
    "cp_plan_neglect_share": _cp_plan_neglect_share,
    "cp_plan_starts_neglect_share": _cp_plan_starts_neglect_share,
    "cp_plan_neglect_domestic_abuse_share": _cp_plan_neglect_domestic_abuse_share,
    "neglect_plans_open": _neglect_plans_open,
    "toolkit_assessments": _toolkit_assessments,
    "rereferral_after_toolkit_share": _rereferral_after_toolkit_share,
    "toolkit_improvement_share": lambda rows: _reassessments(
        rows, lambda now, before: int(now < before)
    ),
    "toolkit_mean_grade_change": lambda rows: _reassessments(
        rows, lambda now, before: before - now
    ),
}


def _value(unit: str, num: Decimal, den: int) -> int | float | None:
    if unit == "count":
        return int(num)
    if den == 0:
        return None
    if unit == "percent":
        return float((100 * num / den).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))
    return float((num / den).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _expected(
    rows: Rows,
    indicator_id: str,
    buckets: list[tuple[date, date]],
    breakdown: str | None,
) -> dict[tuple[date, str | None], tuple[int, int | None, int | float | None]]:
    """(period start, group) -> (numerator, denominator, value) as the catalogue defines them."""
    meta = load_catalogue()[indicator_id]
    count = REFERENCES[indicator_id](rows)
    cells: dict[tuple[date, str | None], list[Decimal | int]] = {}
    seen: set[str] = set()
    per_bucket = []
    for first, last in buckets:
        units = count(first, last)
        for unit in units:
            unit.groups.update(_child_groups(rows, unit))
        per_bucket.append((first, units))
        if breakdown is not None:
            for unit in units:
                seen.update(unit.groups[breakdown])
    groups: list[str | None] = [None]
    if breakdown is not None:
        groups = [*sorted(set(FIXED_GROUPS[breakdown]) | seen)]  # type: ignore[index]
    for first, units in per_bucket:
        total_den = sum(unit.den for unit in units)
        for group in groups:
            members = [
                unit for unit in units if group is None or group in unit.groups[breakdown or ""]
            ]
            num = sum((unit.num for unit in members), Decimal(0))
            # A form's cell is a share of every referral in the period, not of its own.
            den = total_den if breakdown == "neglect_form" else sum(unit.den for unit in members)
            cells[(first, group)] = [num, den]
    return {
        key: (
            int(num),
            None if meta.unit == "count" else int(den),
            _value(meta.unit, Decimal(num), int(den)),
        )
        for key, (num, den) in cells.items()
    }


# --- The test -------------------------------------------------------------------------------------


@pytest.fixture
async def senders(
    client: httpx.AsyncClient, make_client: ClientMaker, owner_session_factory: SessionFactory
) -> tuple[IndicatorApi, RegisteredClient]:
    await publish_demo(owner_session_factory)
    case_system = await make_client(["case-events:write"], agency_type="la")
    return IndicatorApi(client, make_client), case_system


@pytest.mark.parametrize("period", ["month", "quarter", "year", "financial_year", "snapshot"])
@settings(
    max_examples=5,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories())
async def test_every_indicator_equals_the_reference_over_the_raw_tables(
    history: History,
    period: Period,
    senders: tuple[IndicatorApi, RegisteredClient],
    client: httpx.AsyncClient,
    session_factory: SessionFactory,
    owner_session_factory: SessionFactory,
) -> None:
    await clear_domain_tables(owner_session_factory)
    api, case_system = senders
    await _send(history, api, case_system, client, session_factory)
    rows = await _rows(owner_session_factory)
    checked = 0
    for indicator_id in INDICATORS:
        meta = load_catalogue()[indicator_id]
        if period not in meta.periods:
            continue
        for breakdown in (None, *meta.breakdowns):
            async with session_factory() as session:
                series = await compute_series(
                    session,
                    meta,
                    start=FIRST_DAY,
                    end=LAST_DAY,
                    period=period,
                    breakdown=breakdown,
                    unsuppressed=True,
                )
            got = {
                (point.period_start, point.group): (
                    point.numerator,
                    point.denominator,
                    point.value,
                )
                for point in series.points
            }
            buckets = sorted({(point.period_start, point.period_end) for point in series.points})
            expected = _expected(rows, indicator_id, buckets, breakdown)
            assert got == expected, (indicator_id, breakdown)
            checked += 1

    assert checked >= 8
