"""The consistency rules of case events (SPEC 2.4, 5), as pure functions over what is recorded.

Each function is given the facts about the child that a rule needs and returns the reason an
event breaks it, or None. `service.case_events` calls them with facts it reads from the database
event by event; the CIN census import (`service.census`) calls them with the facts of a whole
batch of children held in memory. One definition of each rule serves both, so imported history
obeys exactly what the API enforces.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Final

PLAN_NAMES: Final = {"cp": "child protection plan", "cin": "child in need plan"}


@dataclass(frozen=True)
class PlanFacts:
    """A recorded plan, as far as the rules need it."""

    plan_type: str
    plan_ref: str
    started_on: date
    ended_on: date | None = None
    last_change_on: date | None = None
    """The day of the plan's latest category change, if any."""


def repeated_plan_ref(plan_type: str, recorded: PlanFacts | None) -> str | None:
    """A plan ref names one plan per child and plan type."""
    if recorded is None:
        return None
    return (
        f"a {PLAN_NAMES[plan_type]} with this plan_ref is already recorded for the child "
        f"(started on {recorded.started_on.isoformat()})"
    )


def unknown_plan(plan_type: str) -> str:
    """An event about a plan needs that plan."""
    return (
        f"plan_ref: no {PLAN_NAMES[plan_type]} with this plan_ref is recorded for the child; "
        "send its start first"
    )


def cp_plan_overlap(starts_on: date, cp_plans: Iterable[PlanFacts]) -> str | None:
    """At most one open CP plan per child, and a child's CP plans never overlap: the new plan is
    open from its start, so it clashes with any plan still open then or later."""
    plans = list(cp_plans)
    for plan in plans:
        if plan.ended_on is None:
            return (
                "the child already has an open child protection plan "
                f"(plan_ref {plan.plan_ref}, started on {plan.started_on.isoformat()}); "
                "end it before starting another"
            )
    ended_after = [
        (plan.ended_on, plan) for plan in plans if plan.ended_on and plan.ended_on > starts_on
    ]
    if not ended_after:
        return None
    ended_on, clash = max(ended_after, key=lambda pair: pair[0])
    return (
        f"the child's child protection plan {clash.plan_ref} was open until "
        f"{ended_on.isoformat()}, after this start date; child protection plans of one "
        "child cannot overlap"
    )


def category_change_refusal(plan: PlanFacts, changed_on: date) -> str | None:
    """A category change needs the plan open on that day."""
    if changed_on < plan.started_on:
        return (
            "a category change needs an open plan, and this plan starts on "
            f"{plan.started_on.isoformat()}"
        )
    if plan.ended_on is not None and changed_on >= plan.ended_on:
        return (
            f"a category change needs an open plan, and this plan ended on "
            f"{plan.ended_on.isoformat()}"
        )
    return None


def plan_end_refusal(plan: PlanFacts, ends_on: date) -> str | None:
    """A plan ends once, after the day it starts, and after the day of its last category change."""
    if plan.ended_on is not None:
        return (
            f"the plan already ended on {plan.ended_on.isoformat()}; an ended plan cannot end again"
        )
    if ends_on <= plan.started_on:
        return (
            "a plan cannot end before it starts or on the day it starts "
            f"(it started on {plan.started_on.isoformat()})"
        )
    if plan.last_change_on is not None and plan.last_change_on >= ends_on:
        return (
            f"the plan's category changed on {plan.last_change_on.isoformat()}, so it cannot "
            "have ended on or before that day"
        )
    return None


def section47_start_refusal(
    recorded_start: date | None, icpc_held_on: date | None, starts_on: date
) -> str | None:
    """One Section 47 start per enquiry ref and child, not after the enquiry's ICPC."""
    if recorded_start is not None:
        return (
            "a Section 47 enquiry with this enquiry_ref is already recorded for the child "
            f"(started on {recorded_start.isoformat()})"
        )
    if icpc_held_on is not None and icpc_held_on < starts_on:
        return (
            f"the ICPC for this enquiry was held on {icpc_held_on.isoformat()}, before this start "
            "date"
        )
    return None


def icpc_refusal(
    recorded_held_on: date | None, section47_started_on: date | None, held_on: date
) -> str | None:
    """One ICPC per enquiry ref and child, not held before its Section 47 enquiry started."""
    if recorded_held_on is not None:
        return (
            "an ICPC is already recorded for this enquiry_ref "
            f"(held on {recorded_held_on.isoformat()}); an enquiry has one initial conference"
        )
    if section47_started_on is not None and held_on < section47_started_on:
        return (
            "an ICPC cannot be held before its Section 47 enquiry started "
            f"(started on {section47_started_on.isoformat()})"
        )
    return None
