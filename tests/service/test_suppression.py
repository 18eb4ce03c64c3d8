from __future__ import annotations

from service.indicators.suppression import Cell, apply_primary_suppression, is_disclosive, suppress


def count_cell(label: str, count: int, group: str = "age_band") -> Cell:
    return Cell(label=label, group=group, numerator=count, denominator=None, value=float(count))


def rate_cell(label: str, numerator: int, denominator: int, group: str = "age_band") -> Cell:
    value = 100 * numerator / denominator if denominator else None
    return Cell(label=label, group=group, numerator=numerator, denominator=denominator, value=value)


def total_of(cells: list[Cell]) -> Cell:
    count = sum(cell.numerator or 0 for cell in cells)
    return count_cell("total", count)


def suppressed_labels(cells: list[Cell]) -> list[str]:
    return [cell.label for cell in cells if cell.suppressed]


def test_cell_of_three_is_hidden_with_at_least_one_more() -> None:
    cells = [count_cell("under 1", 3), count_cell("1-4", 40), count_cell("5-9", 12)]

    result = suppress(cells, total_of(cells))

    assert result[0].suppressed
    assert (result[0].numerator, result[0].value) == (None, None)
    assert len(suppressed_labels(result)) >= 2


def test_secondary_suppression_takes_the_next_smallest_non_zero_cell() -> None:
    cells = [
        count_cell("under 1", 3),
        count_cell("1-4", 0),
        count_cell("5-9", 12),
        count_cell("10-15", 40),
    ]

    result = suppress(cells, total_of(cells))

    assert suppressed_labels(result) == ["under 1", "5-9"]


def test_zero_is_shown() -> None:
    cells = [count_cell("under 1", 0), count_cell("1-4", 40)]

    result = suppress(cells, total_of(cells))

    assert result == cells


def test_six_is_shown() -> None:
    cells = [count_cell("under 1", 6), count_cell("1-4", 40)]

    result = suppress(cells, total_of(cells))

    assert not any(cell.suppressed for cell in result)
    assert result[0].numerator == 6


def test_five_is_hidden() -> None:
    assert is_disclosive(count_cell("x", 5))


def test_two_small_cells_protect_each_other_without_a_third() -> None:
    cells = [count_cell("under 1", 2), count_cell("1-4", 4), count_cell("5-9", 30)]

    result = suppress(cells, total_of(cells))

    assert suppressed_labels(result) == ["under 1", "1-4"]


def test_without_a_total_only_primary_suppression_applies() -> None:
    cells = [count_cell("under 1", 3), count_cell("1-4", 40)]

    result = suppress(cells, None)

    assert suppressed_labels(result) == ["under 1"]


def test_hidden_total_needs_no_secondary_suppression() -> None:
    cells = [count_cell("under 1", 3), count_cell("1-4", 0)]

    result = suppress(cells, apply_primary_suppression(total_of(cells)))

    assert suppressed_labels(result) == ["under 1"]


def test_rate_on_a_small_denominator_is_hidden() -> None:
    cell = rate_cell("under 1", 0, 4)

    assert apply_primary_suppression(cell).suppressed
    assert apply_primary_suppression(cell).value is None


def test_rate_on_a_zero_denominator_is_shown() -> None:
    cell = rate_cell("under 1", 0, 0)

    assert apply_primary_suppression(cell) == cell


def test_rate_partner_is_non_zero_in_numerator_and_denominator() -> None:
    cells = [rate_cell("under 1", 3, 50), rate_cell("1-4", 0, 60), rate_cell("5-9", 10, 40)]
    total = rate_cell("total", 13, 150)

    result = suppress(cells, total)

    assert suppressed_labels(result) == ["under 1", "5-9"]


def test_groups_are_protected_separately() -> None:
    cells = [
        count_cell("under 1", 3, group="age_band"),
        count_cell("1-4", 40, group="age_band"),
        count_cell("5-9", 12, group="age_band"),
        count_cell("F", 30, group="sex"),
        count_cell("M", 25, group="sex"),
    ]

    result = suppress(cells, count_cell("total", 55))

    assert suppressed_labels(result) == ["under 1", "5-9"]


def test_cells_come_back_in_input_order() -> None:
    cells = [count_cell("b", 30), count_cell("a", 2), count_cell("c", 9)]

    result = suppress(cells, total_of(cells))

    assert [cell.label for cell in result] == ["b", "a", "c"]
