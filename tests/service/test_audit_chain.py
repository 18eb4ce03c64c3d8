"""The audit trail against the role that runs the service, and its hash chains (issue 10, finding
6): the runtime role can neither alter, empty nor silence the trail; `audit verify` passes an
untouched trail and names the first edited, deleted or reordered event after a superuser's
tampering; concurrent writers for one agency make one unbroken chain.

The tampering happens in a database of this module's own (`trail_url`), so that the session's
database, which every other test writes audit events to, stays intact and verifiable.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from service.audit_chain import GENESIS_HASH, verify_audit_chains
from service.cli.main import app as cli_app
from service.db import SessionFactory, transaction
from service.migrations import migrate_database
from service.settings import get_settings
from tests.conftest import ClientMaker


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(_plain(url))


_INSERT = (
    "INSERT INTO audit_event (client_id, agency_type, agency_name, action, resource_type, "
    "resource_id, child_id, request_id, access_reason, denied_reason) "
    "VALUES ($1, 'school', $2, $3, 'referral', $4, $5, $6, $7, $8) RETURNING id"
)


async def _append(
    connection: asyncpg.Connection,
    agency: str,
    action: str = "read",
    *,
    resource_id: str | None = None,
    child_id: uuid.UUID | None = None,
    access_reason: str | None = None,
    denied_reason: str | None = None,
) -> int:
    event_id: int = await connection.fetchval(
        _INSERT,
        "chain-test",
        agency,
        action,
        resource_id if resource_id is not None else str(uuid.uuid4()),
        child_id,
        uuid.uuid4().hex,
        access_reason,
        denied_reason,
    )
    return event_id


def _agency() -> str:
    return f"Chain agency {uuid.uuid4().hex[:8]}"


# --- The runtime role cannot alter, empty or silence the trail ------------------------------------


@pytest.fixture
async def runtime(runtime_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await _connect(runtime_database_url)
    yield connection
    await connection.close()


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("ALTER TABLE audit_event DISABLE TRIGGER USER", "must be owner of table audit_event"),
        ("ALTER TABLE audit_event DISABLE TRIGGER ALL", "must be owner of table audit_event"),
        (
            "ALTER TABLE audit_event DISABLE TRIGGER audit_event_chain",
            "must be owner of table audit_event",
        ),
        ("UPDATE audit_event SET action = 'list'", "permission denied for table audit_event"),
        ("DELETE FROM audit_event", "permission denied for table audit_event"),
        ("TRUNCATE audit_event", "permission denied for table audit_event"),
        (
            "SET session_replication_role = replica",
            'permission denied to set parameter "session_replication_role"',
        ),
        ("SELECT * FROM audit_chain_head", "permission denied for table audit_chain_head"),
        (
            "UPDATE audit_chain_head SET seq = 0",
            "permission denied for table audit_chain_head",
        ),
        (
            "CREATE OR REPLACE FUNCTION public.neglect_audit_row_hash("
            "p_prev_hash bytea, p_event public.audit_event) RETURNS bytea "
            "LANGUAGE sql AS $$ SELECT p_event.row_hash $$",
            "permission denied for schema public",
        ),
        (
            "CREATE TRIGGER forged BEFORE INSERT ON audit_event FOR EACH ROW "
            "EXECUTE FUNCTION suppress_redundant_updates_trigger()",
            "permission denied for table audit_event",
        ),
    ],
)
async def test_the_runtime_role_cannot_alter_empty_or_silence_the_trail(
    runtime: asyncpg.Connection, statement: str, message: str
) -> None:
    agency = _agency()
    await _append(runtime, agency)

    with pytest.raises(asyncpg.InsufficientPrivilegeError, match=message):
        await runtime.execute(statement)

    rows = await runtime.fetch(
        "SELECT action FROM audit_event WHERE agency_name = $1 AND chain_seq = 1", agency
    )
    assert [row["action"] for row in rows] == ["read"]


async def test_the_chain_decides_seq_and_hashes_whatever_the_insert_says(
    runtime: asyncpg.Connection, owner_session_factory: SessionFactory
) -> None:
    agency = _agency()
    await _append(runtime, agency)
    await runtime.execute(
        "INSERT INTO audit_event (client_id, agency_type, agency_name, action, resource_type, "
        "chain_seq, prev_hash, row_hash) VALUES ('forger', 'school', $1, 'read', 'referral', "
        "1, '\\x00'::bytea, '\\x00'::bytea)",
        agency,
    )

    rows = await runtime.fetch(
        "SELECT chain_seq, prev_hash, row_hash FROM audit_event WHERE agency_name = $1 "
        "ORDER BY chain_seq",
        agency,
    )
    assert [row["chain_seq"] for row in rows] == [1, 2]
    assert rows[0]["prev_hash"] == GENESIS_HASH
    assert rows[1]["prev_hash"] == rows[0]["row_hash"]
    async with transaction(owner_session_factory) as session:
        verification = await verify_audit_chains(session, agency_name=agency)
    assert verification.intact
    assert [chain.events for chain in verification.chains] == [2]


async def test_the_verifier_hashes_every_field_as_the_database_does(
    runtime: asyncpg.Connection, owner_session_factory: SessionFactory
) -> None:
    # Non-ASCII text (byte and character lengths differ), empty and NULL values, separators in
    # values, a child: the verifier's canonical bytes must be the trigger's for each.
    agency = f"Agence {uuid.uuid4().hex[:6]} Gŵyl | 1:2"
    await _append(
        runtime, agency, access_reason="Section 47 enquête, Ysgol Gymraeg", denied_reason=None
    )
    await _append(runtime, agency, "denied", access_reason="", denied_reason="scope|missing:x")
    await _append(runtime, agency, resource_id="", child_id=uuid.uuid4(), access_reason="-")
    await _append(runtime, agency, "list", access_reason="🙂" * 40, denied_reason="")

    async with transaction(owner_session_factory) as session:
        verification = await verify_audit_chains(session, agency_name=agency)

    [chain] = verification.chains
    assert chain.intact, chain.first_break
    assert chain.events == chain.head_seq == 4


async def test_an_untouched_trail_verifies(
    client: httpx.AsyncClient, make_client: ClientMaker, owner_session_factory: SessionFactory
) -> None:
    # Whatever the suite has written so far through the API, plus a fresh caller's reads.
    reader = await make_client(["referrals:read"])
    for _ in range(3):
        assert (await client.get("/v1/referrals", headers=reader.headers)).status_code == 200

    async with transaction(owner_session_factory) as session:
        verification = await verify_audit_chains(session)

    assert verification.intact, [c.first_break for c in verification.chains if not c.intact]
    [mine] = [c for c in verification.chains if c.agency_name == reader.agency_name]
    assert mine.events == mine.head_seq == 3


WRITERS = 32
EVENTS_PER_WRITER = 3


async def test_32_concurrent_writers_for_one_agency_make_one_unbroken_chain(
    runtime_database_url: str, owner_session_factory: SessionFactory
) -> None:
    agency = _agency()  # new: the writers also race to create its head
    connections = [await _connect(runtime_database_url) for _ in range(WRITERS)]
    start = asyncio.Event()

    async def write(connection: asyncpg.Connection) -> list[int]:
        await start.wait()
        ids = []
        for _ in range(EVENTS_PER_WRITER):
            async with connection.transaction():
                ids.append(await _append(connection, agency))
                # Holds the head's lock a little while the others queue behind it.
                await connection.execute("SELECT pg_sleep(0.002)")
        return ids

    try:
        tasks = [asyncio.create_task(write(connection)) for connection in connections]
        await asyncio.sleep(0)
        start.set()
        written = [event_id for ids in await asyncio.gather(*tasks) for event_id in ids]
        rows = await connections[0].fetch(
            "SELECT id, chain_seq FROM audit_event WHERE agency_name = $1 ORDER BY chain_seq",
            agency,
        )
    finally:
        for connection in connections:
            await connection.close()

    total = WRITERS * EVENTS_PER_WRITER
    assert sorted(row["id"] for row in rows) == sorted(written)
    assert [row["chain_seq"] for row in rows] == list(range(1, total + 1))
    async with transaction(owner_session_factory) as session:
        verification = await verify_audit_chains(session, agency_name=agency)
    [chain] = verification.chains
    assert chain.intact, chain.first_break
    assert chain.events == chain.head_seq == total


# --- A superuser's tampering is named by `audit verify` -------------------------------------------


@pytest.fixture(scope="module")
def trail_url(database_url: str) -> Iterator[str]:
    """A migrated database for tampering, dropped afterwards."""
    name = f"{make_url(database_url).database}_trail"
    admin = _plain(make_url(database_url).set(database="postgres").render_as_string(False))

    async def run(statement: str) -> None:
        connection = await asyncpg.connect(admin)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    try:
        migrate_database(url)
        yield url
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def cli_owner(trail_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DATABASE_URL", trail_url)
    monkeypatch.setenv("NEGLECT_OWNER_DATABASE_URL", trail_url)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _chain_of_five(url: str) -> tuple[str, list[int]]:
    agency = _agency()

    async def write() -> list[int]:
        connection = await _connect(url)
        try:
            return [await _append(connection, agency) for _ in range(5)]
        finally:
            await connection.close()

    return agency, asyncio.run(write())


def _as_superuser(url: str, *statements: tuple[str, *tuple[object, ...]]) -> None:
    """What a superuser can do by hand: silence every trigger for the session, then write."""

    async def run() -> None:
        connection = await _connect(url)
        try:
            async with connection.transaction():
                await connection.execute("SET LOCAL session_replication_role = replica")
                for statement, *arguments in statements:
                    await connection.execute(statement, *arguments)
        finally:
            await connection.close()

    asyncio.run(run())


def _verify(*arguments: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(cli_app, ["audit", "verify", "--json", *arguments])
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


def _first_bad(agency: str, *arguments: str) -> dict[str, Any]:
    exit_code, report = _verify("--agency", agency, *arguments)
    [chain] = report["chains"]
    assert exit_code == 1
    assert not report["intact"]
    assert not chain["intact"]
    first_bad: dict[str, Any] = chain["first_bad"]
    return first_bad


@pytest.mark.usefixtures("cli_owner")
def test_verify_passes_an_untouched_chain_and_prints_its_head(trail_url: str) -> None:
    agency, _ = _chain_of_five(trail_url)

    exit_code, report = _verify("--agency", agency)

    assert exit_code == 0
    [chain] = report["chains"]
    assert chain["intact"]
    assert chain["events"] == 5
    assert chain["head"]["seq"] == 5
    assert len(bytes.fromhex(chain["head"]["hash"])) == 32
    assert chain["first_bad"] is None
    human = CliRunner().invoke(cli_app, ["audit", "verify", "--agency", agency])
    assert human.exit_code == 0
    assert f"head 5 {chain['head']['hash']}" in human.output


@pytest.mark.usefixtures("cli_owner")
def test_verify_names_an_edited_event(trail_url: str) -> None:
    agency, ids = _chain_of_five(trail_url)
    _as_superuser(trail_url, ("UPDATE audit_event SET action = 'list' WHERE id = $1", ids[2]))

    first_bad = _first_bad(agency)

    assert first_bad["event_id"] == ids[2]
    assert first_bad["chain_seq"] == 3
    assert "edited" in first_bad["problem"]


@pytest.mark.usefixtures("cli_owner")
def test_verify_names_the_event_after_a_deleted_one(trail_url: str) -> None:
    agency, ids = _chain_of_five(trail_url)
    _as_superuser(trail_url, ("DELETE FROM audit_event WHERE id = $1", ids[1]))

    first_bad = _first_bad(agency)

    assert first_bad["event_id"] == ids[2]
    assert first_bad["chain_seq"] == 3
    assert "deleted" in first_bad["problem"]


@pytest.mark.usefixtures("cli_owner")
def test_verify_notices_the_newest_event_deleted(trail_url: str) -> None:
    agency, ids = _chain_of_five(trail_url)
    _as_superuser(trail_url, ("DELETE FROM audit_event WHERE id = $1", ids[4]))

    first_bad = _first_bad(agency)

    assert first_bad["event_id"] is None
    assert first_bad["chain_seq"] == 5
    assert "newest events were deleted" in first_bad["problem"]


@pytest.mark.usefixtures("cli_owner")
def test_verify_names_the_first_of_two_reordered_events(trail_url: str) -> None:
    agency, ids = _chain_of_five(trail_url)
    # Swap the 2nd and 3rd events' places (the unique constraint wants a spare position).
    _as_superuser(
        trail_url,
        ("UPDATE audit_event SET chain_seq = -1 WHERE id = $1", ids[1]),
        ("UPDATE audit_event SET chain_seq = 2 WHERE id = $1", ids[2]),
        ("UPDATE audit_event SET chain_seq = 3 WHERE id = $1", ids[1]),
    )

    first_bad = _first_bad(agency)

    assert first_bad["event_id"] == ids[2]
    assert first_bad["chain_seq"] == 2
    assert "reordered" in first_bad["problem"]


# Rehash an agency's chain from its second event on, as a superuser covering an edit would.
_REWRITE = """
DO $$
DECLARE
    r public.audit_event;
    v_hash bytea;
BEGIN
    FOR r IN SELECT * FROM public.audit_event WHERE agency_name = '{agency}' ORDER BY chain_seq
    LOOP
        IF r.chain_seq > 1 THEN
            r.prev_hash := v_hash;
            r.row_hash := public.neglect_audit_row_hash(v_hash, r);
            UPDATE public.audit_event SET prev_hash = r.prev_hash, row_hash = r.row_hash
            WHERE id = r.id;
        END IF;
        v_hash := r.row_hash;
    END LOOP;
    UPDATE public.audit_chain_head SET hash = v_hash WHERE agency_name = '{agency}';
END
$$
"""


@pytest.mark.usefixtures("cli_owner")
def test_an_anchored_head_exposes_a_rewritten_chain(trail_url: str, tmp_path: Path) -> None:
    agency, ids = _chain_of_five(trail_url)
    exit_code, anchored = _verify("--agency", agency)
    assert exit_code == 0
    anchors = tmp_path / "anchors.json"
    anchors.write_text(json.dumps(anchored), encoding="utf-8")

    _as_superuser(
        trail_url,
        ("UPDATE audit_event SET action = 'list' WHERE id = $1", ids[1]),
        (_REWRITE.format(agency=agency),),
    )

    assert _verify("--agency", agency)[0] == 0  # consistent again, as far as the chain shows
    first_bad = _first_bad(agency, "--anchors", str(anchors))
    assert first_bad["event_id"] == ids[4]
    assert "rewritten" in first_bad["problem"]


@pytest.mark.usefixtures("cli_owner")
def test_a_file_that_is_not_a_verify_report_is_refused(tmp_path: Path) -> None:
    anchors = tmp_path / "anchors.json"
    anchors.write_text('{"chains": [{"agency_name": "A", "head": {"seq": "x"}}]}', "utf-8")

    result = CliRunner().invoke(cli_app, ["audit", "verify", "--anchors", str(anchors)])

    assert result.exit_code == 2
    assert "not an anchored head" in result.output
