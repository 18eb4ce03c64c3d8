"""Webhook tests' builders: a real HTTP receiver on loopback, subscriptions, and workers.

The receiver is a small HTTP/1.1 server (asyncio streams, keep-alive) on 127.0.0.1, which the test
settings allow-list. It records every request (headers, raw body) and answers each path from a
script of responses, 204 once the script is used up.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import standardwebhooks
from fastapi import FastAPI
from sqlalchemy import text

from service.db import DriverPool, SessionFactory, create_pool, transaction
from service.settings import Settings
from service.webhooks.worker import DeliveryWorker, RetryPolicy
from tests.conftest import SECRETS_SEEN, RegisteredClient


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def verifies_with(self, secret: str) -> bool:
        """Whether the Standard Webhooks reference library accepts it with this secret."""
        try:
            standardwebhooks.Webhook(secret).verify(self.body, self.headers)
        except standardwebhooks.WebhookVerificationError:
            return False
        return True


@dataclass(frozen=True)
class Reply:
    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    hang_s: float = 0.0
    """Wait this long before answering (a slow receiver)."""


@dataclass
class Receiver:
    port: int = 0
    received: list[Received] = field(default_factory=list)
    script: dict[str, deque[Reply]] = field(default_factory=lambda: defaultdict(deque))
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    connections: set[asyncio.StreamWriter] = field(default_factory=set)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, path: str, *replies: Reply) -> None:
        self.script[path].extend(replies)

    def at(self, path: str) -> list[Received]:
        return [each for each in self.received if each.path == path]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.add(writer)
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    return
                _, target, _ = request_line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = line.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.received.append(Received(target, headers, body))
                self.arrived.set()
                queue = self.script.get(target)
                reply = queue.popleft() if queue else Reply()
                if reply.hang_s:
                    await asyncio.sleep(reply.hang_s)
                extra = "".join(f"{name}: {value}\r\n" for name, value in reply.headers.items())
                writer.write(
                    f"HTTP/1.1 {reply.status} X\r\n{extra}content-length: 0\r\n\r\n".encode()
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.connections.discard(writer)
            writer.close()


@asynccontextmanager
async def running_receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    server = await asyncio.start_server(receiver._serve, "127.0.0.1", 0)
    receiver.port = server.sockets[0].getsockname()[1]
    try:
        yield receiver
    finally:
        server.close()
        # Connections still open (keep-alive) end with the server.
        for writer in list(receiver.connections):
            writer.close()
        await server.wait_closed()


async def subscribe(
    http: httpx.AsyncClient,
    registered: RegisteredClient,
    url: str,
    event_types: list[str],
) -> dict[str, Any]:
    """POST /v1/webhooks that must succeed; the answer, with its secret."""
    response = await http.post(
        "/v1/webhooks",
        json={"url": url, "event_types": event_types},
        headers={**registered.headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    SECRETS_SEEN.add(created["secret"])
    return created


async def end_subscriptions(factory: SessionFactory, client_ids: list[str]) -> None:
    """Delete the subscriptions of these clients, so later tests' events never go to them."""
    async with transaction(factory) as session:
        await session.execute(
            text(
                "SELECT neglect_end_webhook_subscription(p_subscription_id => id, "
                "p_status => 'deleted', p_reason => 'test over') "
                "FROM webhook_subscription WHERE client_id = ANY (:ids)"
            ),
            {"ids": client_ids},
        )


FAST_RETRIES = RetryPolicy(delays_s=(0.0, 0.0), jitter=0.0)
"""Three attempts, each due at once after the last: the dead letter without waiting days."""


@asynccontextmanager
async def worker_pool(settings: Settings, url: str) -> AsyncIterator[DriverPool]:
    pool = await create_pool(settings, url)
    try:
        yield pool
    finally:
        await pool.close()


def make_worker(
    app: FastAPI, pool: DriverPool, policy: RetryPolicy | None = None, **options: Any
) -> DeliveryWorker:
    settings: Settings = app.state.settings
    return DeliveryWorker(pool, settings, app.state.kek, policy=policy or RetryPolicy(), **options)


async def fan_out(factory: SessionFactory) -> int:
    """A worker's first step: make the deliveries of every event not yet fanned out."""
    async with factory() as session, session.begin():
        fanned: int = await session.scalar(
            text("SELECT neglect_fan_out_webhooks(p_limit => 100000)")
        )
    return fanned


async def deliveries_of(factory: SessionFactory, subscription_id: str) -> list[dict[str, Any]]:
    """The subscription's deliveries as stored, oldest first."""
    async with factory() as session:
        rows = await session.execute(
            text(
                "SELECT d.*, m.event_type, m.body FROM webhook_delivery d "
                "JOIN webhook_message m ON m.id = d.message_id "
                "WHERE d.subscription_id = :id ORDER BY d.id"
            ),
            {"id": subscription_id},
        )
        return [dict(row) for row in rows.mappings()]


async def attempts_of(factory: SessionFactory, subscription_id: str) -> list[dict[str, Any]]:
    async with factory() as session:
        rows = await session.execute(
            text(
                "SELECT a.* FROM webhook_attempt a JOIN webhook_delivery d ON d.id = a.delivery_id "
                "WHERE d.subscription_id = :id ORDER BY a.id"
            ),
            {"id": subscription_id},
        )
        return [dict(row) for row in rows.mappings()]
