"""Storing a census file: the import's entry point, batches, bulk writes and provenance.

A file is scanned first (`scan_census`): one not well-formed, with a DTD, or without a supported
header stores nothing. Then its children are read, checked and stored in batches, each batch one
transaction: children are matched with the database's `neglect_resolve_children` (the API's
matching), their rows locked as the case-events API locks them, what is stored about them read,
the changes worked out in memory (`service.census.plan`), and everything written with binary COPY
and a few set-based statements. A batch, not the whole file, is a transaction because matching
holds an advisory lock per identifier until commit, and a lock table sized for a server's
connections cannot hold a hundred thousand children's.

With `Workers`, the file is cut at its `Child` start tags (`child_chunks`) and worker processes
each read, check and store runs of children on their own connection, so that reading, planning
and the database's work spread over the machine's CPUs; without them, or for a file that cannot
be cut safely, a background thread reads the file while this process stores two batches at a
time. The records stored are the same either way.

A child that fails a check of the file, or whose records would break a case-event rule against
what is stored, is left out whole and reported with the item at fault; the rest of the file is
imported. Importing the file again after correcting it adds the children left out. Use
`dry_run` to check a file without storing anything. Each run is one audit event on the file's
`census_import` row, not one per child (see README "History and portability").
"""

from __future__ import annotations

import asyncio
import hashlib
import mmap
import multiprocessing
import os
import pickle
import sys
import threading
import time
import types
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Final

from sqlalchemy import text

from service.audit import record_access
from service.auth.caller import Caller
from service.census.model import CensusChild, CensusHeader, Problem
from service.census.parse import (
    CensusFile,
    CensusScan,
    child_chunks,
    read_census,
    scan_census,
)
from service.census.store import (
    BatchOutcome,
    Chunk,
    ConnectOptions,
    Tally,
    WorkerSettings,
    ready,
    start_worker,
    store_children,
    with_retries,
    work_on_chunk,
)
from service.db import SessionFactory, driver_options, transaction
from service.handoff import Handoff
from service.settings import Settings

CHILDREN_PER_BATCH: Final = 1000
BATCHES_IN_FLIGHT: Final = 2


class CensusFileRefused(Exception):
    """The file itself is unusable (not XML, a DTD, no supported header): nothing was stored."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.item}: {p.message}" for p in problems))
        self.problems = problems


@dataclass
class ImportReport:
    """What an import did. `children_changed` counts children with anything new or updated;
    `problems` names each child left out and why."""

    census_import_id: uuid.UUID | None
    sha256: str
    file_name: str | None
    census_year: str
    la_code: str
    reference_date: date
    dry_run: bool
    already_imported: bool
    children_in_file: int = 0
    children_imported: int = 0
    children_changed: int = 0
    children_skipped: int = 0
    referrals_created: int = 0
    referrals_updated: int = 0
    events_created: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0
    worker_processes: int = 0
    """How many worker processes read and stored the file (0: the importing process did)."""

    @property
    def children_per_second(self) -> float:
        return self.children_in_file / self.seconds if self.seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        """The report as plain JSON values (CLI `--json` and the API answer)."""
        return {
            "census_import_id": str(self.census_import_id) if self.census_import_id else None,
            "sha256": self.sha256,
            "file_name": self.file_name,
            "census_year": self.census_year,
            "la_code": self.la_code,
            "reference_date": self.reference_date.isoformat(),
            "dry_run": self.dry_run,
            "already_imported": self.already_imported,
            "children_in_file": self.children_in_file,
            "children_imported": self.children_imported,
            "children_changed": self.children_changed,
            "children_skipped": self.children_skipped,
            "referrals_created": self.referrals_created,
            "referrals_updated": self.referrals_updated,
            "events_created": dict(sorted(self.events_created.items())),
            "problems": [
                {"child": p.child, "item": p.item, "message": p.message} for p in self.problems
            ],
            "seconds": round(self.seconds, 3),
        }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Workers:
    """Import in `processes` worker processes, each reading, checking and storing runs of the
    file's children on its own connection to `url` (`service.db.driver_options`: the settings'
    timeouts and connection options, made in the worker)."""

    processes: int
    settings: Settings
    url: str


def usable_cpus() -> int:
    """The CPUs this process may run on (all of the machine's where the system cannot say)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_workers() -> int:
    """One worker process per CPU the process may use, at most 8."""
    return max(1, min(8, usable_cpus()))


async def import_census_file(
    factory: SessionFactory,
    path: Path,
    importer: Caller,
    *,
    file_name: str | None = None,
    dry_run: bool = False,
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    children_per_batch: int = CHILDREN_PER_BATCH,
    workers: Workers | None = None,
) -> ImportReport:
    """Import the census file at `path` (see the module docstring); `importer` is audited.

    Raises `CensusFileRefused` when the file itself is unusable. `on_start` gets the number of
    children in the file, `on_progress` the number read so far. With `workers`, a file of more
    than one batch is read and stored by worker processes (see `_import_in_workers`).
    """
    started = time.perf_counter()
    pool = _start_workers(workers) if workers is not None and not dry_run else None
    try:
        # Hashed in a thread while the file is scanned (hashlib lets go of the GIL).
        hashing = asyncio.get_running_loop().run_in_executor(None, file_sha256, path)
        scan = scan_census(path)
        sha256 = await hashing
        header = scan.header
        if header is None:
            raise CensusFileRefused(scan.problems)
        if on_start is not None:
            on_start(scan.children)
        report = ImportReport(
            census_import_id=None,
            sha256=sha256,
            file_name=file_name or path.name,
            census_year=header.census_year,
            la_code=header.la_code,
            reference_date=header.reference_date,
            dry_run=dry_run,
            already_imported=False,
            children_in_file=scan.children,
        )
        if not dry_run:
            report.census_import_id, report.already_imported = await _record_file(
                factory, report, importer
            )
        done = False
        if pool is not None and report.census_import_id is not None:
            done = await _import_in_workers(
                pool, path, scan, report.census_import_id, report, children_per_batch, on_progress
            )
            if done and workers is not None:
                report.worker_processes = workers.processes
        if not done:
            await _import_here(factory, path, header, report, children_per_batch, on_progress)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    report.children_skipped = len({p.child for p in report.problems if p.child is not None})
    if report.census_import_id is not None:
        await _record_completion(factory, report)
    if on_progress is not None:
        on_progress(scan.children)
    report.seconds = time.perf_counter() - started
    return report


async def _import_here(
    factory: SessionFactory,
    path: Path,
    header: CensusHeader,
    report: ImportReport,
    children_per_batch: int,
    on_progress: Callable[[int], None] | None,
) -> None:
    """Read the file in a background thread while this process stores its batches."""
    reader = _BackgroundReader(path, children_per_batch)
    loop = asyncio.get_running_loop()
    in_flight: set[asyncio.Task[None]] = set()
    stored: list[Problem] = []
    read = 0
    try:
        while (batch := await loop.run_in_executor(None, reader.next_batch)) is not None:
            read += len(batch)
            if report.census_import_id is not None:
                if len(in_flight) >= BATCHES_IN_FLIGHT:
                    done, in_flight = await asyncio.wait(
                        in_flight, return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in done:
                        task.result()
                in_flight.add(
                    asyncio.create_task(
                        _store_batch(
                            factory, header, report.census_import_id, batch, report, stored
                        )
                    )
                )
            if on_progress is not None:
                on_progress(read + reader.invalid_children)
        for task in list(in_flight):
            await task
    finally:
        reader.stop()
        for task in in_flight:
            task.cancel()
    report.problems = (reader.result.problems if reader.result else []) + stored
    if report.census_import_id is None:
        report.children_imported = read
    else:
        report.children_imported = read - len({p.child for p in stored})


async def _import_in_workers(
    pool: ProcessPoolExecutor,
    path: Path,
    scan: CensusScan,
    import_id: uuid.UUID,
    report: ImportReport,
    children_per_batch: int,
    on_progress: Callable[[int], None] | None,
) -> bool:
    """Hand runs of the file's children to the worker processes (`work_on_chunk`); False, and
    nothing stored, when the file cannot be cut into runs safely (`child_chunks`)."""
    with path.open("rb") as stream, mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as data:
        chunks = child_chunks(data, scan, children_per_batch)
    if len(chunks) < 2:
        return False
    header = scan.header
    assert header is not None  # noqa: S101 - only a scan that found a header is imported
    loop = asyncio.get_running_loop()
    futures = [
        asyncio.wrap_future(
            pool.submit(
                work_on_chunk,
                Chunk(path, start, end, first, header, import_id, scan.namespaces, scan.encoding),
                {
                    la_child_id: position
                    for la_child_id, position in scan.first_positions.items()
                    if position < first + children_per_batch
                },
            ),
            loop=loop,
        )
        for first, start, end in chunks
    ]
    read = 0
    try:
        for future in asyncio.as_completed(futures):
            outcome = await future
            read += outcome.children_read
            if on_progress is not None:
                on_progress(read)
    except BaseException:
        for future in futures:
            future.cancel()
        raise
    outcomes = [future.result() for future in futures]
    for outcome in outcomes:
        report.problems.extend(outcome.problems)
        report.children_imported += outcome.children_read - len({p.child for p in outcome.problems})
        _add_tally(report, outcome.tally)
    return True


async def _record_completion(factory: SessionFactory, report: ImportReport) -> None:
    """Note the finished run on the file's row. The batches commit without waiting for their WAL
    to reach disk (`store_children`); this commit waits, and so makes every batch's durable
    before the report is given."""
    async with transaction(factory) as session:
        await session.execute(
            text(
                "UPDATE census_import SET completed_at = now(), children_imported = :children "
                "WHERE id = :id"
            ),
            {"id": report.census_import_id, "children": report.children_imported},
        )


async def _record_file(
    factory: SessionFactory, report: ImportReport, importer: Caller
) -> tuple[uuid.UUID, bool]:
    async with transaction(factory) as session:
        created = await session.scalar(
            text(
                "INSERT INTO census_import (id, sha256, file_name, census_year, la_code, "
                "reference_date, children, imported_by) VALUES (:id, :sha256, :file_name, "
                ":census_year, :la_code, :reference_date, :children, :imported_by) "
                "ON CONFLICT ON CONSTRAINT uq_census_import_sha256 DO NOTHING RETURNING id"
            ),
            {
                "id": uuid.uuid4(),
                "sha256": report.sha256,
                "file_name": (report.file_name or "")[:255] or None,
                "census_year": report.census_year,
                "la_code": report.la_code,
                "reference_date": report.reference_date,
                "children": report.children_in_file,
                "imported_by": importer.client_id,
            },
        )
        if isinstance(created, uuid.UUID):
            await record_access(session, importer, "create", "census_import", created)
            return created, False
        existing = await session.scalar(
            text("SELECT id FROM census_import WHERE sha256 = :sha256"), {"sha256": report.sha256}
        )
        if not isinstance(existing, uuid.UUID):
            raise TypeError("census_import row vanished")
        # Imported again: it may add the children a first run left out.
        await record_access(session, importer, "update", "census_import", existing)
        return existing, True


class _BackgroundReader:
    """Reads and checks the file in a thread, handing over batches of valid children."""

    def __init__(self, path: Path, size: int) -> None:
        self._size = size
        self._current: list[CensusChild] = []
        self._handoff: Handoff[list[CensusChild]] = Handoff(maxsize=4)
        self.result: CensusFile | None = None
        self._thread = threading.Thread(target=self._read, args=(path,), daemon=True)
        self._thread.start()

    @property
    def invalid_children(self) -> int:
        result = self.result
        return 0 if result is None else len({p.child for p in result.problems})

    def _on_child(self, child: CensusChild) -> None:
        if self._handoff.stopped.is_set():
            raise _Stopped
        self._current.append(child)
        if len(self._current) >= self._size:
            self._handoff.put(self._current)
            self._current = []

    def _read(self, path: Path) -> None:
        try:
            self.result = read_census(path, on_child=self._on_child)
            if self._current:
                self._handoff.put(self._current)
        except _Stopped:
            return
        except BaseException as error:  # handed to the consumer, which raises it
            self._handoff.put(error)
            return
        self._handoff.put(None)

    def next_batch(self) -> list[CensusChild] | None:
        return self._handoff.get()

    def stop(self) -> None:
        self._handoff.stopped.set()
        self._thread.join()


class _Stopped(Exception):
    pass


async def _store_batch(
    factory: SessionFactory,
    header: CensusHeader,
    import_id: uuid.UUID,
    batch: list[CensusChild],
    report: ImportReport,
    problems: list[Problem],
) -> None:
    async def attempt() -> BatchOutcome:
        async with transaction(factory) as session:
            # Begun through the session, so the statements on its raw connection are in it.
            await session.execute(text("SELECT 1"))
            return await store_children(await _raw(session), header, import_id, batch)

    outcome = await with_retries(attempt)
    problems.extend(outcome.problems)
    _add_tally(report, outcome.tally)


async def _raw(session: Any) -> Any:
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    return raw.driver_connection


def _start_workers(workers: Workers) -> ProcessPoolExecutor:
    """The worker processes, started (connecting) while the file is scanned. Spawned, not forked:
    the importing process may hold open connections and threads a fork would copy."""
    pool = ProcessPoolExecutor(
        max_workers=workers.processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=start_worker,
        initargs=(_connect_options(workers),),
    )
    # Each submission while no worker is idle starts one more process, up to `processes`: all
    # of them here, while the main module is hidden.
    with _main_module_hidden():
        for _ in range(workers.processes):
            pool.submit(ready)
    return pool


@contextmanager
def _main_module_hidden() -> Iterator[None]:
    """A spawned process first imports its parent's main module (the CLI's script, which imports
    every command, or a benchmark), 2 seconds of CPU here, though a worker needs none of it
    (`service.census.store` imports what it needs): while the workers start, the main module is
    an empty one, which a spawned process does not import."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _connect_options(workers: Workers) -> ConnectOptions:
    """The workers' connection options, made here when they can be sent to another process (then
    a worker need not import the database layer to make them), else what makes them there."""
    options = driver_options(workers.settings, workers.url)
    try:
        pickle.dumps(options)
    except (pickle.PicklingError, TypeError, AttributeError):
        return WorkerSettings(workers.settings, workers.url)
    return options


def _add_tally(report: ImportReport, tally: Tally) -> None:
    report.children_changed += tally.changed
    report.referrals_created += tally.referrals_created
    report.referrals_updated += tally.referrals_updated
    for event_type, count in tally.events_created.items():
        report.events_created[event_type] = report.events_created.get(event_type, 0) + count
