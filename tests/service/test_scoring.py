"""The scoring engine: hand-worked examples, properties, re-assessment, overrides and refusals."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.vocabulary import NEGLECT_FORMS
from service.scoring import (
    NOT_KNOWN,
    ResponsesInvalid,
    ResponseValue,
    ScoreResult,
    aggregate_grades,
    score_assessment,
)
from service.toolkits.definition import (
    AGGREGATION_METHODS,
    AggregationMethod,
    ToolkitDefinition,
    validate_definition,
)
from service.toolkits.demo import load_demo_toolkit

NK: Literal["not_known"] = NOT_KNOWN
DESCRIPTORS = ["all met", "mostly met", "partly met", "largely unmet", "entirely unmet"]

# Highest level first and every condition a minimum, so a worse profile never lowers the level.
DEFAULT_RULES: list[dict[str, Any]] = [
    {
        "level": 4,
        "name": "Specialist",
        "recommended_action": "Front Door today",
        "refer_to_front_door": True,
        "when": {"min_areas_at_significant_concern": 2},
    },
    {
        "level": 3,
        "name": "Targeted",
        "recommended_action": "Front Door",
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
]

# Three areas; `feelings` is the one left with only not_known in the examples.
LAYOUT: dict[str, dict[str, list[str]]] = {
    "care": {"food": ["f1", "f2", "f3"], "home": ["h1", "h2"]},
    "safety": {"present": ["p1", "p2"], "absent": ["a1"]},
    "feelings": {"warmth": ["w1", "w2"]},
}
FORMS = {
    "food": "nutritional",
    "home": "physical",
    "present": "supervision",
    "absent": "supervision",
    "warmth": "emotional",
}


def build_definition(
    layout: dict[str, dict[str, list[str]]] = LAYOUT,
    *,
    forms: dict[str, str] | None = None,
    item_method: AggregationMethod = "worst",
    sub_area_method: AggregationMethod = "worst",
    bands: Mapping[str, tuple[int | None, int | None]] | None = None,
    rules: list[dict[str, Any]] | None = None,
    allow_not_known: bool = True,
) -> ToolkitDefinition:
    forms = forms if forms is not None else FORMS
    bands = bands or {}

    def make_item(item_id: str) -> dict[str, Any]:
        item: dict[str, Any] = {"id": item_id, "text": item_id, "descriptors": DESCRIPTORS}
        if item_id in bands:
            item["min_age"], item["max_age"] = bands[item_id]
        return item

    return validate_definition(
        {
            "id": "test-toolkit",
            "version": "1.0.0",
            "title": "Test toolkit",
            "publisher": "Tests",
            "licence": "CC0-1.0",
            "grade_scale": {"allow_not_known": allow_not_known},
            "aggregation": {"item_to_sub_area": item_method, "sub_area_to_area": sub_area_method},
            "areas": [
                {
                    "id": area_id,
                    "title": area_id,
                    "sub_areas": [
                        {
                            "id": sub_id,
                            "title": sub_id,
                            "neglect_form": forms.get(sub_id, "physical"),
                            "items": [make_item(item_id) for item_id in item_ids],
                        }
                        for sub_id, item_ids in sub_areas.items()
                    ],
                }
                for area_id, sub_areas in layout.items()
            ],
            "level_rules": rules if rules is not None else DEFAULT_RULES,
        }
    )


def all_items(grade: ResponseValue) -> dict[str, ResponseValue]:
    return {
        item_id: grade for sub in LAYOUT.values() for items in sub.values() for item_id in items
    }


# --- aggregation methods -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "grades", "expected"),
    [
        ("worst", [2, 4, 1], 4),
        ("worst", [3], 3),
        ("worst", [], None),
        ("mode_worst_tie", [2, 2, 3], 2),
        ("mode_worst_tie", [2, 3], 3),
        ("mode_worst_tie", [1, 1, 4, 4, 2], 4),
        ("mode_worst_tie", [5, 1, 1], 1),
        ("mode_worst_tie", [], None),
        ("mean_round_up", [1, 2], 2),
        ("mean_round_up", [1, 1, 2], 2),
        ("mean_round_up", [2, 2, 2], 2),
        ("mean_round_up", [3, 4, 5, 5], 5),
        ("mean_round_up", [1, 1, 1, 2], 2),
        ("mean_round_up", [], None),
    ],
)
def test_aggregate_grades_hand_worked(
    method: AggregationMethod, grades: list[int], expected: int | None
) -> None:
    assert aggregate_grades(grades, method) == expected


# --- hand-worked assessments, one per method ---------------------------------------------------


def test_worst_hand_worked_example() -> None:
    definition = build_definition(item_method="worst", sub_area_method="worst")
    responses: dict[str, ResponseValue] = {
        "f1": 1, "f2": NK, "f3": 2,  # food: worst of 1, 2 = 2 (not_known ignored)
        "h1": 1, "h2": 1,            # home: 1; care: worst of 2, 1 = 2
        "p1": 2, "p2": 3,            # present: 3
        "a1": 5,                     # absent: 5; safety: worst of 3, 5 = 5
        "w1": NK, "w2": 4,           # warmth: 4; feelings: 4
    }  # fmt: skip

    result = score_assessment(definition, responses, child_age_years=7)

    assert result.item_grades == {
        "f1": 1, "f2": None, "f3": 2, "h1": 1, "h2": 1,
        "p1": 2, "p2": 3, "a1": 5, "w1": None, "w2": 4,
    }  # fmt: skip
    assert result.sub_area_grades == {"food": 2, "home": 1, "present": 3, "absent": 5, "warmth": 4}
    assert result.area_grades == {"care": 2, "safety": 5, "feelings": 4}
    assert result.computed_area_grades == result.area_grades
    assert result.highest_area_grade == 5
    assert result.areas_at_concern == 2
    assert result.areas_at_significant_concern == 2
    assert result.level_of_need.level == 4
    assert result.level_of_need.recommended_action == "Front Door today"
    assert result.level_of_need.refer_to_front_door is True
    assert result.strength_area_ids == ["care"]
    assert result.insufficient_evidence_area_ids == []


def test_mode_worst_tie_hand_worked_example_with_ties_and_only_not_known_area() -> None:
    definition = build_definition(item_method="mode_worst_tie", sub_area_method="mode_worst_tie")
    responses: dict[str, ResponseValue] = {
        "f1": 2, "f2": 3, "f3": 3,   # food: 3 appears twice = 3
        "h1": 1, "h2": 4,            # home: tie 1 v 4, worse wins = 4; care: tie 3 v 4 = 4
        "p1": 2, "p2": NK,           # present: 2
        "a1": 1,                     # absent: 1; safety: tie 2 v 1 = 2
        "w1": NK, "w2": NK,          # warmth: none scored; feelings: insufficient evidence
    }  # fmt: skip

    result = score_assessment(definition, responses, child_age_years=7)

    assert result.sub_area_grades == {
        "food": 3, "home": 4, "present": 2, "absent": 1, "warmth": None
    }  # fmt: skip
    assert result.area_grades == {"care": 4, "safety": 2, "feelings": None}
    assert result.insufficient_evidence_sub_area_ids == ["warmth"]
    assert result.insufficient_evidence_area_ids == ["feelings"]
    assert result.neglect_form_profile == {
        "medical": None,
        "nutritional": 3,
        "emotional": None,
        "educational": None,
        "physical": 4,
        "supervision": 2,
    }
    assert result.highest_area_grade == 4
    assert result.areas_at_concern == 1
    assert result.areas_at_significant_concern == 1
    assert result.level_of_need.level == 3
    assert result.strength_area_ids == ["safety"]


def test_mean_round_up_hand_worked_example() -> None:
    definition = build_definition(item_method="mean_round_up", sub_area_method="mean_round_up")
    responses: dict[str, ResponseValue] = {
        "f1": 1, "f2": 2, "f3": 2,   # food: 5/3 = 1.67, up to 2
        "h1": 1, "h2": 4,            # home: 5/2 = 2.5, up to 3; care: (2+3)/2 = 2.5, up to 3
        "p1": 3, "p2": NK,           # present: 3 (not_known ignored, not counted as 0)
        "a1": 4,                     # absent: 4; safety: (3+4)/2 = 3.5, up to 4
        "w1": 2, "w2": 2,            # warmth: 2 exactly; feelings: 2
    }  # fmt: skip

    result = score_assessment(definition, responses, child_age_years=7)

    assert result.sub_area_grades == {"food": 2, "home": 3, "present": 3, "absent": 4, "warmth": 2}
    assert result.area_grades == {"care": 3, "safety": 4, "feelings": 2}
    assert result.highest_area_grade == 4
    assert result.areas_at_concern == 2
    assert result.areas_at_significant_concern == 1
    assert result.level_of_need.level == 3
    assert result.strength_area_ids == ["feelings"]


def test_methods_apply_per_level() -> None:
    definition = build_definition(item_method="worst", sub_area_method="mean_round_up")
    responses: dict[str, ResponseValue] = {
        "f1": 1, "f2": 1, "f3": 5,   # food: worst = 5
        "h1": 1, "h2": 1,            # home: 1; care: (5+1)/2 = 3
        "p1": 1, "p2": 1, "a1": 1,
        "w1": 1, "w2": 1,
    }  # fmt: skip

    result = score_assessment(definition, responses, child_age_years=7)

    assert result.sub_area_grades["food"] == 5
    assert result.area_grades["care"] == 3
    assert result.neglect_form_profile["nutritional"] == 5


def test_all_not_known_gives_insufficient_evidence_everywhere_and_the_default_level() -> None:
    definition = build_definition()

    result = score_assessment(definition, all_items(NK), child_age_years=7)

    assert set(result.area_grades.values()) == {None}
    assert result.insufficient_evidence_area_ids == ["care", "safety", "feelings"]
    assert result.highest_area_grade is None
    assert result.areas_at_concern == 0
    assert result.level_of_need.level == 1
    assert result.strength_area_ids == []
    assert set(result.neglect_form_profile.values()) == {None}


def test_all_grade_one_is_universal_with_every_area_a_strength() -> None:
    result = score_assessment(build_definition(), all_items(1), child_age_years=7)

    assert result.level_of_need.level == 1
    assert result.level_of_need.name == "Universal"
    assert result.strength_area_ids == ["care", "safety", "feelings"]


def test_rule_on_a_named_area_grade_matches_only_that_area() -> None:
    rules = [
        {
            "level": 3,
            "name": "Targeted",
            "recommended_action": "Front Door",
            "when": {"min_area_grades": {"safety": 3}},
        },
        {"level": 1, "name": "Universal", "recommended_action": "Carry on"},
    ]
    definition = build_definition(rules=rules)
    care_at_three = {**all_items(1), "f1": 3}
    safety_at_three = {**all_items(1), "p1": 3}

    assert score_assessment(definition, care_at_three, 7).level_of_need.level == 1
    assert score_assessment(definition, safety_at_three, 7).level_of_need.level == 3


def test_result_has_no_total_score() -> None:
    result = score_assessment(build_definition(), all_items(3), child_age_years=7)

    assert not any("total" in key or key == "score" for key in result.model_dump())


def test_result_round_trips_through_json() -> None:
    result = score_assessment(build_definition(), {**all_items(2), "w1": NK}, child_age_years=7)

    assert ScoreResult.model_validate_json(result.model_dump_json()) == result


# --- property tests ----------------------------------------------------------------------------

GRADE_OR_NOT_KNOWN = st.one_of(st.integers(min_value=1, max_value=5), st.just(NK))


@st.composite
def definitions(
    draw: st.DrawFn, methods: tuple[AggregationMethod, ...] = AGGREGATION_METHODS
) -> ToolkitDefinition:
    # Two at least: the default rules ask for two areas at significant concern.
    area_count = draw(st.integers(min_value=2, max_value=3))
    layout: dict[str, dict[str, list[str]]] = {}
    forms: dict[str, str] = {}
    for area_index in range(area_count):
        sub_areas: dict[str, list[str]] = {}
        for sub_index in range(draw(st.integers(min_value=1, max_value=3))):
            sub_id = f"s{area_index}_{sub_index}"
            item_count = draw(st.integers(min_value=1, max_value=3))
            sub_areas[sub_id] = [f"{sub_id}_i{n}" for n in range(item_count)]
            forms[sub_id] = draw(st.sampled_from(NEGLECT_FORMS))
        layout[f"a{area_index}"] = sub_areas
    return build_definition(
        layout,
        forms=forms,
        item_method=draw(st.sampled_from(methods)),
        sub_area_method=draw(st.sampled_from(methods)),
    )


def item_ids(definition: ToolkitDefinition) -> list[str]:
    return [item.id for _, _, item in definition.iter_items()]


@st.composite
def scored_cases(
    draw: st.DrawFn, methods: tuple[AggregationMethod, ...] = AGGREGATION_METHODS
) -> tuple[ToolkitDefinition, dict[str, ResponseValue]]:
    definition = draw(definitions(methods))
    responses = {item_id: draw(GRADE_OR_NOT_KNOWN) for item_id in item_ids(definition)}
    return definition, responses


@st.composite
def demo_cases(draw: st.DrawFn) -> tuple[int, dict[str, ResponseValue]]:
    age = draw(st.integers(min_value=0, max_value=17))
    applicable = [
        item.id for _, _, item in load_demo_toolkit().iter_items() if item.covers_age(age)
    ]
    return age, {item_id: draw(GRADE_OR_NOT_KNOWN) for item_id in applicable}


@settings(max_examples=60, deadline=None)
@given(scored_cases())
def test_scoring_is_deterministic(case: tuple[ToolkitDefinition, dict[str, ResponseValue]]) -> None:
    definition, responses = case
    reordered = dict(reversed(list(responses.items())))

    first = score_assessment(definition, responses, child_age_years=9)
    second = score_assessment(definition, reordered, child_age_years=9)

    assert first == second
    assert first.model_dump_json() == second.model_dump_json()


@settings(max_examples=60, deadline=None)
@given(scored_cases(methods=("worst",)), st.data())
def test_with_worst_raising_an_item_grade_never_lowers_its_area_or_the_level(
    case: tuple[ToolkitDefinition, dict[str, ResponseValue]], data: st.DataObject
) -> None:
    definition, responses = case
    item_id = data.draw(st.sampled_from(item_ids(definition)))
    before_grade = data.draw(st.integers(min_value=1, max_value=4))
    after_grade = data.draw(st.integers(min_value=before_grade + 1, max_value=5))
    area_id = next(area.id for area, _, item in definition.iter_items() if item.id == item_id)

    before = score_assessment(definition, {**responses, item_id: before_grade}, 9)
    after = score_assessment(definition, {**responses, item_id: after_grade}, 9)

    before_area, after_area = before.area_grades[area_id], after.area_grades[area_id]
    assert before_area is not None
    assert after_area is not None
    assert after_area >= before_area
    assert after.level_of_need.level >= before.level_of_need.level


@settings(max_examples=40, deadline=None)
@given(demo_cases(), st.data())
def test_demo_toolkit_raising_an_item_grade_never_lowers_its_area_or_the_level(
    case: tuple[int, dict[str, ResponseValue]], data: st.DataObject
) -> None:
    definition = load_demo_toolkit()
    age, responses = case
    item_id = data.draw(st.sampled_from(sorted(responses)))
    before_grade = data.draw(st.integers(min_value=1, max_value=4))
    after_grade = data.draw(st.integers(min_value=before_grade + 1, max_value=5))
    area_id = next(area.id for area, _, item in definition.iter_items() if item.id == item_id)

    before = score_assessment(definition, {**responses, item_id: before_grade}, age)
    after = score_assessment(definition, {**responses, item_id: after_grade}, age)

    before_area, after_area = before.area_grades[area_id], after.area_grades[area_id]
    assert before_area is not None
    assert after_area is not None
    assert after_area >= before_area
    assert after.level_of_need.level >= before.level_of_need.level


@settings(max_examples=60, deadline=None)
@given(scored_cases())
def test_neglect_form_profile_is_the_worst_mapped_sub_area_grade(
    case: tuple[ToolkitDefinition, dict[str, ResponseValue]],
) -> None:
    definition, responses = case

    result = score_assessment(definition, responses, child_age_years=9)

    for form in NEGLECT_FORMS:
        mapped = [
            grade
            for _, sub_area in definition.iter_sub_areas()
            if sub_area.neglect_form == form
            and (grade := result.sub_area_grades[sub_area.id]) is not None
        ]
        assert result.neglect_form_profile[form] == (max(mapped) if mapped else None)


@settings(max_examples=40, deadline=None)
@given(scored_cases())
def test_counts_and_highest_grade_follow_area_grades(
    case: tuple[ToolkitDefinition, dict[str, ResponseValue]],
) -> None:
    definition, responses = case

    result = score_assessment(definition, responses, child_age_years=9)

    graded = [grade for grade in result.area_grades.values() if grade is not None]
    assert result.highest_area_grade == (max(graded) if graded else None)
    assert result.areas_at_concern == sum(grade >= 3 for grade in graded)
    assert result.areas_at_significant_concern == sum(grade >= 4 for grade in graded)


# --- re-assessment -----------------------------------------------------------------------------


def test_distance_travelled_is_previous_minus_current() -> None:
    definition = build_definition()
    previous = score_assessment(
        definition, {**all_items(4), "a1": 2, "w1": NK, "w2": NK}, child_age_years=7
    )

    current = score_assessment(
        definition,
        {**all_items(2), "a1": 3, "f1": NK, "w1": 1, "w2": 1},
        child_age_years=8,
        previous=previous,
    )

    distance = current.distance_travelled
    assert distance is not None
    assert distance.items["f2"] == 2  # 4 -> 2: improved
    assert distance.items["a1"] == -1  # 2 -> 3: worse
    assert distance.items["f1"] is None  # now not_known
    assert distance.items["w1"] is None  # was not_known
    assert distance.sub_areas == {"food": 2, "home": 2, "present": 2, "absent": -1, "warmth": None}
    assert distance.areas == {"care": 2, "safety": 1, "feelings": None}


def test_distance_travelled_uses_effective_area_grades() -> None:
    definition = build_definition()
    previous = score_assessment(definition, all_items(2), 7, overrides={"care": 4})

    current = score_assessment(definition, all_items(2), 7, previous=previous)

    assert current.distance_travelled is not None
    assert current.distance_travelled.areas["care"] == 2


def test_distance_travelled_for_an_item_no_longer_in_the_age_band_is_none() -> None:
    bands = {"f2": (0, 4), "f3": (5, 10)}
    definition = build_definition(bands=bands)
    earlier = {key: value for key, value in all_items(3).items() if key != "f3"}
    later = {key: value for key, value in all_items(2).items() if key != "f2"}
    previous = score_assessment(definition, earlier, child_age_years=4)

    current = score_assessment(definition, later, child_age_years=5, previous=previous)

    assert current.distance_travelled is not None
    assert current.distance_travelled.items["f2"] is None
    assert current.distance_travelled.items["f3"] is None
    assert current.distance_travelled.items["f1"] == 1


def test_no_previous_result_means_no_distance_travelled() -> None:
    result = score_assessment(build_definition(), all_items(2), child_age_years=7)

    assert result.distance_travelled is None


def test_previous_result_read_back_from_json_still_gives_distance() -> None:
    definition = build_definition()
    stored = score_assessment(definition, all_items(5), 7).model_dump(mode="json")

    current = score_assessment(
        definition, all_items(3), 7, previous=ScoreResult.model_validate(stored)
    )

    assert current.distance_travelled is not None
    assert set(current.distance_travelled.areas.values()) == {2}


def test_targets_met_not_met_and_unknown() -> None:
    definition = build_definition()
    responses = {**all_items(2), "f1": 3, "h1": NK}

    result = score_assessment(
        definition,
        responses,
        child_age_years=7,
        previous_targets=[("f2", 2), ("f1", 2), ("h1", 2), ("p1", 3)],
    )

    assert [(target.item_id, target.current_grade, target.met) for target in result.targets] == [
        ("f2", 2, True),  # at the target
        ("f1", 3, False),  # still above it
        ("h1", None, None),  # now not_known
        ("p1", 2, True),  # better than the target
    ]


def test_target_on_an_item_not_assessed_now_is_undecided() -> None:
    definition = build_definition(bands={"f3": (0, 4)})
    responses = {key: value for key, value in all_items(1).items() if key != "f3"}

    result = score_assessment(definition, responses, 9, previous_targets=[("f3", 2)])

    assert result.targets[0].met is None
    assert result.targets[0].current_grade is None


# --- overrides ---------------------------------------------------------------------------------


def test_override_keeps_computed_grade_and_level_follows_effective_grade() -> None:
    definition = build_definition()

    result = score_assessment(definition, all_items(2), child_age_years=7, overrides={"care": 4})

    assert result.computed_area_grades == {"care": 2, "safety": 2, "feelings": 2}
    assert result.area_grades == {"care": 4, "safety": 2, "feelings": 2}
    assert result.overridden_area_ids == ["care"]
    assert result.highest_area_grade == 4
    assert result.areas_at_concern == 1
    assert result.areas_at_significant_concern == 1
    assert result.level_of_need.level == 3
    assert result.strength_area_ids == ["safety", "feelings"]


def test_override_down_lowers_the_level() -> None:
    definition = build_definition()
    responses = {**all_items(1), "a1": 4}
    without = score_assessment(definition, responses, child_age_years=7)

    with_override = score_assessment(definition, responses, 7, overrides={"safety": 2})

    assert without.level_of_need.level == 3
    assert with_override.computed_area_grades["safety"] == 4
    assert with_override.area_grades["safety"] == 2
    assert with_override.level_of_need.level == 1
    assert with_override.sub_area_grades["absent"] == 4


def test_override_of_an_area_with_insufficient_evidence_gives_it_a_grade() -> None:
    definition = build_definition()
    responses = {**all_items(1), "w1": NK, "w2": NK}

    result = score_assessment(definition, responses, 7, overrides={"feelings": 3})

    assert result.computed_area_grades["feelings"] is None
    assert result.area_grades["feelings"] == 3
    assert result.insufficient_evidence_area_ids == ["feelings"]
    assert result.level_of_need.level == 2


def test_override_of_an_unknown_area_is_refused() -> None:
    with pytest.raises(ResponsesInvalid) as caught:
        score_assessment(build_definition(), all_items(1), 7, overrides={"garden": 3})

    assert caught.value.problems == [
        {
            "area_id": "garden",
            "code": "unknown_area",
            "message": "override of area 'garden': not an area of this toolkit",
        }
    ]


@pytest.mark.parametrize("grade", [0, 6, True])
def test_override_outside_the_scale_is_refused(grade: int) -> None:
    with pytest.raises(ResponsesInvalid) as caught:
        score_assessment(build_definition(), all_items(1), 7, overrides={"care": grade})

    assert caught.value.problems[0]["area_id"] == "care"
    assert caught.value.problems[0]["code"] == "out_of_scale"


# --- refused responses and age bands -----------------------------------------------------------


def test_missing_response_is_refused_naming_the_item() -> None:
    responses = {key: value for key, value in all_items(1).items() if key != "h2"}

    with pytest.raises(ResponsesInvalid) as caught:
        score_assessment(build_definition(), responses, child_age_years=7)

    assert caught.value.problems == [
        {
            "item_id": "h2",
            "code": "missing_response",
            "message": "item 'h2': no response (give a grade or not_known)",
        }
    ]


def test_missing_in_band_item_is_refused_naming_it() -> None:
    definition = build_definition(bands={"f3": (5, 10)})
    responses = {key: value for key, value in all_items(1).items() if key != "f3"}

    with pytest.raises(ResponsesInvalid) as caught:
        score_assessment(definition, responses, child_age_years=6)

    assert [(p["item_id"], p["code"]) for p in caught.value.problems] == [
        ("f3", "missing_response")
    ]
    assert "item 'f3'" in caught.value.problems[0]["message"]


def test_response_to_an_out_of_band_item_is_refused() -> None:
    definition = build_definition(bands={"f3": (0, 4)})

    with pytest.raises(ResponsesInvalid) as caught:
        score_assessment(definition, all_items(1), child_age_years=11)

    assert caught.value.problems == [
        {
            "item_id": "f3",
            "code": "out_of_age_band",
            "message": "item 'f3': a child aged 11 is outside the item's age band",
        }
    ]


def test_out_of_band_item_left_unanswered_is_not_assessed() -> None:
    definition = build_definition(bands={"f3": (11, None)})
    responses = {key: value for key, value in all_items(2).items() if key != "f3"}

    result = score_assessment(definition, responses, child_age_years=10)

    assert "f3" not in result.item_grades
    assert result.sub_area_grades["food"] == 2


@pytest.mark.parametrize(("age", "in_band"), [(4, False), (5, True), (10, True), (11, False)])
def test_age_band_bounds_are_inclusive(age: int, in_band: bool) -> None:
    definition = build_definition(bands={"f3": (5, 10)})
    responses = {key: value for key, value in all_items(1).items() if key != "f3"}
    if in_band:
        responses["f3"] = 2

    result = score_assessment(definition, responses, child_age_years=age)

    assert ("f3" in result.item_grades) is in_band


def test_sub_area_with_no_item_in_band_is_not_applicable_rather_than_insufficient() -> None:
    definition = build_definition(bands={"a1": (5, None)})
    responses = {key: value for key, value in all_items(1).items() if key != "a1"}

    result = score_assessment(definition, responses, child_age_years=3)

    assert result.not_applicable_sub_area_ids == ["absent"]
    assert result.insufficient_evidence_sub_area_ids == []
    assert result.sub_area_grades["absent"] is None
    assert result.area_grades["safety"] == 1


def test_unknown_age_makes_banded_items_optional() -> None:
    definition = build_definition(bands={"f3": (0, 4), "h2": (5, 10)})
    responses = {key: value for key, value in all_items(1).items() if key != "h2"}

    result = score_assessment(definition, responses, child_age_years=None)

    assert "f3" in result.item_grades
    assert "h2" not in result.item_grades


def test_response_to_an_unknown_item_is_refused() -> None:
    with pytest.raises(ResponsesInvalid) as caught:
        score_assessment(build_definition(), {**all_items(1), "zz9": 2}, child_age_years=7)

    assert [(p["item_id"], p["code"]) for p in caught.value.problems] == [("zz9", "unknown_item")]


@pytest.mark.parametrize(
    ("value", "code"),
    [(0, "out_of_scale"), (6, "out_of_scale"), (True, "invalid_grade"), ("3", "invalid_grade")],
)
def test_bad_grade_is_refused_naming_the_item(value: Any, code: str) -> None:
    with pytest.raises(ResponsesInvalid) as caught:
        score_assessment(build_definition(), {**all_items(1), "p2": value}, child_age_years=7)

    assert [(p["item_id"], p["code"]) for p in caught.value.problems] == [("p2", code)]


def test_not_known_is_refused_when_the_scale_forbids_it() -> None:
    definition = build_definition(allow_not_known=False)

    with pytest.raises(ResponsesInvalid) as caught:
        score_assessment(definition, {**all_items(1), "a1": NK}, child_age_years=7)

    assert [(p["item_id"], p["code"]) for p in caught.value.problems] == [
        ("a1", "not_known_not_allowed")
    ]


def test_every_bad_response_is_listed_at_once() -> None:
    definition = build_definition(bands={"f3": (0, 4)})
    responses = {key: value for key, value in all_items(1).items() if key != "h1"}
    responses.update({"p1": 9, "nope": 1})

    with pytest.raises(ResponsesInvalid) as caught:
        score_assessment(definition, responses, child_age_years=12, overrides={"x": 2})

    assert [(p.get("item_id") or p["area_id"], p["code"]) for p in caught.value.problems] == [
        ("f3", "out_of_age_band"),
        ("h1", "missing_response"),
        ("p1", "out_of_scale"),
        ("nope", "unknown_item"),
        ("x", "unknown_area"),
    ]


def test_negative_age_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        score_assessment(build_definition(), all_items(1), child_age_years=-1)
