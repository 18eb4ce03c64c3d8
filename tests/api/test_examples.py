"""Every request body in the OpenAPI document has an example, and each example, posted as it
stands, succeeds (issue 11): what a reader copies from `/docs` or `/redoc` works. A 201 answer
carries `Location`, and that path answers 200.

The examples are read from the served `/openapi.json`, not from the Python constants, so these
tests check what a reader sees.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import httpx
import pytest

from api.openapi_export import build_openapi
from service.auth.scopes import SCOPES
from tests.bodies import valid_referral_body
from tests.conftest import ClientMaker, RegisteredClient

Operation = tuple[str, str]


def request_bodies(document: dict[str, Any]) -> dict[Operation, dict[str, Any]]:
    """Each operation with a request body, by (METHOD, path): its media types' objects."""
    return {
        (method.upper(), path): operation["requestBody"]["content"]
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "requestBody" in operation
    }


DOCUMENT = build_openapi()
BODIES = request_bodies(DOCUMENT)


def test_every_request_body_has_an_example() -> None:
    assert len(BODIES) >= 11
    missing = [
        f"{method} {path} ({media})"
        for (method, path), content in BODIES.items()
        for media, media_object in content.items()
        if "example" not in media_object
    ]
    assert missing == []


def test_every_201_answer_documents_location() -> None:
    created = [
        (method, path, operation["responses"]["201"])
        for path, item in DOCUMENT["paths"].items()
        for method, operation in item.items()
        if "201" in operation.get("responses", {})
    ]
    assert len(created) >= 4
    for method, path, response in created:
        assert "Location" in response.get("headers", {}), f"{method} {path}"


class ExamplePoster:
    """Posts the served document's examples, unchanged, and remembers which it posted."""

    def __init__(self, http: httpx.AsyncClient, document: dict[str, Any]) -> None:
        self.http = http
        self.bodies = request_bodies(document)
        self.posted: set[Operation] = set()

    async def post(
        self,
        path_template: str,
        headers: dict[str, str],
        **path_parameters: str,
    ) -> httpx.Response:
        ((media, media_object),) = self.bodies[("POST", path_template)].items()
        example = media_object["example"]
        path = path_template.format(**path_parameters)
        self.posted.add(("POST", path_template))
        if media == "application/x-www-form-urlencoded":
            return await self.http.post(path, data=example, headers=headers)
        if media == "application/xml":
            return await self.http.post(
                path, content=example.encode(), headers={**headers, "Content-Type": media}
            )
        return await self.http.post(path, json=example, headers=headers)

    async def assert_location_serves(
        self, response: httpx.Response, headers: dict[str, str]
    ) -> None:
        location = response.headers["Location"]
        assert location.startswith("/v1/")
        read = await self.http.get(location, headers=headers)
        assert read.status_code == 200, f"GET {location}: {read.status_code} {read.text}"
        if "id" in response.json():
            assert read.json()["id"] == response.json()["id"]


@pytest.fixture
async def poster(client: httpx.AsyncClient) -> ExamplePoster:
    served = await client.get("/openapi.json")
    assert served.status_code == 200
    return ExamplePoster(client, served.json())


def idempotent(headers: dict[str, str]) -> dict[str, str]:
    return {**headers, "Idempotency-Key": f"example-{uuid.uuid4()}"}


async def test_every_request_body_example_posts_successfully(
    poster: ExamplePoster, make_client: ClientMaker
) -> None:
    caller: RegisteredClient = await make_client(list(SCOPES), agency_type="front_door")
    auth = caller.headers

    published = await poster.post("/v1/toolkits", auth)
    # 200 when an earlier run in this database published the same content already.
    assert published.status_code in {200, 201}, published.text
    if published.status_code == 201:
        await poster.assert_location_serves(published, auth)
    toolkit = published.json()

    scored = await poster.post(
        "/v1/toolkits/{toolkit_id}/versions/{version}/score",
        auth,
        toolkit_id=toolkit["toolkit_id"],
        version=toolkit["version"],
    )
    assert scored.status_code == 200, scored.text

    key = idempotent(auth)
    referral = await poster.post("/v1/referrals", key)
    assert referral.status_code == 201, referral.text
    await poster.assert_location_serves(referral, auth)
    replayed = await poster.post("/v1/referrals", key)
    assert replayed.status_code == 201
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.headers["Location"] == referral.headers["Location"]

    assessment = await poster.post("/v1/assessments", idempotent(auth))
    assert assessment.status_code == 201, assessment.text
    await poster.assert_location_serves(assessment, auth)
    assert assessment.json()["child_id"] == referral.json()["child_id"]

    events = await poster.post("/v1/case-events", auth)
    assert events.status_code == 200, events.text
    assert [result["status"] for result in events.json()["results"]] == ["stored", "stored"]

    audit = await poster.post("/v1/case-audits", idempotent(auth))
    assert audit.status_code == 201, audit.text
    await poster.assert_location_serves(audit, auth)
    assert audit.json()["child_id"] == referral.json()["child_id"]

    decided = await poster.post(
        "/v1/referrals/{referral_id}/decision", auth, referral_id=referral.json()["id"]
    )
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "decided"

    # Another referral to withdraw: the example referral has just been decided.
    other = await poster.http.post(
        "/v1/referrals", json=valid_referral_body(seed=4242), headers=idempotent(auth)
    )
    assert other.status_code == 201, other.text
    withdrawn = await poster.post(
        "/v1/referrals/{referral_id}/withdraw", auth, referral_id=other.json()["id"]
    )
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["status"] == "withdrawn"

    registered = await poster.post("/v1/clients", auth)
    assert registered.status_code == 201, registered.text
    await poster.assert_location_serves(registered, auth)
    assert registered.headers["Location"].endswith(registered.json()["client_id"])

    # The token request's example with the client it registered, by HTTP Basic.
    new_client = registered.json()
    basic = base64.b64encode(
        f"{new_client['client_id']}:{new_client['client_secret']}".encode()
    ).decode()
    token = await poster.post("/oauth/token", {"Authorization": f"Basic {basic}"})
    assert token.status_code == 200, token.text
    assert token.json()["token_type"].lower() == "bearer"

    # A feed key, for a client that may read indicators (the caller; the client registered above
    # may not, and would be refused with 409).
    feed_key = await poster.post(
        "/v1/clients/{client_id}/feed-keys", auth, client_id=caller.client_id
    )
    assert feed_key.status_code == 201, feed_key.text
    await poster.assert_location_serves(feed_key, auth)
    assert feed_key.headers["Location"].endswith(feed_key.json()["key_id"])
    # Its rotation (no body) is a 201 with the new key's Location too.
    rotated = await poster.http.post(f"{feed_key.headers['Location']}/rotate", headers=auth)
    assert rotated.status_code == 201, rotated.text
    await poster.assert_location_serves(rotated, auth)
    assert rotated.headers["Location"] != feed_key.headers["Location"]

    # A webhook subscription (its example URL is on a reserved `.example` name, which the test
    # resolver answers with a public address), the rotation of its secret, and a replay.
    webhook = await poster.post("/v1/webhooks", idempotent(auth))
    assert webhook.status_code == 201, webhook.text
    await poster.assert_location_serves(webhook, auth)
    assert webhook.json()["secret"].startswith("whsec_")
    webhook_id = webhook.json()["id"]
    rotated_secret = await poster.post(
        "/v1/webhooks/{webhook_id}/rotate-secret", auth, webhook_id=webhook_id
    )
    assert rotated_secret.status_code == 200, rotated_secret.text
    assert rotated_secret.json()["secret"] != webhook.json()["secret"]
    replayed_events = await poster.post(
        "/v1/webhooks/{webhook_id}/replay", auth, webhook_id=webhook_id
    )
    assert replayed_events.status_code == 202, replayed_events.text

    # A census file of one child, imported whole: its referral, enquiry, conference and plan.
    census = await poster.post("/v1/census-imports", auth)
    assert census.status_code == 200, census.text
    report = census.json()
    assert (report["children_in_file"], report["children_skipped"]) == (1, 0), report["problems"]
    assert report["referrals_created"] == 1
    assert report["events_created"] == {
        "section47_started": 1,
        "icpc_held": 1,
        "cp_plan_started": 1,
    }

    assert poster.posted == {("POST", path) for (_, path) in BODIES}


async def test_an_unknown_client_id_is_a_problem_404(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    admin = await make_client(["admin"])
    response = await client.get("/v1/clients/no-such-client", headers=admin.headers)
    assert response.status_code == 404
