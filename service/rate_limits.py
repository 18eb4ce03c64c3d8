"""Rate limits shared by every process and replica: failed token requests per client id and per
address, and a per-client quota on the API.

The strategies and limit items are the `limits` library's; it has no PostgreSQL storage, so
`PostgresStorage` below is one, on the driver pool, counting in `rate_limit_counter` with one
statement per operation. PostgreSQL is the one thing every replica already shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass

import asyncpg
from limits import RateLimitItem, RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.aio.storage import Storage
from limits.aio.strategies import FixedWindowRateLimiter

from service.db import DriverPool
from service.settings import Settings

logger = logging.getLogger(__name__)

# One statement: a window starts at its first hit and lasts `expiry` seconds by the database's
# clock, which every replica shares.
_INCR = """
INSERT INTO rate_limit_counter AS c (key, hits, expires_at)
VALUES ($1, $3, now() + make_interval(secs => $2))
ON CONFLICT (key) DO UPDATE SET
    hits = CASE WHEN c.expires_at > now() THEN c.hits + excluded.hits ELSE excluded.hits END,
    expires_at = CASE WHEN c.expires_at > now() THEN c.expires_at ELSE excluded.expires_at END
RETURNING hits, extract(epoch FROM expires_at - now())::float8 AS seconds_left
"""
_GET = "SELECT hits FROM rate_limit_counter WHERE key = $1 AND expires_at > now()"
_SECONDS_LEFT = (
    "SELECT extract(epoch FROM expires_at - now())::float8 FROM rate_limit_counter "
    "WHERE key = $1 AND expires_at > now()"
)
_PURGE = "DELETE FROM rate_limit_counter WHERE expires_at <= now()"

FLUSH_INTERVAL_S = 0.25
PURGE_INTERVAL_S = 60.0


class PostgresStorage(Storage):
    """A `limits` storage on the service's asyncpg pool (fixed windows only)."""

    def __init__(self, pool: DriverPool) -> None:
        super().__init__()
        self._pool = pool

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)

    async def count(self, key: str, expiry: int, amount: int = 1) -> tuple[int, float]:
        """Add `amount` hits; the window's hits and the seconds until it ends."""
        async with self._pool.acquire() as connection:
            row = await connection.fetchrow(_INCR, key, float(expiry), amount)
        return int(row["hits"]), float(row["seconds_left"])

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        hits, _ = await self.count(key, expiry, amount)
        return hits

    async def get(self, key: str) -> int:
        async with self._pool.acquire() as connection:
            hits = await connection.fetchval(_GET, key)
        return int(hits or 0)

    async def get_expiry(self, key: str) -> float:
        # The time left is measured by the database and the deadline given in this process's
        # clock, so a skew between the two clocks cannot stretch or cut a Retry-After.
        async with self._pool.acquire() as connection:
            seconds_left = await connection.fetchval(_SECONDS_LEFT, key)
        return time.time() + float(seconds_left or 0.0)

    async def check(self) -> bool:
        async with self._pool.acquire() as connection:
            return bool(await connection.fetchval("SELECT true"))

    async def reset(self) -> int | None:
        async with self._pool.acquire() as connection:
            status: str = await connection.execute("DELETE FROM rate_limit_counter")
        return int(status.split()[-1])

    async def clear(self, key: str) -> None:
        async with self._pool.acquire() as connection:
            await connection.execute("DELETE FROM rate_limit_counter WHERE key = $1", key)

    async def purge(self) -> None:
        """Delete the rows of windows that have ended."""
        async with self._pool.acquire() as connection:
            await connection.execute(_PURGE)


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused, and after how many seconds to try again (`Retry-After`)."""

    reason: str
    retry_after_s: int


def _retry_after(seconds_left: float) -> int:
    return max(1, math.ceil(seconds_left))


@dataclass
class _Tally:
    """One client's API quota as this process sees it."""

    pending: int = 0
    """Requests admitted here and not yet added to the shared counter."""
    shared: int = 0
    """The shared counter when this process last added to it."""
    window_ends: float = math.inf
    """`time.monotonic()` at which that counter's window ends."""
    used_at: float = 0.0


class RateLimits:
    """The service's rate limits, counted in PostgreSQL so that every replica shares them.

    Failed token requests are counted exactly, a statement each: they are rare, and each costs a
    secret hash anyway. The API quota is on every request, so far from its limit a request is
    admitted from this process's own tally, which a background task adds to the shared counter
    every `FLUSH_INTERVAL_S` (learning in the same statement what the other processes spent).
    Within a margin of the limit (a tenth of it, at least 100 requests) every request is counted
    in the shared counter before it is answered, so the limit itself holds exactly. What can slip
    through is what a client sends within one flush interval while crossing into that margin.
    """

    def __init__(self, pool: DriverPool, settings: Settings) -> None:
        self.storage = PostgresStorage(pool)
        self._limiter = FixedWindowRateLimiter(self.storage)
        window = settings.token_failure_window_s
        self._per_client = RateLimitItemPerSecond(settings.token_failures_per_client, window)
        self._per_address = RateLimitItemPerSecond(settings.token_failures_per_address, window)
        quota = settings.api_requests_per_minute
        self._api = RateLimitItemPerMinute(quota) if quota else None
        self._local_ceiling = quota - max(quota // 10, min(quota, 100))
        self._tallies: dict[str, _Tally] = {}
        self._task: asyncio.Task[None] | None = None

    # --- Failed token requests ------------------------------------------------------------------

    def _token_limits(
        self, client_id: str | None, address: str
    ) -> list[tuple[str, RateLimitItem, tuple[str, ...]]]:
        limits: list[tuple[str, RateLimitItem, tuple[str, ...]]] = []
        if client_id:
            limits.append(
                ("this client id", self._per_client, ("token-failures", "client", client_id))
            )
        limits.append(("this address", self._per_address, ("token-failures", "address", address)))
        return limits

    async def token_refusal(self, client_id: str | None, address: str) -> Refusal | None:
        """A refusal when this client id or address has had too many failed token requests in
        the current window, whether or not the client exists."""
        for what, item, identifiers in self._token_limits(client_id, address):
            if not await self._limiter.test(item, *identifiers):
                stats = await self._limiter.get_window_stats(item, *identifiers)
                return Refusal(
                    f"too many failed token requests from {what}",
                    _retry_after(stats.reset_time - time.time()),
                )
        return None

    async def record_token_failure(self, client_id: str | None, address: str) -> None:
        for _, item, identifiers in self._token_limits(client_id, address):
            await self._limiter.hit(item, *identifiers)

    # --- The API quota --------------------------------------------------------------------------

    async def api_refusal(self, client_id: str) -> Refusal | None:
        """Spend one request of the client's quota; a refusal when it is used up."""
        if self._api is None:
            return None
        key = self._api.key_for("api", client_id)
        now = time.monotonic()
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._tallies[key] = _Tally()
        tally.used_at = now
        if now >= tally.window_ends:
            tally.shared, tally.window_ends = 0, math.inf
        if tally.shared + tally.pending < self._local_ceiling:
            tally.pending += 1
            return None
        cost, tally.pending = tally.pending + 1, 0
        try:
            hits, seconds_left = await self.storage.count(key, self._api.get_expiry(), cost)
        except BaseException:
            tally.pending += cost - 1
            raise
        tally.shared, tally.window_ends = hits, time.monotonic() + seconds_left
        if hits <= self._api.amount:
            return None
        return Refusal(
            f"this client's quota of {self._api.amount} requests a minute is used up",
            _retry_after(seconds_left),
        )

    async def flush(self) -> None:
        """Add every tally's pending requests to the shared counters."""
        if self._api is None:
            return
        expiry = self._api.get_expiry()
        idle_since = time.monotonic() - 2 * expiry
        for key, tally in list(self._tallies.items()):
            if not tally.pending:
                if tally.used_at < idle_since:
                    del self._tallies[key]
                continue
            cost, tally.pending = tally.pending, 0
            try:
                hits, seconds_left = await self.storage.count(key, expiry, cost)
            except BaseException:
                tally.pending += cost
                raise
            tally.shared, tally.window_ends = hits, time.monotonic() + seconds_left

    async def _run(self) -> None:
        last_purge = time.monotonic()
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            try:
                await self.flush()
                if time.monotonic() - last_purge >= PURGE_INTERVAL_S:
                    last_purge = time.monotonic()
                    await self.storage.purge()
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
                # The database is away: the tallies wait for the next round.
                logger.warning("rate-limit flush failed", extra={"error": type(exc).__name__})

    def start(self) -> None:
        """Start the background flush (the lifespan calls this)."""
        self._task = asyncio.create_task(self._run(), name="rate-limit-flush")

    async def close(self) -> None:
        """Stop the background flush and add what is pending, if the database answers."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.flush()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            logger.warning("rate-limit flush failed", extra={"error": type(exc).__name__})
