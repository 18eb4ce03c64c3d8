"""Multi-agency case audits (SPEC 2.8): recorded by a partnership's quality-assurance team, read
back by the agency that recorded them.

The child is matched (or created) like every other record's (`service.children.resolve_child`).
An audit is visible only to the agency of the client that recorded it; another agency's reads
exactly like a missing one. Every create, read and list is audited.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Final

from sqlalchemy import ColumnElement, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from schemas.case_audits import CaseAuditCreate, CaseAuditPublic
from schemas.common import Page
from service.audit import record_access
from service.auth.caller import Caller
from service.children import ChildIdentity, resolve_child
from service.errors import NotFound
from service.models import CaseAudit
from service.pagination import Keyset, PageRequest

RESOURCE_TYPE: Final = "case_audit"


def _visible_to(caller: Caller) -> ColumnElement[bool]:
    return col(CaseAudit.agency_name) == caller.agency_name


def _to_public(audit: CaseAudit) -> CaseAuditPublic:
    return CaseAuditPublic.model_validate(audit)


async def create_case_audit(
    session: AsyncSession, caller: Caller, body: CaseAuditCreate
) -> CaseAuditPublic:
    """Store an audit of the child it names (matched, or created)."""
    child_id = await resolve_child(session, ChildIdentity.from_ref(body.child))
    audit = CaseAudit.model_validate(
        {
            "client_id": caller.client_id,
            "agency_type": caller.agency_type,
            "agency_name": caller.agency_name,
            "child_id": child_id,
            **body.model_dump(mode="json", exclude={"child"}),
            "audited_on": body.audited_on,
        }
    )
    session.add(audit)
    await session.flush()
    await record_access(session, caller, "create", RESOURCE_TYPE, audit.id, child_id)
    return _to_public(audit)


async def read_case_audit(
    session: AsyncSession, caller: Caller, audit_id: uuid.UUID
) -> CaseAuditPublic:
    """One audit the caller's agency recorded; any other is `NotFound`, like a missing one."""
    audit = await session.scalar(
        select(CaseAudit).where(col(CaseAudit.id) == audit_id, _visible_to(caller))
    )
    if audit is None:
        raise NotFound("no such case audit")
    await record_access(session, caller, "read", RESOURCE_TYPE, audit.id, audit.child_id)
    return _to_public(audit)


@dataclass(frozen=True)
class CaseAuditFilters:
    """Optional filters of the list: the child, and audit days from..to (both included)."""

    child_id: uuid.UUID | None = None
    audited_from: date | None = None
    audited_to: date | None = None


_KEYSET: Final = Keyset[tuple[date, uuid.UUID]](tuple[date, uuid.UUID])
"""Newest audit first: a page starts after the (audited_on, id) of the last one before."""


async def list_case_audits(
    session: AsyncSession, caller: Caller, filters: CaseAuditFilters, page: PageRequest
) -> Page[CaseAuditPublic]:
    """The audits the caller's agency recorded, newest audit day first, one page at a time."""
    query = select(CaseAudit).where(_visible_to(caller))
    if filters.child_id is not None:
        query = query.where(col(CaseAudit.child_id) == filters.child_id)
    if filters.audited_from is not None:
        query = query.where(col(CaseAudit.audited_on) >= filters.audited_from)
    if filters.audited_to is not None:
        query = query.where(col(CaseAudit.audited_on) <= filters.audited_to)
    after = _KEYSET.after(page)
    if after is not None:
        query = query.where(tuple_(col(CaseAudit.audited_on), col(CaseAudit.id)) < tuple_(*after))
    query = query.order_by(col(CaseAudit.audited_on).desc(), col(CaseAudit.id).desc()).limit(
        page.fetch
    )
    audits = list(await session.scalars(query))
    await record_access(session, caller, "list", RESOURCE_TYPE, None, filters.child_id)
    return _KEYSET.page(
        audits, page, lambda audit: (audit.audited_on, audit.id), lambda audit: _to_public(audit)
    )
