"""The CIN census import (issue 15), on files built from the DfE specification's structure.

Expected figures are computed here from the XML with the standard library's ElementTree,
independently of the service's parser, mapping and SQL.
"""

from __future__ import annotations

import asyncio
import hashlib
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from holidays import country_holidays
from sqlalchemy import text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from service.auth.caller import Caller
from service.census import CensusFileRefused, ImportReport, Workers, import_census_file
from service.census.parse import (
    CensusScan,
    child_chunks,
    chunk_document,
    read_census,
    read_chunk,
    scan_census,
)
from service.census.store import store_children
from service.cli.main import app as cli_app
from service.db import (
    SessionFactory,
    create_engine,
    create_session_factory,
    transaction,
)
from service.export import export_children
from service.indicators.catalogue import load_catalogue
from service.indicators.compute import compute_series
from service.migrations import migrate_database
from service.settings import Settings, get_settings
from tests.builders.case_audits import AUDIT_SCOPES, case_audit_body, post_case_audit
from tests.builders.census import SimChild, census_xml, simulate
from tests.builders.indicators import DOMAIN_TABLES, clear_domain_tables
from tests.builders.plans import scans_costed_at_nothing, seq_scans
from tests.builders.referrals import create_referral
from tests.conftest import ClientMaker

IMPORTER = Caller("census-test", "local_authority", "Test council", frozenset({"admin"}))
TABLES = (*DOMAIN_TABLES, "census_import")


@pytest.fixture(scope="module")
def population() -> list[SimChild]:
    return simulate(1000, seed=15)


@pytest.fixture
def files(tmp_path: Path, population: list[SimChild]) -> dict[int, Path]:
    paths = {}
    for year in (2023, 2024):
        path = tmp_path / f"cin_{year}.xml"
        path.write_bytes(census_xml(population, year))
        paths[year] = path
    return paths


async def empty_tables(owner_session_factory: SessionFactory) -> None:
    await clear_domain_tables(owner_session_factory)
    async with transaction(owner_session_factory) as session:
        await session.execute(text("TRUNCATE census_import CASCADE"))


@pytest.fixture
async def empty(owner_session_factory: SessionFactory) -> None:
    await empty_tables(owner_session_factory)


async def _import(factory: SessionFactory, path: Path) -> ImportReport:
    return await import_census_file(factory, path, IMPORTER)


async def _digests(factory: SessionFactory) -> dict[str, str]:
    """Every domain table's content (creation times left out), as one digest per table."""
    digests = {}
    async with transaction(factory) as session:
        for table in TABLES:
            rows = await session.scalars(
                text(
                    f"SELECT (to_jsonb(t) - 'created_at' - 'imported_at' - 'completed_at')::text "  # noqa: S608
                    f"FROM {table} t ORDER BY 1"
                )
            )
            digests[table] = hashlib.sha256("\n".join(rows).encode()).hexdigest()
    return digests


async def _count(factory: SessionFactory, sql: str) -> int:
    async with transaction(factory) as session:
        return int(await session.scalar(text(sql)) or 0)


# --- reading the XML independently --------------------------------------------------------------


def _day(element: ET.Element | None) -> date | None:
    return date.fromisoformat(element.text) if element is not None and element.text else None


@dataclass
class XmlPlan:
    child: str
    start: date
    end: date | None
    initial: str
    latest: str
    previous: int


@dataclass
class XmlEpisode:
    child: str
    referral: date
    neglect: bool
    icpcs: list[tuple[date, date | None]] = field(default_factory=list)
    plans: list[XmlPlan] = field(default_factory=list)
    cin_plans: list[tuple[date, date | None]] = field(default_factory=list)


def _episodes(path: Path) -> list[XmlEpisode]:
    episodes = []
    # Files this test suite wrote itself.
    for child in ET.parse(path).getroot().iter("Child"):  # noqa: S314
        child_id = child.findtext("ChildIdentifiers/LAchildID") or ""
        for cin in child.iter("CINdetails"):
            plans = [
                XmlPlan(
                    child_id,
                    _day(plan.find("CPPstartDate")),  # type: ignore[arg-type]
                    _day(plan.find("CPPendDate")),
                    plan.findtext("InitialCategoryOfAbuse") or "",
                    plan.findtext("LatestCategoryOfAbuse") or "",
                    int(plan.findtext("NumberOfPreviousCPP") or 0),
                )
                for plan in cin.iter("ChildProtectionPlans")
            ]
            factors = {f.text for f in cin.iter("AssessmentFactor")}
            neglect = "16A" in factors or any("NEG" in (p.initial, p.latest) for p in plans)
            episodes.append(
                XmlEpisode(
                    child=child_id,
                    referral=_day(cin.find("CINreferralDate")),  # type: ignore[arg-type]
                    neglect=neglect,
                    icpcs=[
                        (_day(s.find("S47ActualStartDate")), _day(s.find("DateOfInitialCPC")))  # type: ignore[misc]
                        for s in cin.iter("Section47")
                    ],
                    plans=plans,
                    cin_plans=[
                        (_day(p.find("CINPlanStartDate")), _day(p.find("CINPlanEndDate")))  # type: ignore[misc]
                        for p in cin.iter("CINPlanDates")
                    ],
                )
            )
    return episodes


def _in(day: date | None, first: date, last: date) -> bool:
    return day is not None and first <= day <= last


def _working_day_deadline(start: date) -> date:
    bank = country_holidays("GB", subdiv="ENG", years=range(start.year, start.year + 2))
    day, counted = start, 0
    while counted < 15:
        day += timedelta(days=1)
        if day.weekday() < 5 and day not in bank:
            counted += 1
    return day


def _a_year_before(day: date) -> date:
    try:
        return day.replace(year=day.year - 1)
    except ValueError:  # 29 February
        return date(day.year - 1, 2, 28)


def expected_figures(path: Path, first: date, last: date) -> dict[str, tuple[int, int | None]]:
    """(numerator, denominator) of each census-supported indicator over [first, last], with the
    point-in-time ones on `last`, from the XML alone."""
    episodes = _episodes(path)
    plans = [plan for episode in episodes for plan in episode.plans]
    open_on_last = [p for p in plans if p.start <= last and (p.end is None or p.end > last)]
    starts = [p for p in plans if _in(p.start, first, last)]
    neglect_starts = [p for p in starts if p.initial == "NEG"]
    repeat_children = {
        p.child
        for p in neglect_starts
        if p.previous > 0 or any(o.child == p.child and o.start < p.start for o in plans)
    }
    icpc_children = set()
    timed = within = 0
    for episode in episodes:
        plan_days = {p.start: p for p in episode.plans}
        for started, held in episode.icpcs:
            if not _in(held, first, last):
                continue
            assert held is not None
            plan = plan_days.get(held)
            if plan is not None and plan.initial == "NEG":
                icpc_children.add(episode.child)
            timed += 1
            within += held <= _working_day_deadline(started)
    by_child: dict[str, list[date]] = defaultdict(list)
    for episode in episodes:
        by_child[episode.child].append(episode.referral)
    in_period = [e for e in episodes if _in(e.referral, first, last)]
    rereferred = sum(
        1
        for e in in_period
        if any(_a_year_before(e.referral) <= other < e.referral for other in by_child[e.child])
    )
    neglect_open = sum(1 for p in open_on_last if p.latest == "NEG") + sum(
        1
        for e in episodes
        if e.neglect
        for start, end in e.cin_plans
        if start <= last and (end is None or end > last)
    )
    return {
        "cp_plan_neglect_share": (
            sum(1 for p in open_on_last if p.latest == "NEG"),
            len({p.child for p in open_on_last}),
        ),
        "cp_plan_starts_neglect_share": (len(neglect_starts), len(starts)),
        "repeat_cp_plan_neglect": (len(repeat_children), len({p.child for p in neglect_starts})),
        "icpc_neglect_children": (len(icpc_children), None),
        "rereferral_rate_12m": (rereferred, len(in_period)),
        "icpc_within_15_working_days_share": (within, timed),
        "neglect_plans_open": (neglect_open, None),
    }


# --- acceptance 1: imports, a second import changes nothing, the next year adds ------------------


async def test_a_census_file_imports_and_a_second_import_changes_nothing(
    session_factory: SessionFactory, files: dict[int, Path], empty: None
) -> None:
    episodes = _episodes(files[2023])
    report = await _import(session_factory, files[2023])

    assert report.problems == []
    assert report.children_in_file == len({e.child for e in episodes}) > 500
    assert report.referrals_created == len(episodes)
    plans = [p for e in episodes for p in e.plans]
    assert report.events_created["cp_plan_started"] == len(plans)
    assert report.events_created["cp_plan_ended"] == sum(1 for p in plans if p.end)
    assert report.events_created["cp_plan_category_changed"] == sum(
        1 for p in plans if p.latest != p.initial
    )
    assert len({p.initial for p in plans}) == 5  # several categories
    assert sum(1 for e in episodes for s in e.icpcs) == report.events_created["section47_started"]
    assert report.events_created["cin_plan_started"] == sum(len(e.cin_plans) for e in episodes)
    assert await _count(
        session_factory, "SELECT count(*) FROM referral WHERE census_import_id IS NOT NULL"
    ) == len(episodes)
    before = await _digests(session_factory)

    again = await _import(session_factory, files[2023])

    assert again.already_imported
    assert again.referrals_created == again.referrals_updated == again.children_changed == 0
    assert again.events_created == {}
    assert await _digests(session_factory) == before


async def test_the_next_years_file_adds_its_new_episodes_and_closes_what_closed(
    session_factory: SessionFactory, files: dict[int, Path], empty: None
) -> None:
    await _import(session_factory, files[2023])
    first, second = _episodes(files[2023]), _episodes(files[2024])
    known = {(e.child, e.referral) for e in first}
    first_plans = {(p.child, p.start): p for e in first for p in e.plans}
    closed = [
        p
        for e in second
        for p in e.plans
        if p.end and (p.child, p.start) in first_plans and first_plans[p.child, p.start].end is None
    ]
    assert closed  # the generated history has plans that end in the second year

    report = await _import(session_factory, files[2024])

    assert report.problems == []
    assert report.referrals_created == sum(1 for e in second if (e.child, e.referral) not in known)
    new_plans = [p for e in second for p in e.plans if (p.child, p.start) not in first_plans]
    assert report.events_created["cp_plan_started"] == len(new_plans)
    assert report.events_created["cp_plan_ended"] == len(closed) + sum(
        1 for p in new_plans if p.end
    )
    for plan in closed[:20]:
        ended_on = await _count(
            session_factory,
            "SELECT count(*) FROM care_plan p JOIN child c ON c.id = p.child_id "  # noqa: S608
            f"WHERE c.la_child_id = '{plan.child}' AND p.plan_type = 'cp' "
            f"AND p.started_on = '{plan.start}' AND p.ended_on = '{plan.end}'",
        )
        assert ended_on == 1
    # Provenance: what the second file added or changed carries its identity.
    ended_by_second = await _count(
        session_factory,
        "SELECT count(*) FROM case_event e JOIN census_import ci ON ci.id = e.census_import_id "  # noqa: S608
        f"WHERE e.event_type = 'cp_plan_ended' AND ci.sha256 = '{report.sha256}'",
    )
    assert ended_by_second == report.events_created["cp_plan_ended"]
    updated_by_second = await _count(
        session_factory,
        "SELECT count(*) FROM referral r JOIN census_import ci ON ci.id = r.census_import_id "
        "WHERE ci.census_year = '2023-24'",
    )
    assert updated_by_second == report.referrals_created + report.referrals_updated
    # Nothing doubled: one referral per episode across both files.
    assert await _count(session_factory, "SELECT count(*) FROM referral") == len(
        known | {(e.child, e.referral) for e in second}
    )
    before = await _digests(session_factory)
    await _import(session_factory, files[2024])
    await _import(session_factory, files[2023])  # an older file changes nothing either
    assert await _digests(session_factory) == before


async def test_worker_processes_import_a_file_as_one_process_does(
    session_factory: SessionFactory,
    owner_session_factory: SessionFactory,
    settings: Settings,
    runtime_database_url: str,
    files: dict[int, Path],
    empty: None,
    client: httpx.AsyncClient,
    make_client: ClientMaker,
) -> None:
    # The file cut into runs of 150 children for two worker processes, with a repeated LAchildID
    # (its first child in one run, the repeat in the last) and a bad child.
    content = files[2024].read_bytes()
    first_child = content[content.index(b"<Child>") : content.index(b"</Child>") + 8]
    path = files[2024].with_name("cin_2024_workers.xml")
    path.write_bytes(content.replace(b"</Children>", first_child + BAD_PLAN_END + b"</Children>"))
    workers = Workers(2, settings, runtime_database_url)
    here = await import_census_file(session_factory, files[2024], IMPORTER)
    await empty_tables(owner_session_factory)

    report = await import_census_file(
        session_factory, path, IMPORTER, workers=workers, children_per_batch=150
    )

    assert report.worker_processes == 2
    repeated = first_child[first_child.index(b"<LAchildID>") + 11 : first_child.index(b"</LA")]
    assert [(p.child, p.item) for p in report.problems] == [
        (repeated.decode(), "ChildIdentifiers/LAchildID"),
        ("BAD9", "CINdetails[1]/CINPlanDates[1]/CINPlanEndDate"),
    ]
    assert report.children_in_file == here.children_in_file + 2
    assert report.children_imported == here.children_imported
    for counted in ("referrals_created", "events_created", "children_changed"):
        assert getattr(report, counted) == getattr(here, counted)
    reader = await make_client(["indicators:read", "indicators:read:unsuppressed"])
    year = {"from": "2023-04-01", "to": "2024-03-31", "period": "financial_year"}
    expected = expected_figures(files[2024], date(2023, 4, 1), date(2024, 3, 31))
    for indicator in ("cp_plan_starts_neglect_share", "rereferral_rate_12m"):
        got = await _series(client, reader.headers, indicator, **year)
        assert got == expected[indicator]
    before = await _digests(session_factory)
    again = await import_census_file(
        session_factory, path, IMPORTER, workers=workers, children_per_batch=150
    )
    assert again.children_changed == again.referrals_created == 0
    assert await _digests(session_factory) == before


# The tables a batch reads from or writes to, and whose rows it finds through their indexes.
IMPORT_TABLES = [
    "child",
    "referral",
    "case_event",
    "care_plan",
    "care_plan_category_change",
    "section47_enquiry",
    "icpc",
]


async def test_a_batch_reads_stored_rows_by_key_however_small_its_tables_looked_when_planned(
    runtime_database_url: str, files: dict[int, Path], empty: None
) -> None:
    # A worker's plans are made at its first batch and kept, while the tables grow: planned with
    # scans made to cost nothing, as if every table were tiny, a batch must still find each row
    # through an index, not read a table whole (once a batch, or once a child, as it grows).
    census = read_census(files[2024])
    assert census.header is not None
    batch = census.children[:200]
    async with scans_costed_at_nothing(runtime_database_url) as connection:
        import_id = await connection.fetchval(
            "INSERT INTO census_import (id, sha256, census_year, la_code, reference_date, "
            "children, imported_by) VALUES (gen_random_uuid(), $1, $2, $3, $4, 200, 'test') "
            "RETURNING id",
            "0" * 64,
            census.header.census_year,
            census.header.la_code,
            census.header.reference_date,
        )
        before = await seq_scans(connection, IMPORT_TABLES)
        first = await store_children(connection, census.header, import_id, batch)
        # Again: now every child, referral, event and plan is found stored.
        again = await store_children(connection, census.header, import_id, batch)
        after = await seq_scans(connection, IMPORT_TABLES)
    assert first.problems == again.problems == []
    assert first.tally.referrals_created > 0
    assert first.tally.events_created
    assert again.tally.changed == again.tally.referrals_created == 0
    assert after == before


def test_a_file_with_a_namespace_prefix_is_cut_at_exactly_its_child_start_tags(
    tmp_path: Path,
) -> None:
    # The worker processes' runs start at the `Child` start tags found by a search of the bytes:
    # with a prefix (`<c:Child>`), never at `</c:Child>`, `<c:Children>` or `<c:ChildIdentifiers>`;
    # and a `<Child>` inside a comment makes the file one that is not cut at all.
    plain = census_xml(simulate(12, seed=7), 2024)
    prefixed = (
        plain.replace(b"</", b"\x00")
        .replace(b"<", b"<c:")
        .replace(b"\x00", b"</c:")
        .replace(b"<c:?xml", b"<?xml")
        .replace(b"<c:Message>", b"<c:Message xmlns:c='urn:dfe:cin'>")
    )
    path = tmp_path / "prefixed.xml"
    path.write_bytes(prefixed)
    scan = scan_census(path)
    assert scan.header is not None
    assert scan.children == prefixed.count(b"<c:Child>") > 5

    chunks = child_chunks(prefixed, scan, 5)

    starts = [start for _, start, _ in chunks]
    tags = [index for index in range(len(prefixed)) if prefixed.startswith(b"<c:Child>", index)]
    assert [first for first, _, _ in chunks] == list(range(1, scan.children + 1, 5))
    assert starts == tags[::5]
    assert chunks[-1][2] == prefixed.index(b"</c:Children>")
    ids = [
        child.la_child_id
        for first, start, end in chunks
        for child in read_chunk(
            chunk_document(scan, prefixed[start:end]), scan.header, first, {}
        ).children
    ]
    # The test's own synthetic file, read by the standard library independently of the service.
    expected = ET.fromstring(prefixed).iterfind(".//{urn:dfe:cin}LAchildID")  # noqa: S314
    assert ids == [element.text for element in expected]

    commented = prefixed.replace(b"<c:Children>", b"<c:Children><!-- <Child> -->")
    assert child_chunks(commented, scan_census_bytes(tmp_path, commented), 5) == []


def scan_census_bytes(folder: Path, content: bytes) -> CensusScan:
    path = folder / "commented.xml"
    path.write_bytes(content)
    return scan_census(path)


# --- acceptance 2: indicators equal figures computed from the XML ---------------------------------


async def _series(
    client: httpx.AsyncClient, headers: dict[str, str], indicator: str, **params: str
) -> tuple[int, int | None]:
    response = await client.get(f"/v1/indicators/{indicator}", params=params, headers=headers)
    assert response.status_code == 200, response.text
    [point] = response.json()["series"]
    return point["numerator"], point["denominator"]


async def test_census_indicators_equal_the_figures_computed_from_the_xml(
    session_factory: SessionFactory,
    owner_session_factory: SessionFactory,
    files: dict[int, Path],
    empty: None,
    client: httpx.AsyncClient,
    make_client: ClientMaker,
) -> None:
    await _import(session_factory, files[2024])
    reader = await make_client(["indicators:read", "indicators:read:unsuppressed"])
    first, last = date(2023, 4, 1), date(2024, 3, 31)
    expected = expected_figures(files[2024], first, last)
    year = {"from": "2023-04-01", "to": "2024-03-31", "period": "financial_year"}
    snapshot = {"from": "2024-03-01", "to": "2024-03-31", "period": "snapshot"}
    got = {}
    for indicator in expected:
        params = snapshot if indicator in ("cp_plan_neglect_share", "neglect_plans_open") else year
        got[indicator] = await _series(client, reader.headers, indicator, **params)

    assert got == expected
    assert all(numerator > 0 for numerator, _ in expected.values())


# --- acceptance 3: bad files are reported, nothing partial stored ---------------------------------


def _file_with(children_xml: str, year: int = 2024, prolog: str = "") -> bytes:
    return (
        f"<?xml version='1.0'?>{prolog}<Message><Header><CollectionDetails>"
        f"<Collection>CIN</Collection><Year>{year}</Year><ReferenceDate>{year}-03-31"
        "</ReferenceDate></CollectionDetails><Source><LEA>201</LEA></Source></Header>"
        f"<Children>{children_xml}</Children></Message>"
    ).encode()


def _child(la_id: str, episode: str, identifiers: str = "") -> str:
    return (
        f"<Child><ChildIdentifiers><LAchildID>{la_id}</LAchildID>"
        f"<PersonBirthDate>2015-01-01</PersonBirthDate><GenderCurrent>1</GenderCurrent>"
        f"{identifiers}</ChildIdentifiers><ChildCharacteristics><Ethnicity>WBRI</Ethnicity>"
        f"</ChildCharacteristics><CINdetails><CINreferralDate>2023-06-01</CINreferralDate>"
        f"<ReferralSource>2A</ReferralSource><PrimaryNeedCode>N1</PrimaryNeedCode>{episode}"
        "</CINdetails></Child>"
    )


GOOD = _child(
    "GOOD1",
    "<ChildProtectionPlans><CPPstartDate>2023-07-01</CPPstartDate><InitialCategoryOfAbuse>NEG"
    "</InitialCategoryOfAbuse><LatestCategoryOfAbuse>NEG</LatestCategoryOfAbuse>"
    "<NumberOfPreviousCPP>0</NumberOfPreviousCPP></ChildProtectionPlans>",
)

BAD_PLAN_END = _child(
    "BAD9",
    "<CINPlanDates><CINPlanStartDate>2023-09-01</CINPlanStartDate><CINPlanEndDate>2023-08-01"
    "</CINPlanEndDate></CINPlanDates>",
).encode()


@pytest.mark.parametrize(
    ("content", "item", "message"),
    [
        (b"this is not XML at all", "file", "not well-formed XML"),
        (b"<Root><Header/></Root>", "file", "the root element is Root, not Message"),
        (_file_with(GOOD)[:-40], "file", "not well-formed XML"),
        (
            _file_with(
                GOOD,
                prolog='<!DOCTYPE Message [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>',
            ),
            "file",
            "declares a DTD",
        ),
        (_file_with(GOOD, year=2016), "Message/Header/CollectionDetails/Year", "not a supported"),
    ],
    ids=["not-xml", "wrong-root", "truncated", "dtd-entities", "unsupported-year"],
)
async def test_an_unusable_file_is_refused_whole_and_stores_nothing(
    session_factory: SessionFactory,
    tmp_path: Path,
    empty: None,
    content: bytes,
    item: str,
    message: str,
) -> None:
    path = tmp_path / "bad.xml"
    path.write_bytes(content)

    with pytest.raises(CensusFileRefused) as refused:
        await _import(session_factory, path)

    [problem] = refused.value.problems
    assert problem.child is None
    assert problem.item == item
    assert message in problem.message
    for table in ("child", "referral", "case_event", "census_import"):
        assert await _count(session_factory, f"SELECT count(*) FROM {table}") == 0  # noqa: S608


@pytest.mark.parametrize(
    ("bad_child", "child", "item", "message"),
    [
        (
            _child("", "").replace("<LAchildID></LAchildID>", ""),
            "child 2",
            "ChildIdentifiers/LAchildID",
            "missing",
        ),
        (
            _child(
                "BAD1",
                "<ChildProtectionPlans><CPPstartDate>2023-08-01</CPPstartDate><CPPendDate>"
                "2023-07-01</CPPendDate><InitialCategoryOfAbuse>NEG</InitialCategoryOfAbuse>"
                "<LatestCategoryOfAbuse>NEG</LatestCategoryOfAbuse></ChildProtectionPlans>",
            ),
            "BAD1",
            "CINdetails[1]/ChildProtectionPlans[1]/CPPendDate",
            "a plan cannot end before it starts",
        ),
        (
            _child(
                "BAD2", "<Section47><S47ActualStartDate>2023-13-45</S47ActualStartDate></Section47>"
            ),
            "BAD2",
            "CINdetails[1]/Section47[1]/S47ActualStartDate",
            "not a date",
        ),
        (
            _child(
                "BAD3",
                "<ChildProtectionPlans><CPPstartDate>2023-08-01</CPPstartDate>"
                "<InitialCategoryOfAbuse>XYZ</InitialCategoryOfAbuse><LatestCategoryOfAbuse>NEG"
                "</LatestCategoryOfAbuse></ChildProtectionPlans>",
            ),
            "BAD3",
            "CINdetails[1]/ChildProtectionPlans[1]/InitialCategoryOfAbuse",
            "not a code",
        ),
        (
            _child(
                "BAD4",
                "<Section47><S47ActualStartDate>2023-08-10</S47ActualStartDate>"
                "<DateOfInitialCPC>2023-08-01</DateOfInitialCPC></Section47>",
            ),
            "BAD4",
            "CINdetails[1]/Section47[1]/DateOfInitialCPC",
            "an ICPC cannot be held before its Section 47 enquiry started",
        ),
    ],
    ids=["no-la-child-id", "plan-ends-before-start", "bad-date", "unknown-category", "icpc-early"],
)
async def test_a_bad_child_is_reported_by_child_and_item_and_left_out_whole(
    session_factory: SessionFactory,
    tmp_path: Path,
    empty: None,
    bad_child: str,
    child: str,
    item: str,
    message: str,
) -> None:
    path = tmp_path / "one_bad.xml"
    path.write_bytes(_file_with(GOOD + bad_child))

    report = await _import(session_factory, path)

    [problem] = report.problems
    assert (problem.child, problem.item) == (child, item)
    assert message in problem.message
    assert report.children_skipped == 1
    assert report.children_imported == 1
    assert await _count(session_factory, "SELECT count(*) FROM child") == 1
    assert (
        await _count(session_factory, "SELECT count(*) FROM child WHERE la_child_id = 'GOOD1'") == 1
    )
    assert await _count(session_factory, "SELECT count(*) FROM referral") == 1
    assert await _count(session_factory, "SELECT count(*) FROM case_event") == 1


async def test_a_child_whose_history_contradicts_stored_records_is_left_out_whole(
    session_factory: SessionFactory,
    tmp_path: Path,
    empty: None,
    client: httpx.AsyncClient,
    make_client: ClientMaker,
) -> None:
    case_system = await make_client(["case-events:write"], agency_type="local_authority")
    response = await client.post(
        "/v1/case-events",
        headers=case_system.headers,
        json={
            "events": [
                {
                    "event_id": "live-plan-1",
                    "type": "cp_plan_started",
                    "child": {"la_child_id": "LIVE1"},
                    "occurred_on": "2023-06-15",
                    "plan_ref": "P1",
                    "initial_category": "EMO",
                    "domestic_abuse_focus": False,
                }
            ]
        },
    )
    assert response.json()["counts"]["stored"] == 1
    overlapping = GOOD.replace("GOOD1", "LIVE1")
    path = tmp_path / "overlap.xml"
    path.write_bytes(_file_with(overlapping + GOOD))

    report = await _import(session_factory, path)

    [problem] = report.problems
    assert (problem.child, problem.item) == (
        "LIVE1",
        "CINdetails[1]/ChildProtectionPlans[1]/CPPstartDate",
    )
    assert "already has an open child protection plan" in problem.message
    assert (
        await _count(
            session_factory,
            "SELECT count(*) FROM referral r JOIN child c ON c.id = r.child_id "
            "WHERE c.la_child_id = 'LIVE1'",
        )
        == 0
    )
    assert (
        await _count(
            session_factory, "SELECT count(*) FROM case_event WHERE census_import_id IS NOT NULL"
        )
        == 1
    )  # GOOD1's plan only


async def test_a_dry_run_reports_and_stores_nothing(
    session_factory: SessionFactory, tmp_path: Path, empty: None
) -> None:
    path = tmp_path / "dry.xml"
    path.write_bytes(
        _file_with(GOOD + _child("BAD2", "<CINclosureDate>2023-05-01</CINclosureDate>"))
    )

    report = await import_census_file(session_factory, path, IMPORTER, dry_run=True)

    assert [(p.child, p.item) for p in report.problems] == [
        ("BAD2", "CINdetails[1]/ReasonForClosure"),
        ("BAD2", "CINdetails[1]/CINclosureDate"),
    ]
    for table in ("child", "referral", "census_import"):
        assert await _count(session_factory, f"SELECT count(*) FROM {table}") == 0  # noqa: S608


# --- acceptance 5: export, then restore into an empty database, reproduces every indicator -------


async def _every_indicator(factory: SessionFactory) -> dict[str, object]:
    figures: dict[str, object] = {}
    async with transaction(factory) as session:
        for meta in load_catalogue().values():
            # Every indicator, by year and at each month's end where offered, with and without
            # its first breakdown; exact, and as published (suppressed and perturbed).
            for period, breakdown, unsuppressed in (
                (period, breakdown, unsuppressed)
                for period in meta.periods
                if period in ("year", "snapshot")
                for breakdown in (None, *meta.breakdowns[:1])
                for unsuppressed in (True, False)
            ):
                series = await compute_series(
                    session,
                    meta,
                    start=date(2021, 4, 1),
                    end=date(2024, 3, 31),
                    period=period,
                    breakdown=breakdown,
                    unsuppressed=unsuppressed,
                )
                figures[f"{meta.id}/{period}/{breakdown}/{unsuppressed}"] = list(series.points)
    return figures


def _cli(monkeypatch: pytest.MonkeyPatch, url: str, *arguments: str) -> str:
    """Run `neglect-service ARGUMENTS` against the database at `url`; its standard output."""
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.delenv("NEGLECT_OWNER_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli_app, list(arguments))
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture
async def fresh_database_url(database_url: str) -> AsyncIterator[str]:
    """A database of its own, migrated and empty, dropped afterwards."""
    name = f"{make_url(database_url).database}_restore"
    server = make_url(database_url).set(drivername="postgresql")
    connection = await asyncpg.connect(server.render_as_string(hide_password=False))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
        url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
        await asyncio.to_thread(migrate_database, url)
        yield url
    finally:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.close()


async def test_export_then_import_into_a_fresh_database_reproduces_every_indicator(
    session_factory: SessionFactory,
    runtime_database_url: str,
    fresh_database_url: str,
    settings: Settings,
    files: dict[int, Path],
    empty: None,
    client: httpx.AsyncClient,
    make_client: ClientMaker,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    await _import(session_factory, files[2023])
    await _import(session_factory, files[2024])
    # Live data beside the imported history: a referral and a case audit through the API.
    referrer = await make_client(["referrals:write"], agency_type="school")
    await create_referral(client, referrer)
    auditor = await make_client(AUDIT_SCOPES)
    await post_case_audit(client, auditor, case_audit_body())
    before = await _every_indicator(session_factory)
    children = await _count(session_factory, "SELECT count(*) FROM child")
    exported = tmp_path / "children.ndjson"

    # `neglect-service export children --format ndjson`, as the service's role...
    await asyncio.to_thread(
        _cli,
        monkeypatch,
        runtime_database_url,
        "export",
        "children",
        "--format",
        "ndjson",
        "--output",
        str(exported),
    )
    # ...then `neglect-service import children` into a database of its own, as its owner.
    await asyncio.to_thread(
        _cli, monkeypatch, fresh_database_url, "import", "children", str(exported), "--json"
    )

    lines = exported.read_text().splitlines()
    assert len(lines) == children
    engine = create_engine(settings, fresh_database_url)
    try:
        fresh = create_session_factory(engine)
        assert await _every_indicator(fresh) == before
        async with transaction(fresh) as session:
            again = [line async for line in export_children(session, IMPORTER)]
    finally:
        await engine.dispose()
    assert again == lines
    exports = await _count(
        session_factory,
        "SELECT count(*) FROM audit_event WHERE action = 'export' AND resource_type = 'child'",
    )
    assert exports >= children
