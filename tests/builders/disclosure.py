"""What a caller without `indicators:read:unsuppressed` should see, worked out independently of the
service: the perturbation table as the tests state it, and cell keys summed straight from the
records' `record_key` columns."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final

from sqlalchemy import text

from service.db import SessionFactory, transaction

STATED_TABLE: Final[dict[int, tuple[tuple[int, int, int], ...]]] = {
    # count: ((first cell key, last cell key, noise), ...); the row for 8 serves larger counts.
    6: ((0, 159, 0), (160, 223, 1), (224, 255, 2)),
    7: ((0, 63, -1), (64, 159, 0), (160, 223, 1), (224, 255, 2)),
    8: ((0, 31, -2), (32, 95, -1), (96, 159, 0), (160, 223, 1), (224, 255, 2)),
}
"""The perturbation table the catalogue must publish."""


def stated_noise(count: int, key_sum: int) -> int:
    """The noise the stated table gives a count (6 or more) whose records' keys sum to
    `key_sum`."""
    cell_key = key_sum % 256
    [noise] = [
        noise for first, last, noise in STATED_TABLE[min(count, 8)] if first <= cell_key <= last
    ]
    return noise


def published_count(count: int, key_sum: int) -> int:
    """A shown count as published: zero stays zero."""
    return count + stated_noise(count, key_sum) if count else 0


def published_rate(
    numerator: int, numerator_keys: int, denominator: int, denominator_keys: int
) -> tuple[int, int, float]:
    """A shown percentage as published: (numerator, denominator, value)."""
    shown_denominator = published_count(denominator, denominator_keys)
    shown_numerator = min(published_count(numerator, numerator_keys), shown_denominator)
    value = Decimal(100 * shown_numerator) / Decimal(shown_denominator)
    return (
        shown_numerator,
        shown_denominator,
        float(value.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)),
    )


def published_mean(total: int, count: int, key_sum: int) -> tuple[int, int, float]:
    """A shown mean as published: the sum gets the large-count noise of the averaged things'
    cell key, the count its own noise."""
    shown_total = total + stated_noise(8, key_sum)
    shown_count = published_count(count, key_sum)
    value = Decimal(shown_total) / Decimal(shown_count)
    return (
        shown_total,
        shown_count,
        float(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)),
    )


async def key_sum(factory: SessionFactory, sql: str, **params: Any) -> int:
    """The sum of the `record_key`s a query (`SELECT record_key FROM ...`) selects."""
    async with transaction(factory) as session:
        total = await session.scalar(
            text(f"SELECT COALESCE(sum(record_key), 0) FROM ({sql}) AS keyed"),  # noqa: S608
            params,
        )
    return int(total or 0)


async def set_record_keys(factory: SessionFactory, table: str, keys: dict[str, int]) -> None:
    """Give the records with these ids these record keys (tests fix keys so that what an attack
    recovers is the same on every run; the database draws them at random otherwise)."""
    async with transaction(factory) as session:
        for record_id, key in keys.items():
            await session.execute(
                text(f"UPDATE {table} SET record_key = :key WHERE id = CAST(:id AS uuid)"),  # noqa: S608
                {"key": key, "id": record_id},
            )
