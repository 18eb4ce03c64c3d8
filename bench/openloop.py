"""Open-loop load at a fixed rate for `bench/run.sh`: POST referrals on a schedule, whatever the
answers do, and time each one from the instant it was due.

Usage (from the project root):

    python -m bench.openloop URL BODIES_FILE PHASE RUN_ID THREADS PHASES \\
        --rate 200 --duration 20s [--token T] [--connections 32] [--max-connections 256]

Request i is due at t0 + i/rate. A pacer starts each request as its own task at its instant and
never waits for an earlier answer, so a slow server meets the same arrivals as a fast one. wrk's
closed loop is the opposite: a slow answer delays that connection's next request, so the wait a
real client would have had is never measured (coordinated omission). Here latency runs from the
scheduled instant to the last byte of the answer: time spent waiting for a free connection, or for
this process to get round to sending, counts too. So that such time can be told apart from the
server's, the report also gives how late each request's task started (`start_lag`: this process's
own lateness, a busy machine), how late it was written (`send_lag`: also waiting for one of the
--max-connections or for a new connection), and how many requests found every one of those
connections busy (`waited_for_connection`: the server was not keeping up).

No packaged open-loop tool was available (Debian 12 has neither wrk2 nor vegeta nor k6; on PyPI
locust and molotov are closed loops per user), hence this small client: raw HTTP/1.1 over asyncio
streams with keep-alive, because a general client (httpx) would spend more CPU per request on the
two cores it shares with the server.

Every request is built as `bench/referrals.lua` builds it, from the same bodies file: its own
Idempotency-Key, external reference and valid 999-range NHS number, the numbers taken from this
phase's slice of the range (the slices of all wrk threads of phase PHASE, out of PHASES phases of
THREADS threads each), so no two phases in one database name the same child.

Bounded: at most 100,000 requests and 600 s of schedule, loopback addresses only; a request not
answered within --timeout of its instant is counted as a timeout and its connection closed.
Prints one `BENCH_RESULT` line of JSON (and a `BENCH_SAMPLE` line with the first failing answer).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from bench.harness import NHS_PLACEHOLDER, REFERENCE_PLACEHOLDER
from schemas.identifiers import SYNTHETIC_NHS_PREFIX, compute_nhs_check_digit

MAX_REQUESTS: Final = 100_000
MAX_SCHEDULE_S: Final = 600.0
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})
NHS_RANGE: Final = 1_000_000


def parse_seconds(text: str) -> float:
    """`20`, `20s`, `1.5m` (as wrk's -d) to seconds."""
    units = {"s": 1.0, "m": 60.0}
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def nhs_numbers(start: int) -> Iterator[str]:
    """Valid 999-range NHS numbers from offset `start`, as `bench/referrals.lua` walks them."""
    cursor = start
    while True:
        first_nine = f"{SYNTHETIC_NHS_PREFIX}{cursor % NHS_RANGE:06d}"
        cursor += 1
        check = compute_nhs_check_digit(first_nine)
        if check is not None:
            yield f"{first_nine}{check}"


def percentile(ordered: list[float], share: float) -> float:
    """Nearest-rank percentile of an ascending list (0 when empty)."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


class ProtocolError(Exception):
    """The server's answer was not the HTTP/1.1 this client reads."""


@dataclass
class Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    start_lags: list[float] = field(default_factory=list)
    send_lags: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(
        default_factory=lambda: {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    )
    sample: str | None = None
    sent: int = 0
    connections_opened: int = 0
    stale_retries: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    waited_for_connection: int = 0
    last_answer: float = 0.0


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, whether the connection may be reused) of one HTTP/1.1 response."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ProtocolError(f"unexpected status line {lines[0][:80]!r}")
    status = int(parts[1])
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    keep = headers.get(b"connection", b"").lower() != b"close" and parts[0] == b"HTTP/1.1"
    if b"content-length" in headers:
        body = await reader.readexactly(int(headers[b"content-length"]))
    elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailers
                break
            chunks.append((await reader.readexactly(size + 2))[:-2])
        body = b"".join(chunks)
    else:
        body, keep = await reader.read(), False
    return status, body, keep


class OpenLoop:
    """The schedule, the connections and the tally of one run."""

    def __init__(self, args: argparse.Namespace) -> None:
        url = urlsplit(args.url)
        if url.scheme != "http" or url.hostname not in LOOPBACK_HOSTS:
            raise SystemExit(f"openloop: only http:// on a loopback address, not {args.url}")
        self.host = url.hostname
        self.port = url.port or 80
        self.path = url.path or "/"
        self.rate: float = args.rate
        self.schedule_s = parse_seconds(args.duration)
        self.count = round(self.rate * self.schedule_s)
        if not (self.rate > 0 and 0 < self.count <= MAX_REQUESTS):
            raise SystemExit(f"openloop: rate x duration must give 1 to {MAX_REQUESTS} requests")
        if self.schedule_s > MAX_SCHEDULE_S:
            raise SystemExit(f"openloop: at most {MAX_SCHEDULE_S:.0f} s of schedule")
        self.timeout_s = parse_seconds(args.timeout)
        self.warm_connections: int = args.connections
        self.max_connections: int = args.max_connections
        self.semaphore = asyncio.Semaphore(args.max_connections)
        self.idle: deque[Connection] = deque()
        self.tally = Tally()

        templates = [line for line in Path(args.bodies).read_text().splitlines() if line.strip()]
        if not templates:
            raise SystemExit("openloop: the bodies file is empty")
        self.templates = templates
        slice_size = NHS_RANGE // (args.phases * args.threads)
        span = slice_size * args.threads
        # One in eleven 9-digit stems has no valid check digit.
        if self.count > span * 10 // 11:
            raise SystemExit(
                f"openloop: {self.count} requests do not fit this phase's {span} NHS numbers"
            )
        self.numbers = nhs_numbers(args.phase * args.threads * slice_size)
        self.reference_prefix = f"BENCH-{args.run_id}-{args.phase}-open-"
        self.fixed_headers = f"Host: {url.netloc}\r\nContent-Type: application/json\r\n" + (
            f"Authorization: Bearer {args.token}\r\n" if args.token else ""
        )

    def build_request(self, number: int) -> bytes:
        """Request `number` (from 1, as the Lua script's counter) as bytes on the wire."""
        reference = f"{self.reference_prefix}{number}"
        body = (
            self.templates[number % len(self.templates)]
            .replace(NHS_PLACEHOLDER, next(self.numbers))
            .replace(REFERENCE_PLACEHOLDER, reference)
            .encode()
        )
        head = (
            f"POST {self.path} HTTP/1.1\r\n{self.fixed_headers}"
            f"Idempotency-Key: key-{reference}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def open_connection(self) -> Connection:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            self.tally.errors["connect"] += 1
            raise
        self.tally.connections_opened += 1
        return Connection(reader, writer)

    async def take_connection(self) -> tuple[Connection, bool]:
        """The longest-idle usable connection (reused), else a new one."""
        while self.idle:
            connection = self.idle.popleft()
            if connection.usable():
                return connection, True
            connection.close()
        return await self.open_connection(), False

    async def exchange(self, request: bytes) -> tuple[int, bytes, float]:
        """Send one request and read its answer: (status, body, instant it was written).

        A reused keep-alive connection that the server closed meanwhile (end of input before any
        byte of an answer, or a reset) is retried once on a new connection, as HTTP clients do;
        the latency still runs from the scheduled instant, and the retries are counted.
        """
        connection, reused = await self.take_connection()
        while True:
            step = "write"
            try:
                written = time.perf_counter()
                connection.writer.write(request)
                await connection.writer.drain()
                step = "read"
                status, body, keep = await read_response(connection.reader)
            except BaseException as exc:
                # Also when cancelled by the timeout: the answer may still come on it.
                connection.close()
                stale = isinstance(exc, ConnectionError) or (
                    isinstance(exc, asyncio.IncompleteReadError) and not exc.partial
                )
                if reused and stale:
                    self.tally.stale_retries += 1
                    connection, reused = await self.open_connection(), False
                    continue
                if isinstance(exc, Exception):
                    self.tally.errors[step] += 1
                raise
            if keep:
                self.idle.append(connection)
            else:
                connection.close()
            return status, body, written

    async def send(self, number: int, due: float) -> None:
        tally = self.tally
        tally.start_lags.append(time.perf_counter() - due)
        request = self.build_request(number)
        tally.sent += 1
        tally.in_flight += 1
        tally.max_in_flight = max(tally.max_in_flight, tally.in_flight)
        deadline = asyncio.timeout(max(0.0, due + self.timeout_s - time.perf_counter()))
        try:
            async with deadline:
                if self.semaphore.locked():
                    tally.waited_for_connection += 1
                async with self.semaphore:
                    status, body, written = await self.exchange(request)
        except Exception as exc:
            if isinstance(exc, TimeoutError) and deadline.expired():
                tally.errors["timeout"] += 1
            elif tally.sample is None:  # counted where it happened (connect, write, read)
                tally.sample = f"{type(exc).__name__}: {exc}"[:600]
            return
        finally:
            tally.in_flight -= 1
        answered = time.perf_counter()
        tally.last_answer = max(tally.last_answer, answered)
        tally.latencies.append(answered - due)
        tally.send_lags.append(written - due)
        tally.statuses[status] = tally.statuses.get(status, 0) + 1
        if status >= 300 and tally.sample is None:
            text = body[:600].decode(errors="replace").replace("\r", " ").replace("\n", " ")
            tally.sample = f"HTTP {status} {text}"

    async def run(self) -> dict[str, Any]:
        warm = await asyncio.gather(
            *(self.open_connection() for _ in range(self.warm_connections)),
            return_exceptions=True,
        )
        self.idle.extend(item for item in warm if isinstance(item, Connection))
        # Nothing allocated during the schedule should pay for a collection of the setup.
        gc.collect()
        gc.freeze()
        tasks: set[asyncio.Task[None]] = set()
        interval = 1.0 / self.rate
        t0 = time.perf_counter() + 0.05
        for i in range(self.count):
            due = t0 + i * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self.send(i + 1, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        schedule_end = time.perf_counter()
        if tasks:
            await asyncio.wait(tasks)
        ended = time.perf_counter()
        for connection in self.idle:
            connection.close()
        return self.summary(t0, schedule_end, ended)

    def summary(self, t0: float, schedule_end: float, ended: float) -> dict[str, Any]:
        tally = self.tally
        latencies = sorted(tally.latencies)
        lags = sorted(tally.send_lags)
        start_lags = sorted(tally.start_lags)
        answered = len(latencies)
        ok = sum(count for status, count in tally.statuses.items() if 200 <= status < 300)
        # From the first instant to the last answer, or to the end of the schedule if later.
        span = max(tally.last_answer, t0 + self.schedule_s) - t0

        def ms(value: float) -> float:
            return round(1000 * value, 3)

        return {
            "tool": "bench/openloop.py",
            "offered_rate": self.rate,
            "schedule_s": self.schedule_s,
            "scheduled": self.count,
            "sent": tally.sent,
            "answered": answered,
            "ok": ok,
            "achieved_rate": ok / span if span > 0 else 0.0,
            # From the first instant to the last answer or timeout. Not `elapsed_s`: the report
            # adds that key from `bench.harness measure` (the process's wall time).
            "run_s": ended - t0,
            "pacer_overrun_s": max(0.0, schedule_end - (t0 + (self.count - 1) / self.rate)),
            "p50_ms": ms(percentile(latencies, 0.50)),
            "p90_ms": ms(percentile(latencies, 0.90)),
            "p99_ms": ms(percentile(latencies, 0.99)),
            "p999_ms": ms(percentile(latencies, 0.999)),
            "max_ms": ms(latencies[-1] if latencies else 0.0),
            "mean_ms": ms(sum(latencies) / answered if answered else 0.0),
            "start_lag_p50_ms": ms(percentile(start_lags, 0.50)),
            "start_lag_p99_ms": ms(percentile(start_lags, 0.99)),
            "start_lag_max_ms": ms(start_lags[-1] if start_lags else 0.0),
            "send_lag_p50_ms": ms(percentile(lags, 0.50)),
            "send_lag_p99_ms": ms(percentile(lags, 0.99)),
            "send_lag_max_ms": ms(lags[-1] if lags else 0.0),
            "errors": tally.errors
            | {
                "status": answered - ok,
                "unsent": self.count - tally.sent,
                # Sent, neither answered nor counted as a connect, write, read or timeout error.
                "other": tally.sent - answered - sum(tally.errors.values()),
            },
            "statuses": {str(status): count for status, count in sorted(tally.statuses.items())},
            "connections_opened": tally.connections_opened,
            "stale_retries": tally.stale_retries,
            "max_in_flight": tally.max_in_flight,
            "max_connections": self.max_connections,
            "waited_for_connection": tally.waited_for_connection,
        }


async def run_open_loop(args: argparse.Namespace) -> tuple[dict[str, Any], str | None]:
    load = OpenLoop(args)
    result = await load.run()
    return result, load.tally.sample


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.openloop", description=__doc__.split("\n\n", 1)[0]
    )
    parser.add_argument("url", help="http://127.0.0.1:PORT/v1/referrals")
    parser.add_argument("bodies", help="body templates, one per line (bench.harness bodies)")
    parser.add_argument("phase", type=int, help="this phase's number, from 0")
    parser.add_argument("run_id")
    parser.add_argument("threads", type=int, help="wrk's thread count (for the NHS slices)")
    parser.add_argument("phases", type=int, help="how many phases share the NHS range")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--duration", default="20s", help="length of the schedule")
    parser.add_argument("--timeout", default="10s", help="from a request's scheduled instant")
    parser.add_argument("--token", default=None, help="bearer token")
    parser.add_argument(
        "--connections", type=int, default=32, help="keep-alive connections opened beforehand"
    )
    parser.add_argument(
        "--max-connections", type=int, default=256, help="requests in the server's hands at once"
    )
    args = parser.parse_args(argv)
    if not 0 <= args.connections <= args.max_connections:
        parser.error("need 0 <= --connections <= --max-connections")
    try:
        import uvloop
    except ImportError:
        result, sample = asyncio.run(run_open_loop(args))
    else:
        result, sample = uvloop.run(run_open_loop(args))
    sys.stdout.write("BENCH_RESULT " + json.dumps(result, separators=(",", ":")) + "\n")
    if sample is not None:
        sys.stdout.write(f"BENCH_SAMPLE {sample}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
