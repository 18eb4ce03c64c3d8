"""Data for indicator tests: children, referrals and toolkit assessments inserted directly.

Referrals and assessments are inserted with SQLAlchemy Core until their public endpoints land;
case events always go through `POST /v1/case-events` (see tests/builders/case_events.py). The rows
carry only what the indicators read, with the rest filled with plausible synthetic values.

`clear_domain_tables` empties every table the indicators count from, so an indicator test sees only
its own data (tests in one worker run one at a time; other workers use other databases).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import insert, text

from service.db import SessionFactory, transaction
from service.identifiers import synthetic_nhs_number
from service.models import Assessment, Child, Referral

UK = ZoneInfo("Europe/London")

DOMAIN_TABLES = (
    "care_plan_category_change",
    "care_plan",
    "section47_enquiry",
    "icpc",
    "case_event",
    "assessment",
    "referral",
    "child",
)


async def clear_domain_tables(factory: SessionFactory) -> None:
    """Empty the tables indicators count from (never `audit_event`, which refuses TRUNCATE).

    CASCADE also empties any table another resource adds with a foreign key to these.
    """
    async with transaction(factory) as session:
        await session.execute(text(f"TRUNCATE {', '.join(DOMAIN_TABLES)} CASCADE"))


@dataclass(frozen=True)
class KnownChild:
    id: uuid.UUID
    nhs_number: str

    @property
    def ref(self) -> dict[str, Any]:
        """How a case event names this child."""
        return {"nhs_number": self.nhs_number}


_used_nhs_numbers: set[str] = set()
_rng = random.Random(uuid.uuid4().int)


def fresh_nhs_number() -> str:
    """A synthetic NHS number not handed out before in this test run."""
    while True:
        candidate = synthetic_nhs_number(_rng)
        if candidate not in _used_nhs_numbers:
            _used_nhs_numbers.add(candidate)
            return candidate


async def insert_child(
    factory: SessionFactory,
    *,
    date_of_birth: date | None = date(2015, 6, 1),
    expected_date_of_birth: date | None = None,
    sex: str = "F",
    ethnicity: str | None = "WBRI",
) -> KnownChild:
    """A child with an NHS number, so case events can name it."""
    nhs_number = fresh_nhs_number()
    child_id = uuid.uuid4()
    async with transaction(factory) as session:
        await session.execute(
            insert(Child).values(
                id=child_id,
                nhs_number=nhs_number,
                family_name="Testerton",
                family_name_key="testerton",
                date_of_birth=date_of_birth,
                expected_date_of_birth=expected_date_of_birth,
                sex=sex,
                ethnicity=ethnicity,
            )
        )
    return KnownChild(id=child_id, nhs_number=nhs_number)


def uk_time(day: date, at: time = time(10, 0)) -> datetime:
    """A moment on `day` in England, as an aware datetime."""
    return datetime.combine(day, at, tzinfo=UK)


def referral_row(
    child_id: uuid.UUID,
    received_at: datetime,
    *,
    categories: Sequence[str] = ("neglect",),
    neglect_forms: Sequence[str] | None = None,
    referral_source: str = "2A",
    agency_type: str = "school",
    decided_at: datetime | None = None,
    withdrawn: bool = False,
) -> dict[str, Any]:
    """The column values of one referral; `neglect_forms` defaults to ["physical"] for neglect."""
    forms = (
        list(neglect_forms)
        if neglect_forms is not None
        else (["physical"] if "neglect" in categories else [])
    )
    status = "withdrawn" if withdrawn else ("decided" if decided_at is not None else "received")
    return {
        "id": uuid.uuid4(),
        "client_id": "indicator-tests",
        "agency_type": agency_type,
        "agency_name": f"Test {agency_type}",
        "external_reference": f"RFS-{uuid.uuid4().hex}",
        "child_id": child_id,
        "status": status,
        "urgent": False,
        "received_at": received_at,
        # In UTC: adding hours to a time in England would count a clock change's hour wrongly.
        "decision_due_at": received_at.astimezone(UTC) + timedelta(hours=24),
        "referral_source": referral_source,
        "concern_categories": list(categories),
        "neglect_forms": forms,
        "risk_factors": [],
        "vulnerabilities": [],
        "parents_informed": True,
        "parental_consent": "given",
        "rereferral": False,
        "rereferral_count": 0,
        "body": {},
        "decision_outcome": "early_help" if decided_at is not None else None,
        "decision": None,
        "decided_at": decided_at,
        "withdrawn_at": received_at + timedelta(hours=1) if withdrawn else None,
        "withdrawal_reason": "Sent in error" if withdrawn else None,
    }


async def insert_referrals(factory: SessionFactory, rows: Sequence[dict[str, Any]]) -> None:
    """Insert referral rows (from `referral_row`) with multi-row INSERTs."""
    async with transaction(factory) as session:
        for start in range(0, len(rows), 500):
            await session.execute(insert(Referral).values(list(rows[start : start + 500])))


async def insert_referral(
    factory: SessionFactory, child_id: uuid.UUID, received_at: datetime, **columns: Any
) -> uuid.UUID:
    row = referral_row(child_id, received_at, **columns)
    await insert_referrals(factory, [row])
    referral_id: uuid.UUID = row["id"]
    return referral_id


async def insert_anonymous_children(factory: SessionFactory, count: int) -> list[uuid.UUID]:
    """`count` children without identifiers (enough for referral-only data), inserted in bulk."""
    ids = [uuid.uuid4() for _ in range(count)]
    rows = [
        {"id": child_id, "date_of_birth": date(2012, 1, 1), "sex": "M", "ethnicity": "WBRI"}
        for child_id in ids
    ]
    async with transaction(factory) as session:
        for start in range(0, len(rows), 1000):
            await session.execute(insert(Child).values(rows[start : start + 1000]))
    return ids


async def insert_assessment(
    factory: SessionFactory,
    child_id: uuid.UUID,
    completed_on: date,
    *,
    highest_area_grade: int | None = 3,
    areas_at_concern: int | None = None,
    agency_type: str = "school",
    toolkit_id: str = "demo-neglect-toolkit",
    previous_assessment_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """A scored toolkit assessment; `areas_at_concern` defaults to 1 for a highest grade of 3+."""
    concern = (
        areas_at_concern
        if areas_at_concern is not None
        else int(highest_area_grade is not None and highest_area_grade >= 3)
    )
    assessment_id = uuid.uuid4()
    async with transaction(factory) as session:
        await session.execute(
            insert(Assessment).values(
                id=assessment_id,
                client_id="indicator-tests",
                agency_type=agency_type,
                agency_name=f"Test {agency_type}",
                child_id=child_id,
                toolkit_id=toolkit_id,
                toolkit_version="1.0.0",
                toolkit_sha256="0" * 64,
                completed_on=completed_on,
                previous_assessment_id=previous_assessment_id,
                highest_area_grade=highest_area_grade,
                areas_at_concern=concern,
                areas_at_significant_concern=0,
                level_of_need=2,
                body={},
                result={},
                created_at=datetime.now(UTC),
            )
        )
    return assessment_id


READ_UNSUPPRESSED = ["indicators:read", "indicators:read:unsuppressed"]


async def fetch_series(
    client: httpx.AsyncClient, headers: dict[str, str], indicator_id: str, **params: str
) -> list[dict[str, Any]]:
    """The `series` of `GET /v1/indicators/{indicator_id}`; fails the test unless it is 200.

    Pass `from_` for the `from` parameter.
    """
    query = {("from" if name == "from_" else name): value for name, value in params.items()}
    response = await client.get(f"/v1/indicators/{indicator_id}", params=query, headers=headers)
    assert response.status_code == 200, response.text
    series: list[dict[str, Any]] = response.json()["series"]
    return series


def figures(point: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(numerator, denominator, value) of one point, the triple every indicator test checks."""
    return point["numerator"], point["denominator"], point["value"]


def point_for(series: list[dict[str, Any]], label: str, group: str | None = None) -> dict[str, Any]:
    """The one point of `series` with this period label and breakdown group."""
    [found] = [p for p in series if p["label"] == label and p["group"] == group]
    return found
