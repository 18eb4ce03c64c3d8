"""What the webhook outbox costs PostgreSQL per event, and what each of migration 0016's changes
saves: `.venv/bin/python -m bench.outbox_costs`.

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
- `current`: as it is now: the same functions (they are 0013's), without the foreign keys
  (migration 0016), so `0013` minus `current` is what the foreign-key checks cost;
- tried and not kept, as they saved nothing measurable: `0013-one-statement` (the event and its
  deliveries in one INSERT, a data-modifying WITH), `0013-sql-recipients` and
  `current-sql-recipients` (the recipients in LANGUAGE sql, which the planner inlines);
- `no-recipient`: the current function with no subscription matching: the event row alone, what
  the writer would still pay if the worker fanned events out to subscriptions;
- `nothing`: the baseline.

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
import re
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
_RECIPIENTS_CALL: Final = (
    "neglect_webhook_recipients(p_event_type => p_event_type, p_agency_name => p_agency_name)"
)


_SQL_RECIPIENTS: Final = """CREATE OR REPLACE FUNCTION public.neglect_webhook_recipients(
    p_event_type text, p_agency_name text
) RETURNS SETOF uuid LANGUAGE sql STABLE AS $$
-- The active subscriptions an event goes to, by SPEC 2.7. A referral received goes to the Front
-- Door (the clients allowed to read every referral); every other event only to the agency it
-- concerns (`p_agency_name`, the referring or assessing agency), as the records themselves are
-- scoped (SPEC 2.6). The client must be enabled and allowed the event's scope.
-- LANGUAGE sql so that the planner inlines it into the outbox's INSERT (a PL/pgSQL set-returning
-- call cost the referral create about 20 microseconds more). No colon may appear in this body,
-- comments included, as alembic_utils escapes the colons of a SQL function's frozen copy twice.
    SELECT s.id
    FROM webhook_subscription AS s
    JOIN api_client AS c ON c.client_id = s.client_id
    WHERE s.status = 'active'
      AND p_event_type = ANY (s.event_types)
      AND c.enabled
      AND neglect_webhook_scope(p_event_type => p_event_type) = ANY (c.allowed_scopes)
      AND (p_event_type = 'referral.received' OR c.agency_name = p_agency_name)
$$;
"""
"""`neglect_webhook_recipients` in LANGUAGE sql, which the planner inlines into the delivery INSERT:
measured, and not kept, as without the foreign keys it saved 3 to 5 us per event (within noise),
while no colon may appear in a SQL function's body (alembic_utils escapes them twice in its
frozen copy)."""

_ONE_STATEMENT_TAIL: Final = """    WITH message AS (
        INSERT INTO webhook_message (id, event_type, agency_name, occurred_at, body)
        VALUES (
            v_id, p_event_type, p_agency_name, v_at,
            jsonb_build_object(
                'type', p_event_type,
                'timestamp', to_char(v_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                'data', jsonb_build_object(
                    v_kind || '_id', p_resource_id,
                    'status', p_status,
                    'links', jsonb_build_object('self', '/v1/' || v_kind || 's/' || p_resource_id)
                )
            )::text
        )
        RETURNING id
    )
    INSERT INTO webhook_delivery (message_id, subscription_id, next_attempt_at)
    SELECT message.id, recipient, v_at
    FROM message,
        neglect_webhook_recipients(p_event_type => p_event_type, p_agency_name => p_agency_name)
            AS recipient;
    RETURN v_id;
END
$$;
"""
"""The event and its deliveries in one INSERT (a data-modifying WITH): measured, and not kept,
as it saved nothing measurable."""


def _migration_0013() -> Any:
    path = ROOT / "alembic" / "versions" / "20261206_0013_webhooks.py"
    spec = importlib.util.spec_from_file_location("migration_0013", path)
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
    """Each variant's statements: its two functions and its foreign keys."""
    old = _migration_0013()
    recipients_0013 = _frozen(old.NEGLECT_WEBHOOK_RECIPIENTS)
    enqueue_0013 = _frozen(old.NEGLECT_ENQUEUE_WEBHOOK)
    recipients_now = _current("neglect_webhook_recipients")
    recipients_sql = _SQL_RECIPIENTS
    enqueue_now = _current("neglect_enqueue_webhook")
    start = enqueue_now.index("    INSERT INTO webhook_message")
    one_statement = enqueue_now[:start] + _ONE_STATEMENT_TAIL
    call = re.search(re.escape(_RECIPIENTS_CALL) + r"\s+AS recipient", enqueue_now)
    assert call is not None
    nobody = enqueue_now.replace(call[0], "(SELECT NULL::uuid WHERE false) AS nobody (recipient)")
    nothing = (
        enqueue_now[: enqueue_now.index("BEGIN\n", start - 20)]
        + "BEGIN\n    RETURN v_id;\nEND\n$$;"
    )
    return {
        "0013": [recipients_0013, enqueue_0013, *NO_FOREIGN_KEYS, *FOREIGN_KEYS],
        "0013-sql-recipients": [recipients_sql, enqueue_0013, *NO_FOREIGN_KEYS, *FOREIGN_KEYS],
        "0013-one-statement": [recipients_0013, one_statement, *NO_FOREIGN_KEYS, *FOREIGN_KEYS],
        "current": [recipients_now, enqueue_now, *NO_FOREIGN_KEYS],
        "current-sql-recipients": [recipients_sql, enqueue_now, *NO_FOREIGN_KEYS],
        "no-recipient": [recipients_now, nobody, *NO_FOREIGN_KEYS],
        "nothing": [recipients_now, nothing, *NO_FOREIGN_KEYS],
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
        default="0013,0013-sql-recipients,0013-one-statement,current,current-sql-recipients,"
        "no-recipient",
    )
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--calls", type=int, default=1000, help="calls per variant per round")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--seed", type=int, default=12)
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
