"""CSV cells that a spreadsheet could run as a formula are written as text (issue 10, finding 9).

These exercise the one function every text cell of the CSV goes through; the CSV over HTTP is
covered in test_indicators_api.py. No indicator's labels or groups start with a formula today (they
come from fixed vocabularies), so the database cannot produce such a cell to test end to end.
"""

from __future__ import annotations

import csv
import io
from datetime import date

import pytest

from api.indicators import neutralise_csv_cell, render_csv
from schemas.indicators import IndicatorPublic, IndicatorSeriesPublic, SeriesPointPublic
from service.indicators.catalogue import load_catalogue

FORMULAS = [
    "=1+1",
    "+1",
    "-1",
    "@SUM(A1)",
    "\t=1",
    "\r=1",
    "\tplain",
    "\rplain",
    " =1+1",
    "   +1",
    "\n=1",
    "\u3000=1",
    "\uff1d1+1",  # full-width equals sign
    "\uff0b1",  # full-width plus
    "\uff0d1",  # full-width minus
    "\uff20SUM(A1)",  # full-width commercial at
    " \uff1d1",
]
PLAIN = ["Girls", "5 to 9", "a=1", "", "2025-04", "white british", "not known"]


@pytest.mark.parametrize("cell", FORMULAS)
def test_a_cell_that_could_start_a_formula_is_written_as_text(cell: str) -> None:
    assert neutralise_csv_cell(cell) == "'" + cell


@pytest.mark.parametrize("cell", PLAIN)
def test_other_cells_are_written_as_they_are(cell: str) -> None:
    assert neutralise_csv_cell(cell) == cell


def test_an_absent_cell_is_empty() -> None:
    assert neutralise_csv_cell(None) == ""


def test_the_csv_neutralises_labels_and_groups_alike() -> None:
    meta = next(iter(load_catalogue().values()))
    body = IndicatorSeriesPublic(
        indicator=IndicatorPublic.model_validate(meta.model_dump()),
        period="month",
        breakdown="sex",
        suppression_applied=True,
        series=[
            SeriesPointPublic(
                period_start=date(2025, 4, 1),
                period_end=date(2025, 4, 30),
                label=" \uff1dHYPERLINK(1)",
                group=" @cmd",
                numerator=7,
                denominator=None,
                value=7,
                suppressed=False,
            )
        ],
    )
    rows = list(csv.reader(io.StringIO(render_csv(body))))
    assert rows[1][3] == "' \uff1dHYPERLINK(1)"
    assert rows[1][4] == "' @cmd"
