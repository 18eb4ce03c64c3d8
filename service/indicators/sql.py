"""The SQL behind every indicator: one statement per series, run inside PostgreSQL.

Each indicator is written as a *units* query: one row per thing counted (a referral, a plan, a
child, an appointment...) with the number of the bucket it falls in (`k`, 1 for the first period),
the day it is counted on (`day`, for the age band), `child_id`, any column a breakdown reads, and
its contribution to the numerator (`num`) and denominator (`den`); or, for some indicators without
a breakdown, one row per period with its totals already summed. `build_series_sql` wraps it in
the statement that generates the periods (`generate_series`), aggregates the units per period and
breakdown group (and the period totals from those cells, so one scan gives both), fills absent
groups with zeros and computes the value. Only those aggregates leave the database.

Beside each cell's counts the statement sums the record keys of the records counted (`nkey` for
the numerator, `dkey` for the denominator): every unit names the record it counts (a referral, a
plan, a conference, an assessment, a case event, an audit, or the child where children are
counted), whose `record_key` was drawn when it was stored. Those sums are the cell keys of the
cell-key method (`perturbation.py`); keys never leave the database one by one.

Written for scale (a million referrals; `bench/indicators.sh` times every series against a plain
count(*) over the referral table):
- Flows are bucketed with `width_bucket` against the array of bucket start days (for referrals,
  the instants at which those days begin in England), computed once per statement: almost free
  per row, where turning every `received_at` into a day in England is not.
- Without a breakdown only the period totals are needed, and the busiest indicators produce
  them directly: referral flows read each period's referrals with an index range scan and
  count them (no per-row bucketing, no grouping of a million units), and at-period-end counts
  add each plan (or span of a plan's category) from its first period and remove it after its
  last, then take a running sum, instead of a row per plan and period. With a breakdown each
  thing counted is still one unit, so the groups can be read from it.
- Point-in-time units find the periods whose last day a plan covers with `width_bucket` over
  the sorted last days, not by testing every plan against every period.
- Date filters are ranges on indexed columns, and the indexes the indicators read carry the
  columns they need (`INCLUDE`), so the scans are index-only: `referral (received_at)` and
  `(child_id, received_at, id)`, `case_event (event_type, occurred_on)` with `details` and
  `(child_id, occurred_on)` with `event_type`, `assessment (completed_on)` and
  `(child_id, toolkit_id, completed_on, created_at)`. Look-ups per unit are index probes, made in
  child order so that they read the index in order, or window functions over an index's order.

Bound parameters of every statement: `first_start`, `last_start` (dates: the first and last
bucket's first day; for `snapshot`, of their month), `step` (an interval as text), `range_start`,
`range_end` (the half-open range of days the buckets cover), `fixed_groups` (text[]), for the
ICPC timeliness indicator `holidays` (date[]: England and Wales bank holidays), and for the audit
gradings `good_grades` (text[]: the audit grades that count as good or better).

SQL text is assembled only from the fixed fragments in this module, chosen by ids that have been
checked against the catalogue; every value is a bound parameter.
"""

# Every statement here is an f-string of this module's own fixed fragments, picked by ids
# already checked against the catalogue; values are always bound parameters.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Final

from schemas.case_audits import AUDITED_WORK, GOOD_OR_BETTER_GRADES
from schemas.case_events import FEEDBACK_FROM
from schemas.indicators import Breakdown, Period, Unit
from schemas.vocabulary import NEGLECT_FORMS
from service.models.referrals import RECORDED_DISABILITIES
from service.working_days import bank_holidays

UK_ZONE: Final = "Europe/London"

AGE_BANDS: Final = ("under 1", "1-4", "5-9", "10-15", "16+")
AGE_NOT_KNOWN: Final = "not known"

DISABILITY_NONE: Final = "none"
DISABILITY_ANY: Final = "any"
DISABILITY_NOT_KNOWN: Final = "not known"

FIXED_GROUPS: Final[dict[Breakdown, tuple[str, ...]]] = {
    "age_band": AGE_BANDS,
    "sex": ("M", "F", "U"),
    "neglect_form": NEGLECT_FORMS,
    "plan_type": ("cp", "cin"),
    "ethnicity": (),
    "referral_source": (),
    "agency_type": (),
    "disability": (DISABILITY_NONE, DISABILITY_ANY, DISABILITY_NOT_KNOWN),
    "feedback_from": FEEDBACK_FROM,
    "audited_work": AUDITED_WORK,
}
"""Groups shown in every period even when empty (zeros are shown); other groups appear when seen
anywhere in the requested range."""

SUBGROUPS_OF: Final[dict[Breakdown, str]] = {"disability": DISABILITY_ANY}
"""Breakdowns whose fixed groups partition each period's total while every other group (one per
CIN disability code) is a part of the fixed group named here: a child with several codes is in
several of them. Disclosure control treats the two sets of cells separately."""

STEPS: Final[dict[Period, str]] = {
    "month": "1 month",
    "snapshot": "1 month",
    "quarter": "3 months",
    "year": "1 year",
    "financial_year": "1 year",
}

# Half-open range filters on a date column and on a timestamptz taken as a day in England.
_RANGE_START = "CAST(:range_start AS date)"
_RANGE_END = "CAST(:range_end AS date)"
_UK_RANGE_START = f"({_RANGE_START}::timestamp AT TIME ZONE '{UK_ZONE}')"
_UK_RANGE_END = f"({_RANGE_END}::timestamp AT TIME ZONE '{UK_ZONE}')"
# asyncpg types a parameter from its cast; an interval parameter would need a timedelta, which
# cannot say "1 month", so the step is sent as text.
_STEP = "CAST(CAST(:step AS text) AS interval)"
_FIRST_START = "CAST(:first_start AS date)"
_SERIES = (
    f"generate_series({_FIRST_START}::timestamp, CAST(:last_start AS date)::timestamp, {_STEP})"
)
_REFERRAL_DAY = f"(r.received_at AT TIME ZONE '{UK_ZONE}')::date"

# The first day of every bucket, and the instant each of those days begins in England: the
# thresholds `width_bucket` numbers the buckets by. Uncorrelated, so computed once per statement.
_BUCKET_DAYS = f"(SELECT array_agg(gs::date ORDER BY gs) FROM {_SERIES} AS gs)"
_BUCKET_INSTANTS = (
    f"(SELECT array_agg(gs AT TIME ZONE '{UK_ZONE}' ORDER BY gs) FROM {_SERIES} AS gs)"
)
_REFERRAL_BUCKET = f"width_bucket(r.received_at, {_BUCKET_INSTANTS})"


def _in_range(column: str) -> str:
    return f"{column} >= {_RANGE_START} AND {column} < {_RANGE_END}"


def _bucket(day: str) -> str:
    """The number of the bucket holding the date expression `day` (1 for the first bucket)."""
    return f"width_bucket({day}, {_BUCKET_DAYS})"


@dataclass(frozen=True)
class UnitsQuery:
    """An indicator's units query and how the wrapper must treat it.

    `ctes` are extra common table expressions the units need. `totals_in_units` means the units
    already carry the period totals as rows whose `grp` column is NULL (the group column is then
    `units.grp`); `shared_denominator` means every cell's denominator is its period's total
    denominator (a share of all, not of the group).

    Record keys (disclosure control, `perturbation.py`): each unit names the record it counts in
    `rkey`, that record's `record_key`; with `child_keyed` the things counted are children, and
    the wrapper takes the child's key instead (the units then need no `rkey`). `period_rows`
    means the units are already one row per period with its totals, and carry the summed keys of
    the records in the numerator and the denominator as `nkey` and `dkey`.
    """

    sql: str
    ctes: str = ""
    totals_in_units: bool = False
    shared_denominator: bool = False
    child_keyed: bool = False
    period_rows: bool = False


# --- Shared building blocks ------------------------------------------------------------------

_REFERRALS_IN_RANGE = (
    "FROM referral r WHERE r.status <> 'withdrawn' "
    f"AND r.received_at >= {_UK_RANGE_START} AND r.received_at < {_UK_RANGE_END}"
)

# A referral imported from the CIN census records no concerns (NULL), and is left out of the
# indicators about concerns; the column is in the referral indexes the scans read.
_CONCERNS_RECORDED = "AND r.concern_categories IS NOT NULL"

_CP_PLANS_IN_RANGE = (
    f"p.plan_type = 'cp' AND p.started_on < {_RANGE_END} "
    f"AND (p.ended_on IS NULL OR p.ended_on > {_RANGE_START})"
)

# Each CP plan's category over time, as spans [lo, hi) of days on which the plan is open with
# that category: the initial category until the first change, then each change until the next
# (the later of two same-day changes wins: the earlier one's span is empty). Only plans that can
# be open on some day of the range are read.
_CP_SPANS_CTE = f"""
cp_spans AS (
    SELECT p.child_id, p.initial_category AS category, p.started_on AS lo,
           least(COALESCE(p.ended_on, 'infinity'::date),
                 COALESCE(first_change.changed_on, 'infinity'::date)) AS hi,
           p.record_key AS rkey
    FROM care_plan p
    LEFT JOIN (
        SELECT care_plan_id, min(changed_on) AS changed_on
        FROM care_plan_category_change GROUP BY care_plan_id
    ) first_change ON first_change.care_plan_id = p.id
    WHERE {_CP_PLANS_IN_RANGE}
    UNION ALL
    SELECT p.child_id, ch.category, greatest(p.started_on, ch.changed_on),
           least(COALESCE(p.ended_on, 'infinity'::date),
                 COALESCE(lead(ch.changed_on) OVER (
                     PARTITION BY ch.care_plan_id ORDER BY ch.changed_on, ch.id
                 ), 'infinity'::date)),
           p.record_key
    FROM care_plan_category_change ch JOIN care_plan p ON p.id = ch.care_plan_id
    WHERE {_CP_PLANS_IN_RANGE}
),"""


def _events(event_type: str) -> str:
    return f"FROM case_event e WHERE e.event_type = '{event_type}' AND {_in_range('e.occurred_on')}"


# --- Points in time ----------------------------------------------------------------------------
# An at-period-end indicator counts what is open on each bucket's last day, its point in time.
# The buckets whose point falls in [lo, hi) run from the first point on or after lo to the last
# before hi; `width_bucket` over the sorted points counts the points before a day.

_POINTS = f"(SELECT array_agg((gs + {_STEP})::date - 1 ORDER BY gs) FROM {_SERIES} AS gs)"
_POINT = f"({_POINTS})[k.k]"


def _first_bucket(lo: str) -> str:
    """The first bucket whose point in time is on or after the date `lo`."""
    return f"(width_bucket({lo} - 1, {_POINTS}) + 1)"


def _last_bucket(hi: str) -> str:
    """The last bucket whose point in time is before `hi` (a date, or 'infinity')."""
    return f"width_bucket(least({hi}, {_RANGE_END}) - 1, {_POINTS})"


def _covered_buckets(lo: str, hi: str) -> str:
    """`generate_series` of the buckets whose point in time is on or after `lo` and before `hi`;
    use it as `CROSS JOIN LATERAL ... AS k(k)`, with `_POINT` as the day."""
    return f"generate_series({_first_bucket(lo)}, {_last_bucket(hi)})"


def _open_span_units(spans: str, breakdown: Breakdown | None, columns: str = "") -> UnitsQuery:
    """Units of an at-period-end indicator from `spans`, rows (child_id, lo, hi, num, den, rkey,
    and `columns`) that each count `num` and `den` on every day in [lo, hi); `cp_spans` is
    available.

    With a breakdown, one unit per span and bucket whose point it covers. Without one only the
    totals matter, so each span adds its counts from its first bucket on and takes them away
    after its last, and a running sum over the buckets gives the totals: a pass over the spans
    instead of a row per span and period.
    """
    if breakdown is not None:
        return UnitsQuery(
            ctes=_CP_SPANS_CTE,
            sql=f"""
        SELECT k.k, {_POINT} AS day, s.child_id, {columns} s.num, s.den, s.rkey
        FROM {spans} s CROSS JOIN LATERAL {_covered_buckets("s.lo", "s.hi")} AS k(k)""",
        )
    return UnitsQuery(
        ctes=f"""{_CP_SPANS_CTE}
span_buckets AS MATERIALIZED (
    SELECT first_k, last_k, num, den, nkey, dkey
    FROM (
        SELECT {_first_bucket("s.lo")} AS first_k, {_last_bucket("s.hi")} AS last_k, s.num, s.den,
               CASE WHEN s.num <> 0 THEN s.rkey ELSE 0 END AS nkey,
               CASE WHEN s.den <> 0 THEN s.rkey ELSE 0 END AS dkey
        FROM {spans} s
    ) b
    WHERE first_k <= last_k
),""",
        sql="""
        SELECT p.k, sum(COALESCE(d.num, 0)) OVER (ORDER BY p.k) AS num,
               sum(COALESCE(d.den, 0)) OVER (ORDER BY p.k) AS den,
               sum(COALESCE(d.nkey, 0)) OVER (ORDER BY p.k) AS nkey,
               sum(COALESCE(d.dkey, 0)) OVER (ORDER BY p.k) AS dkey
        FROM periods p
        LEFT JOIN (
            SELECT k, sum(num) AS num, sum(den) AS den, sum(nkey) AS nkey, sum(dkey) AS dkey
            FROM (
                SELECT first_k AS k, sum(num) AS num, sum(den) AS den, sum(nkey) AS nkey,
                       sum(dkey) AS dkey
                FROM span_buckets GROUP BY first_k
                UNION ALL
                SELECT last_k + 1, -sum(num), -sum(den), -sum(nkey), -sum(dkey)
                FROM span_buckets GROUP BY last_k
            ) changes
            GROUP BY k
        ) d ON d.k = p.k""",
        period_rows=True,
    )


def _referral_period_totals(num_condition: str, condition: str = "") -> UnitsQuery:
    """Units of a referral flow without a breakdown: one row per bucket with its totals, each
    bucket's referrals read by an index range scan on `received_at` (no per-row bucketing)."""
    return UnitsQuery(
        period_rows=True,
        sql=f"""
        SELECT p.k, f.num, f.den, f.nkey, f.dkey
        FROM periods p
        CROSS JOIN LATERAL (
            SELECT count(*) FILTER (WHERE {num_condition}) AS num, count(*) AS den,
                   COALESCE(sum(r.record_key) FILTER (WHERE {num_condition}), 0) AS nkey,
                   COALESCE(sum(r.record_key), 0) AS dkey
            FROM referral r
            WHERE r.status <> 'withdrawn' {condition}
              AND r.received_at >= (p.period_start::timestamp AT TIME ZONE '{UK_ZONE}')
              AND r.received_at < (p.period_end::timestamp AT TIME ZONE '{UK_ZONE}')
        ) f""",
    )


# --- One units query per indicator -------------------------------------------------------------


def _neglect_referral_share(breakdown: Breakdown | None) -> UnitsQuery:
    is_neglect = "CASE WHEN 'neglect' = ANY(r.concern_categories) THEN 1 ELSE 0 END"
    if breakdown == "neglect_form":
        # One row per form cited (a referral citing two forms counts under each), plus one
        # total row per referral; each cell is a share of all referrals received.
        return UnitsQuery(
            sql=f"""
            SELECT {_REFERRAL_BUCKET} AS k, {_REFERRAL_DAY} AS day, r.child_id,
                   f.form AS grp, 1 AS num, 0 AS den, r.record_key AS rkey
            FROM referral r CROSS JOIN LATERAL unnest(r.neglect_forms) AS f(form)
            WHERE r.status <> 'withdrawn'
              AND r.received_at >= {_UK_RANGE_START} AND r.received_at < {_UK_RANGE_END}
            UNION ALL
            SELECT {_REFERRAL_BUCKET}, {_REFERRAL_DAY}, r.child_id, NULL, {is_neglect}, 1,
                   r.record_key
            {_REFERRALS_IN_RANGE} {_CONCERNS_RECORDED}""",
            totals_in_units=True,
            shared_denominator=True,
        )
    if breakdown is None:
        return _referral_period_totals("'neglect' = ANY(r.concern_categories)", _CONCERNS_RECORDED)
    return UnitsQuery(
        sql=f"""
        SELECT {_REFERRAL_BUCKET} AS k, {_REFERRAL_DAY} AS day, r.child_id,
               r.referral_source, r.agency_type, {is_neglect} AS num, 1 AS den,
               r.record_key AS rkey
        {_REFERRALS_IN_RANGE} {_CONCERNS_RECORDED}"""
    )


def _cp_plan_neglect_share(breakdown: Breakdown | None) -> UnitsQuery:
    # One unit per child: a child has at most one CP plan open on any day (the case-events API
    # refuses overlapping plans), and a plan has one category on any day.
    spans = """(
            SELECT child_id, lo, hi, CASE WHEN category = 'NEG' THEN 1 ELSE 0 END AS num, 1 AS den,
                   rkey
            FROM cp_spans
        )"""
    return _open_span_units(spans, breakdown)


def _cp_plan_starts_neglect_share(breakdown: Breakdown | None) -> UnitsQuery:
    return UnitsQuery(
        sql=f"""
        SELECT {_bucket("p.started_on")} AS k, p.started_on AS day, p.child_id,
               CASE WHEN p.initial_category = 'NEG' THEN 1 ELSE 0 END AS num, 1 AS den,
               p.record_key AS rkey
        FROM care_plan p WHERE p.plan_type = 'cp' AND {_in_range("p.started_on")}"""
    )


def _icpc_neglect_children(breakdown: Breakdown | None) -> UnitsQuery:
    # Each child once per period, aged at their first such conference in it.
    return UnitsQuery(
        sql=f"""
        SELECT DISTINCT ON (k, child_id) k, day, child_id, num, den
        FROM (
            SELECT {_bucket("i.held_on")} AS k, i.held_on AS day, i.child_id,
                   1 AS num, 0 AS den
            FROM icpc i WHERE 'NEG' = ANY(i.categories) AND {_in_range("i.held_on")}
        ) x
        ORDER BY k, child_id, day""",
        child_keyed=True,
    )


def _repeat_cp_plan_neglect(breakdown: Breakdown | None) -> UnitsQuery:
    # A child counts once per period, as a repeat if any neglect plan they started in it was.
    return UnitsQuery(
        sql=f"""
        SELECT k, min(day) AS day, child_id, max(num) AS num, 1 AS den
        FROM (
            SELECT {_bucket("p.started_on")} AS k, p.started_on AS day, p.child_id,
                   CASE WHEN p.previous_cp_plans > 0 OR EXISTS (
                       SELECT 1 FROM care_plan earlier
                       WHERE earlier.child_id = p.child_id AND earlier.plan_type = 'cp'
                         AND earlier.started_on < p.started_on
                   ) THEN 1 ELSE 0 END AS num
            FROM care_plan p
            WHERE p.plan_type = 'cp' AND p.initial_category = 'NEG'
              AND {_in_range("p.started_on")}
        ) x
        GROUP BY k, child_id""",
        child_keyed=True,
    )


def _cp_plan_neglect_domestic_abuse_share(breakdown: Breakdown | None) -> UnitsQuery:
    return UnitsQuery(
        sql=f"""
        SELECT {_bucket("p.started_on")} AS k, p.started_on AS day, p.child_id,
               CASE WHEN p.domestic_abuse_focus THEN 1 ELSE 0 END AS num, 1 AS den,
               p.record_key AS rkey
        FROM care_plan p
        WHERE p.plan_type = 'cp' AND p.initial_category = 'NEG' AND {_in_range("p.started_on")}
          AND p.domestic_abuse_focus IS NOT NULL"""
    )


def _neglect_plans_open(breakdown: Breakdown | None) -> UnitsQuery:
    spans = f"""(
            SELECT child_id, 'cp' AS plan_type, lo, hi, 1 AS num, 0 AS den, rkey
            FROM cp_spans WHERE category = 'NEG'
            UNION ALL
            SELECT p.child_id, 'cin', p.started_on, COALESCE(p.ended_on, 'infinity'::date), 1, 0,
                   p.record_key
            FROM care_plan p
            WHERE p.plan_type = 'cin' AND p.neglect AND p.started_on < {_RANGE_END}
              AND (p.ended_on IS NULL OR p.ended_on > {_RANGE_START})
        )"""
    return _open_span_units(spans, breakdown, columns="s.plan_type,")


def _toolkit_assessments(breakdown: Breakdown | None) -> UnitsQuery:
    return UnitsQuery(
        sql=f"""
        SELECT {_bucket("a.completed_on")} AS k, a.completed_on AS day, a.child_id,
               a.agency_type, 1 AS num, 0 AS den, a.record_key AS rkey
        FROM assessment a WHERE {_in_range("a.completed_on")}"""
    )


def _early_help_neglect_identified(breakdown: Breakdown | None) -> UnitsQuery:
    return UnitsQuery(
        sql=f"""
        SELECT {_bucket("e.occurred_on")} AS k, e.occurred_on AS day, e.child_id,
               CASE WHEN (e.details ->> 'neglect_considered')::boolean
                     AND (e.details ->> 'neglect_identified')::boolean THEN 1 ELSE 0 END AS num,
               1 AS den, e.record_key AS rkey
        {_events("early_help_assessment_completed")}"""
    )


def _early_help_neglect_stepped_up_share(breakdown: Breakdown | None) -> UnitsQuery:
    # Each child once per period, from their first such assessment in it; in child order, so that
    # the look-ups read the case event index in order.
    return UnitsQuery(
        sql=f"""
        SELECT x.k, x.day, x.child_id,
               CASE WHEN EXISTS (
                   SELECT 1 FROM case_event up
                   WHERE up.child_id = x.child_id AND up.event_type = 'stepped_up_to_social_care'
                     AND up.occurred_on >= x.day
                     AND up.occurred_on <= (x.day + interval '1 year')::date
               ) THEN 1 ELSE 0 END AS num,
               1 AS den
        FROM (
            SELECT DISTINCT ON (child_id, k) k, day, child_id
            FROM (
                SELECT {_bucket("e.occurred_on")} AS k, e.occurred_on AS day, e.child_id
                {_events("early_help_assessment_completed")}
                  AND (e.details ->> 'neglect_identified')::boolean
            ) identified
            ORDER BY child_id, k, day
        ) x""",
        child_keyed=True,
    )


def _rereferral_after_toolkit_share(breakdown: Breakdown | None) -> UnitsQuery:
    # "Within 12 months": received from the day after the assessment to the same date a year on.
    # Each child's first assessment in the period: only the agency breakdown needs to know which
    # assessment that was; otherwise its day is enough, and grouping is cheaper than sorting.
    # The units come in child order, so that the look-ups read the referral index in order.
    featured = f"""
                SELECT {_bucket("a.completed_on")} AS k, a.completed_on AS day,
                       a.child_id, a.agency_type, a.created_at
                FROM assessment a
                WHERE a.areas_at_concern > 0 AND {_in_range("a.completed_on")}"""
    if breakdown == "agency_type":
        firsts = f"""
            SELECT DISTINCT ON (child_id, k) k, day, child_id, agency_type
            FROM ({featured}
            ) featured
            ORDER BY child_id, k, day, created_at"""
    else:
        firsts = f"""
            SELECT k, min(day) AS day, child_id, NULL::text AS agency_type
            FROM ({featured}
            ) featured
            GROUP BY k, child_id
            ORDER BY child_id"""
    return UnitsQuery(
        sql=f"""
        SELECT x.k, x.day, x.child_id, x.agency_type,
               CASE WHEN EXISTS (
                   SELECT 1 FROM referral r
                   WHERE r.child_id = x.child_id AND r.status <> 'withdrawn'
                     AND r.received_at >= (CAST(x.day + 1 AS timestamp) AT TIME ZONE '{UK_ZONE}')
                     AND r.received_at < (CAST((x.day + interval '1 year')::date + 1 AS timestamp)
                                          AT TIME ZONE '{UK_ZONE}')
               ) THEN 1 ELSE 0 END AS num,
               1 AS den
        FROM ({firsts}
        ) x""",
        child_keyed=True,
    )


def _health_appointment_attendance(breakdown: Breakdown | None) -> UnitsQuery:
    return UnitsQuery(
        sql=f"""
        SELECT {_bucket("e.occurred_on")} AS k, e.occurred_on AS day, e.child_id,
               CASE WHEN (e.details ->> 'attended')::boolean THEN 1 ELSE 0 END AS num, 1 AS den,
               e.record_key AS rkey
        {_events("health_appointment")}"""
    )


def _family_feedback(breakdown: Breakdown | None) -> UnitsQuery:
    return UnitsQuery(
        sql=f"""
        SELECT {_bucket("e.occurred_on")} AS k, e.occurred_on AS day, e.child_id,
               e.details ->> 'from_whom' AS feedback_from,
               (e.details ->> 'rating')::int AS num, 1 AS den, e.record_key AS rkey
        {_events("feedback_received")}"""
    )


def _rereferral_rate_12m(breakdown: Breakdown | None) -> UnitsQuery:
    # The child's latest earlier referral (stored on each referral, withdrawn ones left out) is
    # enough: if it is not within 12 months, none is.
    # "Within 12 months" compares days in England: the previous referral's day is on or after the
    # same date a year before. Converting instants to days costs, so it is only done when the
    # gap is near a year: under 363 days apart the days are always within a year (clocks in
    # England move by an hour at most), over 368 days never.
    uk_day = f"AT TIME ZONE '{UK_ZONE}')::date"
    within = f"""(r.previous_received_at IS NOT NULL
                 AND (r.received_at - r.previous_received_at < interval '363 days'
                      OR (r.received_at - r.previous_received_at <= interval '368 days'
                          AND (r.previous_received_at {uk_day}
                              >= ((r.received_at {uk_day} - interval '1 year')::date)))"""
    if breakdown is None:
        return _referral_period_totals(within)
    return UnitsQuery(
        sql=f"""
        SELECT {_REFERRAL_BUCKET} AS k, {_REFERRAL_DAY} AS day, r.child_id,
               r.referral_source, r.agency_type,
               CASE WHEN {within} THEN 1 ELSE 0 END AS num,
               1 AS den, r.record_key AS rkey
        {_REFERRALS_IN_RANGE}"""
    )


def _referral_decision_24h_share(breakdown: Breakdown | None) -> UnitsQuery:
    if breakdown is None:
        return _referral_period_totals(
            "r.decided_at IS NOT NULL AND r.decided_at <= r.decision_due_at",
            "AND (r.decided_at IS NOT NULL OR r.decision_due_at <= now())",
        )
    return UnitsQuery(
        sql=f"""
        SELECT {_REFERRAL_BUCKET} AS k, {_REFERRAL_DAY} AS day, r.child_id,
               r.referral_source, r.agency_type,
               CASE WHEN r.decided_at IS NOT NULL AND r.decided_at <= r.decision_due_at
                    THEN 1 ELSE 0 END AS num,
               1 AS den, r.record_key AS rkey
        {_REFERRALS_IN_RANGE}
          AND (r.decided_at IS NOT NULL OR r.decision_due_at <= now())"""
    )


def _icpc_within_15_working_days_share(breakdown: Breakdown | None) -> UnitsQuery:
    # The 15th working day after the start, once per start date: 15 working days never span more
    # than 60 calendar days. MATERIALIZED: inlined, a plan misjudging the conferences' count (a
    # table not yet analysed) computes every deadline again for every conference.
    return UnitsQuery(
        ctes=f"""
timed_icpcs AS MATERIALIZED (
    SELECT i.held_on, i.child_id, s.started_on, i.record_key
    FROM icpc i
    JOIN section47_enquiry s ON s.child_id = i.child_id AND s.enquiry_ref = i.enquiry_ref
    WHERE {_in_range("i.held_on")}
),
deadlines AS MATERIALIZED (
    SELECT starts.started_on, deadline.day
    FROM (SELECT DISTINCT started_on FROM timed_icpcs) starts
    LEFT JOIN LATERAL (
        SELECT starts.started_on + n AS day
        FROM generate_series(1, 60) AS n
        WHERE extract(isodow FROM starts.started_on + n) < 6
          AND starts.started_on + n <> ALL (CAST(:holidays AS date[]))
        ORDER BY n OFFSET 14 LIMIT 1
    ) deadline ON true
),""",
        sql=f"""
        SELECT {_bucket("t.held_on")} AS k, t.held_on AS day, t.child_id,
               CASE WHEN t.held_on <= d.day THEN 1 ELSE 0 END AS num, 1 AS den,
               t.record_key AS rkey
        FROM timed_icpcs t LEFT JOIN deadlines d ON d.started_on = t.started_on""",
    )


def _last_reassessments(num: str) -> UnitsQuery:
    """Units of the re-assessment indicators: each child's last re-assessment in each period, one
    unit with `num` (an expression over `highest` and `previous_highest`, the highest area grades
    of the re-assessment and of the assessment before) as its numerator and 1 as denominator."""
    # The assessment before: the one named as previous, otherwise the child's latest earlier one
    # with the same toolkit (the last of the earlier peer group in completion order, from a
    # window over the child's assessments). Re-assessments whose grades cannot be compared are
    # left out.
    return UnitsQuery(
        sql=f"""
        SELECT k, day, child_id, agency_type, {num} AS num, 1 AS den
        FROM (
            SELECT DISTINCT ON (k, child_id)
                   k, day, child_id, agency_type, highest, previous_highest
            FROM (
                SELECT {_bucket("a.completed_on")} AS k, a.completed_on AS day,
                       a.child_id, a.agency_type, a.created_at,
                       a.highest_area_grade AS highest,
                       CASE
                           WHEN a.previous_assessment_id IS NULL
                             OR a.previous_assessment_id = a.latest_id THEN a.latest_highest
                           ELSE (SELECT named.highest_area_grade FROM assessment named
                                 WHERE named.id = a.previous_assessment_id)
                       END AS previous_highest
                FROM (
                    SELECT b.completed_on, b.child_id, b.agency_type, b.created_at,
                           b.highest_area_grade, b.previous_assessment_id,
                           last_value(b.id) OVER earlier AS latest_id,
                           last_value(b.highest_area_grade) OVER earlier AS latest_highest
                    FROM assessment b
                    WHERE b.completed_on < {_RANGE_END}
                    WINDOW earlier AS (
                        PARTITION BY b.child_id, b.toolkit_id ORDER BY b.completed_on, b.created_at
                        GROUPS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
                    )
                ) a
                WHERE a.completed_on >= {_RANGE_START}
            ) reassessed
            WHERE highest IS NOT NULL AND previous_highest IS NOT NULL
            ORDER BY k, child_id, day DESC, created_at DESC
        ) last_in_period""",
        child_keyed=True,
    )


def _toolkit_improvement_share(breakdown: Breakdown | None) -> UnitsQuery:
    return _last_reassessments("CASE WHEN highest < previous_highest THEN 1 ELSE 0 END")


def _toolkit_mean_grade_change(breakdown: Breakdown | None) -> UnitsQuery:
    # Lower grades are better, so the fall in the highest grade is the improvement.
    return _last_reassessments("previous_highest - highest")


def _neglect_audits(num_condition: str) -> UnitsQuery:
    """Units of the case-audit indicators: each audit held in the period of a case in which
    neglect featured, counting in the numerator when `num_condition` holds (`:good_grades` is
    the configured grades that count as good or better)."""
    return UnitsQuery(
        sql=f"""
        SELECT {_bucket("ca.audited_on")} AS k, ca.audited_on AS day, ca.child_id,
               ca.audited_work, CASE WHEN {num_condition} THEN 1 ELSE 0 END AS num, 1 AS den,
               ca.record_key AS rkey
        FROM case_audit ca
        WHERE ca.neglect_featured AND {_in_range("ca.audited_on")}"""
    )


_GOOD_OR_BETTER = "ANY(CAST(:good_grades AS text[]))"


def _audit_neglect_impact_good_share(breakdown: Breakdown | None) -> UnitsQuery:
    return _neglect_audits(f"ca.impact_grade = {_GOOD_OR_BETTER}")


def _audit_neglect_toolkit_used_share(breakdown: Breakdown | None) -> UnitsQuery:
    return _neglect_audits("ca.toolkit_used")


def _audit_neglect_practice_effective_share(breakdown: Breakdown | None) -> UnitsQuery:
    return _neglect_audits(f"ca.practice_grade = {_GOOD_OR_BETTER}")


UNITS: Final[dict[str, Callable[[Breakdown | None], UnitsQuery]]] = {
    "neglect_referral_share": _neglect_referral_share,
    "cp_plan_neglect_share": _cp_plan_neglect_share,
    "cp_plan_starts_neglect_share": _cp_plan_starts_neglect_share,
    "icpc_neglect_children": _icpc_neglect_children,
    "repeat_cp_plan_neglect": _repeat_cp_plan_neglect,
    "cp_plan_neglect_domestic_abuse_share": _cp_plan_neglect_domestic_abuse_share,
    "neglect_plans_open": _neglect_plans_open,
    "toolkit_assessments": _toolkit_assessments,
    "early_help_neglect_identified": _early_help_neglect_identified,
    "early_help_neglect_stepped_up_share": _early_help_neglect_stepped_up_share,
    "rereferral_after_toolkit_share": _rereferral_after_toolkit_share,
    "health_appointment_attendance": _health_appointment_attendance,
    "family_feedback": _family_feedback,
    "rereferral_rate_12m": _rereferral_rate_12m,
    "referral_decision_24h_share": _referral_decision_24h_share,
    "icpc_within_15_working_days_share": _icpc_within_15_working_days_share,
    "toolkit_improvement_share": _toolkit_improvement_share,
    "toolkit_mean_grade_change": _toolkit_mean_grade_change,
    "audit_neglect_impact_good_share": _audit_neglect_impact_good_share,
    "audit_neglect_toolkit_used_share": _audit_neglect_toolkit_used_share,
    "audit_neglect_practice_effective_share": _audit_neglect_practice_effective_share,
}
"""The units query of every indicator in the catalogue, by indicator id."""

NEEDS_HOLIDAYS: Final = frozenset({"icpc_within_15_working_days_share"})
NEEDS_GOOD_GRADES: Final = frozenset(
    {"audit_neglect_impact_good_share", "audit_neglect_practice_effective_share"}
)
"""Indicators that read `:good_grades` (text[]: the audit grades counted as good or better)."""


# --- The wrapper -------------------------------------------------------------------------------

_BIRTH = "COALESCE(c.date_of_birth, c.expected_date_of_birth)"
# Whole years on the day: the child is N or older when the day N years back is on or after the
# birth (someone born on 29 February turns N on 1 March), and under 1 before being born.
_AGE_BAND = f"""CASE
    WHEN {_BIRTH} IS NULL THEN '{AGE_NOT_KNOWN}'
    WHEN {_BIRTH} > u.day - interval '1 year' THEN 'under 1'
    WHEN {_BIRTH} > u.day - interval '5 years' THEN '1-4'
    WHEN {_BIRTH} > u.day - interval '10 years' THEN '5-9'
    WHEN {_BIRTH} > u.day - interval '16 years' THEN '10-15'
    ELSE '16+'
END"""

_GROUP_EXPRESSIONS: Final[dict[Breakdown, str]] = {
    "age_band": _AGE_BAND,
    "sex": "COALESCE(c.sex, 'U')",
    "ethnicity": f"COALESCE(c.ethnicity, '{AGE_NOT_KNOWN}')",
    "referral_source": "u.referral_source",
    "agency_type": "u.agency_type",
    "plan_type": "u.plan_type",
    "neglect_form": "u.grp",
    "feedback_from": "u.feedback_from",
    "audited_work": "u.audited_work",
    "disability": "g.grp",
}
_CHILD_BREAKDOWNS: Final = frozenset({"age_band", "sex", "ethnicity"})

# The unit's child's disability groups (`g.grp`): one of none / any / not known, and each CIN
# disability code, as recorded on the child's latest referral (withdrawn or not) that recorded
# any; not known when none did. NONE cannot be sent with another code. The look-up's condition
# is the predicate of the partial index on the child's referrals that recorded disabilities, so
# it reads only those (a child with none recorded costs one index probe, not a read of each of
# its referrals' bodies).
_DISABILITY_GROUPS = f"""
    LEFT JOIN LATERAL (
        SELECT r.body -> 'child' -> 'disabilities' AS codes
        FROM referral r
        WHERE r.child_id = u.child_id AND {RECORDED_DISABILITIES}
        ORDER BY r.received_at DESC, r.id DESC
        LIMIT 1
    ) d ON true
    CROSS JOIN LATERAL (
        SELECT CASE WHEN d.codes IS NULL THEN '{DISABILITY_NOT_KNOWN}'
                    WHEN d.codes @> '["NONE"]'::jsonb THEN '{DISABILITY_NONE}'
                    ELSE '{DISABILITY_ANY}' END
        UNION ALL
        SELECT code FROM jsonb_array_elements_text(COALESCE(d.codes, '[]'::jsonb)) AS codes(code)
        WHERE code <> 'NONE'
    ) g(grp)"""

_SUMS = (
    "sum(u.num)::bigint AS num, sum(u.den)::bigint AS den, "
    "sum(u.nkey)::bigint AS nkey, sum(u.dkey)::bigint AS dkey"
)


def _value_sql(unit: Unit) -> str:
    """Percentages to 1 decimal place, means to 2, counts as they are (numeric rounds half away
    from zero, as published statistics do)."""
    if unit == "percent":
        return "round(100.0 * s.num / NULLIF(s.den, 0), 1)"
    if unit == "mean":
        return "round(s.num::numeric / NULLIF(s.den, 0), 2)"
    return "s.num"


def _keyed_units(units: UnitsQuery) -> str:
    """The units with `nkey` and `dkey`: the record key of each unit in the numerator (a non-zero
    `num`) and in the denominator (a non-zero `den`), 0 otherwise, so that summing them per cell
    gives the sum of the keys of the cell's records."""
    if units.period_rows:
        return units.sql
    key = "ck.record_key" if units.child_keyed else "x.rkey"
    child = "JOIN child ck ON ck.id = x.child_id" if units.child_keyed else ""
    # OFFSET 0 keeps the units a subquery of their own: pulled up into this one, a `num` written
    # with a look-up (an EXISTS probe per unit) would be evaluated again for every use of it
    # here and in the sums, two or three probes per unit instead of one.
    return f"""
        SELECT x.*, CASE WHEN x.num <> 0 THEN {key} ELSE 0 END AS nkey,
               CASE WHEN x.den <> 0 THEN {key} ELSE 0 END AS dkey
        FROM ({units.sql}
        OFFSET 0) x {child}"""


def _aggregate_sql(units: UnitsQuery, breakdown: Breakdown | None) -> str:
    """The `agg` CTE (and any it needs): per period `k` and group `grp`, the sums of `num`,
    `den`, `nkey` and `dkey`; `grp` NULL is the period's total."""
    if breakdown is None:
        return f"""
agg AS (SELECT u.k, NULL::text AS grp, {_SUMS} FROM units u GROUP BY 1),"""
    group_sql = _GROUP_EXPRESSIONS[breakdown]
    child_join = "JOIN child c ON c.id = u.child_id" if breakdown in _CHILD_BREAKDOWNS else ""
    if units.totals_in_units:
        return f"""
agg AS (SELECT u.k, {group_sql} AS grp, {_SUMS} FROM units u {child_join} GROUP BY 1, 2),"""
    if breakdown in SUBGROUPS_OF:
        # A unit can be in several groups, so the total comes from the units, not the cells.
        return f"""
cells AS (SELECT u.k, g.grp, {_SUMS} FROM units u {_DISABILITY_GROUPS} GROUP BY 1, 2),
agg AS (
    SELECT k, grp, num, den, nkey, dkey FROM cells
    UNION ALL
    SELECT u.k, NULL, {_SUMS} FROM units u GROUP BY 1
),"""
    # Each unit is in exactly one group, so a period's total is the sum of its cells: summing
    # the few cells is cheaper than a ROLLUP, which would sort every unit.
    return f"""
cells AS (SELECT u.k, {group_sql} AS grp, {_SUMS} FROM units u {child_join} GROUP BY 1, 2),
agg AS (
    SELECT k, grp, num, den, nkey, dkey FROM cells
    UNION ALL
    SELECT k, NULL, sum(num)::bigint, sum(den)::bigint, sum(nkey)::bigint, sum(dkey)::bigint
    FROM cells GROUP BY k
),"""


def build_series_sql(
    indicator_id: str, unit: Unit, period: Period, breakdown: Breakdown | None
) -> str:
    """The statement computing one series: rows of (period_start, period_end, grp, seen, num,
    den, nkey, dkey, value), one per period and group, where grp NULL is the period's total;
    without a breakdown there is only the total. `period_end` is the day after the bucket's last
    day. `seen` says the group had units in the period (a group that is not fixed is shown when
    seen in some period of the range; the rollup keeps it to apply that rule to a narrower range).
    `nkey` and `dkey` are the sums of the record keys of the records counted in the numerator
    and in the denominator (the cell keys, before the modulus).

    Raises KeyError for an indicator id without SQL.
    """
    units = UNITS[indicator_id](breakdown)
    if period == "snapshot":
        period_start = f"((gs + {_STEP})::date - 1)"
    else:
        period_start = "gs::date"
    if breakdown is None:
        groups = "SELECT NULL::text AS grp"
    else:
        groups = (
            "SELECT NULL::text AS grp "
            "UNION SELECT unnest(CAST(:fixed_groups AS text[])) "
            "UNION SELECT grp FROM agg WHERE grp IS NOT NULL"
        )
    if units.shared_denominator:
        denominator = "CASE WHEN g.grp IS NULL THEN COALESCE(a.den, 0) ELSE COALESCE(t.den, 0) END"
        denominator_key = (
            "CASE WHEN g.grp IS NULL THEN COALESCE(a.dkey, 0) ELSE COALESCE(t.dkey, 0) END"
        )
    else:
        denominator, denominator_key = "COALESCE(a.den, 0)", "COALESCE(a.dkey, 0)"
    return f"""
WITH periods AS (
    SELECT {period_start} AS period_start, (gs + {_STEP})::date AS period_end, n::int AS k
    FROM {_SERIES} WITH ORDINALITY AS g(gs, n)
),{units.ctes}
units AS ({_keyed_units(units)}
),{_aggregate_sql(units, breakdown)}
groups AS ({groups}),
totals AS (SELECT k, den, dkey FROM agg WHERE grp IS NULL)
SELECT s.period_start, s.period_end, s.grp, s.seen, s.num, s.den, s.nkey, s.dkey,
       {_value_sql(unit)} AS value
FROM (
    SELECT p.period_start, p.period_end, g.grp, a.k IS NOT NULL AS seen,
           COALESCE(a.num, 0) AS num, {denominator} AS den,
           COALESCE(a.nkey, 0) AS nkey, {denominator_key} AS dkey
    FROM periods p
    CROSS JOIN groups g
    LEFT JOIN agg a ON a.k = p.k AND a.grp IS NOT DISTINCT FROM g.grp
    LEFT JOIN totals t ON t.k = p.k
) s
ORDER BY s.period_start, s.grp IS NOT NULL,
         array_position(CAST(:fixed_groups AS text[]), s.grp::text) NULLS LAST, s.grp
"""


def series_parameters(
    indicator_id: str, period: Period, breakdown: Breakdown | None, buckets: list[tuple[date, date]]
) -> dict[str, object]:
    """The bound parameters of `build_series_sql` for the buckets (start, end) of `period`, in
    order (each bucket's start as `period_bounds` gives it: for `snapshot`, its last day)."""
    first, last = buckets[0][0], buckets[-1][0]
    if period == "snapshot":
        first, last = first.replace(day=1), last.replace(day=1)
    params: dict[str, object] = {
        "first_start": first,
        "last_start": last,
        "step": STEPS[period],
        "range_start": buckets[0][0],
        "range_end": buckets[-1][1],
        "fixed_groups": list(FIXED_GROUPS[breakdown]) if breakdown else [],
    }
    if indicator_id in NEEDS_HOLIDAYS:
        # Deadlines run up to 60 days past a start up to a year before the range.
        params["holidays"] = bank_holidays(buckets[0][0].year - 1, buckets[-1][1].year + 1)
    if indicator_id in NEEDS_GOOD_GRADES:
        params["good_grades"] = list(GOOD_OR_BETTER_GRADES)
    return params
