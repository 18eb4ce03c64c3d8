"""Idempotency keys are kept at least 24 hours, then purged."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from service.db import SessionFactory, transaction
from service.idempotency import claim_key, purge_expired


async def _store(factory: SessionFactory, key: str, age_hours: int) -> None:
    async with transaction(factory) as session:
        await claim_key(session, "nsc_retention", key, "test", "0" * 64)
        await session.execute(
            text(
                "UPDATE idempotency_record SET created_at = now() - make_interval(hours => :h) "
                "WHERE idempotency_key = :k"
            ),
            {"h": age_hours, "k": key},
        )


async def test_purge_deletes_only_keys_older_than_the_cut_off(
    session_factory: SessionFactory,
) -> None:
    old, young = f"old-{uuid.uuid4()}", f"young-{uuid.uuid4()}"
    await _store(session_factory, old, 72)
    await _store(session_factory, young, 25)
    async with transaction(session_factory) as session:
        await purge_expired(session, 48)
    async with transaction(session_factory) as session:
        left = set(
            await session.scalars(
                text(
                    "SELECT idempotency_key FROM idempotency_record "
                    "WHERE idempotency_key IN (:a, :b)"
                ),
                {"a": old, "b": young},
            )
        )
    assert left == {young}


async def test_purge_refuses_a_retention_under_24_hours(session_factory: SessionFactory) -> None:
    async with transaction(session_factory) as session:
        with pytest.raises(ValueError, match="at least 24 hours"):
            await purge_expired(session, 23)
