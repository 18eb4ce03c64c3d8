"""What the webhook outbox costs PostgreSQL per event, and what migrations 0016 and 0018 (the
event alone, fanned out by the workers) saved: `.venv/bin/python -m bench.outbox_costs`.

One fresh database at head, a Front Door client subscribed to `referral.received` and a partner
subscribed to `referral.decided` (as `make bench-webhooks` registers them). Each variant installs
its own `neglect_enqueue_webhook` / `neglect_webhook_recipients` definitions and foreign keys,
then `--connections` connections call `neglect_enqueue_webhook` for a `referral.received` event
`--calls` times in all, each call its own transaction with an xid (as on the referral create,
where the outbox's writes share the referral's transaction and commit). The figure is the
PostgreSQL backends' CPU time per call (/proc/PID/schedstat: nanoseconds on a CPU, so other
processes' load changes it little, unlike wall-clock time), minus that of the `nothing` variant
(the same call, the same id computed, nothing written): the outbox's own cost per event.
Variants run in `--rounds` rounds, in a shuffled order each round; medians are printed.

Variants (`--variants`, comma-separated):
- `0013`: the outbox as migration 0013 made it: the event and its deliveries in two statements,
  the recipients from a PL/pgSQL set-returning function, both foreign keys of webhook_delivery
  checked on every delivery inserted;
- `0016`: as migration 0016 left it: the same functions, without the foreign keys, so `0013`
  minus `0016` is what the foreign-key checks cost;
- `current` (migration 0018): the event and its place in the fan-out queue (`webhook_fan_out`);
  a worker makes its deliveries (`neglect_fan_out_webhooks`), off the create's path;
- `nothing`: the baseline.
Tried earlier and not kept, as they saved nothing
measurable: the event and its deliveries in one INSERT (a data-modifying WITH), and the recipients
in LANGUAGE sql, which the planner inlines (3 to 5 us an event, within noise).

PostgreSQL must run on this machine (its backends' CPU is read from /proc). The database is
dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.util
import os
import random
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Final

import asyncpg

from bench.harness import create_database, drop_database, find_server_url
from bench.webhooks import _register, _subscribe
from service.auth.key_encryption import KeyEncryptionKey
from service.migrations import migrate_database
from service.settings import Settings
from service.sql_functions import function_definitions

ROOT: Final = Path(__file__).resolve().parent.parent
CALL: Final = (
    "SELECT pg_current_xact_id(), neglect_enqueue_webhook(p_event_type => 'referral.received', "
    "p_agency_name => 'Bench Primary School', p_resource_id => $1, p_status => 'received')"
)
FOREIGN_KEYS: Final = (
    "ALTER TABLE webhook_delivery ADD CONSTRAINT fk_webhook_delivery_message_id_webhook_message "
    "FOREIGN KEY (message_id) REFERENCES webhook_message (id) NOT VALID",
    "ALTER TABLE webhook_delivery ADD CONSTRAINT "
    "fk_webhook_delivery_subscription_id_webhook_subscription "
    "FOREIGN KEY (subscription_id) REFERENCES webhook_subscription (id) NOT VALID",
)
NO_FOREIGN_KEYS: Final = (
    "ALTER TABLE webhook_delivery DROP CONSTRAINT IF EXISTS "
    "fk_webhook_delivery_message_id_webhook_message",
    "ALTER TABLE webhook_delivery DROP CONSTRAINT IF EXISTS "
    "fk_webhook_delivery_subscription_id_webhook_subscription",
)


def _migration(file_name: str) -> Any:
    path = ROOT / "alembic" / "versions" / file_name
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _frozen(function: Any) -> str:
    """A frozen PL/pgSQL copy as a statement (its colons were escaped for `text()`)."""
    definition = function.definition.replace("\\:", ":")
    return f"CREATE OR REPLACE FUNCTION {function.schema}.{function.signature} {definition}"


def _current(name: str) -> str:
    [statement] = [s for s in function_definitions() if f"FUNCTION public.{name}(" in s]
    return statement


def variants() -> dict[str, list[str]]:
    """Each variant's statements: its functions, foreign keys and indexes."""
    old = _migration("20261206_0013_webhooks.py")
    fan_out = _migration("20261206_0018_webhook_fan_out_by_workers.py")
    recipients = _current("neglect_webhook_recipients")
    enqueue_now = _current("neglect_enqueue_webhook")
    start = enqueue_now.index("    INSERT INTO webhook_message")
    nothing = (
        enqueue_now[: enqueue_now.index("BEGIN\n", start - 20)]
        + "BEGIN\n    RETURN v_id;\nEND\n$$;"
    )
    return {
        "0013": [
            _frozen(old.NEGLECT_WEBHOOK_RECIPIENTS),
            _frozen(old.NEGLECT_ENQUEUE_WEBHOOK),
            *NO_FOREIGN_KEYS,
            *FOREIGN_KEYS,
        ],
        "0016": [recipients, _frozen(fan_out.NEGLECT_ENQUEUE_WEBHOOK_BEFORE), *NO_FOREIGN_KEYS],
        "current": [recipients, enqueue_now, *NO_FOREIGN_KEYS],
        "nothing": [recipients, nothing, *NO_FOREIGN_KEYS],
    }


def backend_cpu_ns(pid: int) -> int:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


async def cpu_per_call(connections: list[asyncpg.Connection], pids: list[int], calls: int) -> float:
    """Microseconds of backend CPU per call, `calls` spread over the connections."""
    each = max(1, calls // len(connections))
    before = sum(backend_cpu_ns(pid) for pid in pids)

    async def call_many(connection: asyncpg.Connection) -> None:
        for _ in range(each):
            await connection.execute(CALL, uuid.uuid4())

    await asyncio.gather(*(call_many(c) for c in connections))
    return (sum(backend_cpu_ns(pid) for pid in pids) - before) / 1000 / (each * len(connections))


async def run(args: argparse.Namespace) -> int:
    defined = variants()
    names = ["nothing", *[n for n in args.variants.split(",") if n != "nothing"]]
    unknown = [n for n in names if n not in defined]
    if unknown:
        raise SystemExit(f"unknown variants: {', '.join(unknown)} (known: {', '.join(defined)})")
    server = await asyncio.to_thread(find_server_url)
    name = f"ns_bench_outbox_{int(time.time())}_{os.getpid()}"
    url = await create_database(server, name)
    key = base64.b64encode(os.urandom(32)).decode()
    settings = Settings(database_url=url, env="production", key_encryption_key=key)
    kek = KeyEncryptionKey(base64.b64decode(key))
    connections: list[asyncpg.Connection] = []
    try:
        await asyncio.to_thread(migrate_database, url)
        clients = await _register(settings, url)
        admin = await asyncpg.connect(url)
        await _subscribe(
            admin, kek, clients["front_door"], "https://fd.example/hook", "referral.received"
        )
        await _subscribe(
            admin, kek, clients["partner"], "https://hv.example/hook", "referral.decided"
        )
        connections = [await asyncpg.connect(url) for _ in range(args.connections)]
        for connection in connections:
            # The commit's WAL flush is a wait, not CPU; without it a round takes less time.
            await connection.execute("SET synchronous_commit = off")
        pids = [c.get_server_pid() for c in connections]
        figures: dict[str, list[float]] = {n: [] for n in names}
        shuffle = random.Random(args.seed)
        for index in range(args.rounds + 1):
            order = list(names)
            shuffle.shuffle(order)
            for variant in order:
                for statement in defined[variant]:
                    await admin.execute(statement)
                used = await cpu_per_call(connections, pids, args.calls)
                if index > 0:  # the first round warms plans and caches
                    figures[variant].append(used)
        await admin.close()
    finally:
        for connection in connections:
            await connection.close()
        await drop_database(server, name)
    baseline = statistics.median(figures["nothing"])
    print(
        f"outbox cost per referral.received event (1 matching subscription), PostgreSQL backend"
        f" CPU, {args.connections} connection(s), {args.calls} calls x {args.rounds} rounds,"
        f" load average {os.getloadavg()[0]:.1f}:"
    )
    print(f"  {'variant':22} {'us/event':>9} {'p25-p75 of rounds':>20}")
    for variant in names[1:]:
        values = sorted(v - baseline for v in figures[variant])
        quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
        print(
            f"  {variant:22} {statistics.median(values):9.1f}"
            f" {quartiles[0]:9.1f} - {quartiles[2]:7.1f}"
        )
    print(f"  (baseline 'nothing': {baseline:.1f} us per call, subtracted)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--variants",
        default="0013,0016,current",
    )
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--calls", type=int, default=1000, help="calls per variant per round")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--seed", type=int, default=12)
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
