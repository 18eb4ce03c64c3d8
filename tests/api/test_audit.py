"""GET /v1/audit-events: the trail, paged oldest first; and the one cursor every list shares."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.conftest import ClientMaker


async def test_the_audit_trail_pages_oldest_first_with_a_cursor(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    reader = await make_client(["referrals:read"])
    auditor = await make_client(["audit:read"])
    for _ in range(3):
        listed = await client.get("/v1/referrals", headers=reader.headers)
        assert listed.status_code == 200
    params: dict[str, str | int] = {"client_id": reader.client_id, "limit": 2}

    first = (await client.get("/v1/audit-events", params=params, headers=auditor.headers)).json()
    second = (
        await client.get(
            "/v1/audit-events",
            params=params | {"cursor": first["next_cursor"]},
            headers=auditor.headers,
        )
    ).json()

    ids = [event["id"] for event in first["items"] + second["items"]]
    assert len(ids) == 3
    assert ids == sorted(ids)
    assert {event["action"] for event in first["items"] + second["items"]} == {"list"}
    assert second["next_cursor"] is None


@pytest.mark.parametrize(
    "path",
    [
        "/v1/referrals",
        "/v1/audit-events",
        "/v1/toolkits",
        f"/v1/children/{uuid.uuid4()}/assessments",
    ],
)
@pytest.mark.parametrize("cursor", ["5", str(uuid.uuid4()), "W10", "not-a-cursor"])
async def test_every_list_refuses_a_cursor_it_did_not_issue_naming_the_cursor(
    client: httpx.AsyncClient, make_client: ClientMaker, path: str, cursor: str
) -> None:
    caller = await make_client(["referrals:read", "audit:read", "assessments:read"])

    response = await client.get(path, params={"cursor": cursor}, headers=caller.headers)

    assert response.status_code == 422
    problem = response.json()
    assert problem["type"].endswith("/validation")
    assert [error["field"] for error in problem["errors"]] == ["query.cursor"]
