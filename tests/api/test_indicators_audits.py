"""The case-audit indicators against hand-computed answers, over a set of audits in which each
likely misreading (counting every audit rather than only those of neglect cases; counting
"requires improvement" as good) gives a different figure from the right one."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest

from tests.builders.case_audits import AUDIT_SCOPES, case_audit_body, post_case_audit
from tests.builders.indicators import READ_UNSUPPRESSED, fetch_series, figures
from tests.conftest import ClientMaker

pytestmark = pytest.mark.usefixtures("empty_domain_tables")


@dataclass(frozen=True)
class Audit:
    work: str
    neglect: bool
    practice: str
    impact: str
    toolkit_used: bool


CP, CIN, EH = "child_protection_plan", "child_in_need_plan", "early_help_assessment"
O, G, RI, I = "outstanding", "good", "requires_improvement", "inadequate"  # noqa: E741

AUDITS = [
    # Neglect featured: 12 audits. Impact good or better: 7 (CP 3 of 5, CIN 2 of 4, EH 2 of 3);
    # with "requires improvement" counted as good it would be 11. Toolkit used in 5. Practice
    # good or better in 9 (11 with requires improvement).
    Audit(CP, True, G, O, True),
    Audit(CP, True, G, G, True),
    Audit(CP, True, O, G, False),
    Audit(CP, True, RI, RI, False),
    Audit(CP, True, I, I, False),
    Audit(CIN, True, G, G, True),
    Audit(CIN, True, G, G, False),
    Audit(CIN, True, G, RI, False),
    Audit(CIN, True, RI, RI, True),
    Audit(EH, True, G, O, True),
    Audit(EH, True, G, G, False),
    Audit(EH, True, G, RI, False),
    # Neglect did not feature: 7 audits, none of which may count. Impact good in 6, toolkit used
    # in 6, practice good in 2.
    *[Audit(CP, False, RI, G, True) for _ in range(5)],
    Audit(CIN, False, G, G, True),
    Audit(EH, False, G, I, False),
]


async def record_audits(client: httpx.AsyncClient, make_client: ClientMaker) -> None:
    team = await make_client(AUDIT_SCOPES, agency_type="local_authority")
    for index, audit in enumerate(AUDITS):
        await post_case_audit(
            client,
            team,
            case_audit_body(
                audited_work=audit.work,
                neglect_featured=audit.neglect,
                practice_grade=audit.practice,
                impact_grade=audit.impact,
                toolkit_used=audit.toolkit_used,
                toolkit_use_effective=audit.toolkit_used or None,
                audited_on=f"2024-0{1 + index % 3}-15",
            ),
        )


async def year_2024(
    client: httpx.AsyncClient, make_client: ClientMaker, indicator_id: str, **params: str
) -> list[tuple[str | None, tuple[object, object, object]]]:
    reader = await make_client(READ_UNSUPPRESSED)
    series = await fetch_series(
        client,
        reader.headers,
        indicator_id,
        from_="2024-01-01",
        to="2024-12-31",
        period="year",
        **params,
    )
    return [(point["group"], figures(point)) for point in series]


async def test_impact_good_or_better_counts_only_neglect_cases_and_only_good_grades(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    await record_audits(client, make_client)

    total = await year_2024(client, make_client, "audit_neglect_impact_good_share")

    # Counting every audit would give 13 of 19 (68.4); requires improvement as good, 11 of 12.
    assert total == [(None, (7, 12, 58.3))]


async def test_impact_good_or_better_by_plan_type(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    await record_audits(client, make_client)

    by_work = await year_2024(
        client, make_client, "audit_neglect_impact_good_share", breakdown="audited_work"
    )

    assert by_work == [
        (EH, (2, 3, 66.7)),
        (CIN, (2, 4, 50.0)),
        (CP, (3, 5, 60.0)),
    ]


async def test_toolkit_use_counts_only_neglect_cases(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    await record_audits(client, make_client)

    total = await year_2024(client, make_client, "audit_neglect_toolkit_used_share")

    # Counting every audit would give 11 of 19 (57.9).
    assert total == [(None, (5, 12, 41.7))]


async def test_effective_practice_counts_only_neglect_cases_and_only_good_grades(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    await record_audits(client, make_client)

    total = await year_2024(client, make_client, "audit_neglect_practice_effective_share")

    # Counting every audit would give 11 of 19 (57.9); requires improvement as good, 11 of 12.
    assert total == [(None, (9, 12, 75.0))]


async def test_audits_fall_in_the_period_of_their_audit_day(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    await record_audits(client, make_client)
    reader = await make_client(READ_UNSUPPRESSED)

    series = await fetch_series(
        client,
        reader.headers,
        "audit_neglect_impact_good_share",
        from_="2024-01-01",
        to="2024-04-30",
    )

    # Neglect audits by month: January holds indexes 0, 3, 6, 9 (impact O, RI, G, O: 3 of 4).
    assert [(point["label"], figures(point)) for point in series] == [
        ("2024-01", (3, 4, 75.0)),
        ("2024-02", (2, 4, 50.0)),
        ("2024-03", (2, 4, 50.0)),
        ("2024-04", (0, 0, None)),
    ]
