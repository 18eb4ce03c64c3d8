"""Reads a streaming replica may serve (`NEGLECT_READ_DATABASE_URL`): the indicator series (JSON
and CSV), the figures an OData feed pull computes for its snapshot, and the audit-event and toolkit
lists. They write nothing, so they run in READ ONLY transactions, on the primary too when no
replica is configured or the replica cannot serve.

Lag: every second the primary's flushed WAL position is read and compared with what the replica
has replayed. A replica that has replayed that far was current when it was read; one that has not
is behind by the time since the last transaction it replayed. A read is served by the replica
while that lag, plus the time since it was measured, is at most `NEGLECT_READ_MAX_LAG_S`; the
bound travels with the session (`data_lag_s`) so the answer can say how old its data may be.
Otherwise (too far behind, unreachable, or not measured lately) the primary serves the read.

Everything the service has just written, or writes while it reads, stays on the primary:
person-level reads and lists (referrals, a child's timeline and assessments, case audits), each of
which writes its audit row in its transaction, and whose caller expects to find what it has just
sent; the OData feed's paging snapshots, stored by the first page and read by the next ones
(`service.feed`); a toolkit version read by its id (its publisher reads it back at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from service.db import SessionFactory, create_session_factory
from service.errors import DatabaseUnavailable

logger = logging.getLogger(__name__)

CHECK_INTERVAL_S: Final = 1.0
CHECK_TIMEOUT_S: Final = 2.0
STALE_AFTER_S: Final = 3 * CHECK_INTERVAL_S + CHECK_TIMEOUT_S
"""A measurement older than this (the checks are failing to finish) is no measurement."""
LAG_KEY: Final = "data_lag_s"
"""`AsyncSession.info` key: how many seconds behind the primary this session's data may be."""
_ON_REPLICA: Final = "on_replica"
# A standby cancels a query whose snapshot or locks conflict with the WAL it must replay
# ("canceling statement due to conflict with recovery"), or whose database was dropped.
RECOVERY_CONFLICTS: Final = frozenset({"40001", "57P04"})

# The flush position: WAL the primary has not flushed cannot have reached any replica.
_PRIMARY_POSITION = text("SELECT pg_current_wal_flush_lsn()::text")
# NULL when the replica has replayed no transaction since it started: unknown, not current.
_REPLICA_LAG = text(
    """
SELECT CASE
    WHEN NOT pg_is_in_recovery() THEN 0.0
    WHEN pg_last_wal_replay_lsn() >= CAST(CAST(:position AS text) AS pg_lsn) THEN 0.0
    ELSE extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8
END
"""
)


@dataclass(frozen=True)
class ReplicaCheck:
    lag_s: float | None
    """Seconds behind the primary when measured; None when it could not be measured."""
    checked_at: float
    """`time.monotonic()` of the measurement."""


class ReadSessions:
    """Read-only sessions: on the replica when it is close enough behind, else on the primary."""

    def __init__(self, primary: AsyncEngine, replica: AsyncEngine | None, max_lag_s: float) -> None:
        self.primary = primary
        self.replica = replica
        self.max_lag_s = max_lag_s
        self._on_primary = create_session_factory(
            primary.execution_options(postgresql_readonly=True)
        )
        self._on_replica: SessionFactory | None = (
            create_session_factory(replica) if replica is not None else None
        )
        self.last_check = ReplicaCheck(None, -STALE_AFTER_S)
        self._checker: asyncio.Task[None] | None = None
        self._failing = False

    def lag_bound(self) -> float | None:
        """How far behind the replica may be now; None when it should not serve."""
        check = self.last_check
        if check.lag_s is None:
            return None
        age = time.monotonic() - check.checked_at
        if age > STALE_AFTER_S:
            return None
        bound = check.lag_s + age
        return bound if bound <= self.max_lag_s else None

    async def open(self, *, isolation_level: str | None = None) -> AsyncSession:
        """A read-only session, its transaction begun (at `isolation_level` when given);
        `session.info[LAG_KEY]` says how old its data may be."""
        options = {"isolation_level": isolation_level} if isolation_level else None
        bound = self.lag_bound()
        if self._on_replica is not None and bound is not None:
            session = self._on_replica()
            try:
                # A checkout: free when the pool holds a live connection, and a quick refusal
                # when the replica went away since the last check.
                await session.connection(execution_options=options)
            except (DBAPIError, OSError) as exc:
                await session.close()
                self.replica_failed(exc)
            else:
                session.info.update({LAG_KEY: bound, _ON_REPLICA: True})
                return session
        session = self._on_primary()
        session.info[LAG_KEY] = 0.0
        if options is not None:
            await session.connection(execution_options=options)
        return session

    @contextlib.asynccontextmanager
    async def session(self, *, isolation_level: str | None = None) -> AsyncIterator[AsyncSession]:
        """`open`, closed afterwards (its transaction rolled back: it wrote nothing). A failed
        read on the replica stops its use until the next check, and a read the standby
        cancelled for a recovery conflict is `DatabaseUnavailable` (503 with Retry-After: not
        the caller's fault, and the retry goes to the primary)."""
        session = await self.open(isolation_level=isolation_level)
        try:
            yield session
        except (DBAPIError, OSError) as exc:
            self.read_failed(session, exc)
            sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
            if self.on_replica(session) and sqlstate in RECOVERY_CONFLICTS:
                raise DatabaseUnavailable("the read replica cancelled this read; retry") from exc
            raise
        finally:
            await session.close()

    @staticmethod
    def on_replica(session: AsyncSession) -> bool:
        """Whether `open` gave this session on the replica."""
        return bool(session.info.get(_ON_REPLICA))

    def read_failed(self, session: AsyncSession, exc: BaseException) -> None:
        """A read failed with a database error: if the replica served it, stop using the
        replica until the next check finds it answering."""
        if self.on_replica(session):
            self.replica_failed(exc)

    def replica_failed(self, exc: BaseException) -> None:
        """A replica session failed: reads go to the primary until a check finds it again."""
        self._note_failure(exc)
        self.last_check = ReplicaCheck(None, time.monotonic())

    def _note_failure(self, exc: BaseException) -> None:
        if not self._failing:
            self._failing = True
            logger.warning(
                "read replica unavailable; the primary serves its reads",
                extra={"error": type(exc).__name__},
            )

    async def check(self) -> ReplicaCheck:
        """Measure the replica's lag now, and keep the result for `open`."""
        if self.replica is None:
            raise RuntimeError("no read replica is configured")
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                async with self.primary.connect() as primary:
                    primary = await primary.execution_options(isolation_level="AUTOCOMMIT")
                    position = await primary.scalar(_PRIMARY_POSITION)
                async with self.replica.connect() as replica:
                    replica = await replica.execution_options(isolation_level="AUTOCOMMIT")
                    lag = await replica.scalar(_REPLICA_LAG, {"position": position})
        except (DBAPIError, OSError, TimeoutError) as exc:
            self._note_failure(exc)
            lag = None
        else:
            if self._failing:
                logger.info("read replica available again")
            self._failing = False
        check = ReplicaCheck(None if lag is None else max(0.0, float(lag)), time.monotonic())
        self.last_check = check
        return check

    async def _keep_checking(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(CHECK_INTERVAL_S)

    def start(self) -> None:
        """Check the replica every second, in the background (nothing to do without one)."""
        if self.replica is not None and self._checker is None:
            self._checker = asyncio.create_task(self._keep_checking(), name="replica-lag")

    async def close(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checker
            self._checker = None
        if self.replica is not None:
            await self.replica.dispose()
