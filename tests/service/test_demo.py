"""The demo partnership (`service/demo_data.py`, `neglect-service demo-data`): reproducible from
its seed, loadable, consistent with every rule the API enforces, and meaningful to the indicators.

Most tests share one small partnership loaded into the worker's database; it clears the domain
tables first and afterwards, as the indicator tests do.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from alembic import command
from schemas.assessments import AssessmentCreate
from schemas.case_events import parse_case_event
from schemas.identifiers import is_valid_nhs_number
from service.cli.main import app as cli_app
from service.db import SessionFactory, transaction
from service.demo.generator import (
    LOAD_ORDER,
    TABLE_COLUMNS,
    DemoOptions,
    DemoSummary,
    DemoToolkit,
    generate_rows,
    load_demo_data,
)
from service.fingerprint import fingerprint
from service.indicators.catalogue import load_catalogue
from service.migrations import migrate_database
from service.settings import get_settings
from service.toolkits.definition import canonical_sha256
from service.toolkits.demo import load_demo_toolkit
from tests.builders.indicators import (
    READ_UNSUPPRESSED,
    clear_domain_tables,
    fetch_series,
    insert_child,
)
from tests.conftest import ClientMaker, owner_sessions_for

PROJECT_ROOT = Path(__file__).resolve().parents[2]

OPTIONS = DemoOptions(children=200, seed=11, start=date(2023, 1, 1), end=date(2024, 12, 31))


def _toolkit() -> DemoToolkit:
    definition = load_demo_toolkit()
    return DemoToolkit(definition=definition, sha256=canonical_sha256(definition))


@pytest.fixture(scope="module")
async def loaded(owner_session_factory: SessionFactory) -> AsyncIterator[DemoSummary]:
    # As the owner, as `neglect-service demo-data` runs: the loader drops and rebuilds indexes.
    factory = owner_session_factory
    await clear_domain_tables(factory)
    async with transaction(factory) as session:
        summary = await load_demo_data(session, OPTIONS)
    yield summary
    await clear_domain_tables(factory)


async def _rows(factory: SessionFactory, sql: str) -> list[Any]:
    async with factory() as session:
        return list((await session.execute(text(sql))).all())


# --- generation ----------------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_rows() -> None:
    first, _ = generate_rows(OPTIONS, _toolkit())
    second, _ = generate_rows(OPTIONS, _toolkit())

    assert first == second
    assert len(first["referral"]) > len(first["child"])


def test_another_seed_gives_other_rows() -> None:
    first, _ = generate_rows(OPTIONS, _toolkit())
    other, _ = generate_rows(
        DemoOptions(children=200, seed=12, start=OPTIONS.start, end=OPTIONS.end), _toolkit()
    )

    assert {row[0] for row in first["child"]}.isdisjoint({row[0] for row in other["child"]})


def test_every_record_falls_between_start_and_end() -> None:
    rows, _ = generate_rows(OPTIONS, _toolkit())

    days = [row[8] for row in rows["case_event"]] + [row[9] for row in rows["assessment"]]
    days += [row[8].date() for row in rows["referral"]]
    assert min(days) >= OPTIONS.start - timedelta(days=1)
    assert max(days) <= OPTIONS.end


def test_children_have_valid_999_range_nhs_numbers_or_an_la_child_id() -> None:
    rows, _ = generate_rows(OPTIONS, _toolkit())

    nhs_numbers = [row[1] for row in rows["child"] if row[1] is not None]
    assert nhs_numbers
    assert all(number.startswith("999") and is_valid_nhs_number(number) for number in nhs_numbers)
    assert len(set(nhs_numbers)) == len(nhs_numbers)
    assert all(row[2] for row in rows["child"])


def test_every_generated_row_gives_each_column_its_table_has() -> None:
    rows, _ = generate_rows(OPTIONS, _toolkit())

    widths = {
        table: {len(row) for row in rows[table]} or {len(TABLE_COLUMNS[table])} for table in rows
    }
    assert widths == {table: {len(TABLE_COLUMNS[table])} for table in LOAD_ORDER}
    assert sum(bool(rows[table]) for table in LOAD_ORDER) >= len(LOAD_ORDER) - 1
    assert TABLE_COLUMNS["care_plan_category_change"][0] == "care_plan_id"


# --- loading -------------------------------------------------------------------------------------


async def test_loading_stores_every_row_generated(
    loaded: DemoSummary, session_factory: SessionFactory
) -> None:
    counts = {
        table: (await _rows(session_factory, f"SELECT count(*) FROM {table}"))[0][0]  # noqa: S608
        for table in LOAD_ORDER
    }

    assert counts == loaded.rows
    # A few hundred children may have no CP plan whose category changes; every other table fills.
    assert all(count > 0 for table, count in counts.items() if table != "care_plan_category_change")


async def test_every_indicator_series_answers_over_the_demo_data(
    loaded: DemoSummary, client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    reader = await make_client(["indicators:read"])
    answered = 0
    for meta in load_catalogue().values():
        for breakdown in (None, *meta.breakdowns):
            params = {"from_": "2023-01-01", "to": "2024-12-31", "period": "quarter"}
            if breakdown is not None:
                params["breakdown"] = breakdown
            series = await fetch_series(client, reader.headers, meta.id, **params)
            assert series
            answered += 1

    assert answered > len(load_catalogue())


async def test_indicators_count_the_demo_referrals(
    loaded: DemoSummary,
    client: httpx.AsyncClient,
    make_client: ClientMaker,
    session_factory: SessionFactory,
) -> None:
    reader = await make_client(READ_UNSUPPRESSED)
    neglect_and_all = (
        "SELECT count(*) FILTER (WHERE 'neglect' = ANY(concern_categories)), count(*) "
        "FROM referral WHERE status <> 'withdrawn' "
        "AND (received_at AT TIME ZONE 'Europe/London')::date BETWEEN '2024-01-01' AND '2024-12-31'"
    )
    [(neglect, total)] = await _rows(session_factory, neglect_and_all)

    series = await fetch_series(
        client, reader.headers, "neglect_referral_share", from_="2024-01-01", to="2024-12-31",
        period="year",
    )  # fmt: skip

    assert [(point["numerator"], point["denominator"]) for point in series] == [(neglect, total)]
    assert 0 < neglect < total


async def test_plans_and_conferences_reach_the_indicators(
    loaded: DemoSummary, client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    reader = await make_client(READ_UNSUPPRESSED)
    figures = {}
    for indicator_id in ("neglect_plans_open", "icpc_within_15_working_days_share"):
        series = await fetch_series(
            client, reader.headers, indicator_id, from_="2023-01-01", to="2024-12-31",
            period="year",
        )  # fmt: skip
        figures[indicator_id] = sum(point["numerator"] for point in series)

    assert all(value > 0 for value in figures.values()), figures


# --- consistency: what the case-events API would have refused -----------------------------------


async def test_no_child_has_overlapping_child_protection_plans(
    loaded: DemoSummary, session_factory: SessionFactory
) -> None:
    overlapping = await _rows(
        session_factory,
        "SELECT a.id FROM care_plan a JOIN care_plan b ON a.child_id = b.child_id "
        "AND a.id <> b.id AND a.plan_type = 'cp' AND b.plan_type = 'cp' "
        "AND a.started_on < COALESCE(b.ended_on, 'infinity') "
        "AND b.started_on < COALESCE(a.ended_on, 'infinity')",
    )
    [(cp_plans,)] = await _rows(
        session_factory, "SELECT count(*) FROM care_plan WHERE plan_type = 'cp'"
    )

    assert overlapping == []
    assert cp_plans > 0


async def test_plans_end_after_they_start_and_change_category_only_while_open(
    loaded: DemoSummary, session_factory: SessionFactory
) -> None:
    bad_ends = await _rows(
        session_factory,
        "SELECT id FROM care_plan WHERE ended_on IS NOT NULL AND ended_on <= started_on",
    )
    bad_changes = await _rows(
        session_factory,
        "SELECT ch.id FROM care_plan_category_change ch JOIN care_plan p ON p.id = ch.care_plan_id "
        "WHERE ch.changed_on < p.started_on OR ch.changed_on >= COALESCE(p.ended_on, 'infinity') "
        "OR p.latest_category <> ch.category",
    )

    assert bad_ends == []
    assert bad_changes == []


async def test_every_icpc_follows_the_start_of_its_section47_enquiry(
    loaded: DemoSummary, session_factory: SessionFactory
) -> None:
    unmatched = await _rows(
        session_factory,
        "SELECT i.id FROM icpc i LEFT JOIN section47_enquiry s "
        "ON s.child_id = i.child_id AND s.enquiry_ref = i.enquiry_ref "
        "WHERE s.id IS NULL OR i.held_on < s.started_on "
        "OR s.strategy_discussion_on > s.started_on",
    )

    assert unmatched == []


async def test_stored_case_events_validate_and_carry_the_api_fingerprint(
    loaded: DemoSummary, session_factory: SessionFactory
) -> None:
    rows = await _rows(
        session_factory,
        "SELECT e.event_id, e.event_type, e.occurred_on, e.details, e.payload_sha256, "
        "c.nhs_number, c.la_child_id FROM case_event e JOIN child c ON c.id = e.child_id",
    )
    types = set()
    for row in rows:
        child = (
            {"nhs_number": row.nhs_number} if row.nhs_number else {"la_child_id": row.la_child_id}
        )
        event = parse_case_event(
            {
                "event_id": row.event_id,
                "type": row.event_type,
                "child": child,
                "occurred_on": row.occurred_on.isoformat(),
                **row.details,
            }
        )
        assert fingerprint(event.model_dump(mode="json")) == row.payload_sha256
        types.add(row.event_type)

    assert len(types) >= 10


async def test_neglect_forms_are_given_exactly_when_neglect_is_a_concern(
    loaded: DemoSummary, session_factory: SessionFactory
) -> None:
    mismatched = await _rows(
        session_factory,
        "SELECT id FROM referral WHERE ('neglect' = ANY(concern_categories)) "
        "<> (cardinality(neglect_forms) > 0)",
    )

    assert mismatched == []


async def test_only_section47_decisions_go_ahead_without_parental_awareness(
    loaded: DemoSummary, session_factory: SessionFactory
) -> None:
    unaware = await _rows(
        session_factory,
        "SELECT decision_outcome FROM referral WHERE status = 'decided' "
        "AND NOT parents_informed AND parental_consent <> 'given'",
    )

    assert unaware
    assert {row.decision_outcome for row in unaware} == {"section47_strategy_discussion"}


async def test_rereferral_counts_are_the_earlier_referrals_in_the_year_before(
    loaded: DemoSummary, session_factory: SessionFactory
) -> None:
    wrong = await _rows(
        session_factory,
        "SELECT r.id FROM referral r WHERE r.rereferral_count <> ("
        "SELECT count(*) FROM referral e WHERE e.child_id = r.child_id AND e.id <> r.id "
        "AND e.status <> 'withdrawn' AND e.received_at <= r.received_at "
        "AND e.received_at >= r.received_at - interval '12 months') "
        "OR r.rereferral <> (r.rereferral_count > 0)",
    )
    [(rereferred,)] = await _rows(session_factory, "SELECT count(*) FROM referral WHERE rereferral")

    assert wrong == []
    assert rereferred > 0


async def test_each_referral_stores_the_childs_latest_earlier_live_referral_as_previous(
    loaded: DemoSummary, session_factory: SessionFactory
) -> None:
    wrong = await _rows(
        session_factory,
        "SELECT r.id FROM referral r WHERE r.previous_received_at IS DISTINCT FROM ("
        "SELECT max(e.received_at) FROM referral e WHERE e.child_id = r.child_id "
        "AND e.status <> 'withdrawn' AND e.received_at < r.received_at)",
    )
    [(linked,)] = await _rows(
        session_factory, "SELECT count(*) FROM referral WHERE previous_received_at IS NOT NULL"
    )

    assert wrong == []
    assert linked > 0


async def test_decisions_follow_receipt_and_are_not_in_the_future(
    loaded: DemoSummary, session_factory: SessionFactory
) -> None:
    wrong = await _rows(
        session_factory,
        "SELECT id FROM referral WHERE (status = 'decided') <> (decided_at IS NOT NULL) "
        "OR decided_at < received_at OR decided_at > now() "
        "OR (decision_outcome = 'section47_strategy_discussion') "
        "<> (strategy_discussion_due_at IS NOT NULL)",
    )

    assert wrong == []


async def test_assessment_bodies_are_valid_requests_scored_by_the_engine(
    loaded: DemoSummary, session_factory: SessionFactory
) -> None:
    rows = await _rows(
        session_factory,
        "SELECT body, result, highest_area_grade, areas_at_concern, level_of_need, "
        "previous_assessment_id FROM assessment",
    )
    for row in rows:
        body = AssessmentCreate.model_validate(row.body)
        assert body.previous_assessment_id == row.previous_assessment_id
        assert row.result["highest_area_grade"] == row.highest_area_grade
        assert row.result["areas_at_concern"] == row.areas_at_concern
        assert row.result["level_of_need"]["level"] == row.level_of_need

    assert any(row.previous_assessment_id for row in rows)


async def test_demo_records_read_back_through_the_api(
    loaded: DemoSummary,
    client: httpx.AsyncClient,
    make_client: ClientMaker,
    session_factory: SessionFactory,
) -> None:
    front_door = await make_client(["referrals:read", "referrals:read:all", "assessments:read"])
    [(referral_id, child_id)] = await _rows(
        session_factory, "SELECT id, child_id FROM referral ORDER BY received_at LIMIT 1"
    )
    [(assessment_id,)] = await _rows(
        session_factory, "SELECT id FROM assessment ORDER BY completed_on LIMIT 1"
    )

    referral = await client.get(f"/v1/referrals/{referral_id}", headers=front_door.headers)
    assessment = await client.get(f"/v1/assessments/{assessment_id}", headers=front_door.headers)
    child = await client.get(f"/v1/children/{child_id}", headers=front_door.headers)

    assert referral.status_code == 200, referral.text
    assert referral.json()["child_id"] == str(child_id)
    assert assessment.status_code == 200, assessment.text
    assert child.status_code == 200, child.text
    assert child.json()["timeline"]


# --- the command ---------------------------------------------------------------------------------


@contextmanager
def _migrated_database(database_url: str, prefix: str) -> Iterator[str]:
    """A freshly migrated database beside the worker's, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = make_url(database_url).set(database="postgres").render_as_string(hide_password=False)

    async def admin_run(statement: str) -> None:
        connection = await asyncpg.connect(admin)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(admin_run(f'CREATE DATABASE "{name}"'))
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    try:
        migrate_database(url)
        yield url
    finally:
        asyncio.run(admin_run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def empty_database_url(database_url: str) -> Iterator[str]:
    """A migrated database of its own, so the command loads into an empty one."""
    with _migrated_database(database_url, "demo_cli") as url:
        yield url


@pytest.fixture
def cli_environment(empty_database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # An admin command: it connects as the owner, never as the role DATABASE_URL names (here
    # one that does not exist).
    monkeypatch.setenv("NEGLECT_OWNER_DATABASE_URL", empty_database_url)
    monkeypatch.setenv(
        "DATABASE_URL",
        make_url(empty_database_url)
        .set(username="no_such_runtime_role")
        .render_as_string(hide_password=False),
    )
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _run_demo_data(*arguments: str) -> Any:
    return CliRunner().invoke(
        cli_app,
        ["demo-data", "--children", "30", "--seed", "5", "--start", "2024-01-01",
         "--end", "2024-12-31", *arguments],
    )  # fmt: skip


def test_the_command_loads_demo_data_and_prints_a_json_summary(cli_environment: None) -> None:
    result = _run_demo_data("--json")

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rows"]["child"] == 30
    assert summary["rows"]["referral"] >= 30
    assert summary["toolkit"]["id"] == load_demo_toolkit().id
    assert datetime.fromisoformat(summary["end"]).year == 2024
    assert summary["referrals_per_second"] > 0
    assert summary["cpu_us_per_referral"] > 0


def test_the_command_refuses_to_load_into_a_database_holding_demo_data(
    cli_environment: None,
) -> None:
    _run_demo_data("--json")

    result = _run_demo_data()

    assert result.exit_code == 2
    assert "already holds demo data" in result.stderr


def test_the_command_refuses_an_end_date_in_the_future(cli_environment: None) -> None:
    result = CliRunner().invoke(cli_app, ["demo-data", "--children", "5", "--end", "2999-12-31"])

    assert result.exit_code == 2
    assert "before today" in result.output


# --- indexes and foreign keys put back ------------------------------------------------------------


async def _schema_of(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """The loaded tables' indexes and constraints as PostgreSQL shows them, validity included."""
    tables = list(LOAD_ORDER)
    connection = await asyncpg.connect(
        make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    )
    try:
        indexes = await connection.fetch(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid), i.indisvalid "
            "FROM pg_index i WHERE i.indrelid = ANY($1::regclass[]) ORDER BY 1",
            tables,
        )
        constraints = await connection.fetch(
            "SELECT conrelid::regclass::text, conname, contype::text, pg_get_constraintdef(oid), "
            "convalidated FROM pg_constraint WHERE conrelid = ANY($1::regclass[]) ORDER BY 1, 2",
            tables,
        )
    finally:
        await connection.close()
    return {
        "indexes": [tuple(row) for row in indexes],
        "constraints": [tuple(row) for row in constraints],
    }


async def _load_into(url: str, options: DemoOptions) -> list[str]:
    """Load as the owner; returns what the loader reported (`building indexes` when it did)."""
    factory, engine = owner_sessions_for(url)
    reported: list[str] = []
    try:
        async with transaction(factory) as session:
            await load_demo_data(
                session, options, on_indexing=lambda: reported.append("building indexes")
            )
    finally:
        await engine.dispose()
    return reported


def _alembic_check(url: str) -> None:
    """`alembic check` on the database: raises when it differs from the models and SQL files."""
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "alembic"))
    config.attributes["database_url"] = url
    config.attributes["configure_logger"] = False
    command.check(config)


SMALL = DemoOptions(children=40, seed=3, start=date(2024, 1, 1), end=date(2024, 12, 31))


def test_a_load_into_empty_tables_leaves_the_indexes_and_constraints_the_migrations_made(
    database_url: str,
) -> None:
    with _migrated_database(database_url, "demo_indexes") as url:
        migrated = asyncio.run(_schema_of(url))

        reported = asyncio.run(_load_into(url, SMALL))

        assert reported == ["building indexes"]
        assert asyncio.run(_schema_of(url)) == migrated
        _alembic_check(url)
    plain_indexes = [row for row in migrated["indexes"] if "UNIQUE" not in row[1]]
    foreign_keys = [row for row in migrated["constraints"] if row[2] == "f"]
    assert plain_indexes
    assert foreign_keys


def test_a_load_beside_stored_records_keeps_every_index_in_place(database_url: str) -> None:
    with _migrated_database(database_url, "demo_live") as url:
        factory, engine = owner_sessions_for(url)
        try:
            asyncio.run(insert_child(factory))
        finally:
            asyncio.run(engine.dispose())
        migrated = asyncio.run(_schema_of(url))

        reported = asyncio.run(_load_into(url, SMALL))

        assert reported == []
        assert asyncio.run(_schema_of(url)) == migrated


def test_a_key_another_table_refers_to_stays_in_place_through_the_load(database_url: str) -> None:
    async def refer_to_children(url: str) -> None:
        connection = await asyncpg.connect(
            make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        )
        try:
            await connection.execute(
                "CREATE TABLE child_note (child_id uuid NOT NULL "
                "CONSTRAINT fk_child_note_child REFERENCES child (id))"
            )
        finally:
            await connection.close()

    with _migrated_database(database_url, "demo_referred") as url:
        asyncio.run(refer_to_children(url))
        migrated = asyncio.run(_schema_of(url))

        reported = asyncio.run(_load_into(url, SMALL))

        assert reported == ["building indexes"]
        assert asyncio.run(_schema_of(url)) == migrated
        assert ("child", "pk_child", "p", "PRIMARY KEY (id)", True) in migrated["constraints"]
