"""Storing a census file: the import's entry point, batches, bulk writes and provenance.

A file is scanned first (`scan_census`): one not well-formed, with a DTD, or without a supported
header stores nothing. Then its children are read, checked and stored in batches, each batch one
transaction: children are matched with the database's `neglect_resolve_child` (the API's
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
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final

import asyncpg
from sqlalchemy import text

from service.audit import record_access
from service.auth.caller import Caller
from service.census.model import CensusChild, CensusHeader, Problem
from service.census.parse import (
    CensusFile,
    CensusScan,
    child_chunks,
    chunk_document,
    read_census,
    read_chunk,
    scan_census,
)
from service.census.plan import (
    CENSUS_CLIENT_ID,
    ChildContext,
    ChildState,
    StoredEvent,
    StoredPlan,
    StoredReferral,
    Writes,
    plan_child,
    planned_events,
    referral_reference,
)
from service.db import SessionFactory, driver_options, transaction
from service.handoff import Handoff
from service.referrals import count_rereferrals_of
from service.settings import Settings

CHILDREN_PER_BATCH: Final = 1000
BATCHES_IN_FLIGHT: Final = 2
_RETRIES: Final = 3

_REFERRAL_COLUMNS: Final = (
    "id",
    "client_id",
    "agency_type",
    "agency_name",
    "external_reference",
    "child_id",
    "status",
    "received_at",
    "referral_source",
    "rereferral",
    "rereferral_count",
    "agency_rereferral_count",
    "previous_received_at",
    "body",
    "decision_outcome",
    "census_import_id",
)
_EVENT_COLUMNS: Final = (
    "id",
    "client_id",
    "agency_type",
    "agency_name",
    "event_id",
    "payload_sha256",
    "child_id",
    "event_type",
    "occurred_on",
    "details",
    "census_import_id",
)
_ENQUIRY_COLUMNS: Final = (
    "id",
    "child_id",
    "enquiry_ref",
    "started_on",
    "strategy_discussion_on",
    "case_event_id",
)
_ICPC_COLUMNS: Final = (
    "id",
    "child_id",
    "enquiry_ref",
    "held_on",
    "outcome",
    "categories",
    "case_event_id",
)
_PLAN_COLUMNS: Final = (
    "id",
    "child_id",
    "plan_type",
    "plan_ref",
    "started_on",
    "ended_on",
    "initial_category",
    "latest_category",
    "domestic_abuse_focus",
    "neglect",
    "started_event_id",
    "ended_event_id",
    "previous_cp_plans",
)
_CHANGE_COLUMNS: Final = ("care_plan_id", "changed_on", "category", "case_event_id")


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
    """Hand runs of the file's children to the worker processes (`_work_on_chunk`); False, and
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
                _work_on_chunk,
                _Chunk(path, start, end, first, header, import_id, scan.namespaces, scan.encoding),
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
        outcome.tally.add_to(report)
    return True


async def _record_completion(factory: SessionFactory, report: ImportReport) -> None:
    """Note the finished run on the file's row. The batches commit without waiting for their WAL
    to reach disk (`_batch`); this commit waits, and so makes every batch's durable before the
    report is given."""
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


# --- one batch -----------------------------------------------------------------------------------

# The API's matching rule, set-based: one statement for the batch (`neglect_resolve_children`,
# service/children.sql). The census carries no NHS number and no name.
_RESOLVE: Final = """
SELECT resolved.child_id
FROM neglect_resolve_children(
    p_nhs_numbers => array_fill(NULL::text, ARRAY[cardinality($1::text[])]),
    p_la_child_ids => $1::text[], p_upns => $2::text[],
    p_given_names => array_fill(NULL::text, ARRAY[cardinality($1::text[])]),
    p_family_names => array_fill(NULL::text, ARRAY[cardinality($1::text[])]),
    p_family_name_keys => array_fill(NULL::text, ARRAY[cardinality($1::text[])]),
    p_dates_of_birth => $3::date[], p_expected_dates_of_birth => $4::date[],
    p_sexes => $5::text[], p_ethnicities => $6::text[]
) AS resolved
ORDER BY resolved.item
"""
# As the case-events API does for each event, so a batch and an API request about the same
# child take turns.
_LOCK_CHILDREN: Final = (
    "SELECT id, created_at = now() AS created FROM child WHERE id = ANY($1::uuid[]) "
    "ORDER BY id FOR NO KEY UPDATE"
)
# What is stored about a batch's children, looked up key by key through the indexes: joined to
# the keys unnested, not `= ANY(...)`, which a table the import is filling (its statistics still
# those of an empty table) is estimated to match whole, and scanned whole for.
_PLANS: Final = (
    "SELECT p.id, p.child_id, p.plan_type, p.plan_ref, p.started_on, p.ended_on, "
    "p.initial_category, p.latest_category FROM unnest($1::uuid[]) AS c(id) "
    "JOIN care_plan p ON p.child_id = c.id"
)
_CHANGES: Final = (
    "SELECT ch.care_plan_id, ch.changed_on, ch.id, ch.category FROM unnest($1::uuid[]) AS c(id) "
    "JOIN care_plan p ON p.child_id = c.id JOIN care_plan_category_change ch "
    "ON ch.care_plan_id = p.id"
)
_ENQUIRIES: Final = (
    "SELECT s.child_id, s.enquiry_ref, s.started_on FROM unnest($1::uuid[]) AS c(id) "
    "JOIN section47_enquiry s ON s.child_id = c.id"
)
_ICPCS: Final = (
    "SELECT i.child_id, i.enquiry_ref, i.held_on FROM unnest($1::uuid[]) AS c(id) "
    "JOIN icpc i ON i.child_id = c.id"
)
_EVENTS: Final = (
    "SELECT e.event_id, e.child_id, e.occurred_on, "
    "e.details ->> 'initial_category' AS initial_category FROM unnest($1::text[]) AS w(event_id) "
    "JOIN case_event e ON e.client_id = $2 AND e.event_id = w.event_id"
)
_REFERRALS: Final = (
    "SELECT r.id, r.child_id, r.external_reference, "
    "r.body -> 'census' ->> 'reference_date' AS reference_date, "
    "r.body -> 'census' ->> 'fingerprint' AS fingerprint FROM unnest($1::text[]) AS w(reference) "
    "JOIN referral r ON r.client_id = $2 AND r.external_reference = w.reference"
)
_UPDATE_PLANS: Final = """
UPDATE care_plan p SET ended_on = u.ended_on, ended_event_id = u.ended_event_id,
    latest_category = u.latest_category
FROM unnest($1::uuid[], $2::date[], $3::uuid[], $4::text[])
    AS u(id, ended_on, ended_event_id, latest_category)
WHERE p.id = u.id
"""
_UPDATE_REFERRALS: Final = """
UPDATE referral r SET body = u.body::jsonb, census_import_id = u.census_import_id
FROM unnest($1::uuid[], $2::text[], $3::uuid[]) AS u(id, body, census_import_id)
WHERE r.id = u.id
"""
# A new child that was then refused leaves no trace.
_DROP_REFUSED: Final = """
DELETE FROM child c WHERE c.id = ANY($1::uuid[]) AND c.created_at = now()
  AND NOT EXISTS (SELECT 1 FROM referral r WHERE r.child_id = c.id)
  AND NOT EXISTS (SELECT 1 FROM case_event e WHERE e.child_id = c.id)
  AND NOT EXISTS (SELECT 1 FROM assessment a WHERE a.child_id = c.id)
"""

# `previous_received_at` of the children's other referrals, which a new one may now precede: the
# database function the API's creates and withdrawals call (service/referrals.sql).
_RELINK: Final = "SELECT neglect_relink_referrals(p_child_ids => $1::uuid[])"
# The new referrals' re-referral flag and counts, by the rule's one definition
# (`neglect_rereferral_counts`, which `neglect_create_referral` calls too), once the batch's
# referrals are stored: each counts the child's other live referrals of the 12 months up to it,
# stored before or imported with it. Copied with none; only those that count some are updated.
_COUNT_REREFERRALS: Final = count_rereferrals_of("loaded.id = ANY($1::uuid[])")
_STORED_MOMENTS: Final = (
    "SELECT r.child_id, r.received_at, r.agency_name FROM unnest($1::uuid[]) AS c(id) "
    "JOIN referral r ON r.child_id = c.id WHERE r.status <> 'withdrawn'"
)


@dataclass
class _Tally:
    """What one batch stored, for the report."""

    changed: int = 0
    referrals_created: int = 0
    referrals_updated: int = 0
    events_created: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, writes: Writes) -> _Tally:
        return cls(
            changed=len(writes.changed_children),
            referrals_created=len(writes.referrals),
            referrals_updated=len(writes.referral_updates),
            events_created=writes.events_by_type(),
        )

    def add_to(self, report: ImportReport) -> None:
        report.children_changed += self.changed
        report.referrals_created += self.referrals_created
        report.referrals_updated += self.referrals_updated
        for event_type, count in self.events_created.items():
            report.events_created[event_type] = report.events_created.get(event_type, 0) + count


async def _with_retries(attempt_batch: Callable[[], Awaitable[_BatchOutcome]]) -> _BatchOutcome:
    for attempt in range(_RETRIES):
        try:
            return await attempt_batch()
        except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
            # Another batch or request locked the same children in the other order: nothing
            # of this batch was stored, so it is tried again.
            if attempt == _RETRIES - 1:
                raise
            await asyncio.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


async def _store_batch(
    factory: SessionFactory,
    header: CensusHeader,
    import_id: uuid.UUID,
    batch: list[CensusChild],
    report: ImportReport,
    problems: list[Problem],
) -> None:
    async def attempt() -> _BatchOutcome:
        async with transaction(factory) as session:
            # Begun through the session, so the statements on its raw connection are in it.
            await session.execute(text("SELECT 1"))
            return await _batch(await _raw(session), header, import_id, batch)

    outcome = await _with_retries(attempt)
    problems.extend(outcome.problems)
    outcome.tally.add_to(report)


async def _raw(session: Any) -> Any:
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    return raw.driver_connection


@dataclass
class _BatchOutcome:
    problems: list[Problem]
    tally: _Tally


async def _batch(
    connection: Any, header: CensusHeader, import_id: uuid.UUID, batch: list[CensusChild]
) -> _BatchOutcome:
    """Store one batch in the connection's open transaction (see the module docstring)."""
    # The matching function looks rows up by key: a generic plan suits it.
    # A batch's commit does not wait for its WAL to be flushed: the run's last commit
    # (`_record_completion`) does, for every batch before it. A crash before then loses at most
    # the latest batches, which importing the file again stores.
    await connection.execute(
        "SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL statement_timeout = '10min'; "
        "SET LOCAL synchronous_commit = off"
    )
    rows = await connection.fetch(
        _RESOLVE,
        [child.la_child_id for child in batch],
        [child.upn for child in batch],
        [child.birth_on for child in batch],
        [child.expected_birth_on for child in batch],
        [child.sex for child in batch],
        [child.ethnicity for child in batch],
    )
    child_ids: list[uuid.UUID] = [row["child_id"] for row in rows]
    # Only the matching function gains from generic plans; the look-ups below by arrays of
    # ids are planned for the batch.
    await connection.execute("SET LOCAL plan_cache_mode = auto")
    locked = await connection.fetch(_LOCK_CHILDREN, child_ids)
    created = {row["id"] for row in locked if row["created"]}
    contexts = await _contexts(connection, header, batch, child_ids)
    writes = Writes()
    problems: list[Problem] = []
    refused: list[uuid.UUID] = []
    first_of: dict[uuid.UUID, CensusChild] = {}
    for child, context in zip(batch, contexts, strict=True):
        first = first_of.setdefault(context.child_id, child)
        if first is not child:
            # Two children of the file are one child here (a shared UPN, say): the file
            # contradicts itself, so the second is not merged into the first.
            problems.append(
                Problem(
                    child.la_child_id,
                    "ChildIdentifiers",
                    f"matches the same child as LAchildID {first.la_child_id} in this file",
                )
            )
            continue
        problem = plan_child(header, import_id, child, context, writes)
        if problem is not None:
            problems.append(problem)
            refused.append(context.child_id)
    await _write(connection, writes)
    dropped = [child_id for child_id in refused if child_id in created]
    if dropped:
        await connection.execute(_DROP_REFUSED, dropped)
    return _BatchOutcome(problems, _Tally.of(writes))


async def _contexts(
    connection: Any, header: CensusHeader, batch: list[CensusChild], child_ids: list[uuid.UUID]
) -> list[ChildContext]:
    states: dict[uuid.UUID, ChildState] = {child_id: ChildState() for child_id in child_ids}
    plans: dict[uuid.UUID, StoredPlan] = {}
    for row in await connection.fetch(_PLANS, child_ids):
        plan = StoredPlan(
            id=row["id"],
            plan_type=row["plan_type"],
            plan_ref=row["plan_ref"],
            started_on=row["started_on"],
            ended_on=row["ended_on"],
            initial_category=row["initial_category"],
            latest_category=row["latest_category"],
        )
        plans[plan.id] = plan
        states[row["child_id"]].plans[(plan.plan_type, plan.plan_ref)] = plan
    for row in await connection.fetch(_CHANGES, child_ids):
        plans[row["care_plan_id"]].changes.append((row["changed_on"], row["id"], row["category"]))
    for row in await connection.fetch(_ENQUIRIES, child_ids):
        states[row["child_id"]].enquiries[row["enquiry_ref"]] = row["started_on"]
    for row in await connection.fetch(_ICPCS, child_ids):
        states[row["child_id"]].icpcs[row["enquiry_ref"]] = row["held_on"]
    moments: dict[uuid.UUID, list[tuple[datetime, str]]] = {}
    for row in await connection.fetch(_STORED_MOMENTS, child_ids):
        moments.setdefault(row["child_id"], []).append((row["received_at"], row["agency_name"]))
    planned = [planned_events(header, child) for child in batch]
    wanted_events = [event.event_id for events in planned for event in events]
    stored_events = {
        row["event_id"]: StoredEvent(row["child_id"], row["occurred_on"], row["initial_category"])
        for row in await connection.fetch(_EVENTS, wanted_events, CENSUS_CLIENT_ID)
    }
    wanted_referrals = [
        referral_reference(header, child, episode) for child in batch for episode in child.episodes
    ]
    stored_referrals = {
        row["external_reference"]: StoredReferral(
            row["id"], row["child_id"], row["reference_date"] or "", row["fingerprint"] or ""
        )
        for row in await connection.fetch(_REFERRALS, wanted_referrals, CENSUS_CLIENT_ID)
    }
    # A child seen twice in one batch (two census children matched to one) shares its state.
    return [
        ChildContext(
            child_id,
            events,
            states[child_id],
            stored_events,
            stored_referrals,
            moments.get(child_id, []),
        )
        for child_id, events in zip(child_ids, planned, strict=True)
    ]


async def _copy(connection: Any, table: str, columns: tuple[str, ...], rows: list[Any]) -> None:
    if rows:
        await connection.copy_records_to_table(table, records=rows, columns=list(columns))


async def _write(connection: Any, writes: Writes) -> None:
    await _copy(connection, "case_event", _EVENT_COLUMNS, writes.events)
    if writes.plan_updates:
        # Before the new plans: a plan ended here may make room for a new open one.
        await connection.execute(_UPDATE_PLANS, *map(list, zip(*writes.plan_updates, strict=True)))
    await _copy(connection, "care_plan", _PLAN_COLUMNS, writes.plans)
    await _copy(connection, "care_plan_category_change", _CHANGE_COLUMNS, writes.changes)
    await _copy(connection, "section47_enquiry", _ENQUIRY_COLUMNS, writes.enquiries)
    await _copy(connection, "icpc", _ICPC_COLUMNS, writes.icpcs)
    await _copy(connection, "referral", _REFERRAL_COLUMNS, writes.referrals)
    if writes.relink_children:
        # A new referral whose child has no other live referral counts none (and follows none):
        # only the children with more than one are counted and relinked.
        relinked = set(writes.relink_children)
        counted = [row[0] for row in writes.referrals if row[5] in relinked]
        if counted:
            await connection.execute(_COUNT_REREFERRALS, counted)
        await connection.execute(_RELINK, sorted(relinked))
    if writes.referral_updates:
        await connection.execute(
            _UPDATE_REFERRALS, *map(list, zip(*writes.referral_updates, strict=True))
        )


# --- worker processes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Chunk:
    """A run of the file's children for a worker: bytes `start` to `end` of the file."""

    path: Path
    start: int
    end: int
    first_position: int
    header: CensusHeader
    import_id: uuid.UUID
    namespaces: dict[str | None, str]
    encoding: str


@dataclass
class _ChunkOutcome:
    children_read: int
    problems: list[Problem]
    tally: _Tally


class _Worker:
    """A worker process's event loop and connection, made once by `_start_worker`."""

    loop: asyncio.AbstractEventLoop | None = None
    connection: Any = None


def _start_workers(workers: Workers) -> ProcessPoolExecutor:
    """The worker processes, started (connecting) while the file is scanned. Spawned, not forked:
    the importing process may hold open connections and threads a fork would copy."""
    pool = ProcessPoolExecutor(
        max_workers=workers.processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(workers.settings, workers.url),
    )
    for _ in range(workers.processes):
        pool.submit(_ready)
    return pool


def _ready() -> None:
    return None


def _start_worker(settings: Settings, url: str) -> None:
    dsn, connect_args = driver_options(settings, url)
    loop = asyncio.new_event_loop()
    _Worker.loop = loop
    _Worker.connection = loop.run_until_complete(asyncpg.connect(dsn, **connect_args))


def _work_on_chunk(chunk: _Chunk, first_positions: dict[str, int]) -> _ChunkOutcome:
    """In a worker: read and check a run of children, then store them as one batch."""
    with chunk.path.open("rb") as stream:
        stream.seek(chunk.start)
        data = stream.read(chunk.end - chunk.start)
    scan = CensusScan(header=chunk.header, namespaces=chunk.namespaces, encoding=chunk.encoding)
    read = read_chunk(
        chunk_document(scan, data), chunk.header, chunk.first_position, first_positions
    )
    loop, connection = _Worker.loop, _Worker.connection
    if loop is None or connection is None:
        raise RuntimeError("the worker process was not started with _start_worker")

    async def attempt() -> _BatchOutcome:
        async with connection.transaction():
            return await _batch(connection, chunk.header, chunk.import_id, read.children)

    outcome = loop.run_until_complete(_with_retries(attempt))
    return _ChunkOutcome(read.children_read, read.problems + outcome.problems, outcome.tally)
