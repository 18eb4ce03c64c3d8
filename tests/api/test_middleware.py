"""What every response carries and what the access log writes (issue 10, finding 9): personal
data is never stored by caches or sniffed as another type, and the log names the route template,
never the raw path with its identifiers."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from api.middleware import UNROUTED_PATH
from tests.conftest import ClientMaker


def service_lines(lines: list[str]) -> list[str]:
    """The service's own log lines (the test's HTTP client logs each URL it calls)."""
    return [line for line in lines if json.loads(line)["logger"].startswith("neglect_service")]


def access_log_paths(lines: list[str]) -> list[str]:
    records = [json.loads(line) for line in lines]
    return [record["path"] for record in records if record["logger"] == "neglect_service.access"]


async def test_a_personal_data_answer_is_not_stored_nor_sniffed(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    reader = await make_client(["referrals:read"])
    response = await client.get("/v1/referrals", headers=reader.headers)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/v1/referrals", f"/v1/children/{uuid.uuid4()}"])
async def test_an_error_under_v1_is_not_stored_either(
    client: httpx.AsyncClient, make_client: ClientMaker, path: str
) -> None:
    reader = await make_client(["referrals:read"])
    unauthenticated = await client.get(path)
    refused = await client.get(path, headers=reader.headers, params={"status": "nonsense"})
    for response in (unauthenticated, refused):
        assert response.status_code >= 400
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-content-type-options"] == "nosniff"


async def test_a_body_refused_before_routing_carries_the_headers_too(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/v1/clients",
        content=b"x" * (2 * 1024 * 1024),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_public_answers_are_not_sniffed_and_keep_their_caching(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/.well-known/jwks.json")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "cache-control" not in response.headers


async def test_an_indicator_keeps_its_own_revalidation_policy(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    reader = await make_client(["indicators:read"])
    catalogue = await client.get("/v1/indicators", headers=reader.headers)
    indicator_id = catalogue.json()["indicators"][0]["id"]
    series = await client.get(f"/v1/indicators/{indicator_id}", headers=reader.headers)
    assert series.status_code == 200, series.text
    assert series.headers["cache-control"] == "private, no-cache"
    assert series.headers["x-content-type-options"] == "nosniff"


async def test_the_access_log_names_the_route_template_not_the_path(
    client: httpx.AsyncClient, make_client: ClientMaker, no_secrets_in_logs: list[str]
) -> None:
    reader = await make_client(["referrals:read"])
    child_id = uuid.uuid4()
    await client.get(f"/v1/children/{child_id}", headers=reader.headers)
    paths = access_log_paths(no_secrets_in_logs)
    assert paths == ["/v1/children/{child_id}"]
    assert not any(str(child_id) in line for line in service_lines(no_secrets_in_logs))


async def test_the_access_log_writes_no_path_no_route_matched(
    client: httpx.AsyncClient, no_secrets_in_logs: list[str]
) -> None:
    await client.get("/v1/nowhere/9991234567")
    paths = access_log_paths(no_secrets_in_logs)
    assert paths == [UNROUTED_PATH]
    assert not any("9991234567" in line for line in service_lines(no_secrets_in_logs))
