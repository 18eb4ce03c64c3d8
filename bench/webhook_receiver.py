"""A webhook receiver for the webhook benchmark and drill: HTTP/1.1 over asyncio streams on
loopback, deduping on `webhook-id` as the Standard Webhooks specification tells receivers to, and
verifying signatures with the specification's reference library (`standardwebhooks`), every one or
one in `verify_every`."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import standardwebhooks


@dataclass
class DedupingReceiver:
    secret: str
    delay_s: float = 0.0
    """Hold each answer this long (so that workers are caught mid-delivery)."""
    verify_every: int = 1
    port: int = 0
    deliveries: int = 0
    seen: Counter[str] = field(default_factory=Counter)
    bad_signatures: int = 0
    first_at: float | None = None
    last_at: float | None = None
    in_flight: set[int] = field(default_factory=set)
    """Ports of the senders whose request is being held (received, not answered yet)."""
    _server: asyncio.Server | None = None
    _connections: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    @property
    def unique(self) -> int:
        return len(self.seen)

    @property
    def duplicates(self) -> int:
        return sum(count - 1 for count in self.seen.values())

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._connections):
                writer.close()
            await self._server.wait_closed()

    def _take(self, headers: dict[str, str], body: bytes) -> None:
        self.deliveries += 1
        now = time.monotonic()
        self.first_at = self.first_at or now
        self.last_at = now
        if self.deliveries % self.verify_every == 0:
            try:
                standardwebhooks.Webhook(self.secret).verify(body, headers)
            except standardwebhooks.WebhookVerificationError:
                self.bad_signatures += 1
        self.seen[headers.get("webhook-id", "")] += 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        peer_port = writer.get_extra_info("peername")[1]
        try:
            while True:
                if not await reader.readline():
                    return
                headers: dict[str, str] = {}
                while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = line.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self._take(headers, body)
                if self.delay_s:
                    self.in_flight.add(peer_port)
                    try:
                        await asyncio.sleep(self.delay_s)
                    finally:
                        self.in_flight.discard(peer_port)
                writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._connections.discard(writer)
            writer.close()
