"""The SQL behind every indicator: one statement per series, run inside PostgreSQL.

Each indicator is written as a *units* query: one row per thing counted (a referral, a plan, a
child, an appointment...) with the bucket it falls in (`period_start`), the day it is counted on
(`day`, for the age band), `child_id`, any column a breakdown reads, and its contribution to the
numerator (`num`) and denominator (`den`). `build_series_sql` wraps it in the statement that
generates the periods (`generate_series`), aggregates the units per period and breakdown group
(and the period totals from those cells, so one scan gives both), fills absent groups with zeros
and computes the value. Only those aggregates leave the database.

Written for scale (a million referrals): every query is set-based; flows are bucketed with a
`date_trunc` expression and joined to the periods on equality rather than by range; date filters
are ranges on indexed columns (`referral.received_at`, `assessment.completed_on`,
`case_event (event_type, occurred_on)`, `icpc.held_on`, `care_plan (plan_type, started_on)`); and
look-ups per unit are index probes on `(child_id, ...)` indexes or a window function.

Bound parameters of every statement: `first_start`, `last_start` (dates: the first and last
bucket's first day; for `snapshot`, of their month), `step` (an interval as text), `range_start`,
`range_end` (the half-open range of days the buckets cover), `fixed_groups` (text[]) and, for the
ICPC timeliness indicator, `holidays` (date[]: England and Wales bank holidays).

SQL text is assembled only from the fixed fragments in this module, chosen by ids that have been
checked against the catalogue; every value is a bound parameter.
"""

# Every statement here is an f-string of this module's own fixed fragments, picked by ids
# already checked against the catalogue; values are always bound parameters.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from service.indicators.catalogue import Breakdown, Unit
from service.indicators.periods import Period

UK_ZONE: Final = "Europe/London"

AGE_BANDS: Final = ("under 1", "1-4", "5-9", "10-15", "16+")
AGE_NOT_KNOWN: Final = "not known"

FIXED_GROUPS: Final[dict[Breakdown, tuple[str, ...]]] = {
    "age_band": AGE_BANDS,
    "sex": ("M", "F", "U"),
    "neglect_form": (
        "medical",
        "nutritional",
        "emotional",
        "educational",
        "physical",
        "supervision",
    ),
    "plan_type": ("cp", "cin"),
    "ethnicity": (),
    "referral_source": (),
    "agency_type": (),
}
"""Groups shown in every period even when empty (zeros are shown); other groups appear when seen
anywhere in the requested range."""

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
_REFERRAL_DAY = f"(r.received_at AT TIME ZONE '{UK_ZONE}')::date"


def _in_range(column: str) -> str:
    return f"{column} >= {_RANGE_START} AND {column} < {_RANGE_END}"


def bucket_sql(period: Period, day: str) -> str:
    """The first day of the `period` bucket holding the date expression `day`."""
    as_timestamp = f"CAST({day} AS timestamp)"
    if period == "financial_year":
        # 1 April to 31 March: shift back three months, take the calendar year, shift forward.
        return (
            f"(date_trunc('year', {as_timestamp} - interval '3 months') "
            "+ interval '3 months')::date"
        )
    unit = {"month": "month", "quarter": "quarter", "year": "year"}[period]
    return f"date_trunc('{unit}', {as_timestamp})::date"


Bucket = Callable[[str], str]


@dataclass(frozen=True)
class UnitsQuery:
    """An indicator's units query and how the wrapper must treat it.

    `ctes` are extra common table expressions the units need. `totals_in_units` means the units
    already carry the period totals as rows whose `grp` column is NULL (the group column is then
    `units.grp`); `shared_denominator` means every cell's denominator is its period's total
    denominator (a share of all, not of the group).
    """

    sql: str
    ctes: str = ""
    totals_in_units: bool = False
    shared_denominator: bool = False


# --- Shared building blocks ------------------------------------------------------------------

_REFERRALS_IN_RANGE = (
    "FROM referral r WHERE r.status <> 'withdrawn' "
    f"AND r.received_at >= {_UK_RANGE_START} AND r.received_at < {_UK_RANGE_END}"
)

# Each CP plan's category over time: the initial category until the first change, then each
# change until the next (the later of two same-day changes wins). Only plans that can be open
# on some day of the range are read.
_CP_SPANS_CTE = f"""
cp_spans AS (
    SELECT p.id AS plan_id, p.child_id, p.started_on, p.ended_on,
           s.category, s.valid_from, s.valid_to
    FROM care_plan p
    CROSS JOIN LATERAL (
        SELECT p.initial_category AS category, p.started_on AS valid_from,
               COALESCE(
                   (SELECT min(ch.changed_on) FROM care_plan_category_change ch
                    WHERE ch.care_plan_id = p.id),
                   'infinity'::date
               ) AS valid_to
        UNION ALL
        SELECT ch.category, ch.changed_on,
               COALESCE(
                   lead(ch.changed_on) OVER (ORDER BY ch.changed_on, ch.id), 'infinity'::date
               )
        FROM care_plan_category_change ch
        WHERE ch.care_plan_id = p.id
    ) s
    WHERE p.plan_type = 'cp' AND p.started_on < {_RANGE_END}
      AND (p.ended_on IS NULL OR p.ended_on > {_RANGE_START})
),"""


def _open_on(alias: str, day: str) -> str:
    """A plan is open on a day when it started on or before it and had not ended by it."""
    return f"{alias}.started_on <= {day} AND ({alias}.ended_on IS NULL OR {alias}.ended_on > {day})"


_POINT = "(pr.period_end - 1)"
_CP_SPAN_AT_POINT = (
    f"{_open_on('s', _POINT)} AND s.valid_from <= {_POINT} AND s.valid_to > {_POINT}"
)


def _events(event_type: str) -> str:
    return f"FROM case_event e WHERE e.event_type = '{event_type}' AND {_in_range('e.occurred_on')}"


# --- One units query per indicator -------------------------------------------------------------


def _neglect_referral_share(bucket: Bucket, breakdown: Breakdown | None) -> UnitsQuery:
    is_neglect = "CASE WHEN 'neglect' = ANY(r.concern_categories) THEN 1 ELSE 0 END"
    if breakdown == "neglect_form":
        # One row per form cited (a referral citing two forms counts under each), plus one
        # total row per referral; each cell is a share of all referrals received.
        return UnitsQuery(
            sql=f"""
            SELECT {bucket(_REFERRAL_DAY)} AS period_start, {_REFERRAL_DAY} AS day, r.child_id,
                   f.form AS grp, 1 AS num, 0 AS den
            FROM referral r CROSS JOIN LATERAL unnest(r.neglect_forms) AS f(form)
            WHERE r.status <> 'withdrawn'
              AND r.received_at >= {_UK_RANGE_START} AND r.received_at < {_UK_RANGE_END}
            UNION ALL
            SELECT {bucket(_REFERRAL_DAY)}, {_REFERRAL_DAY}, r.child_id, NULL, {is_neglect}, 1
            {_REFERRALS_IN_RANGE}""",
            totals_in_units=True,
            shared_denominator=True,
        )
    return UnitsQuery(
        sql=f"""
        SELECT {bucket(_REFERRAL_DAY)} AS period_start, {_REFERRAL_DAY} AS day, r.child_id,
               r.referral_source, r.agency_type, {is_neglect} AS num, 1 AS den
        {_REFERRALS_IN_RANGE}"""
    )


def _cp_plan_neglect_share(bucket: Bucket, breakdown: Breakdown | None) -> UnitsQuery:
    # A child has at most one open CP plan; grouping by child makes "children" exact anyway.
    return UnitsQuery(
        ctes=_CP_SPANS_CTE,
        sql=f"""
        SELECT pr.period_start, {_POINT} AS day, s.child_id,
               max(CASE WHEN s.category = 'NEG' THEN 1 ELSE 0 END) AS num, 1 AS den
        FROM periods pr JOIN cp_spans s ON {_CP_SPAN_AT_POINT}
        GROUP BY pr.period_start, pr.period_end, s.child_id""",
    )


def _cp_plan_starts_neglect_share(bucket: Bucket, breakdown: Breakdown | None) -> UnitsQuery:
    return UnitsQuery(
        sql=f"""
        SELECT {bucket("p.started_on")} AS period_start, p.started_on AS day, p.child_id,
               CASE WHEN p.initial_category = 'NEG' THEN 1 ELSE 0 END AS num, 1 AS den
        FROM care_plan p WHERE p.plan_type = 'cp' AND {_in_range("p.started_on")}"""
    )


def _icpc_neglect_children(bucket: Bucket, breakdown: Breakdown | None) -> UnitsQuery:
    # Each child once per period, aged at their first such conference in it.
    return UnitsQuery(
        sql=f"""
        SELECT DISTINCT ON (period_start, child_id) period_start, day, child_id, num, den
        FROM (
            SELECT {bucket("i.held_on")} AS period_start, i.held_on AS day, i.child_id,
                   1 AS num, 0 AS den
            FROM icpc i WHERE 'NEG' = ANY(i.categories) AND {_in_range("i.held_on")}
        ) x
        ORDER BY period_start, child_id, day"""
    )


def _repeat_cp_plan_neglect(bucket: Bucket, breakdown: Breakdown | None) -> UnitsQuery:
    # A child counts once per period, as a repeat if any neglect plan they started in it was.
    return UnitsQuery(
        sql=f"""
        SELECT period_start, min(day) AS day, child_id, max(num) AS num, 1 AS den
        FROM (
            SELECT {bucket("p.started_on")} AS period_start, p.started_on AS day, p.child_id,
                   CASE WHEN EXISTS (
                       SELECT 1 FROM care_plan earlier
                       WHERE earlier.child_id = p.child_id AND earlier.plan_type = 'cp'
                         AND earlier.started_on < p.started_on
                   ) THEN 1 ELSE 0 END AS num
            FROM care_plan p
            WHERE p.plan_type = 'cp' AND p.initial_category = 'NEG'
              AND {_in_range("p.started_on")}
        ) x
        GROUP BY period_start, child_id"""
    )


def _cp_plan_neglect_domestic_abuse_share(
    bucket: Bucket, breakdown: Breakdown | None
) -> UnitsQuery:
    return UnitsQuery(
        sql=f"""
        SELECT {bucket("p.started_on")} AS period_start, p.started_on AS day, p.child_id,
               CASE WHEN p.domestic_abuse_focus THEN 1 ELSE 0 END AS num, 1 AS den
        FROM care_plan p
        WHERE p.plan_type = 'cp' AND p.initial_category = 'NEG' AND {_in_range("p.started_on")}"""
    )


def _neglect_plans_open(bucket: Bucket, breakdown: Breakdown | None) -> UnitsQuery:
    return UnitsQuery(
        ctes=_CP_SPANS_CTE,
        sql=f"""
        SELECT pr.period_start, {_POINT} AS day, s.child_id, 'cp' AS plan_type, 1 AS num, 0 AS den
        FROM periods pr JOIN cp_spans s ON {_CP_SPAN_AT_POINT} AND s.category = 'NEG'
        UNION ALL
        SELECT pr.period_start, {_POINT}, p.child_id, 'cin', 1, 0
        FROM periods pr JOIN care_plan p
          ON p.plan_type = 'cin' AND p.neglect AND {_open_on("p", _POINT)}""",
    )


def _toolkit_assessments(bucket: Bucket, breakdown: Breakdown | None) -> UnitsQuery:
    return UnitsQuery(
        sql=f"""
        SELECT {bucket("a.completed_on")} AS period_start, a.completed_on AS day, a.child_id,
               a.agency_type, 1 AS num, 0 AS den
        FROM assessment a WHERE {_in_range("a.completed_on")}"""
    )


def _early_help_neglect_identified(bucket: Bucket, breakdown: Breakdown | None) -> UnitsQuery:
    return UnitsQuery(
        sql=f"""
        SELECT {bucket("e.occurred_on")} AS period_start, e.occurred_on AS day, e.child_id,
               CASE WHEN (e.details ->> 'neglect_considered')::boolean
                     AND (e.details ->> 'neglect_identified')::boolean THEN 1 ELSE 0 END AS num,
               1 AS den
        {_events("early_help_assessment_completed")}"""
    )


def _early_help_neglect_stepped_up_share(bucket: Bucket, breakdown: Breakdown | None) -> UnitsQuery:
    return UnitsQuery(
        sql=f"""
        SELECT x.period_start, x.day, x.child_id,
               CASE WHEN EXISTS (
                   SELECT 1 FROM case_event up
                   WHERE up.child_id = x.child_id AND up.event_type = 'stepped_up_to_social_care'
                     AND up.occurred_on >= x.day
                     AND up.occurred_on <= (x.day + interval '1 year')::date
               ) THEN 1 ELSE 0 END AS num,
               1 AS den
        FROM (
            SELECT DISTINCT ON (period_start, child_id) period_start, day, child_id
            FROM (
                SELECT {bucket("e.occurred_on")} AS period_start, e.occurred_on AS day, e.child_id
                {_events("early_help_assessment_completed")}
                  AND (e.details ->> 'neglect_identified')::boolean
            ) identified
            ORDER BY period_start, child_id, day
        ) x"""
    )


def _rereferral_after_toolkit_share(bucket: Bucket, breakdown: Breakdown | None) -> UnitsQuery:
    # "Within 12 months": received from the day after the assessment to the same date a year on.
    return UnitsQuery(
        sql=f"""
        SELECT x.period_start, x.day, x.child_id, x.agency_type,
               CASE WHEN EXISTS (
                   SELECT 1 FROM referral r
                   WHERE r.child_id = x.child_id AND r.status <> 'withdrawn'
                     AND r.received_at >= (CAST(x.day + 1 AS timestamp) AT TIME ZONE '{UK_ZONE}')
                     AND r.received_at < (CAST((x.day + interval '1 year')::date + 1 AS timestamp)
                                          AT TIME ZONE '{UK_ZONE}')
               ) THEN 1 ELSE 0 END AS num,
               1 AS den
        FROM (
            SELECT DISTINCT ON (period_start, child_id) period_start, day, child_id, agency_type
            FROM (
                SELECT {bucket("a.completed_on")} AS period_start, a.completed_on AS day,
                       a.child_id, a.agency_type, a.created_at
                FROM assessment a
                WHERE a.areas_at_concern > 0 AND {_in_range("a.completed_on")}
            ) featured
            ORDER BY period_start, child_id, day, created_at
        ) x"""
    )


def _health_appointment_attendance(bucket: Bucket, breakdown: Breakdown | None) -> UnitsQuery:
    return UnitsQuery(
        sql=f"""
        SELECT {bucket("e.occurred_on")} AS period_start, e.occurred_on AS day, e.child_id,
               CASE WHEN (e.details ->> 'attended')::boolean THEN 1 ELSE 0 END AS num, 1 AS den
        {_events("health_appointment")}"""
    )


def _family_feedback(bucket: Bucket, breakdown: Breakdown | None) -> UnitsQuery:
    return UnitsQuery(
        sql=f"""
        SELECT {bucket("e.occurred_on")} AS period_start, e.occurred_on AS day, e.child_id,
               (e.details ->> 'rating')::int AS num, 1 AS den
        {_events("feedback_received")}"""
    )


def _rereferral_rate_12m(bucket: Bucket, breakdown: Breakdown | None) -> UnitsQuery:
    # The child's latest earlier referral is enough: if it is not within 12 months, none is.
    # Referrals from a year before the range are read so the first months see their history.
    return UnitsQuery(
        sql=f"""
        SELECT {bucket("x.day")} AS period_start, x.day, x.child_id, x.referral_source,
               x.agency_type,
               CASE WHEN x.previous_day >= (x.day - interval '1 year')::date
                    THEN 1 ELSE 0 END AS num,
               1 AS den
        FROM (
            SELECT {_REFERRAL_DAY} AS day, r.received_at, r.child_id, r.referral_source,
                   r.agency_type,
                   (lag(r.received_at) OVER (PARTITION BY r.child_id ORDER BY r.received_at, r.id)
                    AT TIME ZONE '{UK_ZONE}')::date AS previous_day
            FROM referral r
            WHERE r.status <> 'withdrawn'
              AND r.received_at >= ({_RANGE_START} - interval '1 year') AT TIME ZONE '{UK_ZONE}'
              AND r.received_at < {_UK_RANGE_END}
        ) x
        WHERE x.received_at >= {_UK_RANGE_START}"""
    )


def _referral_decision_24h_share(bucket: Bucket, breakdown: Breakdown | None) -> UnitsQuery:
    return UnitsQuery(
        sql=f"""
        SELECT {bucket(_REFERRAL_DAY)} AS period_start, {_REFERRAL_DAY} AS day, r.child_id,
               r.referral_source, r.agency_type,
               CASE WHEN r.decided_at IS NOT NULL AND r.decided_at <= r.decision_due_at
                    THEN 1 ELSE 0 END AS num,
               1 AS den
        {_REFERRALS_IN_RANGE}
          AND (r.decided_at IS NOT NULL OR r.decision_due_at <= now())"""
    )


def _icpc_within_15_working_days_share(bucket: Bucket, breakdown: Breakdown | None) -> UnitsQuery:
    # The 15th working day after the start: 15 working days never span more than 60 calendar days.
    return UnitsQuery(
        sql=f"""
        SELECT {bucket("i.held_on")} AS period_start, i.held_on AS day, i.child_id,
               CASE WHEN i.held_on <= deadline.day THEN 1 ELSE 0 END AS num, 1 AS den
        FROM icpc i
        JOIN section47_enquiry s ON s.child_id = i.child_id AND s.enquiry_ref = i.enquiry_ref
        LEFT JOIN LATERAL (
            SELECT s.started_on + n AS day
            FROM generate_series(1, 60) AS n
            WHERE extract(isodow FROM s.started_on + n) < 6
              AND s.started_on + n <> ALL (CAST(:holidays AS date[]))
            ORDER BY n OFFSET 14 LIMIT 1
        ) deadline ON true
        WHERE {_in_range("i.held_on")}"""
    )


def _toolkit_improvement_share(bucket: Bucket, breakdown: Breakdown | None) -> UnitsQuery:
    # The assessment before: the one named as previous, otherwise the child's latest earlier one
    # with the same toolkit. Re-assessments whose grades cannot be compared are left out.
    return UnitsQuery(
        sql=f"""
        SELECT period_start, day, child_id, agency_type,
               CASE WHEN highest < previous_highest THEN 1 ELSE 0 END AS num, 1 AS den
        FROM (
            SELECT DISTINCT ON (period_start, child_id)
                   period_start, day, child_id, agency_type, highest, previous_highest
            FROM (
                SELECT {bucket("a.completed_on")} AS period_start, a.completed_on AS day,
                       a.child_id, a.agency_type, a.created_at,
                       a.highest_area_grade AS highest,
                       COALESCE(named.highest_area_grade, latest.highest_area_grade)
                           AS previous_highest
                FROM assessment a
                LEFT JOIN assessment named ON named.id = a.previous_assessment_id
                LEFT JOIN LATERAL (
                    SELECT b.highest_area_grade FROM assessment b
                    WHERE a.previous_assessment_id IS NULL
                      AND b.child_id = a.child_id AND b.toolkit_id = a.toolkit_id
                      AND (b.completed_on < a.completed_on
                           OR (b.completed_on = a.completed_on AND b.created_at < a.created_at))
                    ORDER BY b.completed_on DESC, b.created_at DESC
                    LIMIT 1
                ) latest ON true
                WHERE {_in_range("a.completed_on")}
            ) reassessed
            WHERE highest IS NOT NULL AND previous_highest IS NOT NULL
            ORDER BY period_start, child_id, day DESC, created_at DESC
        ) last_in_period"""
    )


UNITS: Final[dict[str, Callable[[Bucket, Breakdown | None], UnitsQuery]]] = {
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
}
"""The units query of every indicator in the catalogue, by indicator id."""

NEEDS_HOLIDAYS: Final = frozenset({"icpc_within_15_working_days_share"})


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
}
_CHILD_BREAKDOWNS: Final = frozenset({"age_band", "sex", "ethnicity"})


def _value_sql(unit: Unit) -> str:
    """Percentages to 1 decimal place, means to 2, counts as they are (numeric rounds half away
    from zero, as published statistics do)."""
    if unit == "percent":
        return "round(100.0 * s.num / NULLIF(s.den, 0), 1)"
    if unit == "mean":
        return "round(s.num::numeric / NULLIF(s.den, 0), 2)"
    return "s.num"


def build_series_sql(
    indicator_id: str, unit: Unit, period: Period, breakdown: Breakdown | None
) -> str:
    """The statement computing one series: rows of (period_start, period_end, grp, num, den,
    value), one per period and group, where grp NULL is the period's total; without a breakdown
    there is only the total. `period_end` is the day after the bucket's last day.

    Raises KeyError for an indicator id without SQL.
    """
    units = UNITS[indicator_id](lambda day: bucket_sql(period, day), breakdown)
    if period == "snapshot":
        period_start = f"((gs + {_STEP})::date - 1)"
    else:
        period_start = "gs::date"
    child_join = ""
    if breakdown is None:
        group_sql = "NULL::text"
        groups = "SELECT NULL::text AS grp"
    else:
        group_sql = _GROUP_EXPRESSIONS[breakdown]
        if breakdown in _CHILD_BREAKDOWNS:
            child_join = "JOIN child c ON c.id = u.child_id"
        groups = (
            "SELECT NULL::text AS grp "
            "UNION SELECT unnest(CAST(:fixed_groups AS text[])) "
            "UNION SELECT grp FROM agg WHERE grp IS NOT NULL"
        )
    if breakdown is None or units.totals_in_units:
        aggregate = f"""
agg AS (
    SELECT u.period_start, {group_sql} AS grp, sum(u.num)::bigint AS num, sum(u.den)::bigint AS den
    FROM units u {child_join}
    GROUP BY 1, 2
),"""
    else:
        # Each unit is in exactly one group, so a period's total is the sum of its cells: summing
        # the few cells is cheaper than a ROLLUP, which would sort every unit.
        aggregate = f"""
cells AS (
    SELECT u.period_start, {group_sql} AS grp, sum(u.num)::bigint AS num, sum(u.den)::bigint AS den
    FROM units u {child_join}
    GROUP BY 1, 2
),
agg AS (
    SELECT period_start, grp, num, den FROM cells
    UNION ALL
    SELECT period_start, NULL, sum(num)::bigint, sum(den)::bigint FROM cells GROUP BY period_start
),"""
    denominator = (
        "CASE WHEN g.grp IS NULL THEN COALESCE(a.den, 0) ELSE COALESCE(t.den, 0) END"
        if units.shared_denominator
        else "COALESCE(a.den, 0)"
    )
    return f"""
WITH periods AS (
    SELECT {period_start} AS period_start, (gs + {_STEP})::date AS period_end
    FROM generate_series(
        CAST(:first_start AS date)::timestamp, CAST(:last_start AS date)::timestamp, {_STEP}
    ) AS gs
),{units.ctes}
units AS ({units.sql}
),{aggregate}
groups AS ({groups}),
totals AS (SELECT period_start, den FROM agg WHERE grp IS NULL)
SELECT s.period_start, s.period_end, s.grp, s.num, s.den, {_value_sql(unit)} AS value
FROM (
    SELECT p.period_start, p.period_end, g.grp, COALESCE(a.num, 0) AS num, {denominator} AS den
    FROM periods p
    CROSS JOIN groups g
    LEFT JOIN agg a ON a.period_start = p.period_start AND a.grp IS NOT DISTINCT FROM g.grp
    LEFT JOIN totals t ON t.period_start = p.period_start
) s
ORDER BY s.period_start, s.grp IS NOT NULL,
         array_position(CAST(:fixed_groups AS text[]), s.grp::text) NULLS LAST, s.grp
"""
