"""The census upload (`POST /v1/census-imports`), imported referrals read back, and the CLI's
`import cin-census` and `export children` commands."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from service.cli.main import app as cli_app
from service.db import SessionFactory, transaction
from service.settings import get_settings
from tests.builders.indicators import clear_domain_tables
from tests.conftest import ClientMaker
from tests.service.test_census import GOOD, _child, _file_with

BAD = _child(
    "BAD1",
    "<CINPlanDates><CINPlanStartDate>2023-09-01</CINPlanStartDate><CINPlanEndDate>2023-09-01"
    "</CINPlanEndDate></CINPlanDates>",
)


@pytest.fixture
async def empty(owner_session_factory: SessionFactory) -> None:
    await clear_domain_tables(owner_session_factory)
    async with transaction(owner_session_factory) as session:
        await session.execute(text("TRUNCATE census_import CASCADE"))


async def test_an_admin_uploads_a_census_file_and_gets_the_report(
    client: httpx.AsyncClient, make_client: ClientMaker, empty: None
) -> None:
    admin = await make_client(["admin"])
    body = _file_with(GOOD + BAD)

    response = await client.post(
        "/v1/census-imports",
        content=body,
        headers={**admin.headers, "Content-Type": "application/xml"},
        params={"file_name": "cin_2024.xml"},
    )

    assert response.status_code == 200, response.text
    report = response.json()
    assert report["census_year"] == "2023-24"
    assert report["file_name"] == "cin_2024.xml"
    assert report["referrals_created"] == 1
    assert report["events_created"] == {"cp_plan_started": 1}
    assert report["problems"] == [
        {
            "child": "BAD1",
            "item": "CINdetails[1]/CINPlanDates[1]/CINPlanEndDate",
            "message": "a plan cannot end before it starts or on the day it starts "
            "(it started on 2023-09-01)",
        }
    ]
    again = await client.post(
        "/v1/census-imports",
        content=body,
        headers={**admin.headers, "Content-Type": "application/xml"},
    )
    assert again.json()["already_imported"] is True
    assert again.json()["referrals_created"] == 0


async def test_a_refused_census_file_is_a_422_naming_the_item(
    client: httpx.AsyncClient, make_client: ClientMaker, empty: None
) -> None:
    admin = await make_client(["admin"])

    response = await client.post(
        "/v1/census-imports", content=b"<Message><Header>", headers=admin.headers
    )

    assert response.status_code == 422
    problem = response.json()
    assert problem["errors"][0]["field"] == "body.file"
    assert "not well-formed XML" in problem["errors"][0]["message"]


async def test_uploading_a_census_file_needs_admin(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    reader = await make_client(["referrals:read:all", "referrals:read"])

    response = await client.post(
        "/v1/census-imports", content=_file_with(GOOD), headers=reader.headers
    )

    assert response.status_code == 403


async def test_an_imported_referral_reads_back_with_its_census_episode_and_empty_live_fields(
    client: httpx.AsyncClient, make_client: ClientMaker, empty: None
) -> None:
    admin = await make_client(["admin"])
    await client.post("/v1/census-imports", content=_file_with(GOOD), headers=admin.headers)
    front_door = await make_client(
        ["referrals:read", "referrals:read:all"], agency_type="local_authority"
    )

    listed = await client.get("/v1/referrals", headers=front_door.headers)
    [referral] = listed.json()["items"]
    child = await client.get(f"/v1/children/{referral['child_id']}", headers=front_door.headers)

    assert referral["status"] == "decided"
    assert referral["received_at"].startswith("2023-05-31T23:00:00")  # midnight in England
    assert referral["urgent"] is None
    assert referral["concerns"] is None
    assert referral["decision_due_at"] is None
    assert referral["census"]["referral_source"] == "2A"
    assert referral["census"]["neglect"] is True
    assert referral["census"]["child_protection_plans"][0]["initial_category"] == "NEG"
    assert child.status_code == 200
    assert [entry["summary"].split(" from ")[0] for entry in child.json()["timeline"]] == [
        "Case event: cp plan started",
        "Episode of need",
    ]


# --- the CLI -------------------------------------------------------------------------------------


@pytest.fixture
def cli_database(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.usefixtures("cli_database", "empty")
def test_the_cli_reports_a_bad_child_as_json_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "cin.xml"
    path.write_bytes(_file_with(GOOD + BAD))

    result = CliRunner().invoke(cli_app, ["import", "cin-census", str(path), "--json"])

    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["children_imported"] == 1
    assert [(p["child"], p["item"]) for p in report["problems"]] == [
        ("BAD1", "CINdetails[1]/CINPlanDates[1]/CINPlanEndDate")
    ]


@pytest.mark.usefixtures("cli_database", "empty")
def test_the_cli_refuses_a_file_with_a_dtd_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bomb.xml"
    path.write_bytes(_file_with(GOOD, prolog='<!DOCTYPE Message [<!ENTITY x "xxxx">]>'))

    result = CliRunner().invoke(cli_app, ["import", "cin-census", str(path), "--json"])

    assert result.exit_code == 2
    assert json.loads(result.stdout)["refused"][0]["message"].startswith("declares a DTD")


@pytest.mark.usefixtures("cli_database", "empty")
def test_a_subject_access_export_writes_one_child_and_is_audited(
    tmp_path: Path, database_url: str
) -> None:
    path = tmp_path / "cin.xml"
    path.write_bytes(_file_with(GOOD))
    assert CliRunner().invoke(cli_app, ["import", "cin-census", str(path)]).exit_code == 0
    everything = CliRunner().invoke(cli_app, ["export", "children", "--format", "ndjson"])
    [line] = everything.stdout.strip().splitlines()
    child_id = json.loads(line)["child"]["id"]
    output = tmp_path / "sar.ndjson"

    result = CliRunner().invoke(
        cli_app,
        ["export", "children", "--child", child_id, "--output", str(output), "--reason", "SAR 42"],
    )

    assert result.exit_code == 0, result.output
    [exported] = output.read_text().splitlines()
    record = json.loads(exported)
    assert record["child"]["la_child_id"] == "GOOD1"
    assert len(record["referrals"]) == 1
    assert record["case_events"][0]["event_type"] == "cp_plan_started"
    assert record["census_imports"][0]["census_year"] == "2023-24"

    async def audit_reasons() -> list[str | None]:
        connection = await asyncpg.connect(database_url)
        try:
            rows = await connection.fetch(
                "SELECT access_reason FROM audit_event WHERE action = 'export' "
                "AND resource_type = 'child' AND child_id = $1 ORDER BY id",
                uuid.UUID(child_id),
            )
        finally:
            await connection.close()
        return [row["access_reason"] for row in rows]

    assert asyncio.run(audit_reasons()) == [None, "SAR 42"]
