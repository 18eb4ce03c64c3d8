"""Every child's records as NDJSON, and back (SPEC 2.9): a partnership is never locked in.

`export_children` writes one JSON object per line per child: the child's identity and every
referral, toolkit assessment, case event, plan (with its category changes), Section 47 enquiry,
ICPC and multi-agency case audit about them, each with all its stored columns (the disclosure
control's record keys included, so restored records perturb published figures as before), plus
the CIN census files those records were imported from. `--child` exports one child, for a
subject access request (UK GDPR article 15). Every child exported is audited (`export`).

The same lines restore the records into a database that does not hold them (`restore_children`):
every row keeps its id, so the history, the re-referral links and every indicator come back
exactly. Restoring is one transaction: a line that does not fit stores nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, Final

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.audit import record_access
from service.auth.caller import Caller
from service.errors import NotFound, ValidationFailed, field_problem

FORMAT: Final = "neglect-service/child-export"
VERSION: Final = 1

# One line per child (`FORMAT`, `VERSION`), built inside PostgreSQL. Lists are in a fixed order,
# so exporting the same records twice gives the same bytes.
_LINE: Final = """
SELECT c.id, jsonb_build_object(
    'format', 'neglect-service/child-export',
    'version', 1,
    'child', to_jsonb(c),
    'referrals', COALESCE((
        SELECT jsonb_agg(to_jsonb(r) ORDER BY r.received_at, r.id)
        FROM referral r WHERE r.child_id = c.id), '[]'),
    'assessments', COALESCE((
        SELECT jsonb_agg(to_jsonb(a) ORDER BY a.completed_on, a.created_at, a.id)
        FROM assessment a WHERE a.child_id = c.id), '[]'),
    'case_events', COALESCE((
        SELECT jsonb_agg(to_jsonb(e) ORDER BY e.created_at, e.id)
        FROM case_event e WHERE e.child_id = c.id), '[]'),
    'care_plans', COALESCE((
        SELECT jsonb_agg(to_jsonb(p) || jsonb_build_object('category_changes', COALESCE((
            SELECT jsonb_agg(to_jsonb(ch) ORDER BY ch.id)
            FROM care_plan_category_change ch WHERE ch.care_plan_id = p.id), '[]'))
            ORDER BY p.started_on, p.id)
        FROM care_plan p WHERE p.child_id = c.id), '[]'),
    'section47_enquiries', COALESCE((
        SELECT jsonb_agg(to_jsonb(s) ORDER BY s.started_on, s.id)
        FROM section47_enquiry s WHERE s.child_id = c.id), '[]'),
    'icpcs', COALESCE((
        SELECT jsonb_agg(to_jsonb(i) ORDER BY i.held_on, i.id)
        FROM icpc i WHERE i.child_id = c.id), '[]'),
    'case_audits', COALESCE((
        SELECT jsonb_agg(to_jsonb(ca) ORDER BY ca.audited_on, ca.id)
        FROM case_audit ca WHERE ca.child_id = c.id), '[]'),
    'census_imports', COALESCE((
        SELECT jsonb_agg(to_jsonb(ci) ORDER BY ci.imported_at, ci.id)
        FROM census_import ci WHERE ci.id IN (
            SELECT census_import_id FROM referral WHERE child_id = c.id
            UNION SELECT census_import_id FROM case_event WHERE child_id = c.id)), '[]')
)::text AS line
FROM child c
"""
_ALL: Final = text(_LINE + " WHERE c.id > :after ORDER BY c.id LIMIT :limit")
_ONE: Final = text(_LINE + " WHERE c.id = :child_id")
_PAGE: Final = 500


async def export_children(
    session: AsyncSession, caller: Caller, child_id: uuid.UUID | None = None
) -> AsyncIterator[str]:
    """The export's lines (without newlines), each child's export audited in the session's
    transaction. One child raises `NotFound` when there is no such child."""
    if child_id is not None:
        row = (await session.execute(_ONE, {"child_id": child_id})).one_or_none()
        if row is None:
            raise NotFound("no such child")
        await record_access(session, caller, "export", "child", child_id, child_id)
        yield row.line
        return
    after = uuid.UUID(int=0)
    while True:
        rows = (await session.execute(_ALL, {"after": after, "limit": _PAGE})).all()
        for row in rows:
            await record_access(session, caller, "export", "child", row.id, row.id)
            yield row.line
        if len(rows) < _PAGE:
            return
        after = rows[-1].id


# --- restore -------------------------------------------------------------------------------------

# Parents before children: a row's foreign keys point at rows already restored.
_TABLES: Final = (
    ("census_imports", "census_import", "ON CONFLICT (id) DO NOTHING"),
    ("child", "child", ""),
    ("case_events", "case_event", ""),
    ("care_plans", "care_plan", ""),
    ("category_changes", "care_plan_category_change", ""),
    ("section47_enquiries", "section47_enquiry", ""),
    ("icpcs", "icpc", ""),
    ("referrals", "referral", ""),
    ("assessments", "assessment", ""),
    ("case_audits", "case_audit", ""),
)
_KEYS: Final = frozenset(
    {"format", "version", "child", "referrals", "assessments", "case_events", "care_plans"}
    | {"section47_enquiries", "icpcs", "case_audits", "census_imports"}
)


@dataclass
class RestoreSummary:
    """How many rows of each table were restored."""

    children: int
    rows: dict[str, int]


def _line_rows(number: int, raw: bytes) -> dict[str, list[dict[str, Any]]]:
    where = f"line {number}"
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValidationFailed(
            f"{where} is not JSON", [field_problem(where, "not JSON", "json")]
        ) from None
    if not isinstance(line, dict) or line.get("format") != FORMAT or line.get("version") != VERSION:
        raise ValidationFailed(
            f"{where} is not a {FORMAT} version {VERSION} line",
            [field_problem(f"{where}.format", f"expected {FORMAT} version {VERSION}", "format")],
        )
    unknown = set(line) - _KEYS
    if unknown or not isinstance(line.get("child"), dict):
        raise ValidationFailed(
            f"{where} has unknown keys or no child",
            [field_problem(where, f"unknown keys {sorted(unknown)} or no child", "shape")],
        )
    rows: dict[str, list[dict[str, Any]]] = {"child": [line["child"]]}
    for key in _KEYS - {"format", "version", "child"}:
        value = line.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise ValidationFailed(
                f"{where}.{key} is not a list of objects",
                [field_problem(f"{where}.{key}", "not a list of objects", "shape")],
            )
        rows[key] = value
    rows["category_changes"] = [
        change for plan in rows["care_plans"] for change in plan.pop("category_changes", [])
    ]
    return rows


async def restore_children(session: AsyncSession, lines: Iterable[bytes]) -> RestoreSummary:
    """Restore exported lines in the session's transaction (the caller commits). Rows keep their
    ids; a child or record already present fails the restore (nothing is stored)."""
    pending: dict[str, list[dict[str, Any]]] = {key: [] for key, _, _ in _TABLES}
    counts = {table: 0 for _, table, _ in _TABLES}
    children = 0
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        for key, rows in _line_rows(number, raw).items():
            pending[key].extend(rows)
        children += 1
        if children % _PAGE == 0:
            await _flush(session, pending, counts)
    await _flush(session, pending, counts)
    # Restored category changes kept their ids; later ones must come after them.
    await session.execute(
        text(
            "SELECT setval(pg_get_serial_sequence('care_plan_category_change', 'id'), "
            "GREATEST((SELECT max(id) FROM care_plan_category_change), 1))"
        )
    )
    return RestoreSummary(children=children, rows=counts)


async def _flush(
    session: AsyncSession, pending: dict[str, list[dict[str, Any]]], counts: dict[str, int]
) -> None:
    for key, table, conflict in _TABLES:
        rows = pending[key]
        if not rows:
            continue
        overriding = "OVERRIDING SYSTEM VALUE " if table == "care_plan_category_change" else ""
        # Every column comes back from its own JSON: the table's row type reads each value.
        result = await session.execute(
            text(
                f"INSERT INTO {table} {overriding}"  # noqa: S608 - fixed table names
                f"SELECT * FROM jsonb_populate_recordset(NULL::{table}, CAST(:rows AS jsonb)) "
                f"{conflict}"
            ),
            {"rows": orjson.dumps(rows).decode()},
        )
        counts[table] += int(getattr(result, "rowcount", 0) or 0)
        rows.clear()
