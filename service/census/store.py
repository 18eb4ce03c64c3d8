"""One batch of a census import, and the worker processes that store batches: reading a run of
children, matching them, working out their records and writing them (see `service.census.load`).

Kept apart from `load`, and importing only the parser, the planner and the driver, so that a
worker process starts without importing the rest of the service (the audit trail, the ORM
models, SQLAlchemy): about a second of CPU per worker on the development machine.
"""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import asyncpg

from service.census.model import CensusChild, CensusHeader, Problem
from service.census.parse import CensusScan, chunk_document, read_chunk
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
from service.rereferral_rule import count_rereferrals_of

if TYPE_CHECKING:
    from service.settings import Settings


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker needs to make its connection's options itself (`service.db.driver_options`),
    when they cannot be sent to it ready-made (a TLS context, a pooler's connection class)."""

    settings: Settings
    url: str


ConnectOptions = tuple[str, dict[str, Any]] | WorkerSettings
"""A worker's connection: the DSN and `asyncpg.connect` arguments, or what makes them."""

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
# What is stored about a batch's children, each look-up a subquery fenced with `OFFSET 0` so that
# it stays one index probe per child (see `store_children`): joined plainly, a table the import
# is filling was hashed whole for every batch, 7 to 12 ms a look-up a batch by the end of a
# 100,000-child import, growing with every batch; probed, 1 to 2.5 ms.
_PLANS: Final = (
    "SELECT p.id, c.id AS child_id, p.plan_type, p.plan_ref, p.started_on, p.ended_on, "
    "p.initial_category, p.latest_category FROM unnest($1::uuid[]) AS c(id) "
    "CROSS JOIN LATERAL (SELECT p.id, p.plan_type, p.plan_ref, p.started_on, p.ended_on, "
    "p.initial_category, p.latest_category FROM care_plan p WHERE p.child_id = c.id OFFSET 0) AS p"
)
_CHANGES: Final = (
    "SELECT p.id AS care_plan_id, ch.changed_on, ch.id, ch.category "
    "FROM unnest($1::uuid[]) AS p(id) CROSS JOIN LATERAL (SELECT ch.changed_on, ch.id, "
    "ch.category FROM care_plan_category_change ch WHERE ch.care_plan_id = p.id OFFSET 0) AS ch"
)
_ENQUIRIES: Final = (
    "SELECT c.id AS child_id, s.enquiry_ref, s.started_on FROM unnest($1::uuid[]) AS c(id) "
    "CROSS JOIN LATERAL (SELECT s.enquiry_ref, s.started_on FROM section47_enquiry s "
    "WHERE s.child_id = c.id OFFSET 0) AS s"
)
_ICPCS: Final = (
    "SELECT c.id AS child_id, i.enquiry_ref, i.held_on FROM unnest($1::uuid[]) AS c(id) "
    "CROSS JOIN LATERAL (SELECT i.enquiry_ref, i.held_on FROM icpc i "
    "WHERE i.child_id = c.id OFFSET 0) AS i"
)
# The stored events and referrals by their keys, each looked up through its unique index: the
# subqueries are fenced (`OFFSET 0`) so that they stay one index probe per key. Joined plainly,
# a table the import is filling (never analysed yet) is estimated to match the client's few rows,
# and was hashed whole for every batch: at 100,000 children, 280 and 480 ms a batch by the end,
# 27 and 17 ms probed key by key.
_EVENTS: Final = (
    "SELECT w.event_id, e.child_id, e.occurred_on, "
    "e.details ->> 'initial_category' AS initial_category FROM unnest($1::text[]) AS w(event_id) "
    "CROSS JOIN LATERAL (SELECT e.child_id, e.occurred_on, e.details FROM case_event e "
    "WHERE e.client_id = $2 AND e.event_id = w.event_id OFFSET 0) AS e"
)
_REFERRALS: Final = (
    "SELECT r.id, r.child_id, w.reference AS external_reference, "
    "r.body -> 'census' ->> 'reference_date' AS reference_date, "
    "r.body -> 'census' ->> 'fingerprint' AS fingerprint FROM unnest($1::text[]) AS w(reference) "
    "CROSS JOIN LATERAL (SELECT r.id, r.child_id, r.body FROM referral r "
    "WHERE r.client_id = $2 AND r.external_reference = w.reference OFFSET 0) AS r"
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
    "SELECT c.id AS child_id, r.received_at, r.agency_name FROM unnest($1::uuid[]) AS c(id) "
    "CROSS JOIN LATERAL (SELECT r.received_at, r.agency_name FROM referral r "
    "WHERE r.child_id = c.id AND r.status <> 'withdrawn' OFFSET 0) AS r"
)


@dataclass
class Tally:
    """What one batch stored, for the report."""

    changed: int = 0
    referrals_created: int = 0
    referrals_updated: int = 0
    events_created: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, writes: Writes) -> Tally:
        return cls(
            changed=len(writes.changed_children),
            referrals_created=len(writes.referrals),
            referrals_updated=len(writes.referral_updates),
            events_created=writes.events_by_type(),
        )


async def with_retries(attempt_batch: Callable[[], Awaitable[BatchOutcome]]) -> BatchOutcome:
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


@dataclass
class BatchOutcome:
    problems: list[Problem]
    tally: Tally


async def store_children(
    connection: Any, header: CensusHeader, import_id: uuid.UUID, batch: list[CensusChild]
) -> BatchOutcome:
    """Store one batch in the connection's open transaction (see the module docstring)."""
    # The matching function looks rows up by key: a generic plan suits it.
    # Every statement of a batch reads rows by key, through an index, never a table whole: the
    # tables an import fills are not analysed during it, so a plan's idea of their size is the
    # one they had when it was made (cached for the connection), and a scan that was cheap for
    # the table then would be made for every batch, or every row, as it grows.
    # A batch's commit does not wait for its WAL to be flushed: the run's last commit
    # (`_record_completion`) does, for every batch before it. A crash before then loses at most
    # the latest batches, which importing the file again stores.
    await connection.execute(
        "SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL enable_seqscan = off; "
        "SET LOCAL statement_timeout = '10min'; SET LOCAL synchronous_commit = off"
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
    return BatchOutcome(problems, Tally.of(writes))


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
    if plans:
        for row in await connection.fetch(_CHANGES, list(plans)):
            change = (row["changed_on"], row["id"], row["category"])
            plans[row["care_plan_id"]].changes.append(change)
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
class Chunk:
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
class ChunkOutcome:
    children_read: int
    problems: list[Problem]
    tally: Tally


class _Worker:
    """A worker process's event loop and connection, made once by `start_worker`."""

    loop: asyncio.AbstractEventLoop | None = None
    connection: Any = None


def ready() -> None:
    return None


def start_worker(options: ConnectOptions) -> None:
    """A worker process's initializer: its event loop and connection."""
    if isinstance(options, WorkerSettings):
        # Imported here, only when needed: the database layer (SQLAlchemy, pydantic settings)
        # takes a second of CPU to import in each worker.
        from service.db import driver_options

        dsn, connect_args = driver_options(options.settings, options.url)
    else:
        dsn, connect_args = options
    loop = asyncio.new_event_loop()
    _Worker.loop = loop
    _Worker.connection = loop.run_until_complete(asyncpg.connect(dsn, **connect_args))
    # What the start-up made lives as long as the process: no collection need look at it again.
    gc.freeze()


def work_on_chunk(chunk: Chunk, first_positions: dict[str, int]) -> ChunkOutcome:
    """In a worker: read and check a run of children, then store them as one batch.

    The cyclic garbage collector is paused meanwhile: a chunk makes some hundred thousand
    objects (elements' proxies, rows, tuples) and frees them by reference counting, and the
    collections their allocation set off cost 10 to 20 µs per child for nothing. What cycles
    a chunk leaves (the driver's, an error's traceback) are collected after it.
    """
    gc.disable()
    try:
        return _work_on_chunk(chunk, first_positions)
    finally:
        gc.enable()


def _work_on_chunk(chunk: Chunk, first_positions: dict[str, int]) -> ChunkOutcome:
    with chunk.path.open("rb") as stream:
        stream.seek(chunk.start)
        data = stream.read(chunk.end - chunk.start)
    scan = CensusScan(header=chunk.header, namespaces=chunk.namespaces, encoding=chunk.encoding)
    read = read_chunk(
        chunk_document(scan, data), chunk.header, chunk.first_position, first_positions
    )
    loop, connection = _Worker.loop, _Worker.connection
    if loop is None or connection is None:
        raise RuntimeError("the worker process was not started with start_worker")

    async def attempt() -> BatchOutcome:
        async with connection.transaction():
            return await store_children(connection, chunk.header, chunk.import_id, read.children)

    outcome = loop.run_until_complete(with_retries(attempt))
    return ChunkOutcome(read.children_read, read.problems + outcome.problems, outcome.tally)
