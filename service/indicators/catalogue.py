"""The indicator catalogue: metadata for every indicator, loaded from `catalogue.yaml`.

The YAML is the single place where an indicator's meaning is written down; the SQL computing each
indicator lives elsewhere and must follow these definitions.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Annotated, Any, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from schemas.indicators import BREAKDOWNS, Breakdown, Period, Polarity, Timing, Unit
from service.indicators.perturbation import CELL_KEY_MODULUS, PerturbationRow, PerturbationTable
from service.indicators.suppression import SMALL_COUNT_MAX

_Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class IndicatorMeta(BaseModel):
    """What an indicator means, as published by `GET /v1/indicators`.

    `timing` says how a period is read: `in_period` counts what happened during it,
    `at_period_end` counts what was open on its last day (and only those offer `snapshot`).
    `denominator` is null exactly when `unit` is `count`; for `mean` the numerator is a sum and
    the denominator the number of things summed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    definition: _Text
    numerator: _Text
    denominator: _Text | None
    unit: Unit
    polarity: Polarity
    source_measure: _Text
    timing: Timing
    breakdowns: tuple[Breakdown, ...] = Field(default=())
    periods: tuple[Period, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_consistency(self) -> Self:
        if (self.unit == "count") != (self.denominator is None):
            raise ValueError("denominator must be null for a count and given otherwise")
        if len(set(self.breakdowns)) != len(self.breakdowns):
            raise ValueError("breakdowns must not repeat")
        if len(set(self.periods)) != len(self.periods):
            raise ValueError("periods must not repeat")
        # A snapshot bucket is a single day: fine for "open on that day", meaningless for a flow.
        if "snapshot" in self.periods and self.timing != "at_period_end":
            raise ValueError("only at_period_end indicators can offer the snapshot period")
        return self


class PerturbationRowEntry(BaseModel):
    """One row of the published perturbation table (see `perturbation.PerturbationRow`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = Field(ge=1)
    first_key: int = Field(ge=0)
    last_key: int = Field(ge=0)
    noise: int


class DisclosureControl(BaseModel):
    """How published figures are protected: the two rules in words, and the perturbation table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    suppression: _Text
    perturbation: _Text
    cell_key_modulus: int
    perturbation_table: tuple[PerturbationRowEntry, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_table(self) -> Self:
        if self.cell_key_modulus != CELL_KEY_MODULUS:
            # Record keys are drawn from 0-255 by the database's column default.
            raise ValueError(f"cell_key_modulus must be {CELL_KEY_MODULUS}, the record keys' range")
        table = self.table()  # raises ValueError when the rows do not make a whole table
        if table.smallest != SMALL_COUNT_MAX + 1:
            raise ValueError(
                f"the perturbation table must start at {SMALL_COUNT_MAX + 1}, the smallest count "
                "suppression shows"
            )
        return self

    def table(self) -> PerturbationTable:
        return PerturbationTable(
            (PerturbationRow(**row.model_dump()) for row in self.perturbation_table),
            self.cell_key_modulus,
        )


class _CatalogueFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1)
    disclosure_control: DisclosureControl
    breakdowns: dict[Breakdown, _Text]
    indicators: list[IndicatorMeta] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_ids_and_breakdowns(self) -> Self:
        ids = [indicator.id for indicator in self.indicators]
        repeated = sorted({indicator_id for indicator_id in ids if ids.count(indicator_id) > 1})
        if repeated:
            raise ValueError(f"indicator ids repeat: {repeated}")
        undocumented = set(BREAKDOWNS) - set(self.breakdowns)
        if undocumented:
            raise ValueError(f"breakdowns without a definition: {sorted(undocumented)}")
        return self


def parse_catalogue(document: Any) -> dict[str, IndicatorMeta]:
    """Validate a parsed catalogue document; raises `pydantic.ValidationError` when it is wrong."""
    catalogue = _CatalogueFile.model_validate(document)
    return {indicator.id: indicator for indicator in catalogue.indicators}


@functools.cache
def _load_file() -> _CatalogueFile:
    text = (
        resources.files("service.indicators").joinpath("catalogue.yaml").read_text(encoding="utf-8")
    )
    return _CatalogueFile.model_validate(yaml.safe_load(text))


def load_catalogue() -> dict[str, IndicatorMeta]:
    """Every indicator by id, in catalogue order. Read and validated once, then cached.

    A new dict is returned on each call so a caller cannot alter the cache; entries are frozen.
    """
    return {indicator.id: indicator for indicator in _load_file().indicators}


def load_breakdown_definitions() -> dict[Breakdown, str]:
    """A plain-English definition of every breakdown, for the catalogue listing."""
    return dict(_load_file().breakdowns)


def load_disclosure_control() -> DisclosureControl:
    """The published disclosure-control rules and perturbation table."""
    return _load_file().disclosure_control


@functools.cache
def load_perturbation_table() -> PerturbationTable:
    """The perturbation table, built once."""
    return _load_file().disclosure_control.table()
