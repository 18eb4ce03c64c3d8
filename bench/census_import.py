"""CIN census import benchmark: 100,000 generated children, imported with a progress bar.

    .venv/bin/python -m bench.census_import [--children N] [--workers N] [--database-url URL]
                                              [--keep]

Generates one census year's file (`tests/builders/census.py`: episodes, assessments, Section 47
enquiries, ICPCs, CP plans with category changes and repeats, CIN plans), creates a fresh database
on the server (`DATABASE_URL`, else postgres@127.0.0.1:5432), migrates it, imports the file into
it as `neglect-service import cin-census` does (worker processes, one per CPU by default), prints
children per second (the whole import: the scan, reading and checking every child, matching, the
rules and every write), imports the same file again (nothing may change; its rate is printed too:
every child, record and plan is found stored, as most are in the next year's file) and drops the
database.
Generating the file is not timed.

It also prints the CPU time the import took per child: the import's own processes (this one,
which mostly scans the file, and its workers) and, when the server runs on this machine, the
server's backends (read from /proc), and the rate that CPU allows on idle CPUs. On a shared machine
the wall-clock figure measures the machine's load as much as the import; CPU per child, and the
rate it allows on idle CPUs, do not.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import tempfile
import time
from pathlib import Path

import asyncpg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.engine import make_url

from service.auth.caller import Caller
from service.census import Workers, default_workers, import_census_file
from service.census.load import usable_cpus
from service.db import create_engine, create_session_factory
from service.migrations import migrate_database
from service.settings import Settings
from tests.builders.census import census_xml, simulate

TARGET_PER_SECOND = 5000
console = Console()
_TICKS = os.sysconf("SC_CLK_TCK")


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _database(server: str, name: str, drop_only: bool = False) -> None:
    connection = await asyncpg.connect(_plain(server))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


def _cpu_of(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


async def _watch_server(server: str, name: str, seen: dict[int, float]) -> None:
    """The CPU time of each server backend connected to the database, sampled until cancelled
    (the last sample of a backend counts: a worker's connection ends with its process)."""
    connection = await asyncpg.connect(_plain(server))
    try:
        while True:
            rows = await connection.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1", name
            )
            for row in rows:
                cpu = _cpu_of(row["pid"])
                if cpu is not None:
                    seen[row["pid"]] = cpu
            await asyncio.sleep(0.2)
    finally:
        await connection.close()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def _import(
    server: str, url: str, name: str, path: Path, children: int, processes: int
) -> dict[str, float]:
    settings = Settings(database_url=url, env="development")
    engine = create_engine(settings, url)
    workers = Workers(processes, settings, url) if processes else None
    importer = Caller("bench", "local_authority", "census import benchmark", frozenset({"admin"}))
    seen: dict[int, float] = {}
    try:
        factory = create_session_factory(engine)
        progress = Progress(
            TextColumn("children"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
        )
        task = progress.add_task("import", total=children)
        watcher = asyncio.create_task(_watch_server(server, name, seen))
        cpu, workers_cpu = time.process_time(), _children_cpu()
        with progress:
            report = await import_census_file(
                factory,
                path,
                importer,
                workers=workers,
                on_start=lambda total: progress.update(task, total=total),
                on_progress=lambda done: progress.update(task, completed=done),
            )
        cpu, workers_cpu = time.process_time() - cpu, _children_cpu() - workers_cpu
        watcher.cancel()
        again = await import_census_file(factory, path, importer, workers=workers)
        assert again.children_changed == 0, "a second import of the file changed something"
        assert report.problems == [], report.problems[:5]
        return {
            "seconds": report.seconds,
            "again_seconds": again.seconds,
            "children": report.children_in_file,
            "cpu": cpu,
            "workers_cpu": workers_cpu,
            "server_cpu": sum(seen.values()),
            "processes": report.worker_processes,
        }
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--children", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--keep", action="store_true", help="Keep the database")
    options = parser.parse_args()
    server = options.database_url or "postgresql://postgres@127.0.0.1:5432/postgres"
    name = f"ns_bench_census_{os.getpid()}"
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    console.print(f"generating a census file of {options.children:,} children...")
    population = simulate(options.children, seed=2025, id_prefix="B")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cin_2024.xml"
        path.write_bytes(census_xml(population, 2024))
        size = path.stat().st_size
        asyncio.run(_database(server, name))
        try:
            migrate_database(url)
            load = os.getloadavg()[0]
            run = asyncio.run(_import(server, url, name, path, options.children, options.workers))
        finally:
            if not options.keep:
                asyncio.run(_database(server, name, drop_only=True))
    in_file = run["children"]
    rate = in_file / run["seconds"]
    per_child = {key: run[key] / in_file * 1e6 for key in ("cpu", "workers_cpu", "server_cpu")}
    app = per_child["cpu"] + per_child["workers_cpu"]
    total = app + per_child["server_cpu"]
    cpus = usable_cpus()
    # This process mostly scans the file before the workers start: that part runs alone.
    serial = per_child["cpu"] + (per_child["workers_cpu"] + per_child["server_cpu"]) / cpus
    console.print(
        f"imported {in_file:,} children ({size / 1e6:.0f} MB) in {run['seconds']:.1f} s with "
        f"{run['processes']:.0f} worker processes: [bold]{rate:,.0f} children/s[/bold] "
        f"(target {TARGET_PER_SECOND:,}); load average {load:.1f} on "
        f"{cpus} CPUs before the run; a second import changed nothing, at "
        f"{in_file / run['again_seconds']:,.0f} children/s (every child found stored)"
    )
    console.print(
        f"CPU per child: [bold]{app:.0f} µs the import's processes[/bold] ({per_child['cpu']:.0f} "
        f"this one, mostly the scan, and {per_child['workers_cpu']:.0f} its workers), "
        f"[bold]{per_child['server_cpu']:.0f} µs PostgreSQL[/bold] (0 when the server is "
        f"elsewhere): {total:.0f} µs in all"
    )
    console.print(
        f"on {cpus} idle CPUs that CPU allows about {1e6 / serial:,.0f} children/s (the scan "
        f"alone on one, then the rest on all), at most {cpus / total * 1e6:,.0f} were all of "
        "it spread over them"
    )


if __name__ == "__main__":
    main()
