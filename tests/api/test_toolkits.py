"""Toolkit definitions over HTTP: the published schema, immutable versions, reading them back,
scoring without storing, and the `toolkits` CLI."""

from __future__ import annotations

import base64
import copy
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from sqlalchemy import func, select
from sqlmodel import col
from typer.testing import CliRunner

from service.cli.main import app as cli_app
from service.db import SessionFactory
from service.models import Assessment, AuditEvent
from service.settings import get_settings
from service.toolkits.definition import canonical_sha256, validate_definition
from service.toolkits.demo import read_demo_toolkit_document
from tests.builders.assessments import (
    child_ref,
    publish_demo,
    small_toolkit_document,
    unique_toolkit_id,
)
from tests.conftest import ClientMaker, RegisteredClient

SCORE_URL = "/v1/toolkits/{toolkit_id}/versions/{version}/score"


async def publish(
    client: httpx.AsyncClient, admin: RegisteredClient, document: dict[str, Any]
) -> httpx.Response:
    return await client.post("/v1/toolkits", json=document, headers=admin.headers)


@pytest.fixture
async def admin(make_client: ClientMaker) -> RegisteredClient:
    return await make_client(["admin", "assessments:read"], agency_type="local_authority")


# --- the schema ----------------------------------------------------------------------------------


async def test_the_published_json_schema_accepts_the_demonstration_toolkit(
    client: httpx.AsyncClient, admin: RegisteredClient
) -> None:
    response = await client.get("/v1/toolkits/schema", headers=admin.headers)
    assert response.status_code == 200
    schema = response.json()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator(schema).validate(read_demo_toolkit_document())


# --- publishing ----------------------------------------------------------------------------------


async def test_publishing_a_new_version_answers_201_with_its_sha256(
    client: httpx.AsyncClient, admin: RegisteredClient
) -> None:
    document = small_toolkit_document()
    response = await publish(client, admin, document)
    assert response.status_code == 201, response.text
    published = response.json()
    assert published["toolkit_id"] == document["id"]
    assert published["version"] == "1.0.0"
    assert published["sha256"] == canonical_sha256(validate_definition(document))
    assert published["published_by"] == admin.client_id


async def test_publishing_identical_content_again_is_a_no_op_200(
    client: httpx.AsyncClient, admin: RegisteredClient
) -> None:
    document = small_toolkit_document()
    first = await publish(client, admin, document)
    # Spelling out a default and reordering keys does not change the content.
    again = dict(reversed(list({**document, "concern_grade": 3}.items())))
    second = await publish(client, admin, again)
    assert first.status_code == 201
    assert second.status_code == 200, second.text
    assert second.json()["sha256"] == first.json()["sha256"]
    assert second.json()["published_at"] == first.json()["published_at"]


async def test_publishing_changed_content_under_a_published_version_is_409(
    client: httpx.AsyncClient, admin: RegisteredClient
) -> None:
    document = small_toolkit_document()
    assert (await publish(client, admin, document)).status_code == 201
    changed = copy.deepcopy(document)
    changed["areas"][0]["sub_areas"][0]["items"][0]["text"] = "A reworded question"
    response = await publish(client, admin, changed)
    assert response.status_code == 409, response.text
    assert response.json()["type"].endswith("/toolkit-version-exists")
    stored = await client.get(
        f"/v1/toolkits/{document['id']}/versions/1.0.0", headers=admin.headers
    )
    assert stored.json()["definition"]["areas"][0]["sub_areas"][0]["items"][0]["text"] == (
        "Question f1"
    )


async def test_a_malformed_definition_is_422_listing_every_problem(
    client: httpx.AsyncClient, admin: RegisteredClient
) -> None:
    document = small_toolkit_document()
    del document["title"]
    items = document["areas"][0]["sub_areas"][0]["items"]
    items[1]["id"] = "f1"
    items[0]["descriptors"] = items[0]["descriptors"][:4]
    document["level_rules"][0]["when"] = {"min_area_grades": {"no_such_area": 4}}
    response = await publish(client, admin, document)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    errors = response.json()["errors"]
    fields = {error["field"] for error in errors}
    assert "body.title" in fields
    assert "body.areas.0.sub_areas.0.items.1.id" in fields
    assert "body.areas.0.sub_areas.0.items.0.descriptors" in fields
    assert "body.level_rules.0.when.min_area_grades" in fields
    assert any("no_such_area" in error["message"] for error in errors)
    assert all(error["code"] == "invalid_definition" for error in errors)


async def test_a_definition_that_is_not_a_json_object_is_422(
    client: httpx.AsyncClient, admin: RegisteredClient
) -> None:
    response = await client.post(
        "/v1/toolkits", json=["not", "a", "toolkit"], headers=admin.headers
    )
    assert response.status_code == 422


async def test_publishing_needs_the_admin_scope(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    practitioner = await make_client(["assessments:write", "assessments:read"])
    response = await publish(client, practitioner, small_toolkit_document())
    assert response.status_code == 403


async def test_publishing_is_audited(
    client: httpx.AsyncClient, admin: RegisteredClient, session_factory: SessionFactory
) -> None:
    response = await publish(client, admin, small_toolkit_document())
    async with session_factory() as session:
        actions = (
            await session.scalars(
                select(col(AuditEvent.action)).where(
                    col(AuditEvent.client_id) == admin.client_id,
                    col(AuditEvent.resource_type) == "toolkit_version",
                )
            )
        ).all()
    assert response.status_code == 201
    assert actions == ["create"]


# --- reading -------------------------------------------------------------------------------------


async def test_a_published_version_reads_back_with_its_definition(
    client: httpx.AsyncClient, admin: RegisteredClient
) -> None:
    document = small_toolkit_document()
    published = (await publish(client, admin, document)).json()
    response = await client.get(
        f"/v1/toolkits/{document['id']}/versions/1.0.0", headers=admin.headers
    )
    assert response.status_code == 200
    body = response.json()
    assert body["sha256"] == published["sha256"]
    assert canonical_sha256(body["definition"]) == body["sha256"]


async def test_an_unpublished_version_is_404(
    client: httpx.AsyncClient, admin: RegisteredClient
) -> None:
    response = await client.get(
        f"/v1/toolkits/{unique_toolkit_id()}/versions/1.0.0", headers=admin.headers
    )
    assert response.status_code == 404


async def test_the_list_pages_through_one_toolkit_s_versions_oldest_first(
    client: httpx.AsyncClient, admin: RegisteredClient
) -> None:
    toolkit_id = unique_toolkit_id()
    for version in ("1.0.0", "1.1.0", "2.0.0"):
        document = small_toolkit_document(toolkit_id, version, title=f"Version {version}")
        assert (await publish(client, admin, document)).status_code == 201
    first = await client.get(
        "/v1/toolkits", params={"toolkit_id": toolkit_id, "limit": 2}, headers=admin.headers
    )
    second = await client.get(
        "/v1/toolkits",
        params={"toolkit_id": toolkit_id, "limit": 2, "cursor": first.json()["next_cursor"]},
        headers=admin.headers,
    )
    assert [item["version"] for item in first.json()["items"]] == ["1.0.0", "1.1.0"]
    assert [item["version"] for item in second.json()["items"]] == ["2.0.0"]
    assert second.json()["next_cursor"] is None
    assert "definition" not in first.json()["items"][0]


# --- scoring without storing ---------------------------------------------------------------------


async def test_a_dry_run_scores_the_body_and_stores_nothing(
    client: httpx.AsyncClient,
    admin: RegisteredClient,
    make_client: ClientMaker,
    session_factory: SessionFactory,
) -> None:
    document = small_toolkit_document()
    assert (await publish(client, admin, document)).status_code == 201
    practitioner = await make_client(["assessments:write"])
    body = {
        "responses": [
            {"item_id": "f1", "grade": 4},
            {"item_id": "f2", "grade": "not_known"},
            {"item_id": "s1", "grade": 1},
        ],
        "strengths": "Warm relationship with dad.",
    }
    response = await client.post(
        SCORE_URL.format(toolkit_id=document["id"], version="1.0.0"),
        json=body,
        headers=practitioner.headers,
    )
    async with session_factory() as session:
        stored = await session.scalar(
            select(func.count())
            .select_from(Assessment)
            .where(col(Assessment.toolkit_id) == document["id"])
        )
    assert response.status_code == 200, response.text
    outcome = response.json()["outcome"]
    assert outcome["area_grades"] == {"care": 4, "safety": 1}
    assert outcome["level_of_need"]["level"] == 3
    assert outcome["strengths"] == {"area_ids": ["safety"], "text": "Warm relationship with dad."}
    assert stored == 0


async def test_a_dry_run_names_a_missing_response(
    client: httpx.AsyncClient, admin: RegisteredClient, make_client: ClientMaker
) -> None:
    document = small_toolkit_document()
    assert (await publish(client, admin, document)).status_code == 201
    practitioner = await make_client(["assessments:write"])
    response = await client.post(
        SCORE_URL.format(toolkit_id=document["id"], version="1.0.0"),
        json={"responses": [{"item_id": "f1", "grade": 2}, {"item_id": "f2", "grade": 2}]},
        headers=practitioner.headers,
    )
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {
            "field": "body.responses.s1",
            "code": "missing_response",
            "message": "item 's1': no response (give a grade or not_known)",
        }
    ]


async def test_a_dry_run_needs_the_assessments_write_scope(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    await publish_demo(session_factory)
    reader = await make_client(["assessments:read"])
    response = await client.post(
        SCORE_URL.format(toolkit_id="demo-neglect-profile", version="1.0.0"),
        json={"responses": []},
        headers=reader.headers,
    )
    assert response.status_code == 403


async def test_a_dry_run_against_an_unpublished_version_is_404(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    practitioner = await make_client(["assessments:write"])
    response = await client.post(
        SCORE_URL.format(toolkit_id=unique_toolkit_id(), version="9.9.9"),
        json={"responses": [], "child_date_of_birth": child_ref()["date_of_birth"]},
        headers=practitioner.headers,
    )
    assert response.status_code == 404


# --- the CLI -------------------------------------------------------------------------------------


@pytest.fixture
def cli_database(runtime_database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DATABASE_URL", runtime_database_url)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.usefixtures("cli_database")
def test_the_cli_publishes_a_yaml_file_and_lists_it(tmp_path: Path) -> None:
    document = small_toolkit_document()
    path = tmp_path / "toolkit.yaml"
    path.write_text(json.dumps(document), encoding="utf-8")  # JSON is valid YAML
    runner = CliRunner()
    published = runner.invoke(cli_app, ["toolkits", "publish", str(path), "--json"])
    again = runner.invoke(cli_app, ["toolkits", "publish", str(path), "--json"])
    listed = runner.invoke(cli_app, ["toolkits", "list", "--json"])
    assert published.exit_code == 0, published.output
    assert json.loads(published.stdout)["created"] is True
    assert json.loads(again.stdout)["created"] is False
    assert document["id"] in {row["toolkit_id"] for row in json.loads(listed.stdout)}


@pytest.mark.usefixtures("cli_database")
def test_the_cli_refuses_an_invalid_file_listing_its_problems(tmp_path: Path) -> None:
    document = small_toolkit_document()
    document["areas"][1]["id"] = "care"
    del document["publisher"]
    path = tmp_path / "toolkit.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    result = CliRunner().invoke(cli_app, ["toolkits", "publish", str(path)])
    assert result.exit_code == 2
    assert "duplicate id 'care'" in result.output
    assert "publisher" in result.output


async def test_a_cursor_naming_no_version_gives_an_empty_page(
    client: httpx.AsyncClient, admin: RegisteredClient
) -> None:
    # The documented cursor format (base64url of a JSON array) naming an id no version has.
    cursor = base64.urlsafe_b64encode(json.dumps([str(uuid.uuid4())]).encode()).decode()
    response = await client.get(
        "/v1/toolkits", params={"cursor": cursor.rstrip("=")}, headers=admin.headers
    )
    assert response.status_code == 200
    assert response.json() == {"items": [], "next_cursor": None}
