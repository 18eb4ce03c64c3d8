"""Posts case events through the real API, from a process of its own, while a test pages through
the OData feed (tests/api/test_feed_paging_concurrency.py).

    python -m tests.processes.case_event_writer DATABASE_URL CLIENT_ID BATCHES NHS_NUMBER...

The key-encryption key comes from NEGLECT_KEY_ENCRYPTION_KEY, as for any replica. Each batch is
one missed and one attended health appointment per child in June 2024, so the
`health_appointment_attendance` figures change with every batch. It prints `posted N` after each
stored batch, and `done` at the end.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from datetime import date

import httpx

from api.main import create_app
from service.auth.keys import issue_access_token
from service.settings import Settings

ISSUER = "http://test"
AUDIENCE = "neglect-service"


async def main(database_url: str, client_id: str, batches: int, nhs_numbers: list[str]) -> None:
    settings = Settings(
        issuer=ISSUER,
        audience=AUDIENCE,
        database_url=None,
        env="production",
        key_encryption_key=os.environ["NEGLECT_KEY_ENCRYPTION_KEY"],
        key_encryption_key_file=None,
        log_level="WARNING",
    )
    app = create_app(settings, database_url)
    async with app.router.lifespan_context(app):
        token = issue_access_token(
            await app.state.key_ring(),
            issuer=ISSUER,
            audience=AUDIENCE,
            client_id=client_id,
            scopes=["case-events:write"],
            ttl_s=900,
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            for batch in range(1, batches + 1):
                events = [
                    {
                        "type": "health_appointment",
                        "event_id": f"EV-{uuid.uuid4().hex}",
                        "child": {"nhs_number": nhs_number},
                        "occurred_on": date(2024, 6, 1 + (batch % 28)).isoformat(),
                        "kind": "dental",
                        "attended": attended,
                    }
                    for nhs_number in nhs_numbers
                    for attended in (False, True)
                ]
                response = await http.post(
                    "/v1/case-events",
                    json={"events": events},
                    headers={"Authorization": f"Bearer {token}"},
                )
                stored = [r for r in response.json()["results"] if r["status"] == "stored"]
                if response.status_code != 200 or len(stored) != len(events):
                    print(f"failed {response.status_code} {response.text[:300]}", flush=True)
                    sys.exit(1)
                print(f"posted {batch}", flush=True)
                await asyncio.sleep(0.05)
    print("done", flush=True)


if __name__ == "__main__":
    url, client, count, *children = sys.argv[1:]
    asyncio.run(main(url, client, int(count), children))
