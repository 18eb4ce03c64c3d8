"""Cell-key perturbation of published indicator figures. Pure functions only.

The method is the one the ONS used for Census 2021 outputs and the ABS uses in TableBuilder, for
services that answer arbitrary periods and breakdowns:

- Every record an indicator counts (a referral, an assessment, a case event, a plan, a
  conference, an audit, a child) carries a record key, a random whole number from 0 to 255 drawn
  by the database when the record is stored and never changed (`record_key`, see
  `service.models.base.record_key_column`).
- A cell's key is the sum of the keys of the records counted in it, modulo 256. The indicator SQL
  sums them beside the counts (`sql.py`), separately for the numerator and the denominator.
- The published perturbation table (the catalogue's `disclosure_control`) gives, for a count and
  a cell key, a small noise that is added to the count.

The same records always make the same cell key, so a cell gets the same noise every time it is
asked for, through any period, breakdown or caller: repeating a query, or asking for the same cell
another way, averages nothing away. Cells that differ by even one record get unrelated noise, so
subtracting published figures from each other (a quarter minus its months, a year minus its
monthly cells, a total minus what an agency sent itself) leaves the noise of several cells, not an
exact small count; and nobody outside the database can tell when those noises happen to cancel.

Small-cell suppression (`suppression.py`) is applied first, on the exact counts; the table starts
at the first count that is shown (6) and never takes a count below it, so no figure from 1 to 5 is
ever published. Zeros are not perturbed: an empty cell has no records, hence no key, and a zero
discloses nothing. For a mean, the denominator (the number of things averaged) is a count like any
other; the numerator is a sum of ratings or grade changes, perturbed with the table's last row (the
one for large counts) and the denominator's cell key. Rates and means are recomputed from the
perturbed counts, and a rate's numerator is never published above its denominator.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, NamedTuple

CELL_KEY_MODULUS: Final = 256
"""Record keys and cell keys are 0-255, as in the ONS and ABS tables."""


@dataclass(frozen=True)
class PerturbationRow:
    """Cells whose exact count is `count` and whose cell key is `first_key`..`last_key` (both
    included) are published as `count + noise`. The largest count of a table stands for every
    larger count."""

    count: int
    first_key: int
    last_key: int
    noise: int


class PerturbationTable:
    """The noise for every (count, cell key): one full row of keys per count, from the smallest
    count the table covers to the largest, which serves every larger count too."""

    def __init__(self, rows: Iterable[PerturbationRow], modulus: int = CELL_KEY_MODULUS) -> None:
        """Raises ValueError unless the rows give every key of every count from the smallest to
        the largest exactly once, and no noise takes a count below the smallest."""
        self.modulus = modulus
        self.rows: tuple[PerturbationRow, ...] = tuple(rows)
        noise_by_count: dict[int, list[int | None]] = {}
        for row in self.rows:
            if not 0 <= row.first_key <= row.last_key < modulus:
                raise ValueError(f"count {row.count}: keys must lie within 0..{modulus - 1}")
            keys = noise_by_count.setdefault(row.count, [None] * modulus)
            for key in range(row.first_key, row.last_key + 1):
                if keys[key] is not None:
                    raise ValueError(f"count {row.count}: key {key} is given twice")
                keys[key] = row.noise
        if not noise_by_count:
            raise ValueError("the table has no rows")
        self.smallest = min(noise_by_count)
        self.largest = max(noise_by_count)
        if sorted(noise_by_count) != list(range(self.smallest, self.largest + 1)):
            raise ValueError("the table must give every count from its smallest to its largest")
        self._noise: dict[int, tuple[int, ...]] = {}
        for count, keys in noise_by_count.items():
            missing = [key for key, noise in enumerate(keys) if noise is None]
            if missing:
                raise ValueError(f"count {count}: no noise for key {missing[0]}")
            full = tuple(noise for noise in keys if noise is not None)
            if count + min(full) < self.smallest:
                raise ValueError(
                    f"count {count}: the noise would publish a count below {self.smallest}"
                )
            self._noise[count] = full

    def noise(self, count: int, cell_key: int) -> int:
        """The noise for a count (at least the smallest the table covers) and a cell key (any
        whole number: it is taken modulo the table's modulus)."""
        noise = self._noise.get(count)
        if noise is None:
            if count < self.smallest:
                raise ValueError(f"the table starts at {self.smallest}; smaller counts are hidden")
            noise = self._noise[self.largest]
        return noise[cell_key % self.modulus]

    def noise_range(self, count: int) -> tuple[int, int]:
        """The least and the greatest noise a count can get."""
        row = self._noise[min(max(count, self.smallest), self.largest)]
        return min(row), max(row)

    def large_count_noise(self, cell_key: int) -> int:
        """The noise of the largest count's row: the one used for sums."""
        return self._noise[self.largest][cell_key % self.modulus]


def perturb_count(table: PerturbationTable, count: int, key_sum: int) -> int:
    """A count as published: zero stays zero, any other count gets its cell's noise.
    `key_sum` is the sum of the record keys of the records counted."""
    if count == 0:
        return 0
    return count + table.noise(count, key_sum)


class Figures(NamedTuple):
    """A cell's numerator, denominator and value (None for a count's denominator, and for a
    value whose denominator is 0)."""

    numerator: int
    denominator: int | None
    value: int | float | None


def _rounded(numerator: int, denominator: int, scale: int, places: int) -> float:
    """`numerator * scale / denominator` rounded to `places` decimal places half away from zero,
    as the SQL's numeric round() and published statistics do (a negative result keeps its sign,
    -0.0 included, as a Decimal's would). In whole numbers, so exact: a series rounds one value per
    point, and this is several times faster than Decimal's quantize."""
    factor: int = 10**places
    scaled = abs(numerator * scale * factor)
    divisor = abs(denominator)
    quotient, remainder = divmod(scaled, divisor)
    if 2 * remainder >= divisor:
        quotient += 1
    rounded = quotient / factor
    return -rounded if (numerator * scale < 0) != (denominator < 0) else rounded


def perturb_figures(
    table: PerturbationTable,
    unit: str,
    numerator: int,
    denominator: int | None,
    numerator_key: int,
    denominator_key: int,
) -> Figures:
    """A shown cell's figures as published, for a `count`, `percent` or `mean` indicator (see
    the module docstring); the keys are the sums of the record keys of the numerator's and the
    denominator's records."""
    if unit == "count" or denominator is None:
        published = perturb_count(table, numerator, numerator_key)
        return Figures(published, None, published)
    published_denominator = perturb_count(table, denominator, denominator_key)
    if unit == "mean":
        published_numerator = (
            numerator + table.large_count_noise(denominator_key) if denominator else numerator
        )
        value = (
            _rounded(published_numerator, published_denominator, 1, 2)
            if published_denominator
            else None
        )
        return Figures(published_numerator, published_denominator, value)
    published_numerator = min(perturb_count(table, numerator, numerator_key), published_denominator)
    value = (
        _rounded(published_numerator, published_denominator, 100, 1)
        if published_denominator
        else None
    )
    return Figures(published_numerator, published_denominator, value)
