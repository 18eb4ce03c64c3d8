"""A synthetic partnership for demonstrations and benchmarks (`neglect-service demo-data`).

Everything is made up and reproducible: one `random.Random(seed)` drives every choice, ids
included (`uuid.UUID(int=rng.getrandbits(128), version=4)`), so the same seed, options and toolkit
give the same rows. Nothing depends on the clock: every date lies between `start` and `end`, and a
decision or event that would fall after `end` is simply not generated, so `end` must be in the past.

The generator works child by child and yields the rows of a few thousand children at a time;
`load_demo_data` streams them into PostgreSQL with binary COPY (`copy_records_to_table`), in one
transaction with the publication of the demonstration toolkit. Case events are written as the
case-events API would store them (same `details`, same payload fingerprint, so resending one
through the API is a duplicate, not a conflict) together with their projections (`care_plan`,
`care_plan_category_change`, `section47_enquiry`, `icpc`). Toolkit assessments are scored with the
real engine, `service.scoring.score_assessment`, against the published demonstration toolkit.
Loading into empty tables (a fresh database) drops their plain indexes and foreign keys first and
puts them back at the end, in the same transaction: building an index once is much faster than
growing it row by row, and checking a foreign key once for the whole table (one join) much faster
than a trigger's look-up for each row, at the price of locking those tables until the load
commits. Primary keys and unique indexes are put back the same way (at a million referrals, random
ids land all over indexes larger than the server's buffers), and building them finds a repeated
identifier as surely as the copy would have; check constraints check every row as it is copied.
Into tables that already hold rows, nothing is dropped and every row is checked as it is copied.
Where the server
offers LZ4, the load's large JSON documents (bodies, scoring results) are compressed with it rather
than the default pglz: the same values at a fraction of the CPU.

The rows obey every rule the API enforces: at most one open child protection plan per child and
no overlapping CP plans; a plan ends after the day it starts and after its category changes; a
category change falls while its plan is open; one Section 47 start and at most one ICPC per
enquiry, the ICPC on or after the start; every non-Section-47 decision has the parents informed
or consenting; `neglect_forms` is non-empty exactly when neglect is a concern. The decision window
and the decision rules are `service.referrals`' own (`DECISION_WINDOW`, `decision_record`), and
each table's columns are read from the models' metadata. What the database derives for a referral
stored through the API is derived by the same database functions once the rows are in, for every
loaded referral at once: the re-referral flag and counts (`neglect_rereferral_counts`) and the
previous referral's time (`neglect_relink_referrals`), with only what they read through (the
referrals by child, and by id) rebuilt yet, so the referrals they rewrite add no entries to the
other indexes. The agencies, vocabulary and weights are in `service.demo.vocabulary`. No audit
events are written: the data is synthetic and no caller reads it.

Proportions (as generated with the defaults; each run's figures are printed in its summary):
- Referrals per child about 1.35: after each referral another follows within 12 months with
  probability 0.24 and later with probability 0.06 (1.6 times as likely for a child who has been
  on a CP plan), so about 22% of referrals are re-referrals within 12 months (DfE C1). About 2%
  of children are unborn at their (only) referral.
- Senders: police 27%, schools 20%, health 15%, the Front Door's contact centre (family,
  public, anonymous) 12%, council services 7%, family hubs (early help) 7%, voluntary sector 5%,
  housing 4%, early years 3%. Neglect is a concern in about 35% of referrals (police least, early
  help and housing most), citing one to three forms; 4% are urgent; 1.5% are withdrawn.
- Parents informed in 92% of referrals; the rest can only go to a Section 47 outcome.
- Decisions: about 86% within 24 hours of receipt, 10% within 3 days, 4% within 10 days; one
  that would fall after `end` is not made (the referral stays received). Outcomes: Section 47
  strategy discussion about 18% (urgent referrals, parents not aware, children seen on a plan
  before), child in need assessment 23%, the four early help family outcomes 35%, signposting 9%,
  no further action 14%.
- A Section 47 enquiry starts on the strategy discussion day or up to 2 days later. About half
  lead to an ICPC (65% for neglect referrals, 45% for others, 25% when the child is on a plan),
  about 80% of them within 15 working days; an ICPC decides on a plan in 85% of cases when the
  child has no CP plan open.
- CP plans: initial category NEG for about half, then EMO, PHY, MUL, SAB; domestic abuse the
  focus in about 30% of neglect plans; 8% change category once; lasting 3 months to 3 years;
  35% step down to a CIN plan when they end. A few per cent are repeat plans (a child referred
  again after a plan ended; history before `start` is not generated).
- CIN plans follow 45% of child in need assessments (neglect flag follows the referral).
- Early help assessments follow 60% of early help outcomes: neglect considered in 75%,
  identified in 70% of those when the referral cited neglect (15% otherwise); 15% of the
  assessments identifying neglect are stepped up to social care within a year (5% of others).
- Toolkit assessments, about 0.16 per referral: 35% of neglect referrals with an early help or
  CIN outcome get one after the decision (family hubs 60%, schools 25%, health visiting 15%), and
  10% of neglect referrals from schools, health and family hubs had one before; half are
  re-assessed 8-16 weeks later (grades improve in about 55%, worsen in 15%), 30% of those again;
  90% of re-assessments name the assessment before.
- Health appointments (medical 60%, dental 40%): up to three per plan or early help assessment,
  attended 88% under 10 and 72% from 10. Feedback after 30% of early help assessments and 20% of
  plan endings, from parents or carers or (from age 8, a third of the time) children, rated 1-5.
- About 1.4 case events per referral in all.

Disabilities and multi-agency case audits come from a second generator seeded from the same
seed, so adding them left every other row of a seed unchanged:
- Referrals record the child's disability as NONE for about 70% of children, one or two CIN
  disability codes for 12% (learning, autism, communication and behaviour most often) and nothing
  for 18%; every referral of a child records the same.
- About 12% of CP plans, CIN plans and early help assessments in which neglect featured (4% of
  the others) are audited by a multi-agency panel 60-180 days after they start: the local
  authority and one to three other agencies. The toolkit was used in 60% of the neglect cases
  (25% of others; judged effective in 75% of uses); practice is graded good or better in about
  70% of cases where it was used and 47% where it was not, and impact is graded like practice or
  one step either side.

Every record's disclosure-control key (`record_key`) is the last byte of its generated id, so a
seed also gives the same keys; the database draws them at random for records stored otherwise.

Identifiers: every child has a random LA child id (`DM` + 18 hex digits); 92% of born children
have an NHS number from the never-issued 999 range, taken in order from a seeded starting point
(about 909,000 exist; children beyond that have none); half of school-age children have a UPN
(`D` + 12 digits, also in order from a seeded point). Another seed in the same database may
collide on these: load demo data into a database without any.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from random import Random
from typing import Any, Final

import asyncpg
import orjson
from sqlalchemy import (
    ForeignKeyConstraint,
    Index,
    PrimaryKeyConstraint,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.schema import AddConstraint, CreateIndex, DropConstraint

from schemas.case_audits import AUDIT_GRADES, GOOD_OR_BETTER_GRADES
from schemas.common import UK_TIME_ZONE
from schemas.identifiers import (
    SYNTHETIC_NHS_PREFIX,
    compute_nhs_check_digit,
    normalise_family_name,
)
from schemas.referrals import SECTION47_OUTCOME
from service.children import age_in_years
from service.demo.vocabulary import (
    AGENCIES,
    ALL_CATEGORIES,
    ASSESSING_TYPES,
    AUDIT_CLIENT,
    AUDIT_LEARNING,
    AUDIT_PANEL_AGENCIES,
    CIN_ASSESSMENT,
    CONSENT,
    CP_CATEGORIES_NEGLECT,
    CP_CATEGORIES_OTHER,
    DISABILITY_CODES,
    DISABILITY_RECORDED,
    EARLY_HELP_OUTCOMES,
    ETHNICITIES,
    FAMILY_HUBS,
    FAMILY_NAMES,
    GIVEN_NAMES,
    HEALTH_VISITING,
    NEGLECT_FORM_WEIGHTS,
    OTHER_CATEGORIES,
    OUTCOMES_NEGLECT,
    OUTCOMES_OTHER,
    PRACTICE_GRADES_OTHER,
    PRACTICE_GRADES_TOOLKIT,
    RATINGS_CHILD,
    RATINGS_PARENT,
    RATIONALES,
    RISK_FACTORS,
    SCHOOLS,
    SEVERITY,
    SUMMARIES,
    TREND,
    Agency,
)
from service.fingerprint import fingerprint
from service.handoff import Handoff
from service.models import metadata
from service.referrals import (
    DECISION_WINDOW,
    decision_record,
    parents_aware,
)
from service.rereferral_rule import count_rereferrals_of
from service.scoring import ResponseValue, ScoreResult, score_assessment
from service.toolkits.definition import ToolkitDefinition
from service.toolkits.versions import definition_of, publish_demo_toolkit
from service.working_days import add_working_days, bank_holidays

DEFAULT_SEED: Final = 2024
DEFAULT_START: Final = date(2021, 1, 1)
DEFAULT_END: Final = date(2025, 12, 31)
CHILDREN_PER_BATCH: Final = 4000
PUBLISHER: Final = "neglect-service demo-data"
CASE_SYSTEM_CLIENT: Final = (
    "demo-case-system",
    "local_authority",
    "Demo Council Children's Social Care",
)
EXPECTED_REFERRALS_PER_CHILD: Final = 1.35
"""A rough guide for choosing `children`; the summary gives the real figure."""

# --- Tables, in the order their foreign keys allow loading ---------------------------------------

_LOADED_TABLES: Final = frozenset(
    {
        "child",
        "referral",
        "assessment",
        "case_event",
        "care_plan",
        "care_plan_category_change",
        "section47_enquiry",
        "icpc",
        "case_audit",
    }
)
LOAD_ORDER: Final[tuple[str, ...]] = tuple(
    table.name for table in metadata.sorted_tables if table.name in _LOADED_TABLES
)
TABLE_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    name: tuple(column.name for column in metadata.tables[name].columns if column.identity is None)
    for name in LOAD_ORDER
}
"""Every column a row of each table gives, in the table's order: the generator's row tuples
follow it. Identity columns are generated by the database."""
_KEYED_TABLES: Final = tuple(name for name in LOAD_ORDER if "record_key" in TABLE_COLUMNS[name])
"""Tables whose rows end with a record key, which `DemoGenerator.batches` appends."""
if any(TABLE_COLUMNS[name][-1] != "record_key" for name in _KEYED_TABLES):
    raise RuntimeError("record_key must be the last column of every table that has one")

Row = tuple[Any, ...]

_NHS_PREFIXES: Final = 10**6
_UPN_SPACE: Final = 10**12


def _new_id(rng: Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def _record_key(row_id: uuid.UUID) -> int:
    # The last byte of a version 4 id is random (the version and variant bits lie elsewhere).
    return row_id.int & 0xFF


def _audit_grade(position: int) -> str:
    """The grade at this position of the configured scale (0 the best), the worst beyond it."""
    return AUDIT_GRADES[min(position, len(AUDIT_GRADES) - 1)]


def _uk_moment(day: date, hour: int, minute: int) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=UK_TIME_ZONE).astimezone(UTC)


def case_event_fingerprint(
    event_id: str,
    child_ref: dict[str, Any],
    event_type: str,
    occurred_on: date,
    fields: dict[str, Any],
) -> str:
    """The `payload_sha256` the case-events API stores for this event: the fingerprint of the
    event as validated (`child_ref` and `fields` with every key validation fills in)."""
    event = {
        "event_id": event_id,
        "child": child_ref,
        "occurred_on": occurred_on.isoformat(),
        "type": event_type,
        **fields,
    }
    return fingerprint(event)


# --- Options, tallies and batches ---------------------------------------------------------------


@dataclass(frozen=True)
class DemoOptions:
    """What to generate: `children` children with records between `start` and `end` inclusive."""

    children: int
    seed: int = DEFAULT_SEED
    start: date = DEFAULT_START
    end: date = DEFAULT_END
    children_per_batch: int = CHILDREN_PER_BATCH

    def __post_init__(self) -> None:
        if self.children < 1:
            raise ValueError("children must be at least 1")
        if self.end < self.start + timedelta(days=60):
            raise ValueError("end must be at least 60 days after start")


@dataclass(frozen=True)
class DemoToolkit:
    """The published toolkit version assessments are scored against."""

    definition: ToolkitDefinition
    sha256: str


@dataclass
class DemoBatch:
    """The rows of `children` consecutive children, per table (tuples in `TABLE_COLUMNS` order)."""

    children: int
    rows: dict[str, list[Row]] = field(default_factory=lambda: {name: [] for name in LOAD_ORDER})


@dataclass
class DemoTally:
    """Running counts from which the summary's proportions are computed."""

    rows: Counter[str] = field(default_factory=Counter)
    referrals_live: int = 0
    referrals_neglect: int = 0
    rereferrals: int | None = None
    """Counted in the database once the referrals are loaded (None until then)."""
    decided: int = 0
    decided_within_24h: int = 0
    icpcs: int = 0
    icpcs_within_15_working_days: int = 0
    cp_plans: int = 0
    cp_plans_neglect: int = 0
    cp_plans_repeat: int = 0
    children_with_nhs_number: int = 0
    audits_neglect: int = 0
    audits_neglect_impact_good: int = 0

    def proportions(self) -> dict[str, float | None]:
        def share(numerator: int | None, denominator: int) -> float | None:
            if numerator is None or not denominator:
                return None
            return round(100 * numerator / denominator, 1)

        return {
            "referrals_per_child": (
                round(self.rows["referral"] / self.rows["child"], 3) if self.rows["child"] else None
            ),
            "neglect_referral_percent": share(self.referrals_neglect, self.referrals_live),
            "rereferral_percent": share(self.rereferrals, self.referrals_live),
            "decided_within_24h_percent": share(self.decided_within_24h, self.decided),
            "icpc_within_15_working_days_percent": share(
                self.icpcs_within_15_working_days, self.icpcs
            ),
            "cp_plans_neglect_percent": share(self.cp_plans_neglect, self.cp_plans),
            "cp_plans_repeat_percent": share(self.cp_plans_repeat, self.cp_plans),
            "children_with_nhs_number_percent": share(
                self.children_with_nhs_number, self.rows["child"]
            ),
            "audit_neglect_impact_good_percent": share(
                self.audits_neglect_impact_good, self.audits_neglect
            ),
        }


# --- The generator ------------------------------------------------------------------------------


@dataclass
class _Child:
    id: uuid.UUID
    ref: dict[str, Any]
    """How case events and assessments name the child (ChildRef, every key as validated)."""
    given_name: str
    family_name: str
    date_of_birth: date | None
    expected_date_of_birth: date | None
    sex: str
    ethnicity: str | None
    nhs_number: str | None
    la_child_id: str
    upn: str | None
    disabilities: list[str] = field(default_factory=list)
    """As every referral of the child records them (CIN codes; empty: not recorded)."""
    cp_plans: int = 0
    cp_busy_until: date | None = None
    """The day the child's last CP plan ended; `date.max` while one is open."""
    plans: int = 0
    enquiries: int = 0
    early_help_assessments: int = 0

    @property
    def birth(self) -> date:
        """The date of birth, or the expected one for an unborn child."""
        return self.date_of_birth or self.expected_date_of_birth or date.min


@dataclass
class _Referral:
    received_at: datetime
    received_on: date
    agency: Agency
    neglect: bool
    forms: list[str]
    risk_factors: list[str]
    decided_on: date | None
    outcome: str | None


class DemoGenerator:
    """Child-by-child generation of a synthetic partnership's records; see the module docstring."""

    def __init__(self, options: DemoOptions, toolkit: DemoToolkit) -> None:
        self.options = options
        self.toolkit = toolkit
        self.rng = Random(options.seed)  # noqa: S311 - reproducible synthetic data, no secrets
        # Disabilities and audits draw from their own generator, leaving `rng`'s sequence as it
        # was before they existed.
        self.extra = Random(f"{options.seed}:disabilities-and-audits")  # noqa: S311
        self.tally = DemoTally()
        self._span_days = (options.end - options.start).days + 1
        self._last_moment = datetime.combine(
            options.end + timedelta(days=1), time(0, 0), tzinfo=UK_TIME_ZONE
        ).astimezone(UTC)
        self._holidays = frozenset(bank_holidays(options.start.year - 1, options.end.year + 1))
        self._nhs_next = self.rng.randrange(_NHS_PREFIXES)
        self._nhs_left = _NHS_PREFIXES
        self._upn_next = self.rng.randrange(_UPN_SPACE)
        self._items = [
            (sub_area.neglect_form, item) for _, sub_area, item in toolkit.definition.iter_items()
        ]
        self._rows: dict[str, list[Row]] = {}

    # -- public --

    def batches(self) -> Iterator[DemoBatch]:
        """The rows of every child, `children_per_batch` children at a time."""
        made = 0
        while made < self.options.children:
            size = min(self.options.children_per_batch, self.options.children - made)
            batch = DemoBatch(children=size)
            self._rows = batch.rows
            for _ in range(size):
                self._make_child()
            for name in _KEYED_TABLES:
                batch.rows[name] = [(*row, _record_key(row[0])) for row in batch.rows[name]]
            for name, rows in batch.rows.items():
                self.tally.rows[name] += len(rows)
            made += size
            yield batch

    # -- identifiers --

    def _nhs_number(self) -> str | None:
        while self._nhs_left > 0:
            prefix = self._nhs_next
            self._nhs_next = (self._nhs_next + 1) % _NHS_PREFIXES
            self._nhs_left -= 1
            first_nine = f"{SYNTHETIC_NHS_PREFIX}{prefix:06d}"
            check = compute_nhs_check_digit(first_nine)
            if check is not None:
                return f"{first_nine}{check}"
        return None

    def _upn(self) -> str:
        number = self._upn_next
        self._upn_next = (self._upn_next + 1) % _UPN_SPACE
        return f"D{number:012d}"

    # -- dates --

    def _day_in_range(self) -> date:
        rng = self.rng
        day = self.options.start + timedelta(days=rng.randrange(self._span_days))
        if day.weekday() >= 5 and rng.random() < 0.6:
            day = self.options.start + timedelta(days=rng.randrange(self._span_days))
        return day

    def _received_at(self, day: date, agency: Agency) -> datetime:
        rng = self.rng
        roll = rng.random()
        night_share = 0.3 if agency.agency_type == "police" else 0.08
        if roll < night_share:
            hour = rng.choice((0, 1, 2, 3, 4, 5, 6, 7, 19, 20, 21, 22, 23))
        else:
            hour = 8 + rng.randrange(10)
        return _uk_moment(day, hour, rng.randrange(60))

    def _in_range(self, day: date) -> bool:
        return day <= self.options.end

    # -- one child --

    def _make_child(self) -> None:
        rng = self.rng
        first_day = self._day_in_range()
        unborn = rng.random() < 0.02
        band = rng.random()
        if unborn:
            date_of_birth = None
            expected = first_day + timedelta(days=20 + rng.randrange(120))
            sex = "U"
        else:
            if band < 0.12:
                age_days = rng.randrange(365)
            elif band < 0.34:
                age_days = 365 + rng.randrange(4 * 365)
            elif band < 0.60:
                age_days = 5 * 365 + rng.randrange(5 * 365)
            elif band < 0.92:
                age_days = 10 * 365 + rng.randrange(6 * 365)
            else:
                age_days = 16 * 365 + rng.randrange(2 * 365 - 30)
            date_of_birth = first_day - timedelta(days=age_days)
            expected = None
            sex_roll = rng.random()
            sex = "M" if sex_roll < 0.51 else ("F" if sex_roll < 0.995 else "U")
        nhs_number = None if unborn or rng.random() >= 0.92 else self._nhs_number()
        school_age = date_of_birth is not None and age_in_years(date_of_birth, first_day) >= 4
        upn = self._upn() if school_age and rng.random() < 0.5 else None
        la_child_id = f"DM{rng.getrandbits(72):018X}"
        ethnicity = None if rng.random() < 0.04 else ETHNICITIES.pick(rng)
        child = _Child(
            id=_new_id(rng),
            ref={
                "nhs_number": nhs_number,
                "la_child_id": None if nhs_number else la_child_id,
                "upn": None,
                "family_name": None,
                "date_of_birth": None,
            },
            given_name=rng.choice(GIVEN_NAMES),
            family_name=rng.choice(FAMILY_NAMES),
            date_of_birth=date_of_birth,
            expected_date_of_birth=expected,
            sex=sex,
            ethnicity=ethnicity,
            nhs_number=nhs_number,
            la_child_id=la_child_id,
            upn=upn,
            disabilities=self._disabilities(),
        )
        if nhs_number is not None:
            self.tally.children_with_nhs_number += 1
        first_received = self._referral_chain(child, first_day)
        self._rows["child"].append(
            (
                child.id,
                nhs_number,
                la_child_id,
                upn,
                child.given_name if not unborn else None,
                child.family_name,
                normalise_family_name(child.family_name),
                date_of_birth,
                expected,
                sex,
                ethnicity,
                first_received,
                first_received,
            )
        )

    def _disabilities(self) -> list[str]:
        recorded = DISABILITY_RECORDED.pick(self.extra)
        if recorded == "NONE":
            return ["NONE"]
        if recorded == "codes":
            return DISABILITY_CODES.sample(self.extra, 1 + int(self.extra.random() < 0.3))
        return []

    def _pick_agency(self) -> Agency:
        return AGENCIES.pick(self.rng)

    def _referral_chain(self, child: _Child, first_day: date) -> datetime:
        """The child's referrals, oldest first; returns when the first was received."""
        rng = self.rng
        day = first_day
        first_received: datetime | None = None
        while True:
            agency = self._pick_agency()
            received_at = self._received_at(day, agency)
            first_received = first_received or received_at
            self._referral(child, agency, day, received_at)
            if child.date_of_birth is None:
                # Unborn children get one referral: after the birth they are new records.
                return first_received
            roll = rng.random()
            # Children who have been on a plan come back more often.
            again = 1.6 if child.cp_plans else 1.0
            if roll < 0.24 * again:
                gap = 7 + int(358 * rng.random() ** 1.4)
            elif roll < 0.30 * again:
                gap = 366 + rng.randrange(900)
            else:
                return first_received
            day = day + timedelta(days=gap)
            if not self._in_range(day) or age_in_years(child.birth, day) >= 18:
                return first_received

    def _referral(
        self,
        child: _Child,
        agency: Agency,
        day: date,
        received_at: datetime,
    ) -> None:
        """One referral and everything that follows from it."""
        rng = self.rng
        tally = self.tally
        referral_id = _new_id(rng)
        neglect = rng.random() < agency.neglect_share
        categories: list[str] = []
        forms: list[str] = []
        if neglect:
            categories.append("neglect")
            forms = NEGLECT_FORM_WEIGHTS.sample(rng, 1 + int(rng.random() ** 2 * 3))
            if rng.random() < 0.3:
                categories.append(OTHER_CATEGORIES.pick(rng))
        else:
            categories = OTHER_CATEGORIES.sample(rng, 1 + int(rng.random() < 0.25))
        risk_factors = RISK_FACTORS.sample(rng, int(rng.random() * 3.2))
        age = age_in_years(child.birth, day) if child.date_of_birth else 0
        vulnerabilities: list[str] = []
        if child.date_of_birth is None or age < 1:
            vulnerabilities.append("under_one")
        if age >= 10:
            vulnerabilities.append("adolescent")
        if rng.random() < 0.05:
            vulnerabilities.append(
                rng.choice(("missing_from_education", "missing_from_home", "in_care"))
            )
        urgent = rng.random() < 0.04
        informed = rng.random() < 0.92
        if informed:
            consent = CONSENT.pick(rng)
        else:
            consent = "not_sought"
        aware = parents_aware(informed, consent)
        decision_due_at = received_at + DECISION_WINDOW
        source = rng.choice(agency.sources)
        external_reference = f"RFS-{rng.getrandbits(64):016x}"

        withdrawn = rng.random() < 0.015
        status = "received"
        outcome: str | None = None
        decision: str | None = None
        decided_at: datetime | None = None
        strategy_due: datetime | None = None
        withdrawn_at: datetime | None = None
        withdrawal_reason: str | None = None
        if withdrawn:
            status = "withdrawn"
            withdrawn_at = received_at + timedelta(minutes=30 + rng.randrange(1200))
            withdrawal_reason = "Sent in error; the concern is being handled by the school."
        else:
            roll = rng.random()
            if urgent:
                delay = timedelta(minutes=10 + rng.randrange(230))
            elif roll < 0.86:
                delay = timedelta(minutes=30 + int(rng.random() ** 1.5 * 1400))
            elif roll < 0.96:
                delay = timedelta(hours=24, minutes=1 + rng.randrange(48 * 60))
            else:
                delay = timedelta(days=3, minutes=rng.randrange(7 * 24 * 60))
            candidate = received_at + delay
            if candidate < self._last_moment:
                decided_at = candidate
                after_plan = child.cp_plans > 0 and (child.cp_busy_until or date.min) <= day
                if (
                    not aware
                    or (urgent and rng.random() < 0.6)
                    or (after_plan and rng.random() < 0.4)
                ):
                    outcome = SECTION47_OUTCOME
                else:
                    outcome = (OUTCOMES_NEGLECT if neglect else OUTCOMES_OTHER).pick(rng)
                status = "decided"
                record = decision_record(
                    received_at=received_at,
                    parents_informed=informed,
                    parental_consent=consent,
                    outcome=outcome,
                    rationale=RATIONALES[outcome],
                    decided_by="Front Door team manager",
                    decided_at=decided_at,
                )
                strategy_due = record.strategy_discussion_due_at
                decision = orjson.dumps(record.stored).decode()
                tally.decided += 1
                if decided_at <= decision_due_at:
                    tally.decided_within_24h += 1
        if not withdrawn:
            tally.referrals_live += 1
            tally.referrals_neglect += neglect

        summary = SUMMARIES[categories[0]].format(forms=", ".join(forms))
        body: dict[str, Any] = {
            "external_reference": external_reference,
            "received_at": received_at.isoformat(),
            "referrer": {
                "agency_type": agency.agency_type,
                "agency_name": agency.agency_name,
                "name": "Demo Referrer",
                "role": agency.referrer_role,
                "email": f"referrals@{agency.client_id}.example",
                "source_code": source,
            },
            "child": {
                "given_name": child.given_name if child.date_of_birth else None,
                "family_name": child.family_name,
                "date_of_birth": child.date_of_birth.isoformat() if child.date_of_birth else None,
                "expected_date_of_birth": (
                    child.expected_date_of_birth.isoformat()
                    if child.expected_date_of_birth
                    else None
                ),
                "sex": child.sex,
                "ethnicity": child.ethnicity,
                "nhs_number": child.nhs_number,
                "la_child_id": child.la_child_id,
                "upn": child.upn,
                "disabilities": child.disabilities,
            },
            "concerns": {
                "categories": categories,
                "neglect_forms": forms,
                "risk_factors": risk_factors,
                "vulnerabilities": vulnerabilities,
                "summary": summary,
            },
            "immediate_risk": urgent,
            "parental_awareness": {
                "informed": informed,
                "consent": consent,
                "reason_not_informed": (
                    None if informed else "Telling the parents could place the child at risk."
                ),
            },
            "dsl_consulted": agency.agency_type in ("school", "early_years"),
        }
        self._rows["referral"].append(
            (
                referral_id,
                agency.client_id,
                agency.agency_type,
                agency.agency_name,
                external_reference,
                child.id,
                status,
                urgent,
                received_at,
                decision_due_at,
                source,
                categories,
                forms,
                risk_factors,
                vulnerabilities,
                informed,
                consent,
                # rereferral, rereferral_count, agency_rereferral_count and
                # previous_received_at: derived in the database after the load, by the rules
                # the API's creates use (`_COUNT_DEMO_REREFERRALS`, `_RELINK_DEMO_REFERRALS`).
                False,
                0,
                0,
                None,
                orjson.dumps(body).decode(),
                outcome,
                decision,
                decided_at,
                strategy_due,
                withdrawn_at,
                withdrawal_reason,
                received_at,
                None,  # census_import_id: live data
            )
        )
        referral = _Referral(
            received_at=received_at,
            received_on=received_at.astimezone(UK_TIME_ZONE).date(),
            agency=agency,
            neglect=neglect,
            forms=forms,
            risk_factors=risk_factors,
            decided_on=decided_at.astimezone(UK_TIME_ZONE).date() if decided_at else None,
            outcome=outcome,
        )
        self._follow_up(child, referral)

    # -- what follows a referral --

    def _follow_up(self, child: _Child, referral: _Referral) -> None:
        rng = self.rng
        if (
            referral.neglect
            and referral.agency.agency_type in ASSESSING_TYPES
            and child.date_of_birth is not None
            and rng.random() < 0.10
        ):
            before = referral.received_on - timedelta(days=1 + rng.randrange(21))
            if before >= self.options.start and before >= child.date_of_birth:
                self._toolkit_assessments(child, referral, referral.agency, before)
        if referral.outcome is None or referral.decided_on is None:
            return
        if referral.outcome == SECTION47_OUTCOME:
            self._section47(child, referral, referral.decided_on)
        elif referral.outcome == CIN_ASSESSMENT:
            if rng.random() < 0.45:
                starts = referral.decided_on + timedelta(days=30 + rng.randrange(34))
                self._cin_plan(
                    child, starts, neglect=rng.random() < (0.9 if referral.neglect else 0.1)
                )
        elif referral.outcome in EARLY_HELP_OUTCOMES and rng.random() < 0.6:
            self._early_help(child, referral)
        assessable = referral.outcome == CIN_ASSESSMENT or referral.outcome in EARLY_HELP_OUTCOMES
        if referral.neglect and assessable and child.date_of_birth and rng.random() < 0.35:
            roll = rng.random()
            if roll < 0.6:
                agency = FAMILY_HUBS
            elif roll < 0.85:
                agency = rng.choice(SCHOOLS)
            else:
                agency = HEALTH_VISITING
            completed = referral.decided_on + timedelta(days=7 + rng.randrange(39))
            self._toolkit_assessments(child, referral, agency, completed)

    def _event(
        self, child: _Child, event_type: str, occurred_on: date, fields: dict[str, Any]
    ) -> uuid.UUID:
        rng = self.rng
        row_id = _new_id(rng)
        event_id = f"DEMO-{rng.getrandbits(128):032x}"
        client_id, agency_type, agency_name = CASE_SYSTEM_CLIENT
        self._rows["case_event"].append(
            (
                row_id,
                client_id,
                agency_type,
                agency_name,
                event_id,
                case_event_fingerprint(event_id, child.ref, event_type, occurred_on, fields),
                child.id,
                event_type,
                occurred_on,
                orjson.dumps(fields).decode(),
                _uk_moment(occurred_on, 19, rng.randrange(60)),
                None,  # census_import_id: live data
            )
        )
        return row_id

    def _section47(self, child: _Child, referral: _Referral, decided_on: date) -> None:
        rng = self.rng
        strategy_on = decided_on + timedelta(days=int(rng.random() < 0.3))
        started_on = strategy_on + timedelta(days=0 if rng.random() < 0.7 else 1 + rng.randrange(2))
        if not self._in_range(started_on):
            return
        child.enquiries += 1
        enquiry_ref = f"S47-{child.enquiries}"
        event_id = self._event(
            child,
            "section47_started",
            started_on,
            {"enquiry_ref": enquiry_ref, "strategy_discussion_on": strategy_on.isoformat()},
        )
        self._rows["section47_enquiry"].append(
            (_new_id(rng), child.id, enquiry_ref, started_on, strategy_on, event_id)
        )
        on_plan = child.cp_busy_until is not None and child.cp_busy_until > started_on
        if rng.random() >= (0.25 if on_plan else 0.65 if referral.neglect else 0.45):
            return
        in_time = rng.random() < 0.8
        working_days = 5 + rng.randrange(11) if in_time else 16 + rng.randrange(15)
        held_on = add_working_days(started_on, working_days, self._holidays)
        if not self._in_range(held_on):
            return
        category = (CP_CATEGORIES_NEGLECT if referral.neglect else CP_CATEGORIES_OTHER).pick(rng)
        if category == "MUL":
            considered = sorted(rng.sample(ALL_CATEGORIES, 2))
        elif rng.random() < 0.2:
            considered = sorted({category, rng.choice(ALL_CATEGORIES)})
        else:
            considered = [category]
        free = child.cp_busy_until is None or child.cp_busy_until <= held_on
        outcome = "cp_plan" if free and rng.random() < 0.85 else "no_plan"
        event_id = self._event(
            child,
            "icpc_held",
            held_on,
            {"enquiry_ref": enquiry_ref, "outcome": outcome, "categories": considered},
        )
        self._rows["icpc"].append(
            (_new_id(rng), child.id, enquiry_ref, held_on, outcome, considered, event_id)
        )
        self.tally.icpcs += 1
        self.tally.icpcs_within_15_working_days += held_on <= add_working_days(
            started_on, 15, self._holidays
        )
        if outcome == "cp_plan":
            self._cp_plan(child, referral, held_on, category)

    def _plan_end(self, starts: date, days: int) -> date | None:
        ends = starts + timedelta(days=max(days, 1))
        return ends if self._in_range(ends) else None

    def _cp_plan(self, child: _Child, referral: _Referral, starts: date, category: str) -> None:
        rng = self.rng
        tally = self.tally
        child.plans += 1
        plan_ref = f"CP-{child.plans}"
        focus_share = 0.6 if "domestic_abuse" in referral.risk_factors else 0.2
        focus = rng.random() < focus_share
        started_event = self._event(
            child,
            "cp_plan_started",
            starts,
            {"plan_ref": plan_ref, "initial_category": category, "domestic_abuse_focus": focus},
        )
        tally.cp_plans += 1
        tally.cp_plans_neglect += category == "NEG"
        tally.cp_plans_repeat += child.cp_plans > 0
        child.cp_plans += 1
        roll = rng.random()
        if roll < 0.25:
            days = 90 + rng.randrange(90)
        elif roll < 0.70:
            days = 180 + rng.randrange(185)
        elif roll < 0.95:
            days = 365 + rng.randrange(365)
        else:
            days = 730 + rng.randrange(370)
        ends = self._plan_end(starts, days)
        plan_id = _new_id(rng)
        latest = category
        last_open_day = (ends - timedelta(days=1)) if ends else self.options.end
        if rng.random() < 0.08 and (last_open_day - starts).days > 30:
            changed_on = starts + timedelta(
                days=30 + rng.randrange((last_open_day - starts).days - 29)
            )
            latest = rng.choice([c for c in (*ALL_CATEGORIES, "MUL") if c != category])
            change_event = self._event(
                child,
                "cp_plan_category_changed",
                changed_on,
                {"plan_ref": plan_ref, "category": latest},
            )
            self._rows["care_plan_category_change"].append(
                (plan_id, changed_on, latest, change_event)
            )
        ended_event = (
            self._event(child, "cp_plan_ended", ends, {"plan_ref": plan_ref}) if ends else None
        )
        self._rows["care_plan"].append(
            (
                plan_id,
                child.id,
                "cp",
                plan_ref,
                starts,
                ends,
                category,
                latest,
                focus,
                None,
                started_event,
                ended_event,
                _uk_moment(starts, 19, 0),
                None,  # previous_cp_plans: not recorded by the case-events API
            )
        )
        child.cp_busy_until = ends or date.max
        self._maybe_audit(
            child, "child_protection_plan", starts, neglect="NEG" in (category, latest)
        )
        self._health_appointments(child, starts, ends)
        if ends is not None:
            if rng.random() < 0.35:
                self._cin_plan(child, ends, neglect=latest == "NEG")
            if rng.random() < 0.2:
                self._feedback(child, ends, "child protection plan")

    def _cin_plan(self, child: _Child, starts: date, *, neglect: bool) -> None:
        if not self._in_range(starts):
            return
        rng = self.rng
        child.plans += 1
        plan_ref = f"CIN-{child.plans}"
        started_event = self._event(
            child, "cin_plan_started", starts, {"plan_ref": plan_ref, "neglect": neglect}
        )
        ends = self._plan_end(starts, 60 + rng.randrange(390))
        ended_event = (
            self._event(child, "cin_plan_ended", ends, {"plan_ref": plan_ref}) if ends else None
        )
        self._rows["care_plan"].append(
            (
                _new_id(rng),
                child.id,
                "cin",
                plan_ref,
                starts,
                ends,
                None,
                None,
                None,
                neglect,
                started_event,
                ended_event,
                _uk_moment(starts, 19, 0),
                None,  # previous_cp_plans: not recorded by the case-events API
            )
        )
        self._maybe_audit(child, "child_in_need_plan", starts, neglect=neglect)
        self._health_appointments(child, starts, ends)
        if ends is not None and rng.random() < 0.2:
            self._feedback(child, ends, "child in need plan")

    def _early_help(self, child: _Child, referral: _Referral) -> None:
        rng = self.rng
        if referral.decided_on is None:
            return
        completed = referral.decided_on + timedelta(days=10 + rng.randrange(31))
        if not self._in_range(completed):
            return
        child.early_help_assessments += 1
        assessment_ref = f"EHA-{child.early_help_assessments}"
        considered = rng.random() < 0.75
        identified = considered and rng.random() < (0.7 if referral.neglect else 0.15)
        self._event(
            child,
            "early_help_assessment_completed",
            completed,
            {
                "assessment_ref": assessment_ref,
                "neglect_considered": considered,
                "neglect_identified": identified,
            },
        )
        self._maybe_audit(child, "early_help_assessment", completed, neglect=identified)
        self._health_appointments(child, completed, completed + timedelta(days=180))
        if rng.random() < (0.15 if identified else 0.05):
            stepped_on = completed + timedelta(days=30 + rng.randrange(300))
            if self._in_range(stepped_on):
                self._event(
                    child,
                    "stepped_up_to_social_care",
                    stepped_on,
                    {
                        "from_ref": assessment_ref,
                        "reason": "Needs escalated despite early help support.",
                    },
                )
        if rng.random() < 0.3:
            self._feedback(child, completed + timedelta(days=rng.randrange(60)), "early help")

    def _health_appointments(self, child: _Child, starts: date, ends: date | None) -> None:
        if child.date_of_birth is None:
            return
        rng = self.rng
        last = min(ends or self.options.end, self.options.end, starts + timedelta(days=365))
        span = (last - starts).days
        if span <= 0:
            return
        for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
            on = starts + timedelta(days=rng.randrange(span))
            adolescent = age_in_years(child.date_of_birth, on) >= 10
            self._event(
                child,
                "health_appointment",
                on,
                {
                    "kind": "medical" if rng.random() < 0.6 else "dental",
                    "attended": rng.random() < (0.72 if adolescent else 0.88),
                },
            )

    def _feedback(self, child: _Child, on: date, about: str) -> None:
        if not self._in_range(on):
            return
        rng = self.rng
        can_speak = child.date_of_birth is not None and age_in_years(child.date_of_birth, on) >= 8
        from_child = can_speak and rng.random() < 0.35
        self._event(
            child,
            "feedback_received",
            on,
            {
                "from_whom": "child" if from_child else "parent_carer",
                "rating": (RATINGS_CHILD if from_child else RATINGS_PARENT).pick(rng),
                "about": about,
            },
        )

    # -- multi-agency case audits --

    def _maybe_audit(self, child: _Child, work: str, started: date, *, neglect: bool) -> None:
        extra = self.extra
        if extra.random() >= (0.12 if neglect else 0.04):
            return
        audited_on = started + timedelta(days=60 + extra.randrange(121))
        if not self._in_range(audited_on):
            return
        toolkit_used = extra.random() < (0.6 if neglect else 0.25)
        practice = (PRACTICE_GRADES_TOOLKIT if toolkit_used else PRACTICE_GRADES_OTHER).pick(extra)
        impact = max(0, practice + extra.choice((-1, 0, 0, 0, 1)))
        panel = ["local_authority", *AUDIT_PANEL_AGENCIES.sample(extra, 1 + extra.randrange(3))]
        client_id, agency_type, agency_name = AUDIT_CLIENT
        self._rows["case_audit"].append(
            (
                _new_id(extra),
                client_id,
                agency_type,
                agency_name,
                child.id,
                work,
                neglect,
                audited_on,
                panel,
                _audit_grade(practice),
                _audit_grade(impact),
                toolkit_used,
                extra.random() < 0.75 if toolkit_used else None,
                extra.choice(AUDIT_LEARNING),
                _uk_moment(audited_on, 15, extra.randrange(60)),
            )
        )
        if neglect:
            self.tally.audits_neglect += 1
            self.tally.audits_neglect_impact_good += _audit_grade(impact) in GOOD_OR_BETTER_GRADES

    # -- toolkit assessments --

    def _toolkit_assessments(
        self, child: _Child, referral: _Referral, agency: Agency, completed: date
    ) -> None:
        """A first assessment on `completed`, then possibly one or two re-assessments."""
        rng = self.rng
        severity = SEVERITY.pick(rng)
        featured = set(referral.forms)
        bases = {
            form: (severity if form in featured else 1 + int(rng.random() < 0.3))
            for form in NEGLECT_FORM_WEIGHTS.values
        }
        previous: tuple[uuid.UUID, ScoreResult, list[tuple[str, int]]] | None = None
        household_ref = f"HH-{child.id.hex[:12]}" if rng.random() < 0.3 else None
        for round_number in range(3):
            if not self._in_range(completed):
                return
            previous = self._assessment(
                child, agency, completed, bases, previous, household_ref, round_number
            )
            if rng.random() >= (0.5 if round_number == 0 else 0.3):
                return
            trend = TREND.pick(rng)
            bases = {form: min(5, max(1, grade + trend)) for form, grade in bases.items()}
            completed = completed + timedelta(days=56 + rng.randrange(57))

    def _assessment(
        self,
        child: _Child,
        agency: Agency,
        completed: date,
        bases: dict[str, int],
        previous: tuple[uuid.UUID, ScoreResult, list[tuple[str, int]]] | None,
        household_ref: str | None,
        round_number: int,
    ) -> tuple[uuid.UUID, ScoreResult, list[tuple[str, int]]]:
        rng = self.rng
        age = age_in_years(child.birth, completed)
        responses: dict[str, ResponseValue] = {}
        for form, item in self._items:
            if not item.covers_age(age):
                continue
            if rng.random() < 0.04:
                responses[item.id] = "not_known"
            else:
                responses[item.id] = min(5, max(1, bases[form] + rng.choice((-1, 0, 0, 0, 1))))
        linked = previous is not None and rng.random() < 0.9
        result = score_assessment(
            self.toolkit.definition,
            responses,
            age,
            previous=previous[1] if previous and linked else None,
            previous_targets=previous[2] if previous and linked else (),
        )
        review_on = completed + timedelta(days=84)
        targets = [
            (item_id, grade - 1)
            for item_id, grade in responses.items()
            if isinstance(grade, int) and grade >= 3
        ][:3]
        assessment_id = _new_id(rng)
        started_on = completed - timedelta(days=rng.randrange(15))
        seen = age >= 1 and rng.random() < 0.85
        words = seen and age >= 4
        body = {
            "responses": [
                {"item_id": item_id, "grade": grade, "evidence": None}
                for item_id, grade in responses.items()
            ],
            "overrides": [],
            "previous_assessment_id": str(previous[0]) if previous and linked else None,
            "child": child.ref,
            "toolkit_id": self.toolkit.definition.id,
            "toolkit_version": self.toolkit.definition.version,
            "assessor": {
                "name": "Demo Practitioner",
                "role": agency.referrer_role,
                "agency": agency.agency_name,
            },
            "started_on": started_on.isoformat(),
            "completed_on": completed.isoformat(),
            "strengths": "The family engages with support and the child is well attached.",
            "child_voice": {
                "seen": seen,
                "seen_alone": seen and age >= 8 and rng.random() < 0.6,
                "method": "conversation" if words else ("observation" if seen else None),
                "words": "I like it when we have tea together." if words else None,
                "reason_not_captured": (
                    None if words else "Too young to give views in words; observed at home."
                ),
            },
            "parent_carer_views": "Parents agree things have been hard and want help.",
            "targets": [
                {"item_id": item_id, "target_grade": grade, "review_on": review_on.isoformat()}
                for item_id, grade in targets
            ],
            "household_ref": household_ref,
        }
        self._rows["assessment"].append(
            (
                assessment_id,
                agency.client_id,
                agency.agency_type,
                agency.agency_name,
                child.id,
                self.toolkit.definition.id,
                self.toolkit.definition.version,
                self.toolkit.sha256,
                started_on,
                completed,
                age,
                household_ref,
                previous[0] if previous and linked else None,
                result.highest_area_grade,
                result.areas_at_concern,
                result.areas_at_significant_concern,
                result.level_of_need.level,
                orjson.dumps(body).decode(),
                result.model_dump_json(),
                _uk_moment(completed, 16, rng.randrange(60)) + timedelta(seconds=round_number),
            )
        )
        return assessment_id, result, targets


# --- Loading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoSummary:
    """What was loaded: rows per table and the headline proportions."""

    seed: int
    start: date
    end: date
    toolkit_id: str
    toolkit_version: str
    rows: dict[str, int]
    proportions: dict[str, float | None]


class DemoDataConflict(Exception):
    """The database already holds records the demo data would clash with."""


_DEMO_CLIENTS: Final = tuple(sorted({agency.client_id for agency in AGENCIES.values}))


async def _raw_connection(session: AsyncSession) -> Any:
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    return raw.driver_connection


class _BackgroundBatches:
    """Generate in a thread so Python builds the next batch while PostgreSQL stores this one.

    One generator in one thread: the sequence of random draws, hence the data, is unchanged.
    """

    def __init__(self, generator: DemoGenerator) -> None:
        self._generator = generator
        self._handoff: Handoff[DemoBatch] = Handoff(maxsize=2)
        self._thread = threading.Thread(target=self._produce, name="demo-data", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            for batch in self._generator.batches():
                if not self._handoff.put(batch):
                    return
        except Exception as error:  # handed to the consumer, which raises it
            self._handoff.put(error)
            return
        self._handoff.put(None)

    def next_batch(self) -> DemoBatch | None:
        """The next batch (blocking), or None after the last or once stopped; raises what the
        generator raised."""
        return self._handoff.get()

    def stop(self) -> None:
        self._handoff.stopped.set()
        self._thread.join()


async def _copy(connection: Any, table: str, rows: list[Row]) -> None:
    try:
        await connection.copy_records_to_table(
            table, records=rows, columns=list(TABLE_COLUMNS[table]), timeout=_LONG_S
        )
    except asyncpg.UniqueViolationError as error:
        raise DemoDataConflict(
            f"{table}: a generated identifier is already in the database "
            f"({error.constraint_name}); load demo data into a database without demo children"
        ) from error


@dataclass(frozen=True)
class _Deferred:
    """What a load into empty tables takes off them and puts back once every row is in."""

    indexes: list[Index]
    """Plain and unique indexes (not those behind a constraint)."""
    keys: list[PrimaryKeyConstraint | UniqueConstraint]
    foreign_keys: list[ForeignKeyConstraint]


_NOTHING_DEFERRED: Final = _Deferred(indexes=[], keys=[], foreign_keys=[])


async def _work_to_defer(session: AsyncSession) -> _Deferred:
    """The indexes, keys and foreign keys of the loaded tables, when every one of those tables is
    empty: building an index once after the load is much faster than growing it row by row (at a
    million referrals, random ids land all over indexes larger than the server's buffers), and
    checking a foreign key once for the whole table (one join) much faster than a trigger's
    look-up for every row. Into empty tables, a duplicate can only come from the generated rows
    themselves, and building the unique index finds it as surely as the copy would have. Keys
    that a table outside the load refers to stay in place."""
    for table in LOAD_ORDER:
        if await session.scalar(text(f"SELECT EXISTS (SELECT 1 FROM {table})")):  # noqa: S608
            return _NOTHING_DEFERRED
    tables = {"tables": list(LOAD_ORDER)}
    present = set(
        await session.scalars(
            text("SELECT indexname FROM pg_indexes WHERE tablename = ANY(CAST(:tables AS text[]))"),
            tables,
        )
    )
    constrained: dict[str, str] = {
        name: kind
        for name, kind in await session.execute(
            text(
                "SELECT conname, contype::text FROM pg_constraint "
                "WHERE conrelid = ANY(CAST(:tables AS regclass[]))"
            ),
            tables,
        )
    }
    referred_from_outside = set(
        await session.scalars(
            text(
                "SELECT DISTINCT confrelid::regclass::text FROM pg_constraint WHERE contype = 'f' "
                "AND confrelid = ANY(CAST(:tables AS regclass[])) "
                "AND NOT conrelid = ANY(CAST(:tables AS regclass[]))"
            ),
            tables,
        )
    )
    keys: list[PrimaryKeyConstraint | UniqueConstraint] = [
        constraint
        for table in LOAD_ORDER
        if table not in referred_from_outside
        for constraint in sorted(
            metadata.tables[table].constraints, key=lambda constraint: str(constraint.name)
        )
        if isinstance(constraint, PrimaryKeyConstraint | UniqueConstraint)
        and constrained.get(str(constraint.name)) in ("p", "u")
    ]
    return _Deferred(
        indexes=[
            index
            for table in LOAD_ORDER
            for index in sorted(metadata.tables[table].indexes, key=lambda index: str(index.name))
            if index.name in present and not (index.unique and table in referred_from_outside)
        ],
        keys=keys,
        foreign_keys=[
            constraint
            for table in LOAD_ORDER
            for constraint in sorted(
                metadata.tables[table].foreign_key_constraints, key=lambda fk: str(fk.name)
            )
            if constrained.get(str(constraint.name)) == "f"
        ],
    )


# The loaded referrals' derived columns, by the database functions the API's creates and
# withdrawals call, once the load is indexed (both read each child's referrals through the index
# on the child). Only children referred more than once have anything to derive: a child's only
# referral counts none and follows none (as loaded). The counts: `neglect_rereferral_counts`, the
# re-referral rule, for every such referral in one statement (the generator never withdraws a
# referral after a later one was received, so these are the counts the creates would have
# stored); `previous_received_at`: `neglect_relink_referrals`, for all those children at once.
# They run on the driver's connection with `_LONG_S` as its time limit; `$1` is the demo clients.
_REFERRED_AGAIN: Final = (
    "SELECT child_id FROM referral WHERE client_id = ANY($1::text[]) "
    "GROUP BY child_id HAVING count(*) > 1"
)
_COUNT_DEMO_REREFERRALS: Final = count_rereferrals_of(
    f"loaded.client_id = ANY($1::text[]) AND loaded.child_id IN ({_REFERRED_AGAIN})"
)
_RELINK_DEMO_REFERRALS: Final = (
    f"SELECT neglect_relink_referrals(p_child_ids => ARRAY({_REFERRED_AGAIN}))"
)
_TALLY_DEMO_REREFERRALS: Final = (
    "SELECT count(*) FROM referral "
    "WHERE client_id = ANY($1::text[]) AND rereferral AND status <> 'withdrawn'"
)
_OFFERS_LZ4: Final = (
    "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
)
"""Whether the server was built with LZ4 (PostgreSQL 14 and later, when built --with-lz4)."""
_LONG_S: Final = 24 * 3600.0
"""The driver's time limit for each of the load's statements (COPY of a batch, an index build, a
derivation over every referral): the connection's own limit is a request's, far too short."""


def _is_child_index_of_referral(index: Index) -> bool:
    """The index the re-referral rule's functions read a child's referrals through (not the
    partial one of those that recorded disabilities, which they cannot use)."""
    columns = list(index.expressions)
    return (
        index.table is not None
        and index.table.name == "referral"
        and bool(columns)
        and getattr(columns[0], "name", None) == "child_id"
        and index.dialect_options["postgresql"]["where"] is None
    )


async def load_demo_data(
    session: AsyncSession,
    options: DemoOptions,
    on_progress: Callable[[int], None] | None = None,
    on_indexing: Callable[[], None] | None = None,
) -> DemoSummary:
    """Publish the demonstration toolkit and load a synthetic partnership, in the session's
    transaction (the caller commits). `on_progress` is called with the number of children loaded
    after each batch.

    Into empty tables, their indexes, primary and unique keys and foreign keys are dropped first
    and put back after the load (`on_indexing` is called then), exactly as the migrations made
    them; check constraints stay and check every row. The referrals' derived columns are set by
    the database's own rules, set-based (`_COUNT_DEMO_REREFERRALS`, `_RELINK_DEMO_REFERRALS`).

    Raises `DemoDataConflict` when the database already holds demo records or identifiers the
    demo data would repeat.
    """
    already = await session.scalar(
        text("SELECT count(*) FROM referral WHERE client_id = ANY(CAST(:clients AS text[]))"),
        {"clients": list(_DEMO_CLIENTS)},
    )
    if already:
        raise DemoDataConflict(
            "the database already holds demo data; load it into a database without any"
        )
    published = await publish_demo_toolkit(session, published_by=PUBLISHER)
    toolkit = DemoToolkit(
        definition=definition_of(published.version), sha256=published.version.sha256
    )
    generator = DemoGenerator(options, toolkit)
    # Loading takes far longer than one request may.
    await session.execute(text("SET LOCAL statement_timeout = 0"))
    await session.execute(text("SET LOCAL maintenance_work_mem = '256MB'"))
    if await session.scalar(text(_OFFERS_LZ4)):
        # The large JSON documents (bodies, results) are compressed as they are copied; LZ4
        # costs a fraction of the CPU of the default (pglz) and reads back the same values.
        await session.execute(text("SET LOCAL default_toast_compression = lz4"))
    deferred = await _work_to_defer(session)
    sql_connection = await session.connection()
    for constraint in [*deferred.foreign_keys, *deferred.keys]:
        await sql_connection.execute(DropConstraint(constraint))
    for index in deferred.indexes:
        await sql_connection.run_sync(index.drop)
    connection = await _raw_connection(session)
    background = _BackgroundBatches(generator)
    loop = asyncio.get_running_loop()
    loaded = 0
    try:
        while (batch := await loop.run_in_executor(None, background.next_batch)) is not None:
            for table in LOAD_ORDER:
                rows = batch.rows[table]
                if rows:
                    await _copy(connection, table, rows)
            loaded += batch.children
            if on_progress is not None:
                on_progress(loaded)
    finally:
        background.stop()
    if deferred.indexes and on_indexing is not None:
        on_indexing()
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]

    async def put_back(keys: list[Any], indexes: list[Index]) -> None:
        statements: list[AddConstraint | CreateIndex] = [AddConstraint(key) for key in keys]
        statements += [CreateIndex(index) for index in indexes]
        for statement in statements:
            try:
                await connection.execute(str(statement.compile(dialect=dialect)), timeout=_LONG_S)
            except asyncpg.UniqueViolationError as error:
                raise DemoDataConflict(
                    f"the generated rows repeat an identifier ({error.constraint_name})"
                ) from error

    # The derivations read each child's referrals through the index on the child and rewrite a
    # referral they change by its key (a new row version, with an entry in every index of the
    # table): so those two are put back before them, the rest after.
    probed = [index for index in deferred.indexes if _is_child_index_of_referral(index)]
    referral_key = [
        key
        for key in deferred.keys
        if isinstance(key, PrimaryKeyConstraint) and key.table.name == "referral"
    ]
    await put_back(referral_key, probed)
    clients = list(_DEMO_CLIENTS)
    await connection.execute(_COUNT_DEMO_REREFERRALS, clients, timeout=_LONG_S)
    await connection.execute(_RELINK_DEMO_REFERRALS, clients, timeout=_LONG_S)
    await put_back(
        [key for key in deferred.keys if key not in referral_key],
        [index for index in deferred.indexes if index not in probed],
    )
    tally = generator.tally
    tally.rereferrals = await connection.fetchval(_TALLY_DEMO_REREFERRALS, clients, timeout=_LONG_S)
    await put_back(deferred.foreign_keys, [])
    return DemoSummary(
        seed=options.seed,
        start=options.start,
        end=options.end,
        toolkit_id=toolkit.definition.id,
        toolkit_version=toolkit.definition.version,
        rows={table: tally.rows[table] for table in LOAD_ORDER},
        proportions=tally.proportions(),
    )


def generate_rows(
    options: DemoOptions, toolkit: DemoToolkit
) -> tuple[dict[str, list[Row]], DemoTally]:
    """Every row in memory at once (for small demonstrations and tests), with the tallies."""
    generator = DemoGenerator(options, toolkit)
    rows: dict[str, list[Row]] = {table: [] for table in LOAD_ORDER}
    for batch in generator.batches():
        for table, batch_rows in batch.rows.items():
            rows[table].extend(batch_rows)
    return rows, generator.tally
