"""Verifying the audit trail's hash chains (`neglect-service audit verify`).

Each agency's events form a chain (migration 0009, service/audit.sql): event `chain_seq` n holds
`prev_hash`, the `row_hash` of event n - 1 (32 zero bytes for the first), and its own `row_hash`,
sha256 of `prev_hash` and the event's canonical bytes; `audit_chain_head` holds each chain's last
link. Walking a chain in `chain_seq` order finds the first event that was edited (its hash no longer
matches its fields), deleted (a gap in the sequence, or a head ahead of the last event) or reordered
(its `prev_hash` is not the hash of the event before it).

The hash is computed here again rather than by calling `neglect_audit_row_hash`: a verifier that
asked the database would believe a superuser who replaced that function. The two definitions are
pinned together by the tests (events with every kind of field verify). A superuser who rewrites a
chain and all its hashes up to the head goes unseen by the chain alone; the heads this command
prints, kept outside the database (anchored), catch that: `--anchors` checks the chain still holds
them.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import Table, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import metadata

GENESIS_HASH = bytes(32)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# The columns of the canonical form, in its order (service/audit.sql, neglect_audit_row_hash).
CANONICAL_FIELDS = (
    "chain_seq",
    "id",
    "occurred_at",
    "client_id",
    "agency_type",
    "agency_name",
    "action",
    "resource_type",
    "resource_id",
    "child_id",
    "request_id",
    "access_reason",
    "denied_reason",
)


def _field_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return str((value - _EPOCH) // _MICROSECOND)
    if isinstance(value, uuid.UUID | int | str):
        return str(value)
    raise TypeError(f"no canonical form for {type(value).__name__}")


def canonical_bytes(event: Mapping[Any, Any]) -> bytes:
    """Each field as `<UTF-8 byte length>:<text>`, or `-` for NULL, joined by `|`."""
    parts = []
    for name in CANONICAL_FIELDS:
        value = _field_text(event[name])
        parts.append("-" if value is None else f"{len(value.encode())}:{value}")
    return "|".join(parts).encode()


def row_hash(prev_hash: bytes, event: Mapping[Any, Any]) -> bytes:
    """The `row_hash` an intact event holds."""
    return hashlib.sha256(prev_hash + canonical_bytes(event)).digest()


@dataclass(frozen=True)
class Anchor:
    """A chain head recorded outside the database: the event `seq` had hash `hash`."""

    seq: int
    hash: bytes


@dataclass(frozen=True)
class ChainBreak:
    """The first bad link of a chain: the event (when there is one to name) and what is wrong."""

    problem: str
    event_id: int | None
    chain_seq: int


@dataclass
class ChainReport:
    """One agency's chain: how many events, its head as stored, and its first break if any."""

    agency_name: str
    events: int = 0
    head_seq: int | None = None
    head_hash: bytes | None = None
    first_break: ChainBreak | None = None

    @property
    def intact(self) -> bool:
        return self.first_break is None


@dataclass
class AuditVerification:
    chains: list[ChainReport] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return all(chain.intact for chain in self.chains)


class _Walk:
    """The state of one chain as its events go by in `chain_seq` order."""

    def __init__(self, report: ChainReport, anchor: Anchor | None) -> None:
        self.report = report
        self.anchor = anchor
        self.seq = 0
        self.hash = GENESIS_HASH

    def step(self, event: Mapping[Any, Any]) -> None:
        self.report.events += 1
        if self.report.first_break is not None:
            return
        problem = self._problem(event)
        if problem is not None:
            self.report.first_break = ChainBreak(problem, event["id"], event["chain_seq"])
            return
        self.seq, self.hash = event["chain_seq"], event["row_hash"]

    def _problem(self, event: Mapping[Any, Any]) -> str | None:
        seq: int = event["chain_seq"]
        expected = self.seq + 1
        if seq != expected:
            missing = f"{expected}" if seq == expected + 1 else f"{expected} to {seq - 1}"
            return f"events missing before it (chain_seq {missing}): deleted"
        if bytes(event["prev_hash"]) != self.hash:
            return "its prev_hash is not the hash of the event before it: reordered or replaced"
        if row_hash(self.hash, event) != bytes(event["row_hash"]):
            return "its fields do not match its row_hash: edited"
        if (
            self.anchor is not None
            and seq == self.anchor.seq
            and bytes(event["row_hash"]) != self.anchor.hash
        ):
            return "its hash differs from the anchored head: the chain was rewritten"
        return None

    def finish(self, head: Anchor | None) -> None:
        report = self.report
        if head is not None:
            report.head_seq, report.head_hash = head.seq, head.hash
        if report.first_break is not None:
            return
        if head is None:
            report.first_break = ChainBreak("the chain has no head row", None, self.seq)
        elif head.seq > self.seq:
            report.first_break = ChainBreak(
                f"the chain ends at chain_seq {self.seq} but its head is at {head.seq}: "
                "the newest events were deleted",
                None,
                self.seq + 1,
            )
        elif head.seq != self.seq or head.hash != self.hash:
            report.first_break = ChainBreak(
                f"the head (chain_seq {head.seq}) is not the chain's last event: events added "
                "without the chain trigger, or the head rewritten",
                None,
                head.seq,
            )
        elif self.anchor is not None and self.anchor.seq > self.seq:
            report.first_break = ChainBreak(
                f"the anchored head is at chain_seq {self.anchor.seq}, past the chain's end",
                None,
                self.seq + 1,
            )


_EVENT_TABLE: Final[Table] = metadata.tables["audit_event"]
_EVENT_COLUMNS = [
    _EVENT_TABLE.c[name]
    for name in dict.fromkeys(("agency_name", "prev_hash", "row_hash", *CANONICAL_FIELDS))
]
_HEADS = text("SELECT agency_name, seq, hash FROM audit_chain_head")


async def verify_audit_chains(
    session: AsyncSession,
    anchors: Mapping[str, Anchor] | None = None,
    agency_name: str | None = None,
) -> AuditVerification:
    """Walk every agency's chain (or only `agency_name`'s) and report its first break.

    Reads `audit_chain_head`, which only the owner role may: run it with the owner's URL.
    """
    anchors = anchors or {}
    heads = {
        row.agency_name: Anchor(row.seq, bytes(row.hash))
        for row in await session.execute(_HEADS)
        if agency_name is None or row.agency_name == agency_name
    }
    walks: dict[str, _Walk] = {}
    # In the order of the unique index on (agency_name, chain_seq).
    query = select(*_EVENT_COLUMNS).order_by(_EVENT_TABLE.c.agency_name, _EVENT_TABLE.c.chain_seq)
    if agency_name is not None:
        query = query.where(_EVENT_TABLE.c.agency_name == agency_name)
    result = await session.stream(query.execution_options(yield_per=2000))
    async for row in result.mappings():
        name: str = row["agency_name"]
        walk = walks.get(name)
        if walk is None:
            walk = walks[name] = _Walk(ChainReport(name), anchors.get(name))
        walk.step(row)
    for name in heads.keys() - walks.keys():
        walks[name] = _Walk(ChainReport(name), anchors.get(name))
    for name in anchors.keys() - walks.keys():
        if agency_name is None or name == agency_name:
            walks[name] = _Walk(ChainReport(name), anchors[name])
    for walk in walks.values():
        walk.finish(heads.get(walk.report.agency_name))
    return AuditVerification(sorted((w.report for w in walks.values()), key=_by_name))


def _by_name(report: ChainReport) -> str:
    return report.agency_name


def anchors_from_json(document: object) -> dict[str, Anchor]:
    """Anchors from what `audit verify --json` printed (its `chains`), or a list of them."""
    chains: Iterable[Any]
    if isinstance(document, dict):
        chains = document.get("chains", [])
    elif isinstance(document, list):
        chains = document
    else:
        raise ValueError("expected the JSON that `audit verify --json` prints")
    anchors: dict[str, Anchor] = {}
    for chain in chains:
        try:
            head = chain["head"]
            if head is None:
                continue  # a chain without a head anchors nothing
            anchor = Anchor(int(head["seq"]), bytes.fromhex(head["hash"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an anchored head: {chain!r:.80}") from exc
        anchors[str(chain["agency_name"])] = anchor
    return anchors
