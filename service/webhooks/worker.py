"""The delivery worker (`neglect-service worker`): sends the outbox's due deliveries.

Several may run at once. Each batch is claimed in one short statement (`FOR UPDATE SKIP LOCKED`,
so two workers never claim one delivery) that moves the deliveries' `next_attempt_at` past a lease
and writes the batch's lease id: nothing stays locked while requests are in flight, and a worker
that dies (SIGKILL, a lost machine) leaves its deliveries to be claimed again once the lease ends.
Every outcome of a batch is then recorded in one short transaction, only where the lease is
still this worker's. Delivery is therefore at least once; receivers dedupe on `webhook-id`, which
is the event's id on every attempt and replay.

Each attempt follows Standard Webhooks v1.0.0: `webhook-id`, `webhook-timestamp` (this attempt's)
and `webhook-signature` (`service.webhooks.signing`); redirects are never followed; a 2xx is a
success; 410 Gone disables the subscription; 429 and 503 are retried when `Retry-After` says;
anything else is retried on `RetryPolicy`'s schedule (about three days, with jitter), after which
the delivery is dead-lettered (`dead`) until a replay. Each attempt appends an audit event naming
the client, the event and the outcome, never the body.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

import asyncpg
import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.webhooks import AttemptOutcome, WorkerHealth
from service.auth.key_encryption import KeyEncryptionKey
from service.db import DriverPool
from service.settings import Settings
from service.webhooks.egress import DestinationRefused, build_client
from service.webhooks.signing import SecretUnreadable, decrypt_secret, signature_header

logger = logging.getLogger("neglect_service.webhooks")

USER_AGENT: Final = "neglect-service-webhooks/1"
REQUEST_TIMEOUT_S: Final = 15.0
"""The egress client's timeout per request (`service.webhooks.egress.build_client`)."""


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again after a failed attempt. The default is the Standard Webhooks schedule
    (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h: ten attempts over about 75 hours),
    each delay varied by up to `jitter` either way so that retries after an outage spread out."""

    delays_s: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
    jitter: float = 0.2
    max_retry_after_s: float = 24 * 3600
    """A `Retry-After` beyond this is taken as this."""

    @property
    def max_attempts(self) -> int:
        return len(self.delays_s) + 1

    def delay_after(self, attempts: int) -> float | None:
        """Seconds to wait after the `attempts`-th failed attempt; None when it was the last."""
        if attempts >= self.max_attempts:
            return None
        base = self.delays_s[attempts - 1]
        return base * (1 + random.uniform(-self.jitter, self.jitter))  # noqa: S311 - spread only


@dataclass(frozen=True)
class Claimed:
    """A delivery this worker holds the lease of, with what sending it needs."""

    delivery_id: int
    attempts: int
    message_id: str
    event_type: str
    body: bytes
    subscription_id: uuid.UUID
    url: str
    client_id: str
    agency_type: str
    agency_name: str
    client_enabled: bool
    kek_id: str
    secret_enc: bytes
    previous_secret_enc: bytes | None


@dataclass(frozen=True)
class Attempt:
    """What one attempt came to, and what happens next."""

    claimed: Claimed
    attempted_at: datetime
    webhook_timestamp: int
    outcome: AttemptOutcome
    http_status: int | None
    duration_ms: int
    error: str | None
    next_status: str
    next_attempt_at: datetime


@dataclass
class WorkerStats:
    succeeded: int = 0
    failed: int = 0
    batches: int = 0


_CLAIM: Final = """
WITH due AS (
    SELECT id FROM webhook_delivery
    WHERE status = 'pending' AND next_attempt_at <= clock_timestamp()
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE webhook_delivery AS d
SET next_attempt_at = clock_timestamp() + make_interval(secs => $2),
    lease = $3,
    attempts = d.attempts + 1
FROM due, webhook_message AS m, webhook_subscription AS s, api_client AS c
WHERE d.id = due.id AND m.id = d.message_id AND s.id = d.subscription_id
  AND c.client_id = s.client_id
RETURNING d.id AS delivery_id, d.attempts, m.id AS message_id, m.event_type, m.body,
    s.id AS subscription_id, s.url, s.client_id, c.agency_type, c.agency_name, c.enabled,
    s.kek_id,
    s.secret_enc,
    CASE WHEN s.previous_secret_expires_at > clock_timestamp() THEN s.previous_secret_enc END
        AS previous_secret_enc
"""

_RECORD_ATTEMPTS: Final = """
INSERT INTO webhook_attempt (
    delivery_id, attempted_at, webhook_timestamp, outcome, http_status, duration_ms, error,
    worker_id
)
SELECT a.delivery_id, a.attempted_at, a.webhook_timestamp, a.outcome, a.http_status,
    a.duration_ms, a.error, $8
FROM unnest($1::bigint[], $2::timestamptz[], $3::bigint[], $4::text[], $5::integer[],
    $6::integer[], $7::text[])
    AS a (delivery_id, attempted_at, webhook_timestamp, outcome, http_status, duration_ms, error)
"""

_UPDATE_DELIVERIES: Final = """
UPDATE webhook_delivery AS d
SET status = u.status, next_attempt_at = u.next_attempt_at, lease = NULL,
    finished_at = CASE WHEN u.status = 'pending' THEN NULL ELSE clock_timestamp() END
FROM unnest($1::bigint[], $2::text[], $3::timestamptz[]) AS u (id, status, next_attempt_at)
WHERE d.id = u.id AND d.lease = $4 AND d.status = 'pending'
"""

# One audit event per attempt: who it was for, which event, what came of it. Never the body.
_AUDIT_ATTEMPTS: Final = """
SELECT neglect_record_audit(
    p_client_id => a.client_id, p_agency_type => a.agency_type, p_agency_name => a.agency_name,
    p_action => 'export', p_resource_type => 'webhook_message', p_resource_id => a.message_id,
    p_child_id => NULL, p_request_id => NULL, p_access_reason => a.reason
)
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
    AS a (client_id, agency_type, agency_name, message_id, reason)
"""

_FAN_OUT: Final = "SELECT neglect_fan_out_webhooks(p_limit => $1)"

_DISABLE: Final = (
    "SELECT neglect_end_webhook_subscription("
    "p_subscription_id => $1, p_status => 'disabled', p_reason => $2)"
)

_RELEASE: Final = """
UPDATE webhook_delivery
SET next_attempt_at = clock_timestamp(), lease = NULL, attempts = greatest(attempts - 1, 0)
WHERE lease = $1 AND status = 'pending'
"""

_HEARTBEAT: Final = """
INSERT INTO webhook_worker (worker_id, started_at, heartbeat_at, stopped_at, succeeded, failed)
VALUES ($1, $2, clock_timestamp(), CASE WHEN $3 THEN clock_timestamp() END, $4, $5)
ON CONFLICT (worker_id) DO UPDATE
SET heartbeat_at = excluded.heartbeat_at, stopped_at = excluded.stopped_at,
    succeeded = excluded.succeeded, failed = excluded.failed
"""

GONE_REASON: Final = "the endpoint answered 410 Gone"

DATABASE_ERRORS: Final = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
"""What the database going away looks like: refused or dropped connections, a pool wait that
timed out, a server shutting down or starting up."""


def _retry_after_s(response: httpx.Response, now: datetime) -> float | None:
    """`Retry-After` in seconds (a number of seconds or an HTTP date); None when absent or
    unreadable."""
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    if raw.isdigit():
        return float(raw)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class DeliveryWorker:
    """Claims, sends and records batches of due deliveries. One per process is the usual, and
    any number of processes may run against one database."""

    pool: DriverPool
    settings: Settings
    kek: KeyEncryptionKey
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    batch_size: int = 100
    fan_out_size: int = 500
    """Events fanned out in one transaction (`neglect_fan_out_webhooks`)."""
    concurrency: int = 20
    """Requests of a batch in flight at once: as many as the HTTP client keeps connections alive
    for (httpx keeps 20 by default), so a busy worker reuses its connections."""
    lease_s: float = 90.0
    """How long a claimed delivery stays this worker's: longer than a batch's requests (15 s
    timeout each, `concurrency` at a time) and its recording."""
    poll_interval_s: float = 0.5
    shutdown_grace_s: float = 20.0
    """On stop, how long the batch in flight may take to finish before it is released."""
    worker_id: str = field(default_factory=default_worker_id)
    http: httpx.AsyncClient | None = None
    stats: WorkerStats = field(default_factory=WorkerStats)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def _client(self) -> httpx.AsyncClient:
        if self.http is None:
            self.http = build_client(self.settings)
        return self.http

    async def aclose(self) -> None:
        if self.http is not None:
            await self.http.aclose()
            self.http = None

    # --- one batch --------------------------------------------------------------------------

    async def fan_out(self) -> int:
        """Make the deliveries of every event not yet fanned out, `fan_out_size` events a
        transaction (other workers take other events meanwhile); returns how many events."""
        total = 0
        async with self.pool.acquire() as connection:
            while True:
                fanned: int = await connection.fetchval(_FAN_OUT, self.fan_out_size)
                total += fanned
                if fanned < self.fan_out_size:
                    return total

    async def claim(self, lease: uuid.UUID) -> list[Claimed]:
        await self.fan_out()
        async with self.pool.acquire() as connection:
            rows = await connection.fetch(_CLAIM, self.batch_size, self.lease_s, lease)
        return [
            Claimed(
                delivery_id=row["delivery_id"],
                attempts=row["attempts"],
                message_id=row["message_id"],
                event_type=row["event_type"],
                body=row["body"].encode(),
                subscription_id=row["subscription_id"],
                url=row["url"],
                client_id=row["client_id"],
                agency_type=row["agency_type"],
                agency_name=row["agency_name"],
                client_enabled=row["enabled"],
                kek_id=row["kek_id"],
                secret_enc=row["secret_enc"],
                previous_secret_enc=row["previous_secret_enc"],
            )
            for row in rows
        ]

    def _secrets(self, claimed: Claimed) -> list[str]:
        secrets = [
            decrypt_secret(self.kek, claimed.subscription_id, claimed.kek_id, claimed.secret_enc)
        ]
        if claimed.previous_secret_enc is not None:
            secrets.append(
                decrypt_secret(
                    self.kek, claimed.subscription_id, claimed.kek_id, claimed.previous_secret_enc
                )
            )
        return secrets

    async def send(self, claimed: Claimed) -> Attempt:
        """One attempt: sign, POST, and judge what came back."""
        attempted_at = datetime.now(UTC)
        timestamp = int(attempted_at.timestamp())
        started = time.perf_counter()
        http_status: int | None = None
        error: str | None = None
        retry_after: float | None = None
        try:
            if not claimed.client_enabled:
                # Retried on the schedule: sent if the client is enabled again in time.
                raise DestinationRefused("the subscription's client is disabled")
            headers = {
                "webhook-id": claimed.message_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": signature_header(
                    self._secrets(claimed), claimed.message_id, timestamp, claimed.body
                ),
                "content-type": "application/json",
                "user-agent": USER_AGENT,
            }
            client = self._client()
            request = client.build_request(
                "POST", claimed.url, content=claimed.body, headers=headers
            )
            # The response's body is never read: a receiver cannot make us hold megabytes.
            response = await client.send(request, stream=True)
            await response.aclose()
            http_status = response.status_code
            outcome: AttemptOutcome
            if 200 <= http_status < 300:
                outcome = "succeeded"
            elif http_status == 410:
                outcome, error = "gone", GONE_REASON
            elif http_status in (429, 503):
                outcome, error = "throttled", f"HTTP {http_status}"
                retry_after = _retry_after_s(response, attempted_at)
            elif 300 <= http_status < 400:
                outcome, error = "failed", f"HTTP {http_status}: redirects are not followed"
            else:
                outcome, error = "failed", f"HTTP {http_status}"
        except DestinationRefused as exc:
            outcome, error = "refused", exc.reason[:300]
        except httpx.TimeoutException:
            outcome, error = "timeout", "no answer within the timeout"
        except httpx.HTTPError as exc:
            outcome, error = "error", type(exc).__name__
        except SecretUnreadable as exc:
            outcome, error = "error", "the subscription's secret cannot be read"
            logger.error("webhook secret unreadable: %s", exc)
        duration_ms = int((time.perf_counter() - started) * 1000)
        next_status, next_attempt_at = self._next(claimed, outcome, attempted_at, retry_after)
        return Attempt(
            claimed=claimed,
            attempted_at=attempted_at,
            webhook_timestamp=timestamp,
            outcome=outcome,
            http_status=http_status,
            duration_ms=duration_ms,
            error=error,
            next_status=next_status,
            next_attempt_at=next_attempt_at,
        )

    def _next(
        self,
        claimed: Claimed,
        outcome: AttemptOutcome,
        attempted_at: datetime,
        retry_after: float | None,
    ) -> tuple[str, datetime]:
        if outcome == "succeeded":
            return "succeeded", attempted_at
        if outcome == "gone":
            return "cancelled", attempted_at
        delay = self.policy.delay_after(claimed.attempts)
        if delay is None:
            return "dead", attempted_at
        if retry_after is not None:
            delay = min(retry_after, self.policy.max_retry_after_s)
        return "pending", attempted_at + timedelta(seconds=delay)

    async def record(self, lease: uuid.UUID, attempts: Sequence[Attempt]) -> None:
        """Every outcome of a batch, in one transaction; deliveries whose lease was lost
        (another worker claimed them after it ended) keep that worker's state."""
        gone = {a.claimed.subscription_id for a in attempts if a.outcome == "gone"}
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute(
                _RECORD_ATTEMPTS,
                [a.claimed.delivery_id for a in attempts],
                [a.attempted_at for a in attempts],
                [a.webhook_timestamp for a in attempts],
                [a.outcome for a in attempts],
                [a.http_status for a in attempts],
                [a.duration_ms for a in attempts],
                [a.error for a in attempts],
                self.worker_id,
            )
            await connection.execute(
                _UPDATE_DELIVERIES,
                [a.claimed.delivery_id for a in attempts],
                [a.next_status for a in attempts],
                [a.next_attempt_at for a in attempts],
                lease,
            )
            for subscription_id in sorted(gone):
                await connection.execute(_DISABLE, subscription_id, GONE_REASON)
            await connection.execute(
                _AUDIT_ATTEMPTS,
                [a.claimed.client_id for a in attempts],
                [a.claimed.agency_type for a in attempts],
                [a.claimed.agency_name for a in attempts],
                [a.claimed.message_id for a in attempts],
                [_audit_reason(a) for a in attempts],
            )

    async def release(self, lease: uuid.UUID) -> None:
        """Give back deliveries claimed but not attempted to the end: due again at once."""
        async with self.pool.acquire() as connection:
            await connection.execute(_RELEASE, lease)

    async def deliver_batch(self) -> int:
        """Claim, send and record one batch; returns how many deliveries were attempted."""
        lease = uuid.uuid4()
        claimed = await self.claim(lease)
        if not claimed:
            return 0
        gate = asyncio.Semaphore(self.concurrency)

        async def send_in_turn(each: Claimed) -> Attempt:
            async with gate:
                return await self.send(each)

        tasks = [asyncio.ensure_future(send_in_turn(each)) for each in claimed]
        try:
            attempts = await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            # Stopping: what was sent is recorded, what was not is given back, due at once.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            finished = [
                task.result() for task in tasks if not task.cancelled() and not task.exception()
            ]
            await asyncio.shield(self._finish_stopping(lease, finished))
            raise
        await self._record_with_retries(lease, attempts)
        self.stats.batches += 1
        self.stats.succeeded += sum(1 for a in attempts if a.outcome == "succeeded")
        self.stats.failed += sum(1 for a in attempts if a.outcome != "succeeded")
        return len(claimed)

    async def _finish_stopping(self, lease: uuid.UUID, finished: Sequence[Attempt]) -> None:
        if finished:
            await self._record_with_retries(lease, finished)
        await self.release(lease)

    async def _record_with_retries(self, lease: uuid.UUID, attempts: Sequence[Attempt]) -> None:
        # The database may be restarting: keep trying for about half the lease. After that the
        # lease ends and the deliveries are sent again (at least once; receivers dedupe).
        deadline = time.monotonic() + self.lease_s / 2
        pause = 0.5
        while True:
            try:
                await self.record(lease, attempts)
                return
            except DATABASE_ERRORS as exc:
                if time.monotonic() + pause > deadline:
                    logger.error(
                        "could not record %d webhook attempts; they will be sent again",
                        len(attempts),
                        extra={"error": type(exc).__name__},
                    )
                    return
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)

    # --- loops ------------------------------------------------------------------------------

    async def heartbeat(self, *, stopped: bool = False) -> None:
        async with self.pool.acquire() as connection:
            await connection.execute(
                _HEARTBEAT,
                self.worker_id,
                self.started_at,
                stopped,
                self.stats.succeeded,
                self.stats.failed,
            )

    async def run_once(self) -> int:
        """Deliver everything due now, batch after batch, then return how many attempts."""
        total = 0
        while True:
            attempted = await self.deliver_batch()
            total += attempted
            if attempted < self.batch_size:
                return total

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set; then finish the batch in flight (or, after
        `shutdown_grace_s`, record what was sent and release the rest) and say so in the
        heartbeat, which beats on its own meanwhile, however long a batch takes."""
        beating = asyncio.create_task(self._beat_until(stop))
        pause = self.poll_interval_s
        while not stop.is_set():
            batch = asyncio.create_task(self.deliver_batch())
            stopping = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({batch, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not batch.done():
                    # Stopping: let the requests in flight finish, within the grace period.
                    await asyncio.wait({batch}, timeout=self.shutdown_grace_s)
                    if not batch.done():
                        batch.cancel()
                        await asyncio.gather(batch, return_exceptions=True)
                        break
                attempted = batch.result()
                pause = self.poll_interval_s
            except DATABASE_ERRORS as exc:
                logger.warning(
                    "webhook worker cannot reach the database; retrying",
                    extra={"error": type(exc).__name__},
                )
                attempted = 0
                pause = min(pause * 2, 10.0)
            finally:
                stopping.cancel()
            if attempted == 0 and not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), timeout=pause)
                except TimeoutError:
                    pass
        stop.set()
        await beating
        try:
            await self.heartbeat(stopped=True)
        except DATABASE_ERRORS:
            pass

    async def _beat_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.heartbeat()
            except DATABASE_ERRORS:
                pass  # the delivery loop reports the database's state
            try:
                await asyncio.wait_for(
                    stop.wait(), timeout=self.settings.webhook_worker_heartbeat_s
                )
            except TimeoutError:
                pass


def _audit_reason(attempt: Attempt) -> str:
    status = f" (HTTP {attempt.http_status})" if attempt.http_status is not None else ""
    return (
        f"webhook {attempt.claimed.event_type} to subscription {attempt.claimed.subscription_id},"
        f" attempt {attempt.claimed.attempts}: {attempt.outcome}{status}"
    )


_WORKER_HEALTH: Final = text(
    "SELECT "
    "(SELECT count(*) FROM webhook_worker WHERE stopped_at IS NULL "
    " AND heartbeat_at > clock_timestamp() - make_interval(secs => :alive_s)) AS alive, "
    "(SELECT max(heartbeat_at) FROM webhook_worker) AS last_heartbeat_at, "
    "(SELECT count(*) FROM webhook_delivery "
    " WHERE status = 'pending' AND next_attempt_at <= clock_timestamp()) AS deliveries_due, "
    "(SELECT count(*) FROM webhook_fan_out) AS events_waiting, "
    "(SELECT count(*) FROM webhook_delivery WHERE status = 'dead' "
    " AND finished_at > clock_timestamp() - interval '24 hours') AS deliveries_dead_last_day"
)


async def worker_health(connection: AsyncConnection, settings: Settings) -> WorkerHealth:
    """What `/health/ready` shows of the workers: how many beat within three heartbeats, the
    last beat, how many deliveries are due and waiting, and how many events wait for a worker to
    make their deliveries (growing numbers: too few workers, or none); and how many deliveries
    were dead-lettered in the last day (above nought: a receiver has been failing for days)."""
    row = (
        await connection.execute(
            _WORKER_HEALTH, {"alive_s": 3 * settings.webhook_worker_heartbeat_s}
        )
    ).one()
    return WorkerHealth.model_validate(row._mapping)
