"""Data for indicator tests, sent through the public API wherever the API can express it.

Referrals, Front Door decisions, withdrawals and toolkit assessments go through `POST
/v1/referrals`, `/v1/referrals/{id}/decision`, `/v1/referrals/{id}/withdraw` and `POST
/v1/assessments` (`IndicatorApi`); case events through `POST /v1/case-events` (see
tests/builders/case_events.py). A referred child's sex, ethnicity and date of birth come from the
referral's `child` object, the referral source from `referrer.source_code`, and the agency type from
the registered API client that sends it.

Only children the API cannot create with the demographics a test needs are inserted directly
(`insert_child`): neither a case event nor an assessment carries sex or ethnicity, and the API
refuses an unborn child due long ago, a born child without a date of birth, and a child who has
since turned 18.

`clear_domain_tables` empties every table the indicators count from, so an indicator test sees only
its own data (tests in one worker run one at a time; other workers use other databases).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import insert, text

from schemas.common import today_in_uk
from service.db import SessionFactory, transaction
from service.models import Child
from service.toolkits.definition import ToolkitDefinition, validate_definition
from service.toolkits.demo import load_demo_toolkit
from tests.bodies import valid_child_body, valid_decision_body, valid_withdraw_body
from tests.builders.assessments import (
    assessment_body,
    post_assessment,
    publish_demo,
    small_toolkit_document,
)
from tests.builders.referrals import create_referral, next_nhs_number, referral_body
from tests.conftest import ClientMaker, RegisteredClient

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
    """A child a test names by NHS number, with the demographics the indicators break down by.

    Made by `new_child` (stored by the first referral or assessment about it) or by `insert_child`.
    """

    nhs_number: str
    date_of_birth: date | None = date(2015, 6, 1)
    expected_date_of_birth: date | None = None
    sex: str = "F"
    ethnicity: str | None = "WBRI"

    @property
    def ref(self) -> dict[str, Any]:
        """How a case event names this child."""
        return {"nhs_number": self.nhs_number}

    def assessment_ref(self) -> dict[str, Any]:
        """How an assessment names this child; the date of birth sets the toolkit's age band."""
        return {
            "nhs_number": self.nhs_number,
            "family_name": "Testerton",
            "date_of_birth": self.date_of_birth.isoformat() if self.date_of_birth else None,
        }

    def referral_child(self) -> dict[str, Any]:
        """The referral's `child` object for this child."""
        body = valid_child_body(
            nhs_number=self.nhs_number,
            family_name="Testerton",
            sex=self.sex,
            ethnicity=self.ethnicity,
        )
        if self.date_of_birth is not None:
            body["date_of_birth"] = self.date_of_birth.isoformat()
            return body
        # Only an `insert_child` child lacks a date of birth here (the API refuses both of its
        # states). It is matched by NHS number; an expected date of birth, unlike a date of birth,
        # is never copied onto the stored child, so the stored state the test set up stays.
        del body["date_of_birth"]
        body.update(
            expected_date_of_birth=(today_in_uk() + timedelta(days=120)).isoformat(),
            sex="U",
            disabilities=[],
        )
        return body


@dataclass(frozen=True, kw_only=True)
class InsertedChild(KnownChild):
    """A child `insert_child` stored directly, whose id is therefore known."""

    id: uuid.UUID


def fresh_nhs_number() -> str:
    """A synthetic NHS number not handed out before in this test process.

    Drawn from the referral builders' counter, so it never repeats a number that any referral test
    in this worker (whose children outlive it in the database) was given.
    """
    return next_nhs_number()


def new_child(
    *, date_of_birth: date = date(2015, 6, 1), sex: str = "F", ethnicity: str | None = "WBRI"
) -> KnownChild:
    """A child not yet known to the service: the first referral or assessment about it stores it."""
    return KnownChild(
        nhs_number=fresh_nhs_number(), date_of_birth=date_of_birth, sex=sex, ethnicity=ethnicity
    )


async def insert_child(
    factory: SessionFactory,
    *,
    date_of_birth: date | None = date(2015, 6, 1),
    expected_date_of_birth: date | None = None,
    sex: str = "F",
    ethnicity: str | None = "WBRI",
) -> InsertedChild:
    """A child inserted directly, for the cases the API cannot create (see the module docstring)."""
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
    return InsertedChild(
        id=child_id,
        nhs_number=nhs_number,
        date_of_birth=date_of_birth,
        expected_date_of_birth=expected_date_of_birth,
        sex=sex,
        ethnicity=ethnicity,
    )


def uk_time(day: date, at: time = time(10, 0)) -> datetime:
    """A moment on `day` in England, as an aware datetime."""
    return datetime.combine(day, at, tzinfo=UK)


@dataclass(frozen=True)
class ReferralSpec:
    """One referral for `IndicatorApi.refer_all`; the fields are `IndicatorApi.refer`'s."""

    child: KnownChild
    received_at: datetime
    categories: Sequence[str] = ("neglect",)
    neglect_forms: Sequence[str] | None = None
    referral_source: str = "2A"
    agency_type: str = "school"
    decided_at: datetime | None = None
    withdrawn: bool = False


class IndicatorApi:
    """Sends a test's referrals, decisions, withdrawals and assessments through the public API.

    One registered client per agency type sends referrals and assessments (so each row's agency
    type is that client's), and one Front Door client decides; each is registered on first use,
    because registering a client (a scrypt hash) costs more than a request.
    """

    def __init__(self, client: httpx.AsyncClient, make_client: ClientMaker) -> None:
        self.client = client
        self.make_client = make_client
        self._writers: dict[str, RegisteredClient] = {}
        self._decider: RegisteredClient | None = None
        self._admin: RegisteredClient | None = None

    async def writer(self, agency_type: str) -> RegisteredClient:
        if agency_type not in self._writers:
            self._writers[agency_type] = await self.make_client(
                ["referrals:write", "assessments:write"],
                agency_name=f"Test {agency_type} {uuid.uuid4().hex[:6]}",
                agency_type=agency_type,
            )
        return self._writers[agency_type]

    async def decider(self) -> RegisteredClient:
        if self._decider is None:
            self._decider = await self.make_client(
                ["referrals:decide", "referrals:read:all"], agency_type="local_authority"
            )
        return self._decider

    async def refer(
        self,
        child: KnownChild,
        received_at: datetime,
        *,
        categories: Sequence[str] = ("neglect",),
        neglect_forms: Sequence[str] | None = None,
        referral_source: str = "2A",
        agency_type: str = "school",
        decided_at: datetime | None = None,
        withdrawn: bool = False,
        disabilities: Sequence[str] | None = None,
    ) -> str:
        """POST a referral (then its early help decision or its withdrawal); the referral's id.

        `neglect_forms` defaults to ["physical"] when neglect is a category; `disabilities` (the
        child's CIN disability codes as this referral records them) to the body's own.
        """
        forms = (
            list(neglect_forms)
            if neglect_forms is not None
            else (["physical"] if "neglect" in categories else [])
        )
        writer = await self.writer(agency_type)
        body = referral_body(nhs_number=child.nhs_number)
        body["child"] = child.referral_child()
        if disabilities is not None:
            body["child"]["disabilities"] = list(disabilities)
        body["received_at"] = received_at.isoformat()
        body["referrer"] = {
            **body["referrer"],
            "agency_type": agency_type,
            "source_code": referral_source,
        }
        body["concerns"] = {
            **body["concerns"],
            "categories": list(categories),
            "neglect_forms": forms,
        }
        created = await create_referral(self.client, writer, body)
        referral_id: str = created["id"]
        if decided_at is not None:
            decider = await self.decider()
            response = await self.client.post(
                f"/v1/referrals/{referral_id}/decision",
                json=valid_decision_body(decided_at=decided_at.isoformat()),
                headers=decider.headers,
            )
            assert response.status_code == 200, response.text
        if withdrawn:
            await self.withdraw(referral_id, agency_type)
        return referral_id

    async def withdraw(self, referral_id: str, agency_type: str) -> None:
        """The referrer (the writer of `agency_type` that sent it) withdraws the referral."""
        writer = await self.writer(agency_type)
        response = await self.client.post(
            f"/v1/referrals/{referral_id}/withdraw",
            json=valid_withdraw_body(),
            headers=writer.headers,
        )
        assert response.status_code == 200, response.text

    async def refer_all(self, specs: Sequence[ReferralSpec], concurrency: int = 8) -> None:
        """Send many referrals, a few at a time; for referrals whose order does not matter
        (each of a different child), since each counts only the earlier ones stored before it."""
        gate = asyncio.Semaphore(concurrency)

        async def send(spec: ReferralSpec) -> None:
            async with gate:
                await self.refer(
                    spec.child,
                    spec.received_at,
                    categories=spec.categories,
                    neglect_forms=spec.neglect_forms,
                    referral_source=spec.referral_source,
                    agency_type=spec.agency_type,
                    decided_at=spec.decided_at,
                    withdrawn=spec.withdrawn,
                )

        for spec in specs[:1]:
            await send(spec)  # registers the writer once, before the rest race for it
        await asyncio.gather(*(send(spec) for spec in specs[1:]))

    async def publish_other_toolkit(self) -> ToolkitDefinition:
        """A second, small toolkit (areas `care` and `safety`, items f1, f2, s1), published."""
        if self._admin is None:
            self._admin = await self.make_client(["admin"], agency_type="local_authority")
        document = small_toolkit_document()
        response = await self.client.post(
            "/v1/toolkits", json=document, headers=self._admin.headers
        )
        assert response.status_code == 201, response.text
        return validate_definition(document)

    async def assess(
        self,
        child: KnownChild,
        completed_on: date,
        *,
        highest_area_grade: int | None = 3,
        agency_type: str = "school",
        toolkit: ToolkitDefinition | None = None,
        previous_assessment_id: str | None = None,
        overrides: Mapping[str, int] | None = None,
    ) -> str:
        """POST an assessment whose every item is graded `highest_area_grade`; its id.

        So every area is graded that, and an area is at concern exactly when the grade is 3 or more.
        None answers every item `not_known`, so no area has a grade. `overrides` (area id -> grade)
        are the practitioner's overrides, which replace those areas' grades. Uses the
        demonstration toolkit unless `toolkit` is given.
        """
        writer = await self.writer(agency_type)
        body = assessment_body(
            child=child.assessment_ref(),
            definition=toolkit or load_demo_toolkit(),
            default_grade="not_known" if highest_area_grade is None else highest_area_grade,
            completed_on=completed_on,
            previous_assessment_id=previous_assessment_id,
            overrides=[
                {"area_id": area_id, "grade": grade, "reason": "Seen at the home visit."}
                for area_id, grade in (overrides or {}).items()
            ],
        )
        created = await post_assessment(self.client, writer, body)
        outcome = created["outcome"]
        if not overrides:
            assert outcome["highest_area_grade"] == highest_area_grade, outcome
            concern = highest_area_grade is not None and highest_area_grade >= 3
            assert (outcome["areas_at_concern"] > 0) == concern, outcome
        assessment_id: str = created["id"]
        return assessment_id


async def indicator_api(
    client: httpx.AsyncClient, make_client: ClientMaker, factory: SessionFactory
) -> IndicatorApi:
    """An `IndicatorApi` for one test, with the demonstration toolkit published (idempotent)."""
    await publish_demo(factory)
    return IndicatorApi(client, make_client)


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


async def insert_children(factory: SessionFactory, count: int) -> list[KnownChild]:
    """`count` children stored directly (see `insert_child`)."""
    return [await insert_child(factory) for _ in range(count)]


async def send_as_case_system(
    client: httpx.AsyncClient, make_client: ClientMaker, events: list[dict[str, Any]]
) -> RegisteredClient:
    """Send the events as the council's case system, then return a reader of exact figures."""
    from tests.builders.case_events import post_case_events_all_stored

    writer = await make_client(["case-events:write"], agency_type="la")
    await post_case_events_all_stored(client, writer.headers, events)
    return await make_client(READ_UNSUPPRESSED)
