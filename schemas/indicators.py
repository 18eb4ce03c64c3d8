"""The partnership's indicators on the wire: the catalogue and one indicator's series (SPEC 2.5)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Final, Literal, get_args

from pydantic import Field

from schemas.common import PublicModel

Breakdown = Literal[
    "age_band",
    "sex",
    "ethnicity",
    "disability",
    "referral_source",
    "agency_type",
    "neglect_form",
    "plan_type",
    "feedback_from",
    "audited_work",
]
BREAKDOWNS: Final[tuple[Breakdown, ...]] = get_args(Breakdown)

Unit = Literal["percent", "count", "mean"]
Polarity = Literal["higher_is_better", "lower_is_better", "neutral"]
Timing = Literal["in_period", "at_period_end"]

Period = Literal["month", "quarter", "year", "financial_year", "snapshot"]
PERIODS: Final[tuple[Period, ...]] = get_args(Period)


class IndicatorPublic(PublicModel):
    """What an indicator means. `unit` is `percent` (value = 100 x numerator / denominator, to 1
    decimal place), `count` (value = numerator; no denominator) or `mean` (value = numerator /
    denominator to 2 decimal places, the numerator being a sum)."""

    id: str
    title: str
    definition: str
    numerator: str
    denominator: str | None
    unit: Unit
    polarity: Polarity = Field(description="Which direction is good, if either")
    source_measure: str = Field(description="The strategy or statutory measure it answers")
    timing: Timing = Field(
        description="`in_period`: what happened in each period; `at_period_end`: what was open "
        "on each period's last day"
    )
    breakdowns: list[Breakdown]
    periods: list[Period]


class BreakdownPublic(PublicModel):
    """A breakdown offered by some indicators, and how its groups are assigned."""

    id: Breakdown
    definition: str


class PerturbationRowPublic(PublicModel):
    """One row of the perturbation table: a cell whose exact count is `count` (the last count
    listed stands for every larger one) and whose cell key lies in `first_key`..`last_key` is
    published as `count + noise`."""

    count: int
    first_key: int
    last_key: int
    noise: int


class DisclosureControlPublic(PublicModel):
    """How figures are protected for callers without indicators:read:unsuppressed."""

    suppression: str = Field(description="Which cells are hidden")
    perturbation: str = Field(description="How every other count is perturbed (cell-key method)")
    cell_key_modulus: int = Field(
        description="Record keys and cell keys are whole numbers from 0 to this minus 1"
    )
    perturbation_table: list[PerturbationRowPublic]


class IndicatorCatalogue(PublicModel):
    """Every indicator the service computes, the breakdowns they offer, and how their published
    figures are protected."""

    indicators: list[IndicatorPublic]
    breakdowns: list[BreakdownPublic]
    disclosure_control: DisclosureControlPublic


class SeriesPointPublic(PublicModel):
    """One figure of a series. A suppressed figure has numerator, denominator and value null.
    Without indicators:read:unsuppressed every other count is perturbed (see the catalogue's
    `disclosure_control`), and the value is computed from the perturbed counts."""

    period_start: date = Field(description="The period's first day")
    period_end: date = Field(
        description="The period's last day (inclusive); point-in-time indicators count what was "
        "open on this day"
    )
    label: str = Field(description='The period: "2023-04", "2023-Q2", "2023", "2023-24" or a day')
    group: str | None = Field(description="The breakdown group; null without a breakdown")
    numerator: int | None
    denominator: int | None = Field(description="Null for counts")
    value: int | float | None = Field(
        description="Percent to 1 decimal place, mean to 2, count as an integer; null when "
        "suppressed or when the denominator is 0"
    )
    suppressed: bool = Field(description="Hidden by disclosure control (small numbers)")


class IndicatorSeriesPublic(PublicModel):
    """An indicator's figures for each period of the requested range (and each breakdown group)."""

    indicator: IndicatorPublic
    period: Period
    breakdown: Breakdown | None
    suppression_applied: bool = Field(
        description="Whether disclosure control (small-cell suppression and cell-key "
        "perturbation) was applied; false only for callers holding indicators:read:unsuppressed"
    )
    figures_as_of: datetime | None = Field(
        default=None,
        description="When these figures were computed, if they may be older than the data: "
        "served from the indicator rollup after writes it does not hold yet, at most "
        "`NEGLECT_INDICATOR_MAX_STALENESS_S` old; null when they are the data's figures now",
    )
    series: list[SeriesPointPublic]
