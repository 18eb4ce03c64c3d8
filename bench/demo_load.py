"""Demo data load benchmark: `load_demo_data` (the code behind `neglect-service demo-data`) into a
fresh database, in referrals a second and in CPU per referral.

    make bench-demo                                   # about 1,000,000 referrals
    make bench-demo BENCH_ARGS='--referrals 100000'
    make bench-demo BENCH_ARGS='--ceiling 200000'     # and the plain COPY ceiling (see below)

Steps: pick the PostgreSQL server (`DATABASE_URL`, else 127.0.0.1:5432, else the embedded one),
create and migrate a fresh database, size the partnership from a pilot run of the generator (as
the indicator benchmark does), then load it in one transaction with a progress bar, as the command
does. Printed: the wall time and referrals a second, and for each phase (generation and COPY; then
the indexes, the re-referral derivations and the foreign keys) its wall time, the loading
process's CPU (every thread: generation, encoding) and the PostgreSQL backend's CPU, each per
referral. The backend's CPU is read from /proc, so only when the server runs on this machine.
CPU per referral is the figure to compare on a machine shared with other work; wall time is not.

`--ceiling N`: what PostgreSQL alone costs. Generate the rows of about N referrals in memory first
(Python CPU per referral printed), then COPY them, as `load_demo_data` does but with every index
and foreign key of the migrations in place and nothing derived after, into another fresh database:
the rate a load cannot beat on this machine whatever Python does, since the rows and their
indexes are the same. Results go to `bench/results/demo-load-*.txt/.json` (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import asyncpg
from rich.console import Console
from sqlalchemy import text

from bench.harness import find_server_url, plain_url, quote_identifier
from bench.indicators_bench import children_for, demo_toolkit, loading_progress
from service.db import create_engine, create_session_factory, transaction
from service.demo.generator import (
    LOAD_ORDER,
    TABLE_COLUMNS,
    DemoOptions,
    generate_rows,
    load_demo_data,
)
from service.migrations import migrate_database
from service.settings import Settings

RESULTS: Final = Path(__file__).resolve().parent / "results"
STATEMENT_TIMEOUT_MS: Final = 600_000

err = Console(stderr=True)


def _own_cpu() -> float:
    """CPU seconds of this process, every thread."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _backend_cpu(pid: int) -> float | None:
    """CPU seconds of the server process `pid`, when it runs on this machine."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Mark:
    """Wall clock, this process's CPU and the backend's CPU at one moment."""

    wall: float
    own: float
    backend: float | None

    @classmethod
    def now(cls, backend_pid: int) -> Mark:
        return cls(time.perf_counter(), _own_cpu(), _backend_cpu(backend_pid))


@dataclass
class Phase:
    name: str
    wall_s: float
    loader_cpu_us: float
    """This process's CPU per referral."""
    postgres_cpu_us: float | None

    @classmethod
    def between(cls, name: str, first: Mark, last: Mark, referrals: int) -> Phase:
        backend = (
            None
            if first.backend is None or last.backend is None
            else round((last.backend - first.backend) / referrals * 1e6, 1)
        )
        return cls(
            name=name,
            wall_s=round(last.wall - first.wall, 1),
            loader_cpu_us=round((last.own - first.own) / referrals * 1e6, 1),
            postgres_cpu_us=backend,
        )


@dataclass
class Measured:
    referrals: int
    rows: dict[str, int]
    phases: list[Phase] = field(default_factory=list)


async def _admin(server: str, statement: str) -> None:
    connection = await asyncpg.connect(server)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def _load(url: str, options: DemoOptions) -> Measured:
    """Load as `neglect-service demo-data` does, marking the end of the COPY (`on_indexing`)."""
    engine = create_engine(Settings(database_url=url, db_statement_timeout_ms=STATEMENT_TIMEOUT_MS))
    progress, task = loading_progress(options.children)
    marks: list[Mark] = []
    try:
        with progress:
            async with transaction(create_session_factory(engine)) as session:
                backend_pid = int(await session.scalar(text("SELECT pg_backend_pid()")) or 0)
                marks.append(Mark.now(backend_pid))
                summary = await load_demo_data(
                    session,
                    options,
                    on_progress=lambda done: progress.update(task, completed=done),
                    on_indexing=lambda: marks.append(Mark.now(backend_pid)),
                )
            marks.append(Mark.now(backend_pid))
    finally:
        await engine.dispose()
    referrals = summary.rows["referral"]
    measured = Measured(referrals=referrals, rows=summary.rows)
    if len(marks) == 3:
        measured.phases = [
            Phase.between("generation and COPY", marks[0], marks[1], referrals),
            Phase.between(
                "indexes, derivations, foreign keys, commit", marks[1], marks[2], referrals
            ),
        ]
    measured.phases.append(Phase.between("whole load", marks[0], marks[-1], referrals))
    return measured


async def _plain_copy(url: str, rows: dict[str, list[Any]], referrals: int) -> Measured:
    """COPY pre-generated rows into tables with every index and foreign key, one transaction."""
    connection = await asyncpg.connect(url)
    try:
        backend_pid = await connection.fetchval("SELECT pg_backend_pid()")
        first = Mark.now(backend_pid)
        async with connection.transaction():
            for table in LOAD_ORDER:
                if rows[table]:
                    await connection.copy_records_to_table(
                        table, records=rows[table], columns=list(TABLE_COLUMNS[table])
                    )
        last = Mark.now(backend_pid)
    finally:
        await connection.close()
    measured = Measured(referrals=referrals, rows={table: len(rows[table]) for table in rows})
    measured.phases.append(
        Phase.between("plain COPY, every index in place", first, last, referrals)
    )
    return measured


def _fresh_database(server: str, name: str) -> str:
    err.print(f"creating database {name}")
    asyncio.run(_admin(server, f"CREATE DATABASE {quote_identifier(name)}"))
    url = plain_url(server, name)
    migrate_database(url)
    return url


def _drop(server: str, name: str) -> None:
    asyncio.run(_admin(server, f"DROP DATABASE IF EXISTS {quote_identifier(name)} WITH (FORCE)"))


def _lines(title: str, measured: Measured) -> list[str]:
    lines = [title, f"  {'phase':44} {'wall s':>8} {'loader CPU':>12} {'PostgreSQL CPU':>15}"]
    for phase in measured.phases:
        backend = "-" if phase.postgres_cpu_us is None else f"{phase.postgres_cpu_us:,.0f} us/ref"
        lines.append(
            f"  {phase.name:44} {phase.wall_s:8.1f} {phase.loader_cpu_us:9,.0f} us/ref"
            f" {backend:>15}"
        )
    return lines


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--referrals", type=int, default=1_000_000, help="target referrals")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--ceiling",
        type=int,
        default=0,
        metavar="N",
        help="also COPY the pre-generated rows of about N referrals into indexed tables",
    )
    parser.add_argument("--keep", action="store_true", help="keep the loaded database")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report = [
        f"demo-data load benchmark {stamp}: cores {os.cpu_count()}, "
        f"load average before {os.getloadavg()[0]:.2f}"
    ]
    results: dict[str, Any] = {"stamp": stamp, "seed": args.seed}
    server = find_server_url()
    name = f"ns_demo_load_{stamp.lower()}_{os.getpid()}"
    url = _fresh_database(server, name)
    try:
        children, per_child = children_for(args.referrals, args.seed)
        err.print(f"{children:,} children for about {args.referrals:,} referrals ({per_child:.3f})")
        measured = asyncio.run(_load(url, DemoOptions(children=children, seed=args.seed)))
    finally:
        if args.keep:
            err.print(f"kept the database: {url}")
        else:
            _drop(server, name)
    whole = measured.phases[-1]
    rows = measured.rows
    report += _lines(
        f"loaded {measured.referrals:,} referrals ({rows['child']:,} children, "
        f"{rows['case_event']:,} case events, {rows['assessment']:,} assessments) in "
        f"{whole.wall_s} s: {measured.referrals / whole.wall_s:,.0f} referrals a second",
        measured,
    )
    results["load"] = measured
    if args.ceiling:
        children, _ = children_for(args.ceiling, args.seed)
        started = _own_cpu()
        rows_in_memory, tally = generate_rows(
            DemoOptions(children=children, seed=args.seed), demo_toolkit()
        )
        referrals = tally.rows["referral"]
        generation_us = (_own_cpu() - started) / referrals * 1e6
        ceiling_name = f"{name}_ceiling"
        ceiling_url = _fresh_database(server, ceiling_name)
        try:
            ceiling = asyncio.run(_plain_copy(ceiling_url, rows_in_memory, referrals))
        finally:
            _drop(server, ceiling_name)
        copied = ceiling.phases[-1]
        report += [
            f"ceiling: generating the rows of {referrals:,} referrals in memory took "
            f"{generation_us:,.0f} us of Python CPU a referral",
            *_lines(
                f"ceiling: plain COPY of those rows into the migrated tables in {copied.wall_s} s: "
                f"{referrals / copied.wall_s:,.0f} referrals a second",
                ceiling,
            ),
        ]
        results["ceiling"] = {"generation_cpu_us": round(generation_us, 1), "copy": ceiling}
    text_report = "\n".join(report)
    print(text_report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"demo-load-{stamp}.txt").write_text(text_report + "\n", encoding="utf-8")
    (RESULTS / f"demo-load-{stamp}.json").write_text(
        json.dumps(results, indent=2, default=lambda value: value.__dict__), encoding="utf-8"
    )
    err.print(f"saved bench/results/demo-load-{stamp}.txt and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
