"""Rate limits (RFC 6585 429 with Retry-After): failed token requests per client id and per
address, and the per-client API quota, counted in PostgreSQL and shared by every process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from limits import RateLimitItemPerMinute
from sqlalchemy.engine import make_url

from api.main import create_app
from service.settings import Settings
from tests.conftest import (
    TEST_AUDIENCE,
    TEST_ISSUER,
    TEST_KEY_ENCRYPTION_KEY,
    ClientMaker,
    assert_errors_are_problems,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PER_CLIENT = 3
PER_ADDRESS = 5
WINDOW_S = 120
API_PER_MINUTE = 5
SERVER_START_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
async def limited_app(settings: Settings, database_url: str) -> AsyncIterator[FastAPI]:
    """The service with small limits, on the test database."""
    application = create_app(
        settings.model_copy(
            update={
                "token_failures_per_client": PER_CLIENT,
                "token_failures_per_address": PER_ADDRESS,
                "token_failure_window_s": WINDOW_S,
                "api_requests_per_minute": API_PER_MINUTE,
            }
        ),
        database_url,
    )
    async with application.router.lifespan_context(application):
        yield application


def _http(app: FastAPI, address: str) -> httpx.AsyncClient:
    """A client calling `app` from `address` (the ASGI peer address)."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(address, 50000)),
        base_url="http://test",
        event_hooks={"response": [assert_errors_are_problems]},
    )


async def _token(http: httpx.AsyncClient, client_id: str, secret: str) -> httpx.Response:
    return await http.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )


def _assert_limited(response: httpx.Response, window_s: int) -> None:
    assert response.status_code == 429, response.text
    assert 1 <= int(response.headers["retry-after"]) <= window_s
    assert response.headers["content-type"] == "application/problem+json"


def _assert_token_limited(response: httpx.Response) -> None:
    _assert_limited(response, WINDOW_S)
    assert response.json()["error"] == "temporarily_unavailable"
    assert response.headers["cache-control"] == "no-store"


async def test_failed_token_requests_for_one_client_id_are_limited_from_any_address(
    limited_app: FastAPI,
) -> None:
    registered = await ClientMaker(limited_app)(["indicators:read"])
    for attempt in range(PER_CLIENT):
        async with _http(limited_app, f"192.0.2.{attempt + 1}") as http:
            assert (await _token(http, registered.client_id, "wrong")).status_code == 401
    async with _http(limited_app, "192.0.2.99") as http:
        # The right secret too: a guesser learns nothing more until the window ends.
        response = await _token(http, registered.client_id, registered.secret or "")
    _assert_token_limited(response)
    assert "client id" in response.json()["detail"]


async def test_an_unknown_client_id_is_limited_like_a_registered_one(
    limited_app: FastAPI,
) -> None:
    async with _http(limited_app, "192.0.2.100") as http:
        statuses = [
            (await _token(http, "nsc_nobody_has_this", "guess")).status_code
            for _ in range(PER_CLIENT + 1)
        ]
    assert statuses == [401] * PER_CLIENT + [429]


async def test_failed_token_requests_from_one_address_are_limited_for_every_client(
    limited_app: FastAPI,
) -> None:
    registered = await ClientMaker(limited_app)(["indicators:read"])
    async with _http(limited_app, "198.51.100.7") as http:
        for attempt in range(PER_ADDRESS):
            response = await _token(http, f"nsc_unknown_{attempt}", "guess")
            assert response.status_code == 401
        limited = await _token(http, registered.client_id, registered.secret or "")
    _assert_token_limited(limited)
    assert "address" in limited.json()["detail"]
    async with _http(limited_app, "198.51.100.8") as http:
        assert (
            await _token(http, registered.client_id, registered.secret or "")
        ).status_code == 200


async def test_successful_token_requests_are_not_counted(limited_app: FastAPI) -> None:
    registered = await ClientMaker(limited_app)(["indicators:read"])
    async with _http(limited_app, "198.51.100.20") as http:
        statuses = [
            (await _token(http, registered.client_id, registered.secret or "")).status_code
            for _ in range(PER_ADDRESS + PER_CLIENT)
        ]
    assert statuses == [200] * (PER_ADDRESS + PER_CLIENT)


async def test_requests_without_credentials_count_against_the_address(
    limited_app: FastAPI,
) -> None:
    async with _http(limited_app, "198.51.100.30") as http:
        statuses = [
            (await http.post("/oauth/token", data={"grant_type": "client_credentials"})).status_code
            for _ in range(PER_ADDRESS + 1)
        ]
    assert statuses == [401] * PER_ADDRESS + [429]


async def test_a_client_over_its_api_quota_gets_429_and_others_do_not(
    limited_app: FastAPI,
) -> None:
    make_client = ClientMaker(limited_app)
    busy = await make_client(["audit:read"])
    other = await make_client(["audit:read"])
    async with _http(limited_app, "203.0.113.1") as http:
        statuses = [
            (await http.get("/v1/audit-events", headers=busy.headers)).status_code
            for _ in range(API_PER_MINUTE)
        ]
        limited = await http.get("/v1/audit-events", headers=busy.headers)
        unaffected = await http.get("/v1/audit-events", headers=other.headers)
    assert statuses == [200] * API_PER_MINUTE
    _assert_limited(limited, 60)
    assert limited.json()["type"].endswith("/rate-limited")
    assert unaffected.status_code == 200


async def test_the_api_quota_covers_the_referral_create(limited_app: FastAPI) -> None:
    writer = await ClientMaker(limited_app)(["referrals:write"])
    async with _http(limited_app, "203.0.113.2") as http:
        for _ in range(API_PER_MINUTE):
            # An empty body: refused 400/422 after the quota is spent.
            await http.post("/v1/referrals", json={}, headers=writer.headers)
        limited = await http.post("/v1/referrals", json={}, headers=writer.headers)
    _assert_limited(limited, 60)


async def test_a_request_without_a_valid_token_is_not_counted_but_refused_401(
    limited_app: FastAPI,
) -> None:
    async with _http(limited_app, "203.0.113.3") as http:
        statuses = [
            (
                await http.get("/v1/audit-events", headers={"Authorization": "Bearer nonsense"})
            ).status_code
            for _ in range(API_PER_MINUTE + 1)
        ]
    assert statuses == [401] * (API_PER_MINUTE + 1)


async def test_far_from_the_quota_requests_are_tallied_here_and_added_to_the_shared_counter(
    app: FastAPI, settings: Settings, client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await make_client(["audit:read"])
    for _ in range(3):
        assert (await client.get("/v1/audit-events", headers=registered.headers)).status_code == 200
    await app.state.rate_limits.flush()
    key = RateLimitItemPerMinute(settings.api_requests_per_minute).key_for(
        "api", registered.client_id
    )
    assert await app.state.rate_limits.storage.get(key) == 3


# --- Two service processes share the counters ---------------------------------------------------


def _free_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port: int = listener.getsockname()[1]
        return port


def _serve(database_url: str, port: int) -> subprocess.Popen[bytes]:
    """`api.main:create_app` in its own uvicorn process, with the small limits in its settings."""
    env = {
        **os.environ,
        "DATABASE_URL": make_url(database_url).render_as_string(hide_password=False),
        "NEGLECT_ISSUER": TEST_ISSUER,
        "NEGLECT_AUDIENCE": TEST_AUDIENCE,
        "NEGLECT_TOKEN_FAILURES_PER_CLIENT": str(PER_CLIENT + 1),
        "NEGLECT_TOKEN_FAILURES_PER_ADDRESS": str(PER_ADDRESS + 1),
        "NEGLECT_TOKEN_FAILURE_WINDOW_S": str(WINDOW_S),
        "NEGLECT_LOG_LEVEL": "WARNING",
        # Production, with the key-encryption key the session's app made the signing key with.
        "NEGLECT_ENV": "production",
        "NEGLECT_KEY_ENCRYPTION_KEY": TEST_KEY_ENCRYPTION_KEY,
        # uvicorn takes the client address from X-Forwarded-For sent by these (loopback) peers.
        "FORWARDED_ALLOW_IPS": "127.0.0.1",
    }
    command = [sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    return subprocess.Popen(  # noqa: S603 (our own interpreter and module, no shell)
        command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


@pytest.fixture(scope="module")
def two_processes(database_url: str) -> Iterator[list[str]]:
    ports = [_free_port(), _free_port()]
    servers = [_serve(database_url, port) for port in ports]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        for server, url in zip(servers, urls, strict=True):
            while True:
                if server.poll() is not None:
                    errors = server.stderr.read().decode() if server.stderr else ""
                    raise RuntimeError(f"the service did not start: {errors[-2000:]}")
                try:
                    if httpx.get(f"{url}/health/ready", timeout=1.0).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the service did not start in time")
                time.sleep(0.1)
        yield urls
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            if server.stderr is not None:
                server.stderr.close()


async def _token_via(url: str, address: str, client_id: str, secret: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=10.0) as http:
        return await http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, secret),
            headers={"X-Forwarded-For": address},
        )


async def test_two_processes_share_the_failed_token_counter_of_a_client_id(
    app: FastAPI, two_processes: list[str]
) -> None:
    first, second = two_processes
    registered = await ClientMaker(app)(["indicators:read"])
    secret = registered.secret or ""
    limit = PER_CLIENT + 1
    # Alternate processes and addresses: only the client id's counter sees every failure.
    for attempt in range(limit):
        url = two_processes[attempt % 2]
        response = await _token_via(url, f"192.0.2.{200 + attempt}", registered.client_id, "no")
        assert response.status_code == 401
    for url in (first, second):
        response = await _token_via(url, "192.0.2.250", registered.client_id, secret)
        _assert_token_limited(response)


async def test_two_processes_share_the_failed_token_counter_of_an_address(
    app: FastAPI, two_processes: list[str]
) -> None:
    registered = await ClientMaker(app)(["indicators:read"])
    secret = registered.secret or ""
    limit = PER_ADDRESS + 1
    for attempt in range(limit):
        url = two_processes[attempt % 2]
        response = await _token_via(url, "198.51.100.77", f"nsc_guess_{attempt}", "guess")
        assert response.status_code == 401
    for url in two_processes:
        _assert_token_limited(await _token_via(url, "198.51.100.77", registered.client_id, secret))
    fresh = await _token_via(two_processes[1], "198.51.100.78", registered.client_id, secret)
    assert fresh.status_code == 200, fresh.text
