"""What importing one census child changes, worked out in memory against what is stored.

Each episode becomes a referral (found again by its `external_reference`) and each dated fact a
case event with a deterministic `event_id`, so importing a file again finds everything stored and
changes nothing, and a later year's file adds only what is new: an episode, a plan's end, a
change of category. The events go through the case-event rules of the API
(`service.case_event_rules`) against the child's recorded plans and enquiries, whoever recorded
them; the first rule an event breaks rejects the whole child, so no child is half imported.

How the census maps onto case events (the census records fewer facts than the API asks for; what
it lacks is left empty, never guessed):
- `Section47` -> `section47_started` (enquiry ref `S47-<start>`; no strategy discussion date) and,
  with a `DateOfInitialCPC`, `icpc_held` for the same enquiry. The ICPC's outcome is `cp_plan`
  when a child protection plan of the episode starts on the conference day, and its categories are
  then that plan's initial category; otherwise `no_plan` with no categories (the census records
  none).
- `ChildProtectionPlans` -> `cp_plan_started` (plan ref `CPP-<start>`, initial category, the focus
  on domestic abuse not recorded), `cp_plan_ended`, and `cp_plan_category_changed` when the
  latest category differs from the category the plan had on the change day. The census gives only
  the latest category, not when it changed; categories change at review conferences, so the
  change is dated at the plan's last review in the file, or without one on the day before the plan
  ended, or on the census reference date for a plan still open.
- `CINPlanDates` -> `cin_plan_started` (plan ref `CINP-<referral date>-<start>`, for neglect by
  the episode rule of `CensusEpisode.neglect`) and `cin_plan_ended`.
An event is the same event when its `event_id` and day match; its derived fields (a CIN plan's
neglect flag, an ICPC's outcome) are those of the first file that recorded it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final, NamedTuple

import orjson
from asyncpg.pgproto.pgproto import UUID as DriverUUID

from schemas.common import UK_TIME_ZONE
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
from service.census.model import CensusChild, CensusCpPlan, CensusEpisode, CensusHeader, Problem
from service.fingerprint import canonical_json, fingerprint

CENSUS_CLIENT_ID: Final = "cin-census"
"""The `client_id` of every imported referral and case event: the census, not an API client."""
CENSUS_AGENCY_TYPE: Final = "local_authority"

# Same-day order: ends first (a plan may start the day the last one ended), then enquiries,
# conferences, starts, and category changes after their plan's start.
_RANK: Final = {
    "cp_plan_ended": 0,
    "cin_plan_ended": 0,
    "section47_started": 1,
    "icpc_held": 2,
    "cp_plan_started": 3,
    "cin_plan_started": 3,
    "cp_plan_category_changed": 4,
}


def census_agency_name(la_code: str) -> str:
    """The agency imported records are said to come from: the local authority's social care."""
    return f"Children's social care, LA {la_code} (CIN census)"


@functools.lru_cache(maxsize=4096)
def received_at(day: date) -> datetime:
    """An imported referral's `received_at`: the start of its referral day in England (the census
    records the day only). Cached: a file's referrals fall on a few thousand days."""
    return datetime.combine(day, time.min, tzinfo=UK_TIME_ZONE).astimezone(UTC)


def child_key(header: CensusHeader, child: CensusChild) -> str:
    return f"{header.la_code}/{child.la_child_id}"


# --- what is stored ------------------------------------------------------------------------------


@dataclass
class StoredPlan:
    """A recorded plan of the child, from any source; changes are (day, order, category)."""

    id: uuid.UUID
    plan_type: str
    plan_ref: str
    started_on: date
    ended_on: date | None
    initial_category: str | None
    latest_category: str | None
    changes: list[tuple[date, int, str]] = field(default_factory=list)
    new: bool = False
    ended_event_id: uuid.UUID | None = None
    changed: bool = False
    row: list[Any] | None = None
    """A new plan's row in `Writes.plans`, completed as its end and changes are planned."""

    def facts(self) -> PlanFacts:
        last = max((day for day, _, _ in self.changes), default=None)
        return PlanFacts(self.plan_type, self.plan_ref, self.started_on, self.ended_on, last)

    def category_on(self, day: date) -> str | None:
        category = self.initial_category
        for changed_on, _, changed_to in sorted(self.changes):
            if changed_on <= day:
                category = changed_to
        return category


@dataclass
class ChildState:
    """What is recorded about one child that the rules read."""

    plans: dict[tuple[str, str], StoredPlan] = field(default_factory=dict)
    enquiries: dict[str, date] = field(default_factory=dict)
    icpcs: dict[str, date] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredEvent:
    child_id: uuid.UUID
    occurred_on: date
    initial_category: str | None


@dataclass(frozen=True)
class StoredReferral:
    id: uuid.UUID
    child_id: uuid.UUID
    reference_date: str
    """Of the file the stored episode was read from (ISO), so an older file changes nothing."""
    fingerprint: str


# --- what to write -------------------------------------------------------------------------------


@dataclass
class Writes:
    """Rows for one batch, per table, in the column order of `service.census.load`."""

    referrals: list[tuple[Any, ...]] = field(default_factory=list)
    referral_updates: list[tuple[uuid.UUID, str, uuid.UUID]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    enquiries: list[tuple[Any, ...]] = field(default_factory=list)
    icpcs: list[tuple[Any, ...]] = field(default_factory=list)
    plans: list[list[Any]] = field(default_factory=list)
    changes: list[tuple[Any, ...]] = field(default_factory=list)
    plan_updates: list[tuple[uuid.UUID, date | None, uuid.UUID | None, str | None]] = field(
        default_factory=list
    )
    changed_children: list[uuid.UUID] = field(default_factory=list)
    relink_children: list[uuid.UUID] = field(default_factory=list)
    """Children with more than one live referral once the batch is stored: their referrals'
    re-referral counts and links are set by the database's rules (service/census/load.py)."""

    def lists(self) -> tuple[list[Any], ...]:
        return (
            self.referrals,
            self.referral_updates,
            self.events,
            self.enquiries,
            self.icpcs,
            self.plans,
            self.changes,
            self.plan_updates,
            self.changed_children,
            self.relink_children,
        )

    def mark(self) -> tuple[int, ...]:
        """Where each list ends now, for `rollback`."""
        return tuple(map(len, self.lists()))

    def rollback(self, mark: tuple[int, ...]) -> None:
        """Drop what was added since `mark`."""
        for rows, length in zip(self.lists(), mark, strict=True):
            del rows[length:]

    def events_by_type(self) -> dict[str, int]:
        return dict(Counter(row[7] for row in self.events))


class PlannedEvent(NamedTuple):
    """A case event a child's census records become (a tuple: a batch makes thousands)."""

    event_id: str
    event_type: str
    occurred_on: date
    fields: dict[str, Any]
    item: str
    plan: CensusCpPlan | None = None
    previous_plans: int | None = None


class _Refused(Exception):
    def __init__(self, item: str, message: str) -> None:
        super().__init__(message)
        self.item = item
        self.message = message


def referral_reference(header: CensusHeader, child: CensusChild, episode: CensusEpisode) -> str:
    """An imported referral's `external_reference`: the local authority, the child and the
    episode's referral day, which the census never repeats for one child."""
    return f"{child_key(header, child)}/{episode.referral_on.isoformat()}"


def change_day(plan: CensusCpPlan, reference_date: date) -> date:
    """The day an imported category change is dated (see the module docstring)."""
    last_day = plan.ended_on - timedelta(days=1) if plan.ended_on else reference_date
    reviews = [day for day in plan.reviews if plan.started_on <= day <= last_day]
    return reviews[-1] if reviews else last_day


def planned_events(header: CensusHeader, child: CensusChild) -> list[PlannedEvent]:
    """The case events the child's census records become, in the order they are applied."""
    key = child_key(header, child)
    planned: list[PlannedEvent] = []
    for e, episode in enumerate(child.episodes, start=1):
        where = f"CINdetails[{e}]"
        neglect = episode.neglect if episode.cin_plans else False
        plan_days = {plan.started_on: plan for plan in episode.cp_plans}
        for s, enquiry in enumerate(episode.section47s, start=1):
            ref = f"S47-{enquiry.started_on.isoformat()}"
            item = f"{where}/Section47[{s}]"
            planned.append(
                PlannedEvent(
                    f"{key}/{ref}",
                    "section47_started",
                    enquiry.started_on,
                    {"enquiry_ref": ref, "strategy_discussion_on": None},
                    f"{item}/S47ActualStartDate",
                )
            )
            if enquiry.icpc_on is not None:
                follows = plan_days.get(enquiry.icpc_on)
                planned.append(
                    PlannedEvent(
                        f"{key}/{ref}/ICPC",
                        "icpc_held",
                        enquiry.icpc_on,
                        {
                            "enquiry_ref": ref,
                            "outcome": "cp_plan" if follows else "no_plan",
                            "categories": [follows.initial_category] if follows else [],
                        },
                        f"{item}/DateOfInitialCPC",
                    )
                )
        for p, plan in enumerate(episode.cp_plans, start=1):
            ref = f"CPP-{plan.started_on.isoformat()}"
            item = f"{where}/ChildProtectionPlans[{p}]"
            planned.append(
                PlannedEvent(
                    f"{key}/{ref}",
                    "cp_plan_started",
                    plan.started_on,
                    {
                        "plan_ref": ref,
                        "initial_category": plan.initial_category,
                        "domestic_abuse_focus": None,
                    },
                    f"{item}/CPPstartDate",
                    plan=plan,
                    previous_plans=plan.previous_plans,
                )
            )
            day = change_day(plan, header.reference_date)
            planned.append(
                PlannedEvent(
                    f"{key}/{ref}/CAT/{day.isoformat()}",
                    "cp_plan_category_changed",
                    day,
                    {"plan_ref": ref, "category": plan.latest_category},
                    f"{item}/LatestCategoryOfAbuse",
                    plan=plan,
                )
            )
            if plan.ended_on is not None:
                planned.append(
                    PlannedEvent(
                        f"{key}/{ref}/END",
                        "cp_plan_ended",
                        plan.ended_on,
                        {"plan_ref": ref},
                        f"{item}/CPPendDate",
                    )
                )
        for c, cin_plan in enumerate(episode.cin_plans, start=1):
            ref = f"CINP-{episode.referral_on.isoformat()}-{cin_plan.started_on.isoformat()}"
            item = f"{where}/CINPlanDates[{c}]"
            planned.append(
                PlannedEvent(
                    f"{key}/{ref}",
                    "cin_plan_started",
                    cin_plan.started_on,
                    {"plan_ref": ref, "neglect": neglect},
                    f"{item}/CINPlanStartDate",
                )
            )
            if cin_plan.ended_on is not None:
                planned.append(
                    PlannedEvent(
                        f"{key}/{ref}/END",
                        "cin_plan_ended",
                        cin_plan.ended_on,
                        {"plan_ref": ref},
                        f"{item}/CINPlanEndDate",
                    )
                )
    planned.sort(key=lambda event: (event.occurred_on, _RANK[event.event_type]))
    return planned


@dataclass(frozen=True, slots=True)
class EpisodeBody:
    json: str
    reference_date: str
    fingerprint: str


def episode_body(header: CensusHeader, child: CensusChild, episode: CensusEpisode) -> EpisodeBody:
    """An imported referral's `body` as JSON: the episode as the census file described it, under
    `census`, with the file it was read from and a fingerprint of what it says, by which a later
    file saying the same is recognised without reading the stored body back."""

    # Dates as they are: orjson writes a date as YYYY-MM-DD.
    content = {
        "la_child_id": child.la_child_id,
        "referral_date": episode.referral_on,
        "referral_source": episode.referral_source,
        "primary_need": episode.primary_need,
        "referral_nfa": episode.referral_nfa,
        "closure_date": episode.closed_on,
        "reason_for_closure": episode.closure_reason,
        "initial_cpc_date": episode.icpc_on,
        "neglect": episode.neglect,
        "assessments": [
            {
                "start_date": assessment.started_on,
                "internal_review_date": assessment.internal_review_on,
                "authorisation_date": assessment.authorised_on,
                "factors": assessment.factors,
            }
            for assessment in episode.assessments
        ],
        "section47_enquiries": [
            {
                "start_date": enquiry.started_on,
                "initial_cpc_target": enquiry.icpc_target_on,
                "initial_cpc_date": enquiry.icpc_on,
                "icpc_not_required": enquiry.icpc_not_required,
            }
            for enquiry in episode.section47s
        ],
        "child_protection_plans": [
            {
                "start_date": plan.started_on,
                "end_date": plan.ended_on,
                "initial_category": plan.initial_category,
                "latest_category": plan.latest_category,
                "number_of_previous_plans": plan.previous_plans,
                "review_dates": plan.reviews,
            }
            for plan in episode.cp_plans
        ],
        "cin_plans": [
            {"start_date": plan.started_on, "end_date": plan.ended_on} for plan in episode.cin_plans
        ],
        "child": {
            "upn": child.upn,
            "former_upn": child.former_upn,
            "upn_unknown": child.upn_unknown,
            "date_of_birth": child.birth_on,
            "expected_date_of_birth": child.expected_birth_on,
            "sex": child.sex,
            "date_of_death": child.died_on,
            "ethnicity": child.ethnicity,
            "disabilities": child.disabilities,
        },
    }
    canonical = canonical_json(content)
    reference_date = header.reference_date.isoformat()
    digest = hashlib.sha256(canonical).hexdigest()
    provenance = orjson.dumps(
        {
            "census_year": header.census_year,
            "reference_date": reference_date,
            "la_code": header.la_code,
            "fingerprint": digest,
        }
    )
    # One serialisation: the provenance's members, then the content's.
    body = b'{"census":' + provenance[:-1] + b"," + canonical[1:] + b"}"
    return EpisodeBody(body.decode(), reference_date, digest)


# RFC 9562 version 4: the version nibble 0100 (byte 6), the variant bits 10 (byte 8).
_VERSION_4: Final = bytes((byte & 0x0F) | 0x40 for byte in range(256))
_VARIANT: Final = bytes((byte & 0x3F) | 0x80 for byte in range(256))


class _Ids:
    """Random (version 4) UUIDs, made a thousand at a time from one read of the system's random
    source.

    Made as the driver's own UUID type (a `uuid.UUID`, equal and hashing alike), which is built
    from 16 bytes ten times faster than `uuid.UUID(bytes=..., version=4)`: an import makes about
    six per child.
    """

    def __init__(self) -> None:
        self._made: list[uuid.UUID] = []

    def __call__(self) -> uuid.UUID:
        if not self._made:
            pool = bytearray(os.urandom(16 * 1024))
            pool[6::16] = pool[6::16].translate(_VERSION_4)
            pool[8::16] = pool[8::16].translate(_VARIANT)
            made = bytes(pool)
            self._made = [DriverUUID(made[at : at + 16]) for at in range(0, len(made), 16)]
        return self._made.pop()


new_id: Final = _Ids()


@dataclass
class ChildContext:
    """Everything `plan_child` needs about one child beyond the file."""

    child_id: uuid.UUID
    planned: list[PlannedEvent]
    """`planned_events` of the child."""
    state: ChildState
    stored_events: dict[str, StoredEvent]
    stored_referrals: dict[str, StoredReferral]
    stored_moments: list[tuple[datetime, str]] = field(default_factory=list)
    """When the child's stored live referrals were received, and from which agency."""


def plan_child(
    header: CensusHeader,
    import_id: uuid.UUID,
    child: CensusChild,
    context: ChildContext,
    writes: Writes,
) -> Problem | None:
    """Add what importing `child` changes to `writes`, or return why the child is refused (and
    add nothing)."""
    mark = writes.mark()
    try:
        _plan_referrals(header, import_id, child, context, writes)
        _plan_events(header, import_id, child, context, writes)
    except _Refused as refused:
        writes.rollback(mark)
        return Problem(child.la_child_id, refused.item, refused.message)
    if (
        len(writes.referrals) > mark[0]
        or len(writes.referral_updates) > mark[1]
        or len(writes.events) > mark[2]
    ):
        writes.changed_children.append(context.child_id)
    return None


def _plan_referrals(
    header: CensusHeader,
    import_id: uuid.UUID,
    child: CensusChild,
    context: ChildContext,
    writes: Writes,
) -> None:
    agency_name = census_agency_name(header.la_code)
    new: list[tuple[uuid.UUID, str, datetime, CensusEpisode, EpisodeBody]] = []
    for e, episode in enumerate(child.episodes, start=1):
        reference = referral_reference(header, child, episode)
        body = episode_body(header, child, episode)
        stored = context.stored_referrals.get(reference)
        if stored is not None:
            if stored.child_id != context.child_id:
                raise _Refused(
                    f"CINdetails[{e}]/CINreferralDate",
                    "this episode is already stored for another child; the child's identifiers "
                    "changed since it was imported",
                )
            if (
                stored.reference_date <= body.reference_date
                and stored.fingerprint != body.fingerprint
            ):
                writes.referral_updates.append((stored.id, body.json, import_id))
            continue
        new.append((new_id(), reference, received_at(episode.referral_on), episode, body))
    if not new:
        return
    # Copied without re-referral counts or `previous_received_at`: the database's rules set them
    # once the batch is stored (`neglect_rereferral_counts` and `neglect_relink_referrals`, for
    # a child with more than one live referral: an only referral counts and follows none; see
    # service/census/load.py).
    if context.stored_moments or len(new) > 1:
        writes.relink_children.append(context.child_id)
    for row_id, reference, moment, episode, body in new:
        writes.referrals.append(
            (
                row_id,
                CENSUS_CLIENT_ID,
                CENSUS_AGENCY_TYPE,
                agency_name,
                reference,
                context.child_id,
                "decided",
                moment,
                episode.referral_source,
                False,
                0,
                0,
                None,
                body.json,
                "no_further_action" if episode.referral_nfa else None,
                import_id,
            )
        )


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _plan_events(
    header: CensusHeader,
    import_id: uuid.UUID,
    child: CensusChild,
    context: ChildContext,
    writes: Writes,
) -> None:
    state = context.state
    agency_name = census_agency_name(header.la_code)
    child_ref = {
        "nhs_number": None,
        "la_child_id": child.la_child_id,
        "upn": None,
        "family_name": None,
        "date_of_birth": None,
    }
    for planned in context.planned:
        if planned.event_type == "cp_plan_category_changed":
            plan = state.plans.get(("cp", planned.fields["plan_ref"]))
            if plan is None or plan.category_on(planned.occurred_on) == planned.fields["category"]:
                continue
        stored = context.stored_events.get(planned.event_id)
        if stored is not None:
            _check_same(planned, stored, context.child_id)
            continue
        reason = _refusal(state, planned)
        if reason is not None:
            raise _Refused(planned.item, reason)
        row_id = new_id()
        payload = {
            "event_id": planned.event_id,
            "child": child_ref,
            "occurred_on": planned.occurred_on.isoformat(),
            "type": planned.event_type,
            **planned.fields,
        }
        writes.events.append(
            (
                row_id,
                CENSUS_CLIENT_ID,
                CENSUS_AGENCY_TYPE,
                agency_name,
                planned.event_id,
                fingerprint(payload),
                context.child_id,
                planned.event_type,
                planned.occurred_on,
                _json(planned.fields),
                import_id,
            )
        )
        _project(state, context.child_id, row_id, planned, writes)
    for plan in state.plans.values():
        if plan.changed and not plan.new:
            writes.plan_updates.append(
                (plan.id, plan.ended_on, plan.ended_event_id, plan.category_on(date.max))
            )


def _check_same(planned: PlannedEvent, stored: StoredEvent, child_id: uuid.UUID) -> None:
    if stored.child_id != child_id:
        raise _Refused(
            planned.item,
            "this record is already stored for another child; the child's identifiers changed "
            "since it was imported",
        )
    initial = planned.fields.get("initial_category")
    if stored.occurred_on != planned.occurred_on or (
        planned.event_type == "cp_plan_started" and stored.initial_category != initial
    ):
        raise _Refused(
            planned.item,
            f"an earlier census file recorded this as {stored.occurred_on.isoformat()}"
            + (f" under {stored.initial_category}" if stored.initial_category else "")
            + "; an imported record is not changed by a later file, so correct it in the case "
            "system's records through the API",
        )


def _refusal(state: ChildState, planned: PlannedEvent) -> str | None:
    fields = planned.fields
    on = planned.occurred_on
    kind = planned.event_type
    if kind == "section47_started":
        ref = fields["enquiry_ref"]
        return section47_start_refusal(state.enquiries.get(ref), state.icpcs.get(ref), on)
    if kind == "icpc_held":
        ref = fields["enquiry_ref"]
        return icpc_refusal(state.icpcs.get(ref), state.enquiries.get(ref), on)
    plan_type = "cp" if kind.startswith("cp_") else "cin"
    plan = state.plans.get((plan_type, fields["plan_ref"]))
    if kind in ("cp_plan_started", "cin_plan_started"):
        refusal = repeated_plan_ref(plan_type, plan.facts() if plan else None)
        if refusal is None and plan_type == "cp":
            cp_plans = [p.facts() for (t, _), p in state.plans.items() if t == "cp"]
            refusal = cp_plan_overlap(on, cp_plans)
        return refusal
    if plan is None:
        return unknown_plan(plan_type)
    if kind == "cp_plan_category_changed":
        return category_change_refusal(plan.facts(), on)
    return plan_end_refusal(plan.facts(), on)


def _project(
    state: ChildState, child_id: uuid.UUID, row_id: uuid.UUID, planned: PlannedEvent, writes: Writes
) -> None:
    fields = planned.fields
    on = planned.occurred_on
    kind = planned.event_type
    if kind == "section47_started":
        state.enquiries[fields["enquiry_ref"]] = on
        writes.enquiries.append((new_id(), child_id, fields["enquiry_ref"], on, None, row_id))
    elif kind == "icpc_held":
        state.icpcs[fields["enquiry_ref"]] = on
        writes.icpcs.append(
            (
                new_id(),
                child_id,
                fields["enquiry_ref"],
                on,
                fields["outcome"],
                fields["categories"],
                row_id,
            )
        )
    elif kind in ("cp_plan_started", "cin_plan_started"):
        plan_type = "cp" if kind == "cp_plan_started" else "cin"
        plan = StoredPlan(
            id=new_id(),
            plan_type=plan_type,
            plan_ref=fields["plan_ref"],
            started_on=on,
            ended_on=None,
            initial_category=fields.get("initial_category"),
            latest_category=fields.get("initial_category"),
            new=True,
        )
        state.plans[(plan_type, plan.plan_ref)] = plan
        plan.row = [
            plan.id,
            child_id,
            plan_type,
            plan.plan_ref,
            on,
            None,
            plan.initial_category,
            plan.latest_category,
            None,
            fields.get("neglect"),
            row_id,
            None,
            planned.previous_plans,
        ]
        writes.plans.append(plan.row)
    else:
        plan_type = "cp" if kind.startswith("cp_") else "cin"
        plan = state.plans[(plan_type, fields["plan_ref"])]
        if kind == "cp_plan_category_changed":
            order = max((seq for _, seq, _ in plan.changes), default=0) + 1
            plan.changes.append((on, order, fields["category"]))
            writes.changes.append((plan.id, on, fields["category"], row_id))
        else:
            plan.ended_on = on
            plan.ended_event_id = row_id
        plan.changed = True
        if plan.row is not None:
            # The new plan's row is still being built: give it its end and latest category.
            plan.row[5] = plan.ended_on
            plan.row[7] = plan.category_on(date.max)
            plan.row[11] = plan.ended_event_id
