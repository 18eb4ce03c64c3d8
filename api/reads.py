"""The read-only session of the routes a replica may serve (`service.replica`).

Kept apart from `deps.py` only while another change reworks that file; it belongs there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Final

from fastapi import Depends, Request, Response
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from service.errors import DatabaseUnavailable
from service.replica import LAG_KEY, ReadSessions

DATA_LAG_HEADER: Final = "X-Data-Lag-Seconds"
# A standby cancels a query whose snapshot or locks conflict with the WAL it must replay
# ("canceling statement due to conflict with recovery"), or whose database was dropped.
_RECOVERY_CONFLICTS: Final = frozenset({"40001", "57P04"})
DATA_LAG_DOC: Final = {
    DATA_LAG_HEADER: {
        "description": "At most how many seconds behind the primary database this answer's "
        "data is: 0.0 from the primary; from a read replica, its lag when last measured (every "
        "second) plus the time since",
        "schema": {"type": "string", "example": "0.4"},
    }
}


def data_lag(session: AsyncSession) -> str:
    """The `X-Data-Lag-Seconds` value for what `session` read."""
    return f"{float(session.info.get(LAG_KEY, 0.0)):.1f}"


async def get_read_session(request: Request, response: Response) -> AsyncIterator[AsyncSession]:
    """A READ ONLY session, on the replica when it is close enough behind. Sets
    `X-Data-Lag-Seconds` on the answer (a route that returns its own Response copies it)."""
    reads: ReadSessions = request.app.state.reads
    session = await reads.open()
    response.headers[DATA_LAG_HEADER] = data_lag(session)
    try:
        yield session
    except (DBAPIError, OSError) as exc:
        reads.read_failed(session, exc)
        sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
        if reads.on_replica(session) and sqlstate in _RECOVERY_CONFLICTS:
            # Not the caller's fault, and a retry is served by the primary until the next check.
            raise DatabaseUnavailable("the read replica cancelled this read; retry") from exc
        raise
    finally:
        await session.close()


ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="function")]
