"""Webhook benchmark (issue 12, acceptance 6): `make bench-webhooks`.

1. **The outbox's cost on a referral create.** One fresh database; `neglect_create_referral` is
   swapped, round by round, between its current definition (which writes the `referral.received`
   event and its delivery to a Front Door subscription, in the same statement) and the same
   definition without that call. Each round creates `--creates` referrals through the service's
   own create path (`service.referrals.create_referral`: validation, the one database call, the
   answer) with `--concurrency` at once on the driver pool, in process and without HTTP, so the
   outbox's share is measured against the smallest total it can be part of. Rounds alternate
   (without, with, without, ...: `--rounds` each); the target is the median of the "with" rounds'
   creates per second at least 90% of the median of the "without" rounds'.
2. **Worker throughput.** Two `neglect-service worker` processes and a receiver on loopback
   (`bench/webhook_receiver.py`, deduping on `webhook-id`, verifying one signature in ten with the
   `standardwebhooks` library). `--events` events are enqueued in one statement once both workers
   beat; the rate is events over the time from that commit to the last new `webhook-id` received.
   `--worker-rounds` rounds; the target is a median of at least 500 events per second.

Database server: DATABASE_URL if set, else PostgreSQL on 127.0.0.1:5432 if it answers, else the
embedded server; a fresh database is created there and dropped at the end. Results are printed
and saved to bench/results/webhooks-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import asyncpg

from bench.harness import (
    NHS_PLACEHOLDER,
    REFERENCE_PLACEHOLDER,
    create_database,
    drop_database,
    find_server_url,
    make_body_templates,
)
from bench.webhook_receiver import DedupingReceiver
from schemas.identifiers import compute_nhs_check_digit
from schemas.referrals import ReferralCreate
from service.auth.clients import create_client
from service.auth.key_encryption import KeyEncryptionKey
from service.db import create_engine, create_pool, create_session_factory, transaction
from service.migrations import migrate_database
from service.referrals import Sender, create_referral
from service.settings import Settings
from service.sql_functions import function_definitions
from service.webhooks.signing import encrypt_secret, new_secret

ROOT: Final = Path(__file__).resolve().parent.parent
CREATE_RATIO_TARGET: Final = 0.90
WORKER_RATE_TARGET: Final = 500.0
_OUTBOX_CALL_START: Final = "    -- The Front Door hears of it (webhooks, SPEC 2.7)"
_OUTBOX_CALL_END: Final = "    );\n"


def create_function_variants() -> tuple[str, str]:
    """`neglect_create_referral` as in referrals.sql, and the same without its outbox call."""
    [current] = [
        statement
        for statement in function_definitions()
        if "FUNCTION public.neglect_create_referral(" in statement
    ]
    start = current.index(_OUTBOX_CALL_START)
    end = current.index(_OUTBOX_CALL_END, start) + len(_OUTBOX_CALL_END)
    without = current[:start] + current[end:]
    assert "neglect_enqueue_webhook" not in without
    return current, without


class Bodies:
    def __init__(self, start: int) -> None:
        self.templates = make_body_templates(50)
        self.serial = start
        self.count = 0

    def next(self) -> ReferralCreate:
        while True:
            first_nine = f"999{self.serial % 1_000_000:06d}"
            self.serial += 1
            check = compute_nhs_check_digit(first_nine)
            if check is not None:
                break
        self.count += 1
        text = (
            self.templates[self.count % len(self.templates)]
            .replace(NHS_PLACEHOLDER, first_nine + str(check))
            .replace(REFERENCE_PLACEHOLDER, f"BENCH-WH-{uuid.uuid4().hex}")
        )
        return ReferralCreate.model_validate_json(text)


async def _register(settings: Settings, url: str) -> dict[str, str]:
    """A sending school, and a Front Door client with one `referral.received` subscription (so
    the "with" rounds also write a delivery per referral); and a partner for the worker part."""
    engine = create_engine(settings, url)
    try:
        async with transaction(create_session_factory(engine)) as session:
            school = await create_client(
                session,
                name="bench school",
                agency_type="school",
                agency_name="Bench Primary School",
                scopes=["referrals:write"],
            )
            front_door = await create_client(
                session,
                name="bench front door",
                agency_type="front_door",
                agency_name="Bench Front Door",
                scopes=["referrals:read", "referrals:read:all", "webhooks:manage"],
            )
            partner = await create_client(
                session,
                name="bench partner",
                agency_type="health",
                agency_name="Bench Health Visitors",
                scopes=["referrals:read", "webhooks:manage"],
            )
    finally:
        await engine.dispose()
    return {
        "school": school.client.client_id,
        "front_door": front_door.client.client_id,
        "partner": partner.client.client_id,
        "partner_agency": partner.client.agency_name,
    }


async def _subscribe(
    connection: asyncpg.Connection,
    kek: KeyEncryptionKey,
    client_id: str,
    url: str,
    event_type: str,
) -> str:
    subscription_id = uuid.uuid4()
    secret = new_secret()
    await connection.execute(
        "INSERT INTO webhook_subscription (id, client_id, url, event_types, kek_id, secret_enc) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        subscription_id,
        client_id,
        url,
        [event_type],
        kek.kek_id,
        encrypt_secret(kek, subscription_id, secret),
    )
    return secret


async def measure_creates(
    settings: Settings, url: str, clients: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    with_outbox, without_outbox = create_function_variants()
    pool = await create_pool(settings, url)
    bodies = Bodies(start=100_000)
    sender = Sender(
        client_id=clients["school"], issuer=settings.issuer, default_issuer=settings.issuer
    )
    rounds: list[dict[str, Any]] = []

    async def create_many(count: int) -> list[float]:
        latencies: list[float] = []
        remaining = iter(range(count))

        async def one_sender() -> None:
            for _ in remaining:
                body = bodies.next()
                started = time.perf_counter()
                await create_referral(pool, sender, uuid.uuid4().hex, body)
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(one_sender() for _ in range(args.concurrency)))
        return latencies

    try:
        async with pool.acquire() as connection:
            await connection.execute(with_outbox)
        await create_many(args.creates // 2)  # warm-up: plans, caches, pool
        for index in range(2 * args.rounds):
            variant = "without" if index % 2 == 0 else "with"
            async with pool.acquire() as connection:
                await connection.execute(with_outbox if variant == "with" else without_outbox)
            started = time.perf_counter()
            latencies = await create_many(args.creates)
            elapsed = time.perf_counter() - started
            rounds.append(
                {
                    "variant": variant,
                    "creates_per_s": round(args.creates / elapsed, 1),
                    "p50_ms": round(statistics.median(latencies) * 1000, 2),
                }
            )
            print(f"  round {index + 1}: {variant:7} {rounds[-1]}", file=sys.stderr)
        async with pool.acquire() as connection:
            await connection.execute(with_outbox)
            events = await connection.fetchval(
                "SELECT count(*) FROM webhook_message WHERE event_type = 'referral.received'"
            )
    finally:
        await pool.close()
    medians = {
        variant: statistics.median(r["creates_per_s"] for r in rounds if r["variant"] == variant)
        for variant in ("with", "without")
    }
    ratio = medians["with"] / medians["without"]
    # Each "with" round against the "without" round just before it: less exposed to the drift
    # of this machine's speed over minutes than the two medians. Reported, not judged.
    pairs = [
        round(rounds[i + 1]["creates_per_s"] / rounds[i]["creates_per_s"], 3)
        for i in range(0, len(rounds) - 1, 2)
    ]
    return {
        "rounds": rounds,
        "median_creates_per_s": medians,
        "ratio": round(ratio, 3),
        "pair_ratios": pairs,
        "median_pair_ratio": statistics.median(pairs),
        "events_written": int(events),
        "target": f"with >= {CREATE_RATIO_TARGET:.0%} of without",
        "met": ratio >= CREATE_RATIO_TARGET,
    }


def _service_command() -> list[str]:
    return [str(ROOT / ".venv" / "bin" / "neglect-service")]


async def measure_workers(
    settings: Settings,
    url: str,
    clients: dict[str, str],
    kek: KeyEncryptionKey,
    env: dict[str, str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    receiver_secret: str
    connection = await asyncpg.connect(url)
    workers: list[subprocess.Popen[bytes]] = []
    receiver: DedupingReceiver | None = None
    try:
        # The create rounds left a Front Door subscription with pending deliveries to nowhere.
        await connection.execute(
            "UPDATE webhook_delivery SET status = 'cancelled' WHERE status = 'pending'"
        )
        receiver = DedupingReceiver(secret="", verify_every=10)
        await receiver.start()
        receiver_secret = await _subscribe(
            connection, kek, clients["partner"], receiver.url, "referral.decided"
        )
        receiver.secret = receiver_secret
        await connection.execute("DELETE FROM webhook_worker")
        for _ in range(2):
            workers.append(
                subprocess.Popen(
                    [*_service_command(), "worker", "--batch-size", str(args.batch_size)],
                    env=env,
                    stdout=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + 60
        while await connection.fetchval("SELECT count(*) FROM webhook_worker") < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not start")
            await asyncio.sleep(0.2)
        rounds: list[dict[str, Any]] = []
        for index in range(args.worker_rounds):
            before = receiver.unique
            started = time.monotonic()
            await connection.execute(
                "SELECT neglect_enqueue_webhook(p_event_type => 'referral.decided', "
                "p_agency_name => $1, p_resource_id => gen_random_uuid(), p_status => 'decided') "
                "FROM generate_series(1, $2)",
                clients["partner_agency"],
                args.events,
            )
            enqueued = time.monotonic()
            deadline = enqueued + 300
            while receiver.unique - before < args.events and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            got = receiver.unique - before
            finished = receiver.last_at or time.monotonic()
            rate = got / (finished - enqueued)
            rounds.append(
                {
                    "events": args.events,
                    "delivered": got,
                    "enqueue_s": round(enqueued - started, 2),
                    "seconds": round(finished - enqueued, 2),
                    "events_per_s": round(rate, 1),
                }
            )
            print(f"  worker round {index + 1}: {rounds[-1]}", file=sys.stderr)
        median = statistics.median(r["events_per_s"] for r in rounds)
        return {
            "workers": 2,
            "batch_size": args.batch_size,
            "rounds": rounds,
            "median_events_per_s": median,
            "receiver": {
                "deliveries": receiver.deliveries,
                "unique": receiver.unique,
                "duplicates": receiver.duplicates,
                "bad_signatures": receiver.bad_signatures,
            },
            "target": f">= {WORKER_RATE_TARGET:g} events/s",
            "met": median >= WORKER_RATE_TARGET and receiver.bad_signatures == 0,
        }
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        if receiver is not None:
            await receiver.stop()
        await connection.close()


async def run(args: argparse.Namespace) -> int:
    server = await asyncio.to_thread(find_server_url)
    name = f"ns_bench_wh_{int(time.time())}_{os.getpid()}"
    url = await create_database(server, name)
    key = base64.b64encode(os.urandom(32)).decode()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "NEGLECT_ENV": "production",
        "NEGLECT_KEY_ENCRYPTION_KEY": key,
        "NEGLECT_WEBHOOK_ALLOWED_NETWORKS": '["127.0.0.1/32"]',
        "NEGLECT_LOG_LEVEL": "WARNING",
    }
    settings = Settings(
        database_url=url,
        env="production",
        key_encryption_key=key,
        db_pool_size=max(10, args.concurrency + 2),
    )
    kek = KeyEncryptionKey(base64.b64decode(key))
    try:
        await asyncio.to_thread(migrate_database, url)
        clients = await _register(settings, url)
        load = os.getloadavg()
        print("webhooks bench: referral create, with and without the outbox", file=sys.stderr)
        creates = await measure_creates(settings, url, clients, args)
        print("webhooks bench: two workers to a local receiver", file=sys.stderr)
        workers = await measure_workers(settings, url, clients, kek, env, args)
    finally:
        await drop_database(server, name)
    result = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_at_start": [round(x, 2) for x in load],
        "cpus": os.cpu_count(),
        "referral_create": creates,
        "worker": workers,
    }
    text = json.dumps(result, indent=2)
    print(text)
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    (results / f"webhooks-{stamp}.json").write_text(text + "\n")
    print(
        f"referral create: median {creates['median_creates_per_s']['with']:.0f}/s with the outbox,"
        f" {creates['median_creates_per_s']['without']:.0f}/s without: ratio {creates['ratio']:.3f}"
        f" (target >= {CREATE_RATIO_TARGET}) {'MET' if creates['met'] else 'MISSED'}\n"
        f"worker: median {workers['median_events_per_s']:.0f} events/s with two workers"
        f" (target >= {WORKER_RATE_TARGET:g}) {'MET' if workers['met'] else 'MISSED'}",
        file=sys.stderr,
    )
    return 0 if creates["met"] and workers["met"] else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--creates", type=int, default=600, help="referrals per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each variant")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--events", type=int, default=3000, help="events per worker round")
    parser.add_argument("--worker-rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=100)
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
