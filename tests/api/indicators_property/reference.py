"""Every indicator of the catalogue, computed plainly in Python from the rows as stored.

Each reference follows the catalogue's words: for each period, a loop over the things counted,
each made a `Unit` (its day, its child, what it adds to the numerator and the denominator, and
its groups for the breakdowns that are not the child's). It never reads a column the service
derives for speed (`referral.previous_received_at`, `referral.rereferral`, `care_plan.
latest_category`) nor any SQL of `service/indicators/sql.py`; bank holidays are its own list
(`histories.BANK_HOLIDAYS`) and an assessment's grades are its effective area grades as stored.
"""

from __future__ import annotations

import calendar
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import text

from schemas.indicators import Breakdown, Period
from service.db import SessionFactory
from service.indicators.catalogue import IndicatorMeta
from service.indicators.sql import FIXED_GROUPS
from tests.api.indicators_property.histories import UK, working_days_after

GOOD_OR_BETTER = frozenset({"outstanding", "good"})
"""The catalogue's "good or better" on the four-point audit scale."""

Cells = dict[tuple[date, date, str | None], tuple[int | None, int | None, int | float | None]]
"""(period start, period's last day, group; None for the total) -> (numerator, denominator,
value). A snapshot's start is its last day."""


@dataclass
class Unit:
    """One thing counted: on `day`, for `child`, adding `num` and `den`; `groups` by breakdown."""

    day: date
    child: uuid.UUID
    num: Decimal
    den: int
    groups: dict[str, list[str]] = field(default_factory=dict)


Counter = Callable[[date, date], list[Unit]]
"""The units an indicator counts in the period of days [first, last]."""


@dataclass
class Rows:
    """The raw tables, as stored; `concern_grades` by toolkit id (from its definition)."""

    children: dict[uuid.UUID, Any]
    referrals: list[Any]
    plans: list[Any]
    changes: list[Any]
    events: list[Any]
    enquiries: list[Any]
    icpcs: list[Any]
    assessments: list[Any]
    audits: list[Any]
    concern_grades: dict[str, int]
    now: datetime


async def read_rows(factory: SessionFactory, concern_grades: dict[str, int]) -> Rows:
    async with factory() as session:

        async def fetch(sql: str) -> list[Any]:
            return list((await session.execute(text(sql))).all())

        return Rows(
            children={row.id: row for row in await fetch("SELECT * FROM child")},
            referrals=await fetch(
                "SELECT id, child_id, status, received_at, concern_categories, neglect_forms, "
                "referral_source, agency_type, decided_at, census_import_id, "
                "body -> 'child' -> 'disabilities' AS disabilities FROM referral"
            ),
            plans=await fetch(
                "SELECT id, child_id, plan_type, started_on, ended_on, initial_category, "
                "domestic_abuse_focus, neglect, previous_cp_plans FROM care_plan"
            ),
            changes=await fetch("SELECT * FROM care_plan_category_change"),
            events=await fetch("SELECT child_id, event_type, occurred_on, details FROM case_event"),
            enquiries=await fetch("SELECT * FROM section47_enquiry"),
            icpcs=await fetch("SELECT * FROM icpc"),
            assessments=await fetch(
                "SELECT id, child_id, toolkit_id, completed_on, created_at, agency_type, "
                "previous_assessment_id, result -> 'area_grades' AS area_grades FROM assessment"
            ),
            audits=await fetch("SELECT * FROM case_audit"),
            concern_grades=concern_grades,
            now=datetime.now(UTC),
        )


# --- Days, periods and the child's groups -------------------------------------------------------


def years_after(day: date, years: int) -> date:
    """The same date `years` years on (back, when negative); 29 February becomes the 28th, as
    PostgreSQL's `interval 'N years'` does."""
    year = day.year + years
    return date(year, day.month, min(day.day, calendar.monthrange(year, day.month)[1]))


def uk_day(moment: datetime) -> date:
    return moment.astimezone(UK).date()


def _uk_midnight(day: date) -> datetime:
    return datetime.combine(day, time(0, 0), tzinfo=UK)


def buckets(period: Period, first: date, last: date) -> list[tuple[date, date, date]]:
    """(label day, first day, last day) of each period covering `first`..`last`: calendar months,
    quarters, years, financial years from 1 April; a snapshot is a month's last day alone."""
    months = {"month": 1, "snapshot": 1, "quarter": 3, "year": 12, "financial_year": 12}[period]
    if period == "financial_year":
        start = date(first.year if first.month >= 4 else first.year - 1, 4, 1)
    elif period == "year":
        start = date(first.year, 1, 1)
    else:
        start = date(first.year, (first.month - 1) // months * months + 1, 1)
    found = []
    while start <= last:
        month = start.month - 1 + months
        following = date(start.year + month // 12, month % 12 + 1, 1)
        end = following - timedelta(days=1)
        found.append((end, end, end) if period == "snapshot" else (start, start, end))
        start = following
    return found


def _age_band(child: Any, day: date) -> str:
    """The band of the child's age in whole years on `day`: the birthdays passed, a 29 February
    birthday passing on 1 March in other years (negative before birth, so "under 1")."""
    birth = child.date_of_birth or child.expected_date_of_birth
    if birth is None:
        return "not known"
    age = day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))
    for below, band in ((1, "under 1"), (5, "1-4"), (10, "5-9"), (16, "10-15")):
        if age < below:
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


def _flow(units: Iterable[Unit]) -> Counter:
    """Units counted in the period their day falls in."""
    kept = list(units)
    return lambda first, last: [unit for unit in kept if first <= unit.day <= last]


def _at_period_end(count: Callable[[date], list[Unit]]) -> Counter:
    """Units counted on the period's last day."""
    return lambda first, last: count(last)


def _first_per_child(units: Iterable[Unit]) -> list[Unit]:
    """Each child once, on their earliest day (the first given of units on the same day)."""
    firsts: dict[uuid.UUID, Unit] = {}
    for unit in units:
        if unit.child not in firsts or unit.day < firsts[unit.child].day:
            firsts[unit.child] = unit
    return list(firsts.values())


# --- Referrals ----------------------------------------------------------------------------------


def _live_referrals(rows: Rows) -> list[Any]:
    return [referral for referral in rows.referrals if referral.status != "withdrawn"]


def _referral_unit(referral: Any, num: bool) -> Unit:
    return Unit(
        day=uk_day(referral.received_at),
        child=referral.child_id,
        num=Decimal(int(num)),
        den=1,
        groups={
            "referral_source": [referral.referral_source],
            "agency_type": [referral.agency_type],
        },
    )


def neglect_referral_share(rows: Rows) -> Counter:
    units = []
    for referral in _live_referrals(rows):
        if referral.census_import_id is not None:
            continue  # imported from the CIN census, which records no concerns
        unit = _referral_unit(referral, "neglect" in referral.concern_categories)
        unit.groups["neglect_form"] = list(referral.neglect_forms or [])
        units.append(unit)
    return _flow(units)


def rereferral_rate_12m(rows: Rows) -> Counter:
    live = _live_referrals(rows)
    units = []
    for referral in live:
        a_year_before = years_after(uk_day(referral.received_at), -1)
        within = any(
            other.child_id == referral.child_id
            and other.received_at < referral.received_at
            and uk_day(other.received_at) >= a_year_before
            for other in live
        )
        units.append(_referral_unit(referral, within))
    return _flow(units)


def referral_decision_24h_share(rows: Rows) -> Counter:
    return _flow(
        _referral_unit(
            referral,
            referral.decided_at is not None
            and referral.decided_at <= referral.received_at + timedelta(hours=24),
        )
        for referral in _live_referrals(rows)
        if referral.census_import_id is None
        and (
            referral.decided_at is not None
            or referral.received_at + timedelta(hours=24) <= rows.now
        )
    )


# --- Plans and conferences ----------------------------------------------------------------------


def _category_on(rows: Rows, plan: Any, day: date) -> str:
    """The initial category as changed by the changes recorded up to `day` (the later of two
    same-day changes, by the order they were recorded, wins)."""
    changes = sorted(
        (change for change in rows.changes if change.care_plan_id == plan.id),
        key=lambda change: (change.changed_on, change.id),
    )
    category: str = plan.initial_category
    for change in changes:
        if change.changed_on <= day:
            category = change.category
    return category


def _open_on(plan: Any, day: date) -> bool:
    return bool(plan.started_on <= day and (plan.ended_on is None or day < plan.ended_on))


def _cp_plans(rows: Rows) -> list[Any]:
    return [plan for plan in rows.plans if plan.plan_type == "cp"]


def cp_plan_neglect_share(rows: Rows) -> Counter:
    def on(day: date) -> list[Unit]:
        children: dict[uuid.UUID, bool] = {}
        for plan in _cp_plans(rows):
            if _open_on(plan, day):
                neglect = _category_on(rows, plan, day) == "NEG"
                children[plan.child_id] = children.get(plan.child_id, False) or neglect
        return [Unit(day, child, Decimal(neglect), 1) for child, neglect in children.items()]

    return _at_period_end(on)


def neglect_plans_open(rows: Rows) -> Counter:
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


def cp_plan_starts_neglect_share(rows: Rows) -> Counter:
    return _flow(
        Unit(plan.started_on, plan.child_id, Decimal(plan.initial_category == "NEG"), 1)
        for plan in _cp_plans(rows)
    )


def cp_plan_neglect_domestic_abuse_share(rows: Rows) -> Counter:
    return _flow(
        Unit(plan.started_on, plan.child_id, Decimal(bool(plan.domestic_abuse_focus)), 1)
        for plan in _cp_plans(rows)
        if plan.initial_category == "NEG" and plan.domestic_abuse_focus is not None
    )


def repeat_cp_plan_neglect(rows: Rows) -> Counter:
    plans = _cp_plans(rows)

    def in_period(first: date, last: date) -> list[Unit]:
        children: dict[uuid.UUID, Unit] = {}
        for plan in sorted(plans, key=lambda plan: plan.started_on):
            if plan.initial_category != "NEG" or not first <= plan.started_on <= last:
                continue
            repeat = (plan.previous_cp_plans or 0) > 0 or any(
                other.child_id == plan.child_id and other.started_on < plan.started_on
                for other in plans
            )
            unit = children.setdefault(
                plan.child_id, Unit(plan.started_on, plan.child_id, Decimal(0), 1)
            )
            unit.num = max(unit.num, Decimal(repeat))
        return list(children.values())

    return in_period


def icpc_neglect_children(rows: Rows) -> Counter:
    def in_period(first: date, last: date) -> list[Unit]:
        return _first_per_child(
            Unit(icpc.held_on, icpc.child_id, Decimal(1), 0)
            for icpc in rows.icpcs
            if "NEG" in icpc.categories and first <= icpc.held_on <= last
        )

    return in_period


def icpc_within_15_working_days_share(rows: Rows) -> Counter:
    starts = {
        (enquiry.child_id, enquiry.enquiry_ref): enquiry.started_on for enquiry in rows.enquiries
    }
    units = []
    for icpc in rows.icpcs:
        started = starts.get((icpc.child_id, icpc.enquiry_ref))
        if started is None:
            continue  # cannot be timed
        in_time = icpc.held_on <= working_days_after(started, 15)
        units.append(Unit(icpc.held_on, icpc.child_id, Decimal(in_time), 1))
    return _flow(units)


# --- Case events --------------------------------------------------------------------------------


def _events(rows: Rows, event_type: str) -> list[Any]:
    return [event for event in rows.events if event.event_type == event_type]


def early_help_neglect_identified(rows: Rows) -> Counter:
    return _flow(
        Unit(
            event.occurred_on,
            event.child_id,
            Decimal(event.details["neglect_considered"] and event.details["neglect_identified"]),
            1,
        )
        for event in _events(rows, "early_help_assessment_completed")
    )


def early_help_neglect_stepped_up_share(rows: Rows) -> Counter:
    step_ups = _events(rows, "stepped_up_to_social_care")

    def in_period(first: date, last: date) -> list[Unit]:
        firsts = _first_per_child(
            Unit(event.occurred_on, event.child_id, Decimal(0), 1)
            for event in _events(rows, "early_help_assessment_completed")
            if event.details["neglect_identified"] and first <= event.occurred_on <= last
        )
        for unit in firsts:
            unit.num = Decimal(
                any(
                    up.child_id == unit.child
                    and unit.day <= up.occurred_on <= years_after(unit.day, 1)
                    for up in step_ups
                )
            )
        return firsts

    return in_period


def health_appointment_attendance(rows: Rows) -> Counter:
    return _flow(
        Unit(event.occurred_on, event.child_id, Decimal(bool(event.details["attended"])), 1)
        for event in _events(rows, "health_appointment")
    )


def family_feedback(rows: Rows) -> Counter:
    return _flow(
        Unit(
            event.occurred_on,
            event.child_id,
            Decimal(event.details["rating"]),
            1,
            {"feedback_from": [event.details["from_whom"]]},
        )
        for event in _events(rows, "feedback_received")
    )


# --- Toolkit assessments ------------------------------------------------------------------------


def _highest(assessment: Any) -> int | None:
    grades = [grade for grade in assessment.area_grades.values() if grade is not None]
    return max(grades) if grades else None


def _neglect_featured(rows: Rows, assessment: Any) -> bool:
    concern = rows.concern_grades[assessment.toolkit_id]
    return any(grade is not None and grade >= concern for grade in assessment.area_grades.values())


def _completion(assessment: Any) -> tuple[date, datetime]:
    return assessment.completed_on, assessment.created_at


def toolkit_assessments(rows: Rows) -> Counter:
    return _flow(
        Unit(a.completed_on, a.child_id, Decimal(1), 0, {"agency_type": [a.agency_type]})
        for a in rows.assessments
    )


def rereferral_after_toolkit_share(rows: Rows) -> Counter:
    live = _live_referrals(rows)

    def in_period(first: date, last: date) -> list[Unit]:
        featured = sorted(
            (
                a
                for a in rows.assessments
                if _neglect_featured(rows, a) and first <= a.completed_on <= last
            ),
            key=_completion,
        )
        firsts: dict[uuid.UUID, Any] = {}
        for assessment in featured:
            firsts.setdefault(assessment.child_id, assessment)
        units = []
        for child_id, assessment in firsts.items():
            # Received from the day after the assessment to the same date a year on.
            day = assessment.completed_on
            referred = any(
                other.child_id == child_id
                and _uk_midnight(day + timedelta(days=1))
                <= other.received_at
                < _uk_midnight(years_after(day, 1) + timedelta(days=1))
                for other in live
            )
            units.append(
                Unit(day, child_id, Decimal(referred), 1, {"agency_type": [assessment.agency_type]})
            )
        return units

    return in_period


def _reassessments(rows: Rows, num: Callable[[int, int], int]) -> Counter:
    by_id = {a.id: a for a in rows.assessments}

    def assessment_before(assessment: Any) -> Any | None:
        if assessment.previous_assessment_id is not None:
            return by_id[assessment.previous_assessment_id]
        earlier = [
            other
            for other in rows.assessments
            if other.child_id == assessment.child_id
            and other.toolkit_id == assessment.toolkit_id
            and _completion(other) < _completion(assessment)
        ]
        return max(earlier, key=_completion) if earlier else None

    befores = [(a, assessment_before(a)) for a in sorted(rows.assessments, key=_completion)]

    def in_period(first: date, last: date) -> list[Unit]:
        # Each child's last comparable re-assessment in the period, in completion order.
        lasts: dict[uuid.UUID, Unit] = {}
        for assessment, before in befores:
            if not first <= assessment.completed_on <= last or before is None:
                continue
            now, then = _highest(assessment), _highest(before)
            if now is not None and then is not None:
                lasts[assessment.child_id] = Unit(
                    assessment.completed_on,
                    assessment.child_id,
                    Decimal(num(now, then)),
                    1,
                    {"agency_type": [assessment.agency_type]},
                )
        return list(lasts.values())

    return in_period


def toolkit_improvement_share(rows: Rows) -> Counter:
    return _reassessments(rows, lambda now, before: int(now < before))


def toolkit_mean_grade_change(rows: Rows) -> Counter:
    return _reassessments(rows, lambda now, before: before - now)


# --- Case audits --------------------------------------------------------------------------------


def _neglect_audits(rows: Rows, counts: Callable[[Any], bool]) -> Counter:
    return _flow(
        Unit(
            audit.audited_on,
            audit.child_id,
            Decimal(counts(audit)),
            1,
            {"audited_work": [audit.audited_work]},
        )
        for audit in rows.audits
        if audit.neglect_featured
    )


def audit_neglect_impact_good_share(rows: Rows) -> Counter:
    return _neglect_audits(rows, lambda audit: audit.impact_grade in GOOD_OR_BETTER)


def audit_neglect_toolkit_used_share(rows: Rows) -> Counter:
    return _neglect_audits(rows, lambda audit: bool(audit.toolkit_used))


def audit_neglect_practice_effective_share(rows: Rows) -> Counter:
    return _neglect_audits(rows, lambda audit: audit.practice_grade in GOOD_OR_BETTER)


CHILD_BREAKDOWNS = frozenset({"age_band", "sex", "ethnicity", "disability"})
"""The breakdowns every unit has, from its child (`_child_groups`)."""

UNIT_BREAKDOWNS: dict[str, frozenset[str]] = {
    "neglect_referral_share": frozenset({"referral_source", "agency_type", "neglect_form"}),
    "rereferral_rate_12m": frozenset({"referral_source", "agency_type"}),
    "referral_decision_24h_share": frozenset({"referral_source", "agency_type"}),
    "neglect_plans_open": frozenset({"plan_type"}),
    "toolkit_assessments": frozenset({"agency_type"}),
    "rereferral_after_toolkit_share": frozenset({"agency_type"}),
    "toolkit_improvement_share": frozenset({"agency_type"}),
    "toolkit_mean_grade_change": frozenset({"agency_type"}),
    "family_feedback": frozenset({"feedback_from"}),
    "audit_neglect_impact_good_share": frozenset({"audited_work"}),
    "audit_neglect_toolkit_used_share": frozenset({"audited_work"}),
    "audit_neglect_practice_effective_share": frozenset({"audited_work"}),
}
"""The other breakdowns each reference's units carry (none where an indicator is missing)."""

REFERENCES: dict[str, Callable[[Rows], Counter]] = {
    "neglect_referral_share": neglect_referral_share,
    "cp_plan_neglect_share": cp_plan_neglect_share,
    "cp_plan_starts_neglect_share": cp_plan_starts_neglect_share,
    "icpc_neglect_children": icpc_neglect_children,
    "repeat_cp_plan_neglect": repeat_cp_plan_neglect,
    "cp_plan_neglect_domestic_abuse_share": cp_plan_neglect_domestic_abuse_share,
    "neglect_plans_open": neglect_plans_open,
    "toolkit_assessments": toolkit_assessments,
    "early_help_neglect_identified": early_help_neglect_identified,
    "early_help_neglect_stepped_up_share": early_help_neglect_stepped_up_share,
    "rereferral_after_toolkit_share": rereferral_after_toolkit_share,
    "health_appointment_attendance": health_appointment_attendance,
    "family_feedback": family_feedback,
    "rereferral_rate_12m": rereferral_rate_12m,
    "referral_decision_24h_share": referral_decision_24h_share,
    "icpc_within_15_working_days_share": icpc_within_15_working_days_share,
    "toolkit_improvement_share": toolkit_improvement_share,
    "toolkit_mean_grade_change": toolkit_mean_grade_change,
    "audit_neglect_impact_good_share": audit_neglect_impact_good_share,
    "audit_neglect_toolkit_used_share": audit_neglect_toolkit_used_share,
    "audit_neglect_practice_effective_share": audit_neglect_practice_effective_share,
}
"""The reference of every indicator, by indicator id."""


# --- Cells ----------------------------------------------------------------------------------------


def _value(unit: str, num: Decimal, den: int) -> int | float | None:
    if unit == "count":
        return int(num)
    if den == 0:
        return None
    if unit == "percent":
        return float((100 * num / den).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))
    return float((num / den).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def expected_series(
    rows: Rows,
    meta: IndicatorMeta,
    period: Period,
    breakdown: Breakdown | None,
    first: date,
    last: date,
) -> Cells:
    """Every cell of the series as the catalogue defines it: the period totals without a
    breakdown; with one, each group's cell (the fixed groups always, the others when seen in
    some period of the range)."""
    count = REFERENCES[meta.id](rows)
    per_period: list[tuple[date, date, list[Unit]]] = []
    seen: set[str] = set()
    for label, period_first, period_last in buckets(period, first, last):
        units = count(period_first, period_last)
        for unit in units:
            assert set(unit.groups) == UNIT_BREAKDOWNS.get(meta.id, frozenset()), meta.id
            unit.groups.update(_child_groups(rows, unit))
            if breakdown is not None:
                seen.update(unit.groups[breakdown])
        per_period.append((label, period_last, units))
    groups: list[str | None] = [None]
    if breakdown is not None:
        groups = [*sorted(set(FIXED_GROUPS[breakdown]) | seen)]
    cells: Cells = {}
    for label, period_last, units in per_period:
        every_den = sum(unit.den for unit in units)
        for group in groups:
            members = [u for u in units if group is None or group in u.groups[breakdown or ""]]
            num = sum((unit.num for unit in members), Decimal(0))
            den = sum(unit.den for unit in members)
            if breakdown == "neglect_form":
                # The share of every referral received in the period that cites the form.
                num, den = Decimal(len(members)), every_den
            cells[(label, period_last, group)] = (
                int(num),
                None if meta.unit == "count" else den,
                _value(meta.unit, num, den),
            )
    return cells
