"""Webhook benchmark (issue 12, acceptance 6): `make bench-webhooks`.

In every create part `neglect_create_referral` is swapped, round by round, between its current
definition (which writes the `referral.received` event in the same statement; the Front Door is
subscribed to it, and a worker would make its delivery) and the same definition without that
call.

1. **The referral create through HTTP (judged).** `neglect-service serve --workers 2` (uvicorn),
   a bearer token from `/oauth/token`, `bench/referrals.lua` and `bench/openloop.py` as `make
   bench` uses them. After a `--http-warmup` of wrk, each round runs wrk at saturation
   (`-t2 -c32`, `--http-duration` s) and then the open loop at `--rate` requests/s (default: half
   the warm-up's rate, fixed for the run) for `--rate-duration` s; rounds go without, with, with,
   without, ... (`--http-rounds` of each). The target: the median of the "with" rounds'
   requests/s at saturation at least 90% of the "without" rounds', and no failed request. The
   p99 at the fixed rate and the CPU per create (the server's processes, and the PostgreSQL
   backends of the bench database, from /proc) are reported beside it for each variant.
2. **The referral create in process**, reported: `--creates` referrals a round through
   `service.referrals.create_referral` (validation, the one database call, the answer) with
   `--concurrency` at once on the driver pool, no HTTP: the smallest total the outbox can be part
   of, so its largest share. Rounds alternate (`--rounds` of each); creates/s and CPU per create.
3. **Worker throughput.** Two `neglect-service worker` processes and a receiver on loopback
   (`bench/webhook_receiver.py`, deduping on `webhook-id`, verifying one signature in ten with the
   `standardwebhooks` library). `--events` events are enqueued in one statement once both workers
   beat; the rate is events over the time from that commit to the last new `webhook-id` received:
   the workers fan the events out to the subscription, then send them.
   `--worker-rounds` rounds; the target is a median of at least 500 events per second. Each
   round reports the CPU per event of the workers, their PostgreSQL backends, the receiver and
   every other process, and the share of time stolen by the hypervisor. Before the workers start,
   the indicator rollup is refreshed (`neglect-service indicators refresh`, its time reported):
   the create parts' referrals overtook it, and the workers, which refresh it too, would spend
   their first rounds doing so.

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
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import asyncpg

from bench.harness import (
    NHS_PLACEHOLDER,
    REFERENCE_PLACEHOLDER,
    attach_cpu,
    cpu_snapshot,
    cpu_used,
    create_database,
    drop_database,
    fetch_token,
    find_server_url,
    free_port,
    make_body_templates,
    measure_load,
    parse_open_loop_output,
    parse_wrk_output,
    wait_until_ready,
    worker_cpu_snapshot,
    worker_cpu_used,
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
    """A sending school, a Front Door client (subscribed to `referral.received` by `run`, so the
    "with" rounds write a delivery per referral as well as the event), and a partner for the
    worker part."""
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
    assert school.secret is not None
    return {
        "school": school.client.client_id,
        "school_secret": school.secret,
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
    settings: Settings,
    url: str,
    database: str,
    clients: dict[str, str],
    args: argparse.Namespace,
    nhs_start: int,
) -> dict[str, Any]:
    with_outbox, without_outbox = create_function_variants()
    pool = await create_pool(settings, url)
    bodies = Bodies(start=nhs_start)
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
            cpu_before = cpu_snapshot(os.getpid(), database)
            started = time.perf_counter()
            latencies = await create_many(args.creates)
            elapsed = time.perf_counter() - started
            cpu = cpu_used(cpu_before, cpu_snapshot(os.getpid(), database))
            rounds.append(
                {
                    "variant": variant,
                    "creates_per_s": round(args.creates / elapsed, 1),
                    "p50_ms": round(statistics.median(latencies) * 1000, 2),
                    "cpu_ms_per_create": {
                        "app": round(1000 * cpu["server"] / args.creates, 3),
                        "postgres": round(1000 * cpu["postgres"] / args.creates, 3),
                    },
                }
            )
            print(f"  round {index + 1}: {variant:7} {rounds[-1]}", file=sys.stderr)
        async with pool.acquire() as connection:
            await connection.execute(with_outbox)
            events = await connection.fetchval(
                "SELECT count(*) FROM webhook_message WHERE event_type = 'referral.received'"
            )
            deliveries = await connection.fetchval("SELECT count(*) FROM webhook_delivery")
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
        "median_cpu_ms_per_create": _median_cpu(rounds),
        "events_written": int(events),
        "deliveries_written": int(deliveries),
        "target": f"with >= {CREATE_RATIO_TARGET:.0%} of without",
        "met": ratio >= CREATE_RATIO_TARGET,
    }


def _median_cpu(rounds: list[dict[str, Any]], key: str = "cpu_ms_per_create") -> dict[str, Any]:
    """Per variant, the median over its rounds of CPU ms per create: the app, PostgreSQL, both."""
    medians: dict[str, Any] = {}
    for variant in ("without", "with"):
        mine = [r[key] for r in rounds if r["variant"] == variant and r.get(key)]
        if not mine:
            continue
        medians[variant] = {
            side: round(statistics.median(m[side] for m in mine), 3) for side in ("app", "postgres")
        }
        medians[variant]["total"] = round(
            statistics.median(m["app"] + m["postgres"] for m in mine), 3
        )
    if len(medians) == 2:
        medians["ratio"] = round(medians["with"]["total"] / medians["without"]["total"], 3)
    return medians


HTTP_THREADS: Final = 2
"""wrk's threads, and the number of NHS-range slices per load phase."""
HTTP_CONNECTIONS: Final = 32


def http_phases(args: argparse.Namespace) -> int:
    """Load phases over HTTP (a warm-up, then saturation and fixed rate in every round), plus one
    slice of the 999 range for the in-process creates (the last)."""
    rounds: int = args.http_rounds
    return 1 + 2 * 2 * rounds + 1


def _round_variant(index: int) -> str:
    # without, with, with, without, ...: a drift of the machine's speed over the run falls on
    # both variants alike.
    return ("without", "with", "with", "without")[index % 4]


async def measure_http_creates(
    url: str,
    database: str,
    clients: dict[str, str],
    env: dict[str, str],
    args: argparse.Namespace,
    work: Path,
) -> dict[str, Any]:
    """POST /v1/referrals through the served service (`neglect-service serve --workers 2`,
    uvicorn), as `make bench` drives it: wrk at saturation, then `bench/openloop.py` at a fixed
    offered rate, in each round; the create function is swapped between rounds on the running
    server (PL/pgSQL recompiles a replaced function on its next call)."""
    with_outbox, without_outbox = create_function_variants()
    bodies = work / "bodies.jsonl"
    bodies.write_text("\n".join(make_body_templates(100)) + "\n")
    phases = http_phases(args)
    run_id = f"wh{int(time.time())}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    target = f"{base}/v1/referrals"
    log = (work / "service.log").open("wb")
    server = subprocess.Popen(
        [*_service_command(), "serve", "--workers", "2", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    admin = await asyncpg.connect(url)
    rounds: list[dict[str, Any]] = []

    def wrk(phase: int, seconds: float, out: Path) -> dict[str, Any]:
        measure_load(
            [
                "wrk",
                f"-t{HTTP_THREADS}",
                f"-c{HTTP_CONNECTIONS}",
                f"-d{seconds:g}s",
                "--latency",
                "--timeout",
                "10s",
                "-H",
                f"Authorization: Bearer {token}",
                "-s",
                str(ROOT / "bench" / "referrals.lua"),
                target,
                "--",
                str(bodies),
                str(phase),
                run_id,
                str(HTTP_THREADS),
                str(phases),
            ],
            server.pid,
            database,
            out,
        )
        figures = parse_wrk_output(out.read_text())
        attach_cpu(figures, out)
        return figures

    def open_loop(phase: int, out: Path) -> dict[str, Any]:
        measure_load(
            [
                sys.executable,
                "-m",
                "bench.openloop",
                target,
                str(bodies),
                str(phase),
                run_id,
                str(HTTP_THREADS),
                str(phases),
                "--rate",
                f"{args.rate:g}",
                "--duration",
                f"{args.rate_duration:g}s",
                "--timeout",
                "10s",
                "--connections",
                str(HTTP_CONNECTIONS),
                "--max-connections",
                "256",
                "--token",
                token,
            ],
            server.pid,
            database,
            out,
        )
        figures = parse_open_loop_output(out.read_text())
        attach_cpu(figures, out)
        return figures

    def summary(figures: dict[str, Any], *, fixed: bool) -> dict[str, Any]:
        cpu = figures.get("cpu_ms_per_request", {})
        kept = {
            "requests": figures["requests"],
            "requests_per_s": round(figures["requests_per_s"], 1),
            "p50_ms": round(figures["p50_ms"], 2),
            "p99_ms": round(figures["p99_ms"], 2),
            "max_ms": round(figures["max_ms"], 2),
            "non_2xx": figures["non_2xx"],
            "socket_errors": figures["socket_errors"],
            "cpu_ms_per_create": {
                "app": round(cpu.get("server", 0.0), 3),
                "postgres": round(cpu.get("postgres", 0.0), 3),
            },
            "other_load": round(figures.get("other_load", 0.0), 2),
        }
        if fixed:
            kept["start_lag_p99_ms"] = round(figures["start_lag_p99_ms"], 2)
        return kept

    try:
        try:
            await asyncio.to_thread(wait_until_ready, f"{base}/health/ready", server.pid, 180)
        except SystemExit:
            log.flush()
            print((work / "service.log").read_text()[-3000:], file=sys.stderr)
            raise
        token = await asyncio.to_thread(
            fetch_token,
            base,
            json.dumps({"client_id": clients["school"], "client_secret": clients["school_secret"]}),
        )
        await admin.execute(with_outbox)
        warmup = await asyncio.to_thread(wrk, 0, args.http_warmup, work / "warmup.txt")
        if not args.rate:
            # Half of what the warm-up reached, so the fixed rate is below saturation on a
            # machine whatever else it is running; the same rate for every round of the run.
            args.rate = max(10.0, 10 * (warmup["requests_per_s"] // 20))
        for index in range(2 * args.http_rounds):
            variant = _round_variant(index)
            await admin.execute(with_outbox if variant == "with" else without_outbox)
            saturation = await asyncio.to_thread(
                wrk, 1 + 2 * index, args.http_duration, work / f"saturation-{index}.txt"
            )
            await asyncio.sleep(1)  # the closed loop's last answers out of the way
            fixed = await asyncio.to_thread(open_loop, 2 + 2 * index, work / f"fixed-{index}.txt")
            rounds.append(
                {
                    "variant": variant,
                    "saturation": summary(saturation, fixed=False),
                    "fixed_rate": summary(fixed, fixed=True),
                }
            )
            print(
                f"  http round {index + 1}: {variant:7} saturation"
                f" {saturation['requests_per_s']:.0f}/s p99 {saturation['p99_ms']:.1f} ms;"
                f" at {args.rate:g}/s p99 {fixed['p99_ms']:.1f} ms;"
                f" CPU/create app {rounds[-1]['saturation']['cpu_ms_per_create']['app']:.2f}"
                f" + PG {rounds[-1]['saturation']['cpu_ms_per_create']['postgres']:.2f} ms",
                file=sys.stderr,
            )
        await admin.execute(with_outbox)
    finally:
        await admin.close()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()

    def median_of(phase: str, key: str, variant: str) -> float:
        return float(statistics.median(r[phase][key] for r in rounds if r["variant"] == variant))

    throughput = {v: median_of("saturation", "requests_per_s", v) for v in ("without", "with")}
    p99 = {v: median_of("fixed_rate", "p99_ms", v) for v in ("without", "with")}
    errors = sum(
        r[phase]["non_2xx"] + r[phase]["socket_errors"]
        for r in rounds
        for phase in ("saturation", "fixed_rate")
    )
    ratio = throughput["with"] / throughput["without"]
    return {
        "server": "neglect-service serve --workers 2 (uvicorn)",
        "saturation": f"wrk -t{HTTP_THREADS} -c{HTTP_CONNECTIONS} -d{args.http_duration:g}s",
        "fixed_rate": f"bench/openloop.py, {args.rate:g} requests/s for {args.rate_duration:g} s",
        "rounds": rounds,
        "median_requests_per_s": throughput,
        "ratio": round(ratio, 3),
        "median_fixed_rate_p99_ms": p99,
        "fixed_rate_p99_ratio": round(p99["with"] / p99["without"], 3),
        "median_cpu_ms_per_create": {
            "saturation": _median_cpu(
                [{"variant": r["variant"], **r["saturation"]} for r in rounds]
            ),
            "fixed_rate": _median_cpu(
                [{"variant": r["variant"], **r["fixed_rate"]} for r in rounds]
            ),
        },
        "errors": errors,
        "target": f"with >= {CREATE_RATIO_TARGET:.0%} of without (saturation, through HTTP)",
        "met": ratio >= CREATE_RATIO_TARGET and errors == 0,
    }


def _service_command() -> list[str]:
    return [str(ROOT / ".venv" / "bin" / "neglect-service")]


async def measure_workers(
    settings: Settings,
    url: str,
    database: str,
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
        # The create rounds left events for a Front Door subscription to nowhere: not the
        # workers' to send.
        await connection.execute("DELETE FROM webhook_fan_out")
        await connection.execute(
            "UPDATE webhook_delivery SET status = 'cancelled' WHERE status = 'pending'"
        )
        # The create rounds' referrals overtook the indicator rollup, which a worker refreshes
        # besides delivering (`neglect-service worker`, every 60 s): on two cores that refresh,
        # tens of seconds of PostgreSQL, would take the CPU of the first rounds (their PostgreSQL
        # CPU per event was ten times the later rounds'). Made here first, so that the rounds
        # measure deliveries; the workers still run as deployed, refreshing included.
        refresh_started = time.monotonic()
        subprocess.run(
            [*_service_command(), "indicators", "refresh"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        refresh_s = time.monotonic() - refresh_started
        print(f"  indicator rollup refreshed first in {refresh_s:.1f} s", file=sys.stderr)
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
        worker_pids = [worker.pid for worker in workers]
        for index in range(args.worker_rounds):
            before = receiver.unique
            cpu_before = worker_cpu_snapshot(worker_pids, database)
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
            cpu = worker_cpu_used(cpu_before, worker_cpu_snapshot(worker_pids, database))
            rate = got / (finished - enqueued)
            rounds.append(
                {
                    "events": args.events,
                    "delivered": got,
                    "enqueue_s": round(enqueued - started, 2),
                    "seconds": round(finished - enqueued, 2),
                    "events_per_s": round(rate, 1),
                    "cpu_us_per_event": {
                        side: round(1e6 * seconds / max(1, got), 1)
                        for side, seconds in cpu.items()
                        if side != "steal"
                    },
                    "steal_share": round(cpu["steal"], 3),
                }
            )
            print(f"  worker round {index + 1}: {rounds[-1]}", file=sys.stderr)
        median = statistics.median(r["events_per_s"] for r in rounds)
        return {
            "workers": 2,
            "batch_size": args.batch_size,
            "indicator_refresh_first_s": round(refresh_s, 1),
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
    if shutil.which("wrk") is None:
        raise SystemExit("bench/webhooks.py needs wrk for the saturation runs: apt-get install wrk")
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
        # The Front Door's subscription: every referral's event has a delivery to write. (No
        # worker runs during the create parts; the worker part cancels these deliveries.)
        connection = await asyncpg.connect(url)
        try:
            await _subscribe(
                connection,
                kek,
                clients["front_door"],
                "https://front-door.example/webhooks",
                "referral.received",
            )
        finally:
            await connection.close()
        load = os.getloadavg()
        with tempfile.TemporaryDirectory(prefix="ns-bench-wh-") as work:
            print(
                "webhooks bench: referral create through HTTP, with and without the outbox",
                file=sys.stderr,
            )
            http = await measure_http_creates(url, name, clients, env, args, Path(work))
        print(
            "webhooks bench: referral create in process, with and without the outbox",
            file=sys.stderr,
        )
        # The in-process creates take the last slice of the 999 range (`http_phases`).
        slice_size = 1_000_000 // (http_phases(args) * HTTP_THREADS)
        nhs_start = (http_phases(args) - 1) * HTTP_THREADS * slice_size
        creates = await measure_creates(settings, url, name, clients, args, nhs_start)
        print("webhooks bench: two workers to a local receiver", file=sys.stderr)
        workers = await measure_workers(settings, url, name, clients, kek, env, args)
    finally:
        await drop_database(server, name)
    result = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_at_start": [round(x, 2) for x in load],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "referral_create_http": http,
        "referral_create_in_process": creates,
        "worker": workers,
    }
    text = json.dumps(result, indent=2)
    print(text)
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    (results / f"webhooks-{stamp}.json").write_text(text + "\n")
    http_cpu = http["median_cpu_ms_per_create"]["saturation"]
    print(
        f"referral create through HTTP (judged): median {http['median_requests_per_s']['with']:.0f}"
        f"/s with the outbox, {http['median_requests_per_s']['without']:.0f}/s without at"
        f" saturation: ratio {http['ratio']:.3f} (target >= {CREATE_RATIO_TARGET})"
        f" {'MET' if http['met'] else 'MISSED'}; errors {http['errors']}\n"
        f"  p99 at {args.rate:g} requests/s: {http['median_fixed_rate_p99_ms']['with']:.1f} ms"
        f" with, {http['median_fixed_rate_p99_ms']['without']:.1f} ms without"
        f" (ratio {http['fixed_rate_p99_ratio']:.2f})\n"
        f"  CPU per create at saturation: with {_cpu_text(http_cpu.get('with'))},"
        f" without {_cpu_text(http_cpu.get('without'))} (ratio {http_cpu.get('ratio', 0):.3f})\n"
        f"referral create in process: median {creates['median_creates_per_s']['with']:.0f}/s with"
        f" the outbox, {creates['median_creates_per_s']['without']:.0f}/s without: ratio"
        f" {creates['ratio']:.3f}; CPU per create: with"
        f" {_cpu_text(creates['median_cpu_ms_per_create'].get('with'))}, without"
        f" {_cpu_text(creates['median_cpu_ms_per_create'].get('without'))}\n"
        f"worker: median {workers['median_events_per_s']:.0f} events/s with two workers"
        f" (target >= {WORKER_RATE_TARGET:g}) {'MET' if workers['met'] else 'MISSED'}",
        file=sys.stderr,
    )
    return 0 if http["met"] and workers["met"] else 1


def _cpu_text(cpu: dict[str, float] | None) -> str:
    if not cpu:
        return "n/a"
    return f"{cpu['app']:.2f} app + {cpu['postgres']:.2f} PG = {cpu['total']:.2f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--http-rounds", type=int, default=3, help="HTTP rounds of each variant")
    parser.add_argument(
        "--http-duration", type=float, default=15.0, help="seconds at saturation (wrk)"
    )
    parser.add_argument("--http-warmup", type=float, default=5.0, help="seconds of wrk first")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="offered requests/s in the fixed-rate phase (default: half the warm-up's rate)",
    )
    parser.add_argument(
        "--rate-duration", type=float, default=15.0, help="seconds of the fixed-rate phase"
    )
    parser.add_argument("--creates", type=int, default=600, help="in-process referrals per round")
    parser.add_argument("--rounds", type=int, default=3, help="in-process rounds of each variant")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--events", type=int, default=3000, help="events per worker round")
    parser.add_argument("--worker-rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=100)
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
