"""JSON request bodies that pass validation, built from synthetic data.

Every builder takes keyword overrides that replace top-level keys, so a test states only what it
changes: `valid_referral_body(child=valid_child_body(seed=2, sex="U"))`. The same `seed` gives the
same child in every builder, so a referral and a case event can name one child.
"""

from __future__ import annotations

import random
from datetime import date, timedelta
from typing import Any

from schemas.common import today_in_uk
from schemas.identifiers import synthetic_nhs_number

_GIVEN_NAMES = ("Amelia", "Oliver", "Isla", "Noah", "Ava", "Leo", "Mia", "Arthur", "Zara", "Idris")
_FAMILY_NAMES = ("Testerton", "Samplewood", "Fictora", "Demoford", "Exampleby", "Mockridge")
_POSTCODES = ("ZZ1 1AA", "ZZ2 3BD", "ZZ9 9ZZ", "ZZ4 5EF")


def synthetic_nhs_number_for(seed: int) -> str:
    """The NHS number (999 range, valid check digit) that the builders give the child of `seed`."""
    return synthetic_nhs_number(random.Random(seed))


def _date_of_birth_for(seed: int) -> date:
    # Between 1 and 15 years old on any day the tests run, so never unborn and never an adult.
    return today_in_uk() - timedelta(days=400 + (seed * 397) % 5000)


def valid_child_body(
    *, seed: int = 0, nhs_number: str | None = None, **overrides: Any
) -> dict[str, Any]:
    """A born child with every field filled in; `nhs_number` defaults to one derived from `seed`."""
    nhs = nhs_number if nhs_number is not None else synthetic_nhs_number_for(seed)
    body: dict[str, Any] = {
        "given_name": _GIVEN_NAMES[seed % len(_GIVEN_NAMES)],
        "family_name": _FAMILY_NAMES[seed % len(_FAMILY_NAMES)],
        "aliases": [],
        "date_of_birth": _date_of_birth_for(seed).isoformat(),
        "sex": ("F", "M")[seed % 2],
        "ethnicity": "WBRI",
        "first_language": "English",
        "interpreter_needed": False,
        "communication_needs": None,
        "disabilities": ["NONE"],
        "address": {
            "lines": [f"{10 + seed % 80} Example Street"],
            "town": "Sampletown",
            "postcode": _POSTCODES[seed % len(_POSTCODES)],
        },
        "school_or_setting": "Sampletown Primary School",
        "gp_practice": "Example Lane Surgery",
        "nhs_number": nhs,
        "la_child_id": f"LA{nhs}",
        "upn": f"A{nhs}00",
    }
    body.update(overrides)
    return body


def valid_unborn_child_body(
    *, seed: int = 0, nhs_number: str | None = None, **overrides: Any
) -> dict[str, Any]:
    """An unborn child due in about four months: no date of birth, sex U, no school."""
    body = valid_child_body(seed=seed, nhs_number=nhs_number)
    del body["date_of_birth"]
    body.update(
        given_name=None,
        expected_date_of_birth=(today_in_uk() + timedelta(days=120)).isoformat(),
        sex="U",
        disabilities=[],
        school_or_setting=None,
    )
    body.update(overrides)
    return body


def valid_child_ref_body(
    *, seed: int = 0, nhs_number: str | None = None, **overrides: Any
) -> dict[str, Any]:
    """A `ChildRef` naming the same child as `valid_child_body` with the same arguments."""
    child = valid_child_body(seed=seed, nhs_number=nhs_number)
    body: dict[str, Any] = {
        key: child[key]
        for key in ("nhs_number", "la_child_id", "upn", "family_name", "date_of_birth")
    }
    body.update(overrides)
    return body


def valid_referral_body(
    *, seed: int = 0, nhs_number: str | None = None, **overrides: Any
) -> dict[str, Any]:
    """A full neglect referral from a school, parents informed and consenting, no immediate risk.

    `received_at` is left out (the service uses now); pass it to back-load. The external reference
    is derived from the seed and NHS number, so distinct children get distinct references.
    """
    child = valid_child_body(seed=seed, nhs_number=nhs_number)
    body: dict[str, Any] = {
        "external_reference": f"RFS-{seed:04d}-{child['nhs_number']}",
        "referrer": {
            "agency_type": "school",
            "agency_name": "Sampletown Primary School",
            "name": "Pat Example",
            "role": "Designated safeguarding lead",
            "email": "dsl@school.example.org",
            "phone": "01632 960000",
            "source_code": "2A",
        },
        "child": child,
        "household": [
            {
                "name": f"Sam {child['family_name']}",
                "relationship": "mother",
                "has_parental_responsibility": True,
                "lives_with_child": True,
                "date_of_birth": (today_in_uk() - timedelta(days=365 * 32)).isoformat(),
            },
            {
                "name": "Alex Sample",
                "relationship": "mother's partner",
                "has_parental_responsibility": False,
                "lives_with_child": True,
                "date_of_birth": None,
            },
        ],
        "concerns": {
            "categories": ["neglect"],
            "neglect_forms": ["nutritional", "physical"],
            "risk_factors": ["poverty", "parental_mental_health"],
            "vulnerabilities": [],
            "summary": "Arrives hungry most days and in the same unwashed clothes all week.",
            "what_has_changed": "Over the last half term this has happened on most days.",
            "impact_on_child": "Tired in lessons and withdrawn from friends.",
            "strengths_and_protective_factors": "Mother engages with school and wants help.",
            "actions_taken": "Breakfast club place offered; uniform bank referral made.",
            "child_views": "Says there is often no food in the house at the weekend.",
        },
        "immediate_risk": False,
        "parental_awareness": {"informed": True, "consent": "given", "reason_not_informed": None},
        "dsl_consulted": True,
    }
    body.update(overrides)
    return body


def valid_decision_body(**overrides: Any) -> dict[str, Any]:
    """A Front Door decision for early help, decided now."""
    body: dict[str, Any] = {
        "outcome": "early_help",
        "rationale": "Needs are at level 2; family agrees to early help support.",
        "decided_by": "Front Door team manager",
    }
    body.update(overrides)
    return body


def valid_withdraw_body(**overrides: Any) -> dict[str, Any]:
    """A referrer's withdrawal of a referral sent in error."""
    body: dict[str, Any] = {"reason": "Sent in error: duplicate of an earlier referral."}
    body.update(overrides)
    return body
