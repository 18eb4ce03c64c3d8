"""Statistical disclosure control for published indicator figures. Pure functions only.

Rules (SPEC 2.5):
- Primary suppression: a cell whose numerator or denominator is 1 to 5 is hidden (numerator,
  denominator and value all become None, `suppressed` True). A rate built on a small count is
  hidden with it. Zeros are shown: a zero count discloses nothing about an individual child.
- Secondary suppression, within each breakdown group: when the group's total is shown and exactly
  one of its cells is hidden, that cell could be recovered as total minus the other cells, so one
  more cell is hidden too: the smallest non-zero one. With two or more hidden cells only their sum
  can be derived, which is the protection wanted.

What this does not do on its own: protect against differencing across overlapping series (a year
total minus its published months, or one breakdown against another). Cell-key perturbation
(`perturbation.py`), applied after this to every count still shown, does that. Each group is
assumed to partition its total; for breakdowns whose cells can overlap (a referral citing several
neglect forms) the rule is stricter than needed, never weaker, and a breakdown whose cells are
parts of one of its cells (disability codes of `any`) is suppressed against that cell
(`compute.py`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Final, NamedTuple

SMALL_COUNT_MIN: Final = 1
SMALL_COUNT_MAX: Final = 5


class Cell(NamedTuple):
    """One published figure: `group` names the breakdown it belongs to (cells of one group add up
    to the total); `denominator` is None for plain counts. A named tuple: a series makes one per
    point, and a tuple is the cheapest immutable record Python builds."""

    label: str
    group: str
    numerator: int | None
    denominator: int | None
    value: float | None
    suppressed: bool = False


def _counts(cell: Cell) -> list[int]:
    return [count for count in (cell.numerator, cell.denominator) if count is not None]


def is_disclosive(cell: Cell) -> bool:
    """Whether the cell's numerator or denominator is a small count (1 to 5)."""
    numerator, denominator = cell.numerator, cell.denominator
    return (numerator is not None and SMALL_COUNT_MIN <= numerator <= SMALL_COUNT_MAX) or (
        denominator is not None and SMALL_COUNT_MIN <= denominator <= SMALL_COUNT_MAX
    )


def _hide(cell: Cell) -> Cell:
    return Cell(cell.label, cell.group, None, None, None, True)


def apply_primary_suppression(cell: Cell) -> Cell:
    """The cell hidden when it is disclosive, otherwise unchanged. Use it for totals and for series
    without a breakdown."""
    return _hide(cell) if is_disclosive(cell) else cell


def _is_shown(total: Cell | None) -> bool:
    return total is not None and not total.suppressed and not is_disclosive(total)


def _secondary_order(cell: Cell) -> tuple[int, int, int, str]:
    # A partner that is non-zero in every count hides both the numerator and the denominator of
    # the primary cell; only if none exists does one that is non-zero in some count come next.
    counts = _counts(cell)
    protects_all = all(count > 0 for count in counts)
    return (
        0 if protects_all else 1,
        cell.numerator or 0,
        cell.denominator or 0,
        cell.label,
    )


def suppress(cells: list[Cell], total: Cell | None) -> list[Cell]:
    """Apply primary and secondary suppression to breakdown cells; returns them in input order.

    `total` is the figure the cells of each group add up to. Pass it whenever it is published
    anywhere, including as the same indicator without a breakdown (one request away), because
    that is what makes a lone hidden cell derivable. When `total` is None or itself hidden, only
    primary suppression applies. Cells already marked `suppressed` stay hidden.
    """
    result = [_hide(cell) if cell.suppressed else apply_primary_suppression(cell) for cell in cells]
    if not _is_shown(total) or all(not cell.suppressed for cell in result):
        return result
    positions_by_group: defaultdict[str, list[int]] = defaultdict(list)
    for position, cell in enumerate(result):
        positions_by_group[cell.group].append(position)
    for positions in positions_by_group.values():
        hidden = [position for position in positions if result[position].suppressed]
        if len(hidden) != 1:
            continue
        candidates = [
            position
            for position in positions
            if not result[position].suppressed
            and any(count > 0 for count in _counts(result[position]))
        ]
        if candidates:
            partner = min(candidates, key=lambda position: _secondary_order(result[position]))
            result[partner] = _hide(result[partner])
    return result
