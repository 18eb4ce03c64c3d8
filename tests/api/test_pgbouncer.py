"""Through a real PgBouncer (the machine's `pgbouncer` package) in transaction mode, with
`NEGLECT_DB_POOL_MODE=transaction` and connected as the database's runtime role, as deployed (the
owner's URL is the direct one): the service starts, keeps its statement timeout (a statement past
it is cancelled, and the request answers 503), spends one round trip per statement, and answers a
mixed load with retries without an error.

Why a subset: the referral, assessment, case-event and indicator suites take minutes, so the
normal run sends a representative load through the pooler here, touching each of their write and
read paths (creates, same-key replays, case-event batches and their duplicates, referral reads and
lists, indicator series as JSON and CSV). `make test-pgbouncer` runs those whole suites through it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from api.main import create_app
from schemas.common import today_in_uk
from service.cli.main import app as cli_app
from service.db import create_engine, create_pool, create_session_factory
from service.settings import InvalidSettings, Settings, get_settings, load_settings
from tests.builders.assessments import assessment_body, publish_demo
from tests.builders.case_events import child_ref, feedback_received, health_appointment
from tests.builders.referrals import PROBLEMS, count_rows, post_referral, referral_body
from tests.conftest import ClientMaker, assert_errors_are_problems, through_pgbouncer
from tests.servers import PgBouncer

TIMEOUT_MS = 300


@pytest.fixture(scope="module")
def pooled_settings(settings: Settings, database_url: str) -> Settings:
    # Validated as the environment would be: transaction mode requires the owner's direct URL.
    return Settings.model_validate(
        {
            **settings.model_dump(exclude={"key_encryption_key"}),
            "key_encryption_key": settings.key_encryption_key,
            "db_pool_mode": "transaction",
            "owner_database_url": database_url,
        }
    )


@pytest.fixture(scope="module")
def pooled_url(pgbouncer: PgBouncer, database_url: str) -> str:
    """The test database through PgBouncer, as its runtime role."""
    return through_pgbouncer(pgbouncer, database_url)


@pytest.fixture(scope="module")
async def pooled_app(pooled_settings: Settings, pooled_url: str) -> AsyncIterator[FastAPI]:
    application = create_app(pooled_settings, pooled_url)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def pooled(pooled_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=pooled_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://test",
        event_hooks={"response": [assert_errors_are_problems]},
    ) as http:
        yield http


@pytest.fixture
def make_pooled_client(pooled_app: FastAPI) -> ClientMaker:
    return ClientMaker(pooled_app)


@contextmanager
def round_trips(connection: Any) -> Iterator[list[int]]:
    """Count the round trips an asyncpg connection makes: each ends with a Sync or a Flush (the
    extended protocol; asyncpg describes a statement inside a transaction with a Flush) or is
    one Query message (the simple protocol), whatever else it sends before waiting."""
    transport = connection._transport
    count = [0]
    write = transport.write

    def counting_write(data: bytes | bytearray | memoryview) -> None:
        raw = bytes(data)
        position = 0
        while position + 5 <= len(raw):
            kind = raw[position : position + 1]
            length = int.from_bytes(raw[position + 1 : position + 5], "big")
            if kind in (b"S", b"H", b"Q"):
                count[0] += 1
            position += 1 + length
        write(data)

    transport.write = counting_write
    try:
        yield count
    finally:
        del transport.write


# --- start-up --------------------------------------------------------------------------------


async def test_the_service_starts_and_answers_through_pgbouncer(
    pooled: httpx.AsyncClient, pgbouncer: PgBouncer, pooled_url: str
) -> None:
    response = await pooled.get("/health/ready")
    assert response.status_code == 200
    database = str(make_url(pooled_url).database)
    [pool] = [row for row in pgbouncer.show("POOLS") if row["database"] == database]
    assert pool["pool_mode"] == "transaction"


async def test_the_session_mode_settings_through_pgbouncer_stop_the_start_with_a_hint(
    settings: Settings, pooled_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # What the issue saw: PgBouncer refuses the statement_timeout startup parameter.
    application = create_app(settings.model_copy(update={"db_pool_mode": "session"}), pooled_url)
    with caplog.at_level(logging.CRITICAL), pytest.raises(DBAPIError):
        async with application.router.lifespan_context(application):
            pass
    assert "NEGLECT_DB_POOL_MODE=transaction" in caplog.text


def test_transaction_mode_without_the_owners_direct_url_is_one_settings_line(
    monkeypatch: pytest.MonkeyPatch, pooled_url: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", pooled_url)
    monkeypatch.setenv("NEGLECT_DB_POOL_MODE", "transaction")
    monkeypatch.delenv("NEGLECT_OWNER_DATABASE_URL", raising=False)
    with pytest.raises(InvalidSettings) as missing:
        load_settings()
    # The owner's URL through the same pooler (same host and port) is no direct connection.
    monkeypatch.setenv(
        "NEGLECT_OWNER_DATABASE_URL",
        make_url(pooled_url).set(username="owner").render_as_string(False),
    )
    with pytest.raises(InvalidSettings) as pooled:
        load_settings()
    assert str(missing.value) == (
        "NEGLECT_OWNER_DATABASE_URL: required when NEGLECT_DB_POOL_MODE is transaction "
        "(a direct connection to the primary, not through the pooler)"
    )
    assert str(pooled.value).startswith("NEGLECT_OWNER_DATABASE_URL: must be a direct connection")
    assert "\n" not in str(missing.value) + str(pooled.value)


def test_migrate_and_db_roles_behind_pgbouncer_use_the_owners_direct_url(
    monkeypatch: pytest.MonkeyPatch, pooled_url: str, database_url: str, pgbouncer: PgBouncer
) -> None:
    monkeypatch.setenv("DATABASE_URL", pooled_url)
    monkeypatch.setenv("NEGLECT_OWNER_DATABASE_URL", database_url)
    monkeypatch.setenv("NEGLECT_DB_POOL_MODE", "transaction")
    monkeypatch.setenv("NEGLECT_DB_STATEMENT_TIMEOUT_MS", "15000")
    get_settings.cache_clear()
    try:
        migrated = CliRunner().invoke(cli_app, ["migrate"])
        granted = CliRunner().invoke(cli_app, ["db", "roles", "--json"])
    finally:
        get_settings.cache_clear()
    assert migrated.exit_code == 0, migrated.output
    assert granted.exit_code == 0, granted.output
    result = json.loads(granted.output)
    assert result["role"] == make_url(pooled_url).username
    assert result["statement_timeout_ms"] == 15000
    # Neither went through the pooler: it never made a pool for the owner on this database.
    database, owner = make_url(database_url).database, make_url(database_url).username
    pools = {(row["database"], row["user"]) for row in pgbouncer.show("POOLS")}
    assert (database, owner) not in pools
    assert (database, result["role"]) in pools


# --- the statement timeout -------------------------------------------------------------------


async def test_a_long_query_in_a_session_is_cancelled_by_the_statement_timeout(
    pooled_settings: Settings, pooled_url: str
) -> None:
    short = pooled_settings.model_copy(update={"db_statement_timeout_ms": TIMEOUT_MS})
    engine = create_engine(short, pooled_url)
    try:
        async with create_session_factory(engine)() as session:
            shown = await session.scalar(text("SHOW statement_timeout"))
            with pytest.raises(DBAPIError) as raised:
                await session.execute(text("SELECT pg_sleep(5)"))
    finally:
        await engine.dispose()
    assert shown == f"{TIMEOUT_MS}ms"
    # Cancelled by the server for the timeout set in the transaction, not ended by the client.
    assert isinstance(getattr(raised.value.orig, "__cause__", None), asyncpg.QueryCanceledError)
    assert "statement timeout" in str(raised.value.orig)


async def test_a_long_single_statement_on_the_driver_pool_is_cancelled_on_the_server(
    pooled_settings: Settings, pooled_url: str, database_url: str
) -> None:
    short = pooled_settings.model_copy(update={"db_statement_timeout_ms": TIMEOUT_MS})
    pool = await create_pool(short, pooled_url)
    marker = f"long-{uuid.uuid4().hex}"
    try:
        with pytest.raises(TimeoutError):
            async with pool.acquire() as connection:
                await connection.fetchval(f"SELECT pg_sleep(5) /* {marker} */")
    finally:
        await pool.close()
    # Cancelled on the server, not only abandoned by the client.
    direct = await asyncpg.connect(
        make_url(database_url).set(drivername="postgresql").render_as_string(False)
    )
    try:
        running = await direct.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1",
            f"%{marker}%",
        )
    finally:
        await direct.close()
    assert running == 0


async def test_the_runtime_roles_own_timeout_reaches_single_statements_through_pgbouncer(
    pooled_app: FastAPI,
) -> None:
    # Outside a transaction no SET LOCAL applies: what the server enforces there is the role's
    # setting in this database, which `db roles` (here conftest, as it does) gives it.
    async with pooled_app.state.pool.acquire() as connection:
        user = await connection.fetchval("SELECT current_user")
        shown = await connection.fetchval("SHOW statement_timeout")
    assert user.endswith("_app")
    assert shown == "15s"


@pytest.fixture(scope="module", params=["through PgBouncer", "direct"])
async def impatient_app(
    request: pytest.FixtureRequest,
    pooled_settings: Settings,
    settings: Settings,
    pooled_url: str,
    runtime_database_url: str,
) -> AsyncIterator[FastAPI]:
    """The service with a short statement timeout: through PgBouncer in transaction mode, and
    directly in session mode."""
    pooled = request.param == "through PgBouncer"
    base, url = (pooled_settings, pooled_url) if pooled else (settings, runtime_database_url)
    short = base.model_copy(update={"db_statement_timeout_ms": TIMEOUT_MS})
    application = create_app(short, url)
    async with application.router.lifespan_context(application):
        yield application


async def test_a_request_whose_statement_passes_the_timeout_is_503_busy_with_retry_after(
    impatient_app: FastAPI, database_url: str
) -> None:
    make_client = ClientMaker(impatient_app)
    school = await make_client(["referrals:write"])
    reader = await make_client(["indicators:read"])
    transport = httpx.ASGITransport(app=impatient_app, raise_app_exceptions=False)
    locker = await asyncpg.connect(
        make_url(database_url).set(drivername="postgresql").render_as_string(False)
    )
    try:
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://test",
            event_hooks={"response": [assert_errors_are_problems]},
        ) as http:
            # The owner holds the referral table: every statement that needs it waits, until
            # the statement timeout cancels it (the create on the driver pool, the series in a
            # read-only session).
            async with locker.transaction():
                await locker.execute("LOCK TABLE referral IN ACCESS EXCLUSIVE MODE")
                created = await post_referral(http, school)
                series = await http.get(
                    "/v1/indicators/neglect_referral_share", headers=reader.headers
                )
            after = await post_referral(http, school)
    finally:
        await locker.close()
    for answer in (created, series):
        assert answer.status_code == 503, answer.text
        assert answer.json()["type"] == PROBLEMS + "database-busy"
        assert answer.json()["detail"] == "the database did not answer in time; retry shortly"
        assert answer.headers["Retry-After"]
    assert after.status_code == 201, after.text


# --- round trips -----------------------------------------------------------------------------


async def test_a_referral_create_is_one_round_trip_through_pgbouncer(
    pooled_app: FastAPI,
    pooled: httpx.AsyncClient,
    make_pooled_client: ClientMaker,
    pooled_settings: Settings,
    pooled_url: str,
) -> None:
    school = await make_pooled_client(["referrals:write"])
    single = await create_pool(pooled_settings.model_copy(update={"db_pool_size": 1}), pooled_url)
    shared = pooled_app.state.pool
    pooled_app.state.pool = single
    try:
        async with single.acquire() as proxy:
            connection = proxy._con  # the pool's one connection, which every create will use
        # The first create describes the statement; the next ones only execute it.
        assert (await post_referral(pooled, school)).status_code == 201
        with round_trips(connection) as counted:
            response = await post_referral(pooled, school)
    finally:
        pooled_app.state.pool = shared
        await single.close()
    assert response.status_code == 201, response.text
    assert counted == [1]


async def test_a_session_statement_is_one_round_trip_and_begin_carries_the_timeout(
    pooled_app: FastAPI,
) -> None:
    async with pooled_app.state.session_factory() as session:
        connection = await session.connection()
        raw = (await connection.get_raw_connection()).driver_connection
        with round_trips(raw) as begin_and_first:
            await session.execute(text("SELECT CAST(:n AS int)"), {"n": 1})
        with round_trips(raw) as again:
            shown = await session.scalar(text("SELECT current_setting('statement_timeout')"))
            await session.execute(text("SELECT CAST(:n AS int)"), {"n": 2})
    # BEGIN with its SET LOCAL in one message, then Describe + Parse/Bind/Execute once.
    assert begin_and_first == [3]
    # The timeout query is new (2), the repeated statement is described already (1).
    assert again == [3]
    assert shown == "15s"


# --- a mixed load with retries ---------------------------------------------------------------


async def test_600_mixed_requests_with_same_key_retries_give_no_error(
    pooled: httpx.AsyncClient, make_pooled_client: ClientMaker, pooled_app: FastAPI
) -> None:
    factory = pooled_app.state.session_factory
    await publish_demo(factory)
    school = await make_pooled_client(["referrals:write", "referrals:read"])
    practitioner = await make_pooled_client(
        ["assessments:write", "assessments:read"], agency_type="early_help"
    )
    case_system = await make_pooled_client(["case-events:write"], agency_type="la")
    reader = await make_pooled_client(["indicators:read"])
    statuses: Counter[str] = Counter()
    unexpected: list[str] = []
    gate = asyncio.Semaphore(16)
    today = today_in_uk()

    async def send(kind: str, expected: int, method: str, path: str, **kwargs: Any) -> Any:
        async with gate:
            response = await pooled.request(method, path, **kwargs)
        statuses[f"{kind} {response.status_code}"] += 1
        if response.status_code != expected:
            unexpected.append(f"{kind}: {response.status_code} {response.text[:200]}")
            return None
        return response

    async def referral(retry: bool) -> dict[str, Any] | None:
        body, headers = referral_body(), {**school.headers, "Idempotency-Key": uuid.uuid4().hex}
        first = await send("referral", 201, "POST", "/v1/referrals", json=body, headers=headers)
        if first is not None and retry:
            again = await send("referral", 201, "POST", "/v1/referrals", json=body, headers=headers)
            if again is not None and (
                again.headers.get("Idempotent-Replayed") != "true"
                or again.json()["id"] != first.json()["id"]
            ):
                unexpected.append("referral retry did not replay the first answer")
        return None if first is None else {**first.json(), "nhs": body["child"]["nhs_number"]}

    async def assessment(retry: bool) -> None:
        body = assessment_body()
        headers = {**practitioner.headers, "Idempotency-Key": uuid.uuid4().hex}
        first = await send("assessment", 201, "POST", "/v1/assessments", json=body, headers=headers)
        if first is not None and retry:
            again = await send(
                "assessment", 201, "POST", "/v1/assessments", json=body, headers=headers
            )
            if again is not None and again.json() != first.json():
                unexpected.append("assessment retry did not replay the first answer")

    async def case_events(nhs_number: str, retry: bool) -> None:
        child = child_ref(nhs_number)
        batch = {
            "events": [
                health_appointment(child, today, attended=True),
                feedback_received(child, today, 4),
            ]
        }
        headers = case_system.headers
        first = await send(
            "case-events", 200, "POST", "/v1/case-events", json=batch, headers=headers
        )
        if first is not None and first.json()["counts"]["stored"] != 2:
            unexpected.append(f"case events not stored: {first.json()['counts']}")
        if first is not None and retry:
            again = await send(
                "case-events", 200, "POST", "/v1/case-events", json=batch, headers=headers
            )
            if again is not None and again.json()["counts"]["duplicate"] != 2:
                unexpected.append(f"case-event retry not duplicates: {again.json()['counts']}")

    async def indicator(index: int) -> None:
        indicator_id = random.choice(
            ["neglect_referral_share", "rereferral_rate_12m", "health_appointment_attendance"]
        )
        accept = "text/csv" if index % 3 == 0 else "application/json"
        await send(
            "indicator",
            200,
            "GET",
            f"/v1/indicators/{indicator_id}",
            headers={**reader.headers, "Accept": accept},
        )

    async def reads(created: dict[str, Any]) -> None:
        await send(
            "referral-read", 200, "GET", f"/v1/referrals/{created['id']}", headers=school.headers
        )
        await send("referral-list", 200, "GET", "/v1/referrals?limit=5", headers=school.headers)

    # Wave 1: 150 referrals (50 retried), 75 assessments (25 retried), 50 indicator series.
    results = await asyncio.gather(
        *(referral(retry=index % 3 == 0) for index in range(150)),
        *(assessment(retry=index % 3 == 0) for index in range(75)),
        *(indicator(index) for index in range(50)),
    )
    created = [result for result in results[:150] if result]
    # Wave 2: 75 case-event batches for those children (25 retried), 50 reads and 50 lists, and
    # 50 more indicator series.
    await asyncio.gather(
        *(case_events(one["nhs"], retry=index % 3 == 0) for index, one in enumerate(created[:75])),
        *(reads(one) for one in created[75:125]),
        *(indicator(index) for index in range(50)),
    )

    assert unexpected == [], unexpected[:5]
    assert sum(statuses.values()) == 600, statuses
    assert not [status for status in statuses if status.split()[1].startswith("5")]
    referrals = await count_rows(
        factory, "SELECT count(*) FROM referral WHERE client_id = :c", c=school.client_id
    )
    assessments = await count_rows(
        factory, "SELECT count(*) FROM assessment WHERE client_id = :c", c=practitioner.client_id
    )
    events = await count_rows(
        factory, "SELECT count(*) FROM case_event WHERE client_id = :c", c=case_system.client_id
    )
    assert (referrals, assessments, events) == (150, 75, 150)


async def test_a_refused_request_through_pgbouncer_is_a_problem_not_a_500(
    pooled: httpx.AsyncClient, make_pooled_client: ClientMaker
) -> None:
    school = await make_pooled_client(["referrals:write"])
    key = uuid.uuid4().hex
    assert (await post_referral(pooled, school, key=key)).status_code == 201
    # The same key with another body: refused in the database function, through the pooler.
    reused = await post_referral(pooled, school, referral_body(), key)
    assert reused.status_code == 422
    assert reused.json()["type"] == PROBLEMS + "idempotency-key-reused"
