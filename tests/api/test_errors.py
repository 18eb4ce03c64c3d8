"""problem+json for every error, body limits, request ids (SPEC 3)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from sqlalchemy import text

from api.main import create_app
from service.settings import Settings
from tests.conftest import ClientMaker, assert_errors_are_problems


async def test_an_unknown_route_is_a_problem_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/nowhere")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 404


async def test_a_wrong_method_is_a_problem_405(client: httpx.AsyncClient) -> None:
    response = await client.delete("/health/live")
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_two_mib_body_is_413(client: httpx.AsyncClient, make_client: ClientMaker) -> None:
    admin = await make_client(["admin"])
    response = await client.post(
        "/v1/clients",
        content=b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}',
        headers={**admin.headers, "content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_streamed_body_over_the_limit_is_413(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    admin = await make_client(["admin"])

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"x" * (512 * 1024)

    response = await client.post(
        "/v1/clients",
        content=chunks(),
        headers={**admin.headers, "content-type": "application/json"},
    )
    assert response.status_code == 413


async def test_an_unknown_field_is_422_naming_it(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    admin = await make_client(["admin"])
    response = await client.post(
        "/v1/clients",
        json={
            "name": "School MIS",
            "agency_type": "school",
            "agency_name": "Northtown Primary",
            "scopes": ["referrals:write"],
            "is_admin": True,
        },
        headers=admin.headers,
    )
    assert response.status_code == 422
    body = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert any(error["field"] == "body.is_admin" for error in body["errors"])


async def test_malformed_json_is_422(client: httpx.AsyncClient, make_client: ClientMaker) -> None:
    admin = await make_client(["admin"])
    response = await client.post(
        "/v1/clients",
        content=b"{not json",
        headers={**admin.headers, "content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_every_response_carries_a_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/live")
    assert len(response.headers["x-request-id"]) == 32


async def test_a_safe_incoming_request_id_is_kept(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/nowhere", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert response.json()["request_id"] == "abc-123"


async def test_an_unsafe_incoming_request_id_is_replaced(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/live", headers={"X-Request-ID": "a b\x7f" * 40})
    assert response.headers["x-request-id"] != "a b"
    assert len(response.headers["x-request-id"]) == 32


async def test_request_log_lines_are_json_with_the_request_id(
    client: httpx.AsyncClient, no_secrets_in_logs: list[str]
) -> None:
    await client.get("/health/live", headers={"X-Request-ID": "trace-me"})
    assert any(
        '"request_id":"trace-me"' in line and '"status":200' in line for line in no_secrets_in_logs
    )


async def test_a_405_lists_every_method_the_path_accepts(client: httpx.AsyncClient) -> None:
    response = await client.request("OPTIONS", "/v1/referrals")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, POST"


async def test_a_query_date_must_be_iso_text_not_a_unix_time(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    reader = await make_client(["audit:read"])
    response = await client.get("/v1/audit-events?occurred_to=0.5", headers=reader.headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "query.occurred_to"


async def test_registering_an_external_client_id_twice_is_409(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    admin = await make_client(["admin"])
    body = {
        "name": "Council case system",
        "agency_type": "local_authority",
        "agency_name": "Northtown Council",
        "scopes": ["case-events:write"],
        "issuer": "https://idp.council.example",
        "client_id": f"case-system-{admin.client_id}",
    }
    first = await client.post("/v1/clients", json=body, headers=admin.headers)
    second = await client.post("/v1/clients", json=body, headers=admin.headers)
    assert first.status_code == 201
    assert first.json()["client_secret"] is None
    assert second.status_code == 409
    assert second.headers["content-type"] == "application/problem+json"


async def test_a_nul_in_a_path_parameter_is_422_and_changes_nothing(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    admin = await make_client(["admin"])
    response = await client.post("/v1/clients/nsc_%00abc/disable", headers=admin.headers)
    assert response.status_code == 422


async def test_an_issuer_with_control_characters_is_422(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    admin = await make_client(["admin"])
    response = await client.post(
        "/v1/clients",
        json={
            "name": "Council case system",
            "agency_type": "local_authority",
            "agency_name": "Northtown Council",
            "scopes": ["case-events:write"],
            "issuer": "https://\u0000idp",
            "client_id": "case-system-nul",
        },
        headers=admin.headers,
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.issuer"


async def test_no_free_engine_connection_within_the_pool_timeout_is_503_busy_not_unreachable(
    settings: Settings, runtime_database_url: str
) -> None:
    tight = settings.model_copy(
        update={"db_pool_size": 1, "db_max_overflow": 0, "db_pool_timeout_s": 0.2}
    )
    application = create_app(tight, runtime_database_url)
    async with application.router.lifespan_context(application):
        reader = await ClientMaker(application)(["referrals:read"])
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with (
            httpx.AsyncClient(
                transport=transport,
                base_url="http://test",
                event_hooks={"response": [assert_errors_are_problems]},
            ) as http,
            application.state.engine.connect() as held,  # the pool's only connection
        ):
            await held.execute(text("SELECT 1"))
            response = await http.get("/v1/referrals", headers=reader.headers)
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert response.json()["type"].endswith("/database-busy")
    assert response.json()["detail"] == "every database connection is in use; retry shortly"
