"""Toolkit assessments over HTTP: server scoring, overrides, re-assessment, versions, the age
band rules, agency scoping, audit and Idempotency-Key handling."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlmodel import col

from schemas.common import today_in_uk
from service.db import SessionFactory
from service.models import AuditEvent
from service.toolkits.definition import validate_definition
from service.toolkits.demo import load_demo_toolkit
from tests.builders.assessments import (
    assessment_body,
    child_ref,
    items_for_age,
    post_assessment,
    publish_demo,
    small_toolkit_document,
    write_headers,
)
from tests.conftest import ClientMaker, RegisteredClient


@pytest.fixture(autouse=True)
async def demo_toolkit(session_factory: SessionFactory) -> None:
    await publish_demo(session_factory)


@pytest.fixture
async def practitioner(make_client: ClientMaker) -> RegisteredClient:
    return await make_client(["assessments:write", "assessments:read"], agency_type="early_help")


@pytest.fixture
async def admin(make_client: ClientMaker) -> RegisteredClient:
    return await make_client(["admin"], agency_type="local_authority")


def error_fields(response: httpx.Response) -> set[str]:
    return {error["field"] for error in response.json()["errors"]}


async def audit_actions(
    session_factory: SessionFactory, registered: RegisteredClient
) -> list[tuple[str, str | None]]:
    async with session_factory() as session:
        rows = await session.execute(
            select(col(AuditEvent.action), col(AuditEvent.resource_id))
            .where(
                col(AuditEvent.client_id) == registered.client_id,
                col(AuditEvent.resource_type) == "assessment",
            )
            .order_by(col(AuditEvent.id))
        )
    return [(row.action, row.resource_id) for row in rows]


# --- scoring on create ---------------------------------------------------------------------------


async def test_an_assessment_is_scored_and_stored_with_its_toolkit_version_and_sha256(
    client: httpx.AsyncClient, practitioner: RegisteredClient
) -> None:
    body = assessment_body(grades={"food_provision": 4, "home_condition": 3})
    created = await post_assessment(client, practitioner, body)
    outcome = created["outcome"]
    assert created["toolkit_id"] == "demo-neglect-profile"
    assert created["toolkit_version"] == "1.0.0"
    assert len(created["toolkit_sha256"]) == 64
    assert created["agency_name"] == practitioner.agency_name
    assert created["child_age_years"] == 7
    assert created["created_at"] is not None
    assert outcome["area_grades"]["physical_care"] == 4
    assert outcome["sub_area_grades"]["nutrition"] == 4
    assert outcome["neglect_form_profile"]["nutritional"] == 4
    assert outcome["neglect_form_profile"]["physical"] == 3
    assert outcome["highest_area_grade"] == 4
    assert outcome["areas_at_concern"] == 1
    assert outcome["areas_at_significant_concern"] == 1
    assert outcome["level_of_need"]["level"] == 3
    assert outcome["distance_travelled"] is None


async def test_an_assessment_has_no_single_total_score(
    client: httpx.AsyncClient, practitioner: RegisteredClient
) -> None:
    created = await post_assessment(client, practitioner, assessment_body())

    def keys(value: object) -> set[str]:
        if isinstance(value, dict):
            return set(value) | {key for inner in value.values() for key in keys(inner)}
        if isinstance(value, list):
            return {key for inner in value for key in keys(inner)}
        return set()

    assert not {key for key in keys(created) if "total" in key or key == "score"}


async def test_strengths_and_insufficient_evidence_are_reported(
    client: httpx.AsyncClient, practitioner: RegisteredClient
) -> None:
    definition = load_demo_toolkit()
    emotional = [
        item.id for area, _, item in definition.iter_items() if area.id == "emotional_care"
    ]
    body = assessment_body(grades=dict.fromkeys(emotional, "not_known"), default_grade=1)
    created = await post_assessment(client, practitioner, body)
    outcome = created["outcome"]
    assert outcome["insufficient_evidence_area_ids"] == ["emotional_care"]
    assert outcome["area_grades"]["emotional_care"] is None
    assert outcome["strengths"]["area_ids"] == [
        "physical_care",
        "safety_and_supervision",
        "developmental_care",
    ]
    assert outcome["strengths"]["text"] == body["strengths"]


async def test_the_inputs_are_returned_as_sent(
    client: httpx.AsyncClient, practitioner: RegisteredClient
) -> None:
    body = assessment_body(household_ref="HH-0042")
    created = await post_assessment(client, practitioner, body)
    assert created["responses"] == body["responses"]
    assert created["child_voice"] == body["child_voice"]
    assert created["assessor"] == body["assessor"]
    assert created["parent_carer_views"] == body["parent_carer_views"]
    assert created["household_ref"] == "HH-0042"
    assert "child" not in created


# --- age bands and responses ---------------------------------------------------------------------


async def test_a_response_to_an_item_outside_the_child_s_age_band_is_422(
    client: httpx.AsyncClient, practitioner: RegisteredClient
) -> None:
    body = assessment_body()
    body["responses"].append({"item_id": "hygiene_early_years", "grade": 2, "evidence": None})
    response = await client.post("/v1/assessments", json=body, headers=write_headers(practitioner))
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["field"] == "body.responses.hygiene_early_years"
    assert error["code"] == "out_of_age_band"


async def test_a_missing_response_to_an_item_in_the_age_band_is_422_naming_it(
    client: httpx.AsyncClient, practitioner: RegisteredClient
) -> None:
    body = assessment_body()
    body["responses"] = [r for r in body["responses"] if r["item_id"] != "school_attendance"]
    response = await client.post("/v1/assessments", json=body, headers=write_headers(practitioner))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.responses.school_attendance"
    assert response.json()["errors"][0]["code"] == "missing_response"


async def test_a_toddler_answers_the_early_years_items_only(
    client: httpx.AsyncClient, practitioner: RegisteredClient
) -> None:
    toddler = child_ref(today_in_uk() - timedelta(days=2 * 365 + 30))
    created = await post_assessment(client, practitioner, assessment_body(child=toddler))
    assert created["child_age_years"] == 2
    assert set(created["outcome"]["item_grades"]) == set(items_for_age(load_demo_toolkit(), 2))
    assert "hygiene_early_years" in created["outcome"]["item_grades"]
    assert "school_attendance" not in created["outcome"]["item_grades"]


async def test_unknown_and_out_of_scale_responses_are_each_named(
    client: httpx.AsyncClient, practitioner: RegisteredClient
) -> None:
    body = assessment_body(grades={"food_provision": 6})
    body["responses"].append({"item_id": "no_such_item", "grade": 2, "evidence": None})
    response = await client.post("/v1/assessments", json=body, headers=write_headers(practitioner))
    assert response.status_code == 422
    codes = {error["field"]: error["code"] for error in response.json()["errors"]}
    assert codes == {
        "body.responses.food_provision": "out_of_scale",
        "body.responses.no_such_item": "unknown_item",
    }


async def test_a_grade_sent_as_text_is_422(
    client: httpx.AsyncClient, practitioner: RegisteredClient
) -> None:
    body = assessment_body(grades={"food_provision": "3"})
    response = await client.post("/v1/assessments", json=body, headers=write_headers(practitioner))
    assert response.status_code == 422
    assert any(field.startswith("body.responses.0.grade") for field in error_fields(response))


async def test_an_unpublished_toolkit_version_is_422_naming_it(
    client: httpx.AsyncClient, practitioner: RegisteredClient
) -> None:
    body = assessment_body(toolkit_version="9.9.9")
    response = await client.post("/v1/assessments", json=body, headers=write_headers(practitioner))
    assert response.status_code == 422
    assert error_fields(response) == {"body.toolkit_version"}


# --- other input rules ---------------------------------------------------------------------------


async def test_a_completed_on_in_the_future_is_422(
    client: httpx.AsyncClient, practitioner: RegisteredClient
) -> None:
    body = assessment_body()
    body["completed_on"] = (today_in_uk() + timedelta(days=1)).isoformat()
    response = await client.post("/v1/assessments", json=body, headers=write_headers(practitioner))
    assert response.status_code == 422
    assert "body.completed_on" in error_fields(response)


async def test_started_on_after_completed_on_is_422(
    client: httpx.AsyncClient, practitioner: RegisteredClient
) -> None:
    body = assessment_body(completed_on=today_in_uk() - timedelta(days=3))
    body["started_on"] = (today_in_uk() - timedelta(days=1)).isoformat()
    response = await client.post("/v1/assessments", json=body, headers=write_headers(practitioner))
    assert response.status_code == 422


async def test_a_child_not_seen_needs_a_reason_the_voice_was_not_captured(
    client: httpx.AsyncClient, practitioner: RegisteredClient
) -> None:
    body = assessment_body(
        child_voice={"seen": False, "seen_alone": False, "method": None, "words": None}
    )
    response = await client.post("/v1/assessments", json=body, headers=write_headers(practitioner))
    assert response.status_code == 422
    assert any("reason_not_captured" in error["message"] for error in response.json()["errors"])


async def test_the_record_s_agency_cannot_be_set_by_the_caller(
    client: httpx.AsyncClient, practitioner: RegisteredClient
) -> None:
    body = assessment_body(agency_name="Someone else")
    response = await client.post("/v1/assessments", json=body, headers=write_headers(practitioner))
    assert response.status_code == 422
    assert "body.agency_name" in error_fields(response)


# --- overrides (acceptance 4) --------------------------------------------------------------------


@pytest.mark.parametrize(
    "override",
    [
        {"area_id": "emotional_care", "grade": 4},
        {"area_id": "emotional_care", "grade": 4, "reason": "  "},
    ],
)
async def test_an_override_without_a_reason_is_422(
    client: httpx.AsyncClient, practitioner: RegisteredClient, override: dict[str, Any]
) -> None:
    body = assessment_body(overrides=[override])
    response = await client.post("/v1/assessments", json=body, headers=write_headers(practitioner))
    assert response.status_code == 422
    assert "body.overrides.0.reason" in error_fields(response)


async def test_an_override_keeps_both_grades_and_the_level_follows_the_effective_one(
    client: httpx.AsyncClient, practitioner: RegisteredClient
) -> None:
    reason = "Father's new partner is hostile to the child; seen at three visits."
    body = assessment_body(overrides=[{"area_id": "emotional_care", "grade": 4, "reason": reason}])
    created = await post_assessment(client, practitioner, body)
    read = await client.get(f"/v1/assessments/{created['id']}", headers=practitioner.headers)
    outcome = read.json()["outcome"]
    assert outcome["computed_area_grades"]["emotional_care"] == 2
    assert outcome["area_grades"]["emotional_care"] == 4
    assert outcome["overridden_area_ids"] == ["emotional_care"]
    assert outcome["areas_at_significant_concern"] == 1
    assert outcome["level_of_need"]["level"] == 3
    assert read.json()["overrides"] == [{"area_id": "emotional_care", "grade": 4, "reason": reason}]


async def test_an_override_of_an_unknown_area_is_422_naming_it(
    client: httpx.AsyncClient, practitioner: RegisteredClient
) -> None:
    body = assessment_body(overrides=[{"area_id": "housing_area", "grade": 3, "reason": "x"}])
    response = await client.post("/v1/assessments", json=body, headers=write_headers(practitioner))
    assert response.status_code == 422
    assert error_fields(response) == {"body.overrides.housing_area"}


# --- re-assessment (acceptance 3) ----------------------------------------------------------------


async def test_a_reassessment_reports_distance_travelled_and_targets_met(
    client: httpx.AsyncClient, practitioner: RegisteredClient
) -> None:
    child = child_ref()
    review_on = (today_in_uk() + timedelta(days=30)).isoformat()
    first = await post_assessment(
        client,
        practitioner,
        assessment_body(
            child=child,
            completed_on=today_in_uk() - timedelta(days=90),
            grades={"food_provision": 4, "warmth_and_affection": 3},
            targets=[
                {"item_id": "food_provision", "target_grade": 2, "review_on": review_on},
                {"item_id": "warmth_and_affection", "target_grade": 1, "review_on": review_on},
            ],
        ),
    )
    second = await post_assessment(
        client,
        practitioner,
        assessment_body(
            child=child,
            grades={"food_provision": 2, "warmth_and_affection": 2, "shared_time": 3},
            previous_assessment_id=first["id"],
        ),
    )
    distance = second["outcome"]["distance_travelled"]
    assert second["child_id"] == first["child_id"]
    assert second["previous_assessment_id"] == first["id"]
    assert distance["items"]["food_provision"] == 2
    assert distance["items"]["shared_time"] == -1
    assert distance["items"]["home_condition"] == 0
    assert distance["sub_areas"]["nutrition"] == 2
    assert distance["sub_areas"]["mutual_engagement"] == -1
    assert distance["areas"]["physical_care"] == 2
    assert distance["areas"]["emotional_care"] == 0
    assert second["outcome"]["targets_met"] == [
        {"item_id": "food_provision", "target_grade": 2, "current_grade": 2, "met": True},
        {"item_id": "warmth_and_affection", "target_grade": 1, "current_grade": 2, "met": False},
    ]


async def test_a_reassessment_of_a_different_child_is_422(
    client: httpx.AsyncClient, practitioner: RegisteredClient
) -> None:
    first = await post_assessment(client, practitioner, assessment_body())
    body = assessment_body(previous_assessment_id=first["id"])
    response = await client.post("/v1/assessments", json=body, headers=write_headers(practitioner))
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["field"] == "body.previous_assessment_id"
    assert error["code"] == "different_child"


async def test_a_reassessment_with_a_different_toolkit_is_422(
    client: httpx.AsyncClient, practitioner: RegisteredClient, admin: RegisteredClient
) -> None:
    document = small_toolkit_document()
    assert (
        await client.post("/v1/toolkits", json=document, headers=admin.headers)
    ).status_code == 201
    child = child_ref()
    first = await post_assessment(client, practitioner, assessment_body(child=child))
    body = assessment_body(
        child=child,
        definition=validate_definition(document),
        previous_assessment_id=first["id"],
    )
    response = await client.post("/v1/assessments", json=body, headers=write_headers(practitioner))
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["field"] == "body.previous_assessment_id"
    assert error["code"] == "different_toolkit"


async def test_a_reassessment_building_on_another_agency_s_assessment_is_422(
    client: httpx.AsyncClient, practitioner: RegisteredClient, make_client: ClientMaker
) -> None:
    other = await make_client(["assessments:write"])
    child = child_ref()
    first = await post_assessment(client, other, assessment_body(child=child))
    body = assessment_body(child=child, previous_assessment_id=first["id"])
    response = await client.post("/v1/assessments", json=body, headers=write_headers(practitioner))
    assert response.status_code == 422
    assert response.json()["errors"][0]["code"] == "unknown_previous_assessment"


# --- versions (acceptance 5) ---------------------------------------------------------------------


async def test_an_assessment_keeps_its_version_and_sha256_after_a_new_version_is_published(
    client: httpx.AsyncClient, practitioner: RegisteredClient, admin: RegisteredClient
) -> None:
    document = small_toolkit_document()
    v1 = (await client.post("/v1/toolkits", json=document, headers=admin.headers)).json()
    body = assessment_body(
        definition=validate_definition(document), grades={"f1": 3, "f2": 1, "s1": 1}
    )
    created = await post_assessment(client, practitioner, body)
    changed = small_toolkit_document(document["id"], "1.1.0", title="Reworded")
    v2 = await client.post("/v1/toolkits", json=changed, headers=admin.headers)
    read = await client.get(f"/v1/assessments/{created['id']}", headers=practitioner.headers)
    assert v2.status_code == 201
    assert v2.json()["sha256"] != v1["sha256"]
    assert read.json()["toolkit_version"] == "1.0.0"
    assert read.json()["toolkit_sha256"] == v1["sha256"]
    assert read.json()["outcome"]["level_of_need"]["level"] == 2


# --- scoping, trajectory and audit (acceptance 7) ------------------------------------------------


async def test_another_agency_s_assessment_is_404_exactly_like_a_missing_one(
    client: httpx.AsyncClient, practitioner: RegisteredClient, make_client: ClientMaker
) -> None:
    created = await post_assessment(client, practitioner, assessment_body())
    other = await make_client(["assessments:read"])
    theirs = await client.get(f"/v1/assessments/{created['id']}", headers=other.headers)
    missing = await client.get(f"/v1/assessments/{uuid.uuid4()}", headers=other.headers)
    assert theirs.status_code == 404
    assert missing.status_code == 404
    assert {k: v for k, v in theirs.json().items() if k != "request_id"} == {
        k: v for k, v in missing.json().items() if k != "request_id"
    }


async def test_the_front_door_reads_every_agency_s_assessments(
    client: httpx.AsyncClient, practitioner: RegisteredClient, make_client: ClientMaker
) -> None:
    created = await post_assessment(client, practitioner, assessment_body())
    front_door = await make_client(
        ["assessments:read", "referrals:read:all"], agency_type="front_door"
    )
    response = await client.get(f"/v1/assessments/{created['id']}", headers=front_door.headers)
    assert response.status_code == 200
    assert response.json()["agency_name"] == practitioner.agency_name


async def test_the_trajectory_is_oldest_first_and_shows_only_the_caller_s_agency(
    client: httpx.AsyncClient, practitioner: RegisteredClient, make_client: ClientMaker
) -> None:
    child = child_ref()
    other = await make_client(["assessments:write"])
    today = today_in_uk()
    later = await post_assessment(
        client, practitioner, assessment_body(child=child, completed_on=today - timedelta(days=5))
    )
    earlier = await post_assessment(
        client, practitioner, assessment_body(child=child, completed_on=today - timedelta(days=60))
    )
    await post_assessment(
        client, other, assessment_body(child=child, completed_on=today - timedelta(days=30))
    )
    response = await client.get(
        f"/v1/children/{later['child_id']}/assessments", headers=practitioner.headers
    )
    assert response.status_code == 200
    items = response.json()["items"]
    assert [item["id"] for item in items] == [earlier["id"], later["id"]]
    assert items[0]["area_grades"] == earlier["outcome"]["area_grades"]
    assert items[0]["level_of_need"] == earlier["outcome"]["level_of_need"]


async def test_the_trajectory_pages_with_a_cursor(
    client: httpx.AsyncClient, practitioner: RegisteredClient
) -> None:
    child = child_ref()
    today = today_in_uk()
    ids = [
        (
            await post_assessment(
                client,
                practitioner,
                assessment_body(child=child, completed_on=today - timedelta(days=days)),
            )
        )["id"]
        for days in (30, 20, 10)
    ]
    child_id = (await client.get(f"/v1/assessments/{ids[0]}", headers=practitioner.headers)).json()[
        "child_id"
    ]
    url = f"/v1/children/{child_id}/assessments"
    first = await client.get(url, params={"limit": 2}, headers=practitioner.headers)
    second = await client.get(
        url,
        params={"limit": 2, "cursor": first.json()["next_cursor"]},
        headers=practitioner.headers,
    )
    assert [item["id"] for item in first.json()["items"]] == ids[:2]
    assert [item["id"] for item in second.json()["items"]] == ids[2:]
    assert second.json()["next_cursor"] is None


async def test_the_trajectory_of_an_unknown_child_is_404(
    client: httpx.AsyncClient, practitioner: RegisteredClient
) -> None:
    response = await client.get(
        f"/v1/children/{uuid.uuid4()}/assessments", headers=practitioner.headers
    )
    assert response.status_code == 404


async def test_siblings_share_a_household_ref(
    client: httpx.AsyncClient, practitioner: RegisteredClient
) -> None:
    household = f"HH-{uuid.uuid4().hex[:8]}"
    first = await post_assessment(client, practitioner, assessment_body(household_ref=household))
    second = await post_assessment(client, practitioner, assessment_body(household_ref=household))
    assert first["child_id"] != second["child_id"]
    assert first["household_ref"] == second["household_ref"] == household


async def test_create_read_and_list_are_audited(
    client: httpx.AsyncClient, practitioner: RegisteredClient, session_factory: SessionFactory
) -> None:
    created = await post_assessment(client, practitioner, assessment_body())
    await client.get(f"/v1/assessments/{created['id']}", headers=practitioner.headers)
    await client.get(
        f"/v1/children/{created['child_id']}/assessments", headers=practitioner.headers
    )
    assert await audit_actions(session_factory, practitioner) == [
        ("create", created["id"]),
        ("read", created["id"]),
        ("list", None),
    ]


async def test_a_refused_read_of_another_agency_s_assessment_is_not_audited_as_a_read(
    client: httpx.AsyncClient,
    practitioner: RegisteredClient,
    make_client: ClientMaker,
    session_factory: SessionFactory,
) -> None:
    created = await post_assessment(client, practitioner, assessment_body())
    other = await make_client(["assessments:read"])
    await client.get(f"/v1/assessments/{created['id']}", headers=other.headers)
    # Not a read: the refusal is on the trail as `denied` (issue 10), and nothing else is.
    assert await audit_actions(session_factory, other) == [("denied", created["id"])]


async def test_reading_needs_the_assessments_read_scope(
    client: httpx.AsyncClient, practitioner: RegisteredClient, make_client: ClientMaker
) -> None:
    created = await post_assessment(client, practitioner, assessment_body())
    writer_only = await make_client(["assessments:write"], agency_name=practitioner.agency_name)
    response = await client.get(f"/v1/assessments/{created['id']}", headers=writer_only.headers)
    assert response.status_code == 403


# --- Idempotency-Key -----------------------------------------------------------------------------


async def test_a_create_without_an_idempotency_key_is_400(
    client: httpx.AsyncClient, practitioner: RegisteredClient
) -> None:
    response = await client.post(
        "/v1/assessments", json=assessment_body(), headers=practitioner.headers
    )
    assert response.status_code == 400


async def test_a_retry_with_the_same_key_and_body_replays_the_first_answer(
    client: httpx.AsyncClient, practitioner: RegisteredClient
) -> None:
    body = assessment_body()
    headers = write_headers(practitioner)
    first = await client.post("/v1/assessments", json=body, headers=headers)
    second = await client.post("/v1/assessments", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["Idempotent-Replayed"] == "true"


async def test_a_reused_key_with_a_different_body_is_422(
    client: httpx.AsyncClient, practitioner: RegisteredClient
) -> None:
    headers = write_headers(practitioner)
    first = await client.post("/v1/assessments", json=assessment_body(), headers=headers)
    second = await client.post("/v1/assessments", json=assessment_body(), headers=headers)
    assert first.status_code == 201
    assert second.status_code == 422
    assert second.json()["type"].endswith("/idempotency-key-reused")


async def test_a_refused_assessment_leaves_its_key_free_for_a_corrected_retry(
    client: httpx.AsyncClient, practitioner: RegisteredClient
) -> None:
    body = assessment_body()
    headers = write_headers(practitioner)
    body["responses"].pop()
    refused = await client.post("/v1/assessments", json=body, headers=headers)
    corrected = await client.post(
        "/v1/assessments", json=assessment_body(child=body["child"]), headers=headers
    )
    assert refused.status_code == 422
    assert corrected.status_code == 201
