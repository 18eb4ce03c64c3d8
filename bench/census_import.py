"""CIN census import benchmark: 100,000 generated children, imported with a progress bar.

    .venv/bin/python -m bench.census_import [--children N] [--database-url URL] [--keep]

Generates one census year's file (`tests/builders/census.py`: episodes, assessments, Section 47
enquiries, ICPCs, CP plans with category changes and repeats, CIN plans), creates a fresh database
on the server (`DATABASE_URL`, else postgres@127.0.0.1:5432), migrates it, imports the file into
it as `neglect-service import cin-census` does, prints children per second (the whole import: the
scan, reading and checking every child, matching, the rules and every write), imports the same
file again (nothing changes) and drops the database. Generating the file is not timed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import asyncpg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.engine import make_url

from service.auth.caller import Caller
from service.census import import_census_file
from service.db import create_engine, create_session_factory
from service.migrations import migrate_database
from service.settings import Settings
from tests.builders.census import census_xml, simulate

TARGET_PER_SECOND = 5000
console = Console()


async def _database(server: str, name: str, drop_only: bool = False) -> None:
    admin = make_url(server).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(admin)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def _import(url: str, path: Path, children: int) -> tuple[float, float, int]:
    settings = Settings(database_url=url, env="development")
    engine = create_engine(settings, url)
    importer = Caller("bench", "local_authority", "census import benchmark", frozenset({"admin"}))
    try:
        factory = create_session_factory(engine)
        progress = Progress(
            TextColumn("children"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
        )
        task = progress.add_task("import", total=children)
        cpu = time.process_time()
        with progress:
            report = await import_census_file(
                factory,
                path,
                importer,
                on_start=lambda total: progress.update(task, total=total),
                on_progress=lambda done: progress.update(task, completed=done),
            )
        cpu = time.process_time() - cpu
        again = await import_census_file(factory, path, importer)
        assert again.children_changed == 0
        return report.seconds, cpu, report.children_in_file
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=100_000)
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
            seconds, cpu, in_file = asyncio.run(_import(url, path, options.children))
        finally:
            if not options.keep:
                asyncio.run(_database(server, name, drop_only=True))
    rate = in_file / seconds
    console.print(
        f"imported {in_file:,} children ({size / 1e6:.0f} MB) in {seconds:.1f} s: "
        f"[bold]{rate:,.0f} children/s[/bold] (target {TARGET_PER_SECOND:,}); "
        f"this process used {cpu:.1f} s of CPU; a second import of the file changed nothing"
    )


if __name__ == "__main__":
    main()
