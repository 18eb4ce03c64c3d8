"""Paging through the OData feed walks every row exactly once while another process posts case
events that change the figures (issue 13, acceptance 3).

The writer (tests/processes/case_event_writer.py) runs as its own operating-system process with its
own app instance and connections, posting health appointments through `POST /v1/case-events`
between the feed's pages. The walk must return each point once, as many as `@odata.count` said,
exactly the rows of the snapshot its first page took; and a pull started after the writes must see
the new figures, equal to the JSON API's.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from service.db import SessionFactory, transaction
from service.feed import decode_skiptoken
from tests.builders.feed import WINDOW, basic, issue_feed_key, json_rows, load_partnership, row_of
from tests.builders.feed import same_rows as same_multiset
from tests.conftest import TEST_KEY_ENCRYPTION_KEY, ClientMaker

ROOT = Path(__file__).resolve().parents[2]
INDICATOR = "health_appointment_attendance"
BATCHES = 40


@pytest.fixture(scope="module", autouse=True)
async def partnership(database_url: str) -> None:
    await load_partnership(database_url)


async def _children(factory: SessionFactory, count: int) -> list[str]:
    async with transaction(factory) as session:
        return list(
            (
                await session.scalars(
                    text(
                        "SELECT nhs_number FROM child WHERE nhs_number IS NOT NULL "
                        "ORDER BY nhs_number LIMIT :n"
                    ),
                    {"n": count},
                )
            ).all()
        )


async def _june(client: httpx.AsyncClient, headers: dict[str, str]) -> Any:
    response = await client.get(
        "/odata/IndicatorPoints",
        params={
            **WINDOW,
            "$filter": f"IndicatorId eq '{INDICATOR}' and Breakdown eq null and Label eq '2024-06'",
        },
        headers=headers,
    )
    [row] = response.json()["value"]
    return row


async def test_paging_walks_every_row_once_while_another_process_posts_case_events(
    client: httpx.AsyncClient,
    app: FastAPI,
    make_client: ClientMaker,
    session_factory: SessionFactory,
    database_url: str,
) -> None:
    reader = await make_client(["indicators:read"], agency_type="local_authority")
    headers = basic(reader.client_id, await issue_feed_key(app, reader))
    case_system = await make_client(["case-events:write"], agency_type="local_authority")
    # A feed key reads perturbed figures (cell-key method): exact arithmetic needs exact figures.
    analyst = await make_client(
        ["indicators:read", "indicators:read:unsuppressed"], agency_type="local_authority"
    )
    before = await _june(client, headers)
    before_exact = await _june(client, analyst.headers)
    writer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.processes.case_event_writer",
        database_url,
        case_system.client_id,
        str(BATCHES),
        *await _children(session_factory, 10),
        cwd=ROOT,
        env={**os.environ, "NEGLECT_KEY_ENCRYPTION_KEY": TEST_KEY_ENCRYPTION_KEY},
        stdout=asyncio.subprocess.PIPE,
    )
    assert writer.stdout is not None
    posted: list[str] = []

    async def follow() -> None:
        assert writer.stdout is not None
        async for line in writer.stdout:
            posted.append(line.decode().strip())

    following = asyncio.create_task(follow())
    try:
        while not posted:
            await asyncio.sleep(0.05)
        at_first_page = len(posted)
        # As OData clients do, the preference goes with every request.
        paging = {**headers, "Prefer": "odata.maxpagesize=150"}
        response = await client.get(
            "/odata/IndicatorPoints", params={**WINDOW, "$count": "true"}, headers=paging
        )
        pages = [response.json()]
        while "@odata.nextLink" in pages[-1]:
            await asyncio.sleep(0.05)  # let the writer get a batch in between pages
            response = await client.get(pages[-1]["@odata.nextLink"], headers=paging)
            assert response.status_code == 200, response.text
            pages.append(response.json())
        at_last_page = len(posted)
        assert await writer.wait() == 0, posted[-3:]
    finally:
        if writer.returncode is None:
            writer.kill()
            await writer.wait()
        await following

    rows = [row for page in pages for row in page["value"]]
    ids = [row["PointId"] for row in rows]
    token = decode_skiptoken(httpx.URL(pages[0]["@odata.nextLink"]).params["$skiptoken"])
    async with transaction(session_factory) as session:
        snapshot = (
            await session.scalars(
                text(
                    "SELECT point_id FROM feed_snapshot_point WHERE snapshot_id = :snapshot "
                    "ORDER BY position"
                ),
                {"snapshot": token.snapshot_id},
            )
        ).all()

    assert posted[-1] == "done"
    assert at_last_page > at_first_page + 1, "the writer must post while the pages are read"
    assert len(pages) > 5, [(len(p["value"]), "@odata.nextLink" in p) for p in pages]
    assert len(ids) == len(set(ids)), "a point came twice"
    assert len(ids) == pages[0]["@odata.count"], "a point was skipped"
    assert ids == list(snapshot)

    # The walk read one state of the data, taken at its first page: later batches are not in it.
    # A new pull sees them all, and equals the JSON API.
    walked_june = next(
        row
        for row in rows
        if row["IndicatorId"] == INDICATOR
        and row["Breakdown"] is None
        and row["Label"] == "2024-06"
    )
    after = await _june(client, headers)
    assert before["Denominator"] is not None
    assert walked_june["Denominator"] is not None
    assert before["Denominator"] < walked_june["Denominator"] < after["Denominator"]
    after_exact = await _june(client, analyst.headers)
    assert after_exact["Denominator"] == before_exact["Denominator"] + 2 * 10 * BATCHES
    fresh, _ = await _walk_all(client, headers)
    assert same_multiset([row_of(row) for row in fresh], await json_rows(client, reader.headers))


async def _walk_all(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> tuple[list[dict[str, Any]], int]:
    response = await client.get(
        "/odata/IndicatorPoints",
        params=WINDOW,
        headers={**headers, "Prefer": "odata.maxpagesize=2000"},
    )
    pages = [response.json()]
    while "@odata.nextLink" in pages[-1]:
        pages.append((await client.get(pages[-1]["@odata.nextLink"], headers=headers)).json())
    return [row for page in pages for row in page["value"]], len(pages)
