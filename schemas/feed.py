"""The BI feed on the wire: the OData entity types (their properties and EDM types, which
`$metadata` publishes and `$select`, `$filter` and `$orderby` may name) and the feed-key
administration bodies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from pydantic import ConfigDict, Field

from .common import PublicModel, ShortText, StrictModel
from .examples import FEED_KEY_CREATE_EXAMPLE

EdmType = Literal["Edm.String", "Edm.Int32", "Edm.Double", "Edm.Boolean", "Edm.Date"]


@dataclass(frozen=True)
class EntityProperty:
    """One property of an entity type: its OData name, EDM type, whether it may be null, and the
    column it is read from."""

    name: str
    edm_type: EdmType
    nullable: bool
    column: str
    description: str


@dataclass(frozen=True)
class EntitySet:
    name: str
    entity_type: str
    key: str
    properties: tuple[EntityProperty, ...]
    description: str

    def property(self, name: str) -> EntityProperty | None:
        return next((prop for prop in self.properties if prop.name == name), None)


def _prop(
    name: str, edm_type: EdmType, column: str, description: str, nullable: bool = False
) -> EntityProperty:
    return EntityProperty(name, edm_type, nullable, column, description)


INDICATOR_POINTS: Final = EntitySet(
    name="IndicatorPoints",
    entity_type="IndicatorPoint",
    key="PointId",
    description="One row per indicator, period and breakdown cell, with the figures and "
    "suppression of GET /v1/indicators/{id}",
    properties=(
        _prop("PointId", "Edm.String", "point_id", "Indicator|period|breakdown|group"),
        _prop("IndicatorId", "Edm.String", "indicator_id", "The indicator (see Indicators)"),
        _prop("IndicatorTitle", "Edm.String", "indicator_title", "The indicator's title"),
        _prop("Unit", "Edm.String", "unit", "percent, count or mean"),
        _prop("Period", "Edm.String", "period", "month, quarter, year, financial_year, snapshot"),
        _prop("PeriodStart", "Edm.Date", "period_start", "The period's first day"),
        _prop("PeriodEnd", "Edm.Date", "period_end", "The period's last day (inclusive)"),
        _prop("Label", "Edm.String", "label", "The period: 2023-04, 2023-Q2, 2023, 2023-24"),
        _prop("TimePeriod", "Edm.Int32", "time_period", "DfE open-data time_period"),
        _prop("TimeIdentifier", "Edm.String", "time_identifier", "DfE time_identifier"),
        _prop(
            "Breakdown", "Edm.String", "breakdown", "The breakdown; null on totals", nullable=True
        ),
        _prop(
            "Group",
            "Edm.String",
            "breakdown_group",
            "The breakdown group; null on totals",
            nullable=True,
        ),
        _prop("Numerator", "Edm.Int32", "numerator", "Null when suppressed", nullable=True),
        _prop(
            "Denominator",
            "Edm.Int32",
            "denominator",
            "Null for counts and when suppressed",
            nullable=True,
        ),
        _prop(
            "Value",
            "Edm.Double",
            "value",
            "Percent to 1 d.p., mean to 2, count; null when suppressed or the denominator is 0",
            nullable=True,
        ),
        _prop("Suppressed", "Edm.Boolean", "suppressed", "Hidden by disclosure control"),
    ),
)

INDICATORS: Final = EntitySet(
    name="Indicators",
    entity_type="Indicator",
    key="Id",
    description="The indicator catalogue of GET /v1/indicators",
    properties=(
        _prop("Id", "Edm.String", "id", "The indicator's id"),
        _prop("Title", "Edm.String", "title", "Its title"),
        _prop("Definition", "Edm.String", "definition", "What it counts"),
        _prop("Numerator", "Edm.String", "numerator", "What the numerator counts"),
        _prop("Denominator", "Edm.String", "denominator", "Null for counts", nullable=True),
        _prop("Unit", "Edm.String", "unit", "percent, count or mean"),
        _prop("Polarity", "Edm.String", "polarity", "Which direction is good, if either"),
        _prop("SourceMeasure", "Edm.String", "source_measure", "The measure it answers"),
        _prop("Timing", "Edm.String", "timing", "in_period or at_period_end"),
        _prop("Breakdowns", "Edm.String", "breakdowns", "Offered breakdowns, comma-separated"),
        _prop("Periods", "Edm.String", "periods", "Offered periods, comma-separated"),
    ),
)

ENTITY_SETS: Final = (INDICATOR_POINTS, INDICATORS)
NAMESPACE: Final = "Neglect"


class FeedKeyCreate(StrictModel):
    model_config = ConfigDict(json_schema_extra={"examples": [FEED_KEY_CREATE_EXAMPLE]})

    name: ShortText = Field(description="What the key is for, e.g. 'Power BI: neglect dashboard'")


class FeedKeyPublic(PublicModel):
    key_id: str
    client_id: str
    name: str
    key_hint: str = Field(description="The key's first characters, to tell keys apart")
    created_at: datetime | None
    revoked_at: datetime | None


class FeedKeyIssued(FeedKeyPublic):
    feed_key: str = Field(description="Shown once; store it now")
