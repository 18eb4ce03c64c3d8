"""What the webhook egress client costs against a plain httpx client (issue 12).

Both POST the same small JSON body to one receiver on 127.0.0.1 (a separate process, HTTP/1.1,
answering 204), with the same concurrency, in alternating rounds; the egress client reaches it
by a host name its resolver maps to 127.0.0.1, allow-listed as in development. Two phases:

- keep-alive: the receiver keeps connections open, as a partner's server would; the egress
  client's extra work is its per-request URL check;
- one connection per request (`connection: close`): every request also pays the egress
  client's lookup, address check and pinned connect.

    .venv/bin/python -m bench.webhook_egress [--requests 3000] [--concurrency 16] [--rounds 3]

Prints requests per second per client and phase (median of the rounds) and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import multiprocessing
import socket
import statistics
import time
from collections.abc import Callable

import httpx

from service.settings import Settings
from service.webhooks.egress import IPAddress, build_client

BODY = b'{"type":"referral.decided","timestamp":"2026-12-06T08:00:00Z","data":{"id":"r_1"}}'


def _serve(port: int, keep_alive: bool) -> None:
    close = b"" if keep_alive else b"connection: close\r\n"
    answer = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n" + close + b"\r\n"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                writer.write(answer)
                await writer.drain()
                if not keep_alive:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class LoopbackResolver:
    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address("127.0.0.1")]


async def _rate(client: httpx.AsyncClient, url: str, requests: int, concurrency: int) -> float:
    remaining = iter(range(requests))

    async def sender() -> None:
        for _ in remaining:
            response = await client.post(url, content=BODY)
            assert response.status_code == 204

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return requests / (time.perf_counter() - started)


async def _phase(port: int, args: argparse.Namespace) -> dict[str, float]:
    settings = Settings(
        database_url=None, env="development", webhook_allowed_networks=["127.0.0.1/32"]
    )
    clients: dict[str, Callable[[], httpx.AsyncClient]] = {
        "plain httpx": lambda: httpx.AsyncClient(timeout=15.0, trust_env=False),
        "egress": lambda: build_client(settings, resolver=LoopbackResolver()),
    }
    urls = {
        "plain httpx": f"http://127.0.0.1:{port}/hook",
        "egress": f"http://receiver.bench:{port}/hook",
    }
    rates: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(args.rounds):
        for name, make in clients.items():
            async with make() as client:
                await _rate(client, urls[name], min(200, args.requests), args.concurrency)
                rate = await _rate(client, urls[name], args.requests, args.concurrency)
            rates[name].append(rate)
    return {name: statistics.median(values) for name, values in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for phase, keep_alive in [("keep-alive", True), ("connection per request", False)]:
        port = _free_port()
        receiver = multiprocessing.Process(target=_serve, args=(port, keep_alive), daemon=True)
        receiver.start()
        try:
            time.sleep(0.5)
            medians = asyncio.run(_phase(port, args))
        finally:
            receiver.terminate()
            receiver.join()
        plain, egress = medians["plain httpx"], medians["egress"]
        print(
            f"{phase}: plain httpx {plain:.0f}/s, egress {egress:.0f}/s "
            f"({egress / plain:.0%} of plain), {args.requests} POSTs x {args.rounds} rounds, "
            f"concurrency {args.concurrency}"
        )


if __name__ == "__main__":
    main()
