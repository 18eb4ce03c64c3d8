"""Builders for toolkit and assessment tests.

Tests commit for real into one database per worker, so every child is new: it is named by a
unique LA child id (never a shared NHS number) and a unique family name, and every test toolkit
gets a unique id.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

import httpx

from schemas.common import today_in_uk
from service.children import age_in_years
from service.db import SessionFactory, transaction
from service.toolkits.definition import ToolkitDefinition
from service.toolkits.demo import load_demo_toolkit
from service.toolkits.versions import publish_demo_toolkit
from tests.conftest import RegisteredClient

DESCRIPTORS = ["all met", "mostly met", "partly met", "largely unmet", "entirely unmet"]
GradeValue = int | str


def unique_toolkit_id() -> str:
    return f"test-kit-{uuid.uuid4().hex[:12]}"


def small_toolkit_document(
    toolkit_id: str | None = None, version: str = "1.0.0", title: str = "Small test toolkit"
) -> dict[str, Any]:
    """A valid two-area definition without age bands: `care` (food: f1, f2) and `safety`
    (watch: s1), worst-grade aggregation, levels 3/2/1."""

    def item(item_id: str) -> dict[str, Any]:
        return {"id": item_id, "text": f"Question {item_id}", "descriptors": list(DESCRIPTORS)}

    return {
        "id": toolkit_id or unique_toolkit_id(),
        "version": version,
        "title": title,
        "publisher": "Test partnership",
        "licence": "CC0-1.0",
        "areas": [
            {
                "id": "care",
                "title": "Care",
                "sub_areas": [
                    {
                        "id": "food",
                        "title": "Food",
                        "neglect_form": "nutritional",
                        "items": [item("f1"), item("f2")],
                    }
                ],
            },
            {
                "id": "safety",
                "title": "Safety",
                "sub_areas": [
                    {
                        "id": "watch",
                        "title": "Supervision",
                        "neglect_form": "supervision",
                        "items": [item("s1")],
                    }
                ],
            },
        ],
        "level_rules": [
            {
                "level": 3,
                "name": "Targeted",
                "recommended_action": "Request for Support to the Front Door",
                "refer_to_front_door": True,
                "when": {"min_areas_at_significant_concern": 1},
            },
            {
                "level": 2,
                "name": "Early help",
                "recommended_action": "Early help assessment",
                "when": {"min_areas_at_concern": 1},
            },
            {"level": 1, "name": "Universal", "recommended_action": "Universal services"},
        ],
    }


async def publish_demo(session_factory: SessionFactory) -> None:
    """Make sure the demonstration toolkit is published in the test database (idempotent)."""
    async with transaction(session_factory) as session:
        await publish_demo_toolkit(session, published_by="tests")


def child_ref(date_of_birth: date | None = None) -> dict[str, Any]:
    """A `ChildRef` for a new child: unique LA child id and family name, aged 7 by default."""
    born = date_of_birth or today_in_uk() - timedelta(days=7 * 365 + 100)
    letters = "".join(chr(ord("a") + int(digit, 16) % 26) for digit in uuid.uuid4().hex[:12])
    return {
        "la_child_id": f"T{uuid.uuid4().hex[:19]}",
        "family_name": "Assess" + letters,
        "date_of_birth": born.isoformat(),
    }


def items_for_age(definition: ToolkitDefinition, age_years: int) -> list[str]:
    """Ids of the items a child of this age must have a response for."""
    return [item.id for _, _, item in definition.iter_items() if item.covers_age(age_years)]


def assessment_body(
    *,
    child: dict[str, Any] | None = None,
    definition: ToolkitDefinition | None = None,
    grades: dict[str, GradeValue] | None = None,
    default_grade: GradeValue = 2,
    completed_on: date | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """A valid assessment of a new (or the given) child with the demonstration toolkit.

    Every item in the child's age band is answered: `grades` where given, else `default_grade`.
    """
    definition = definition or load_demo_toolkit()
    child = child or child_ref()
    completed = completed_on or today_in_uk()
    age = age_in_years(date.fromisoformat(child["date_of_birth"]), completed)
    chosen = grades or {}
    body: dict[str, Any] = {
        "child": child,
        "toolkit_id": definition.id,
        "toolkit_version": definition.version,
        "assessor": {"name": "Robin Example", "role": "Family support worker", "agency": "Test"},
        "started_on": (completed - timedelta(days=7)).isoformat(),
        "completed_on": completed.isoformat(),
        "responses": [
            {
                "item_id": item_id,
                "grade": chosen.get(item_id, default_grade),
                "evidence": f"Observed at home visit ({item_id}).",
            }
            for item_id in items_for_age(definition, age)
        ],
        "strengths": "Grandparent helps with the school run every day.",
        "child_voice": {
            "seen": True,
            "seen_alone": True,
            "method": "conversation",
            "words": "I like it when Nan picks me up.",
            "reason_not_captured": None,
        },
        "parent_carer_views": "Mother says money is tight since the benefit change.",
        "overrides": [],
        "targets": [],
        "previous_assessment_id": None,
        "household_ref": None,
    }
    body.update(overrides)
    return body


def write_headers(registered: RegisteredClient, key: str | None = None) -> dict[str, str]:
    return {**registered.headers, "Idempotency-Key": key or uuid.uuid4().hex}


async def post_assessment(
    client: httpx.AsyncClient, registered: RegisteredClient, body: dict[str, Any]
) -> dict[str, Any]:
    """POST an assessment that must be accepted; its stored representation."""
    response = await client.post("/v1/assessments", json=body, headers=write_headers(registered))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created
