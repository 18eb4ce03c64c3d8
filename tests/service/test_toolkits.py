"""Toolkit definitions: the schema, the semantic checks, hashing and the demonstration toolkit."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest

from schemas.vocabulary import NEGLECT_FORMS
from service.toolkits.definition import (
    DefinitionInvalid,
    Item,
    canonical_sha256,
    definition_json_schema,
    validate_definition,
)
from service.toolkits.demo import DEMO_TOOLKIT_PATH, load_demo_toolkit, read_demo_toolkit_document

DESCRIPTORS = ["all met", "mostly met", "partly met", "largely unmet", "entirely unmet"]


def make_item(item_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": item_id,
        "text": f"Question {item_id}",
        "descriptors": list(DESCRIPTORS),
        **fields,
    }


def make_document() -> dict[str, Any]:
    """A small valid definition: two areas, three sub-areas, four items."""
    return {
        "id": "tiny-toolkit",
        "version": "1.0.0",
        "title": "Tiny toolkit",
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
                        "items": [make_item("meals"), make_item("snacks")],
                    },
                    {
                        "id": "home",
                        "title": "Home",
                        "neglect_form": "physical",
                        "items": [make_item("warmth")],
                    },
                ],
            },
            {
                "id": "safety",
                "title": "Safety",
                "sub_areas": [
                    {
                        "id": "supervision",
                        "title": "Supervision",
                        "neglect_form": "supervision",
                        "items": [make_item("watching")],
                    }
                ],
            },
        ],
        "level_rules": [
            {
                "level": 3,
                "name": "Targeted",
                "recommended_action": "Refer to the Front Door",
                "when": {"min_areas_at_significant_concern": 1},
            },
            {"level": 1, "name": "Universal", "recommended_action": "Carry on"},
        ],
    }


def first_item(document: dict[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = document["areas"][0]["sub_areas"][0]["items"][0]
    return item


def second_item(document: dict[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = document["areas"][0]["sub_areas"][0]["items"][1]
    return item


def drop_title(document: dict[str, Any]) -> None:
    del document["title"]


def bad_neglect_form(document: dict[str, Any]) -> None:
    document["areas"][0]["sub_areas"][0]["neglect_form"] = "financial"


def duplicate_item_id(document: dict[str, Any]) -> None:
    document["areas"][1]["sub_areas"][0]["items"][0]["id"] = "meals"


def item_reusing_area_id(document: dict[str, Any]) -> None:
    second_item(document)["id"] = "care"


def four_descriptors(document: dict[str, Any]) -> None:
    first_item(document)["descriptors"] = DESCRIPTORS[:4]


def inverted_age_band(document: dict[str, Any]) -> None:
    first_item(document).update(min_age=11, max_age=4)


def overlapping_variants(document: dict[str, Any]) -> None:
    first_item(document).update(min_age=0, max_age=6, variant_group="meal_care")
    second_item(document).update(min_age=5, max_age=10, variant_group="meal_care")


def variant_without_band(document: dict[str, Any]) -> None:
    first_item(document).update(min_age=0, max_age=4, variant_group="meal_care")
    second_item(document).update(variant_group="meal_care")


def level_five_rule(document: dict[str, Any]) -> None:
    document["level_rules"][0]["level"] = 5


def level_zero_rule(document: dict[str, Any]) -> None:
    document["level_rules"][1]["level"] = 0


def concern_above_significant(document: dict[str, Any]) -> None:
    document.update(concern_grade=4, significant_concern_grade=3)


def concern_outside_scale(document: dict[str, Any]) -> None:
    document["concern_grade"] = 7


def no_default_rule(document: dict[str, Any]) -> None:
    document["level_rules"].pop()


def default_rule_first(document: dict[str, Any]) -> None:
    document["level_rules"].reverse()


def unknown_area_in_rule(document: dict[str, Any]) -> None:
    document["level_rules"][0]["when"] = {"min_area_grades": {"nowhere": 4}}


def rule_grade_outside_scale(document: dict[str, Any]) -> None:
    document["level_rules"][0]["when"] = {"min_highest_area_grade": 9}


def impossible_area_count(document: dict[str, Any]) -> None:
    document["level_rules"][0]["when"] = {"min_areas_at_concern": 3}


def unknown_aggregation(document: dict[str, Any]) -> None:
    document["aggregation"] = {"item_to_sub_area": "average"}


def unknown_field(document: dict[str, Any]) -> None:
    document["areas"][0]["colour"] = "red"


def grade_as_text(document: dict[str, Any]) -> None:
    document["concern_grade"] = "3"


def empty_scale(document: dict[str, Any]) -> None:
    document["grade_scale"] = {"min_grade": 3, "max_grade": 3}


def label_count_mismatch(document: dict[str, Any]) -> None:
    document["grade_scale"] = {"labels": ["good", "bad"]}


def no_areas(document: dict[str, Any]) -> None:
    document["areas"] = []


def area_without_sub_areas(document: dict[str, Any]) -> None:
    document["areas"][1]["sub_areas"] = []


def badly_formed_id(document: dict[str, Any]) -> None:
    second_item(document)["id"] = "Snack Time"


def badly_formed_version(document: dict[str, Any]) -> None:
    document["version"] = "first"


def empty_descriptor(document: dict[str, Any]) -> None:
    first_item(document)["descriptors"][2] = "   "


MALFORMED: list[tuple[Callable[[dict[str, Any]], None], str]] = [
    (drop_title, "title: Field required"),
    (bad_neglect_form, "areas[0].sub_areas[0].neglect_form: Input should be 'medical'"),
    (duplicate_item_id, "duplicate id 'meals' (already used at areas[0].sub_areas[0].items[0])"),
    (item_reusing_area_id, "duplicate id 'care' (already used at areas[0])"),
    (
        four_descriptors,
        "areas[0].sub_areas[0].items[0].descriptors: 4 descriptors but the grade scale 1-5 "
        "has 5 grades",
    ),
    (inverted_age_band, "bad age band: min_age 11 is greater than max_age 4"),
    (
        overlapping_variants,
        "age band 5-10 of item 'snacks' overlaps age band 0-6 of item 'meals' "
        "in variant_group 'meal_care'",
    ),
    (variant_without_band, "item in variant_group 'meal_care' must have an age band"),
    (level_five_rule, "level_rules[0].level: Input should be less than or equal to 4"),
    (level_zero_rule, "level_rules[1].level: Input should be greater than or equal to 1"),
    (
        concern_above_significant,
        "concern_grade (4) must not be greater than significant_concern_grade (3)",
    ),
    (concern_outside_scale, "concern_grade: grade 7 is outside the grade scale 1-5"),
    (no_default_rule, "level_rules: no default rule"),
    (default_rule_first, "level_rules[0]: a default rule (no conditions) must be the last rule"),
    (unknown_area_in_rule, "min_area_grades: unknown area id 'nowhere' referenced"),
    (
        rule_grade_outside_scale,
        "level_rules[0].when.min_highest_area_grade: grade 9 is outside the grade scale 1-5",
    ),
    (impossible_area_count, "min_areas_at_concern: 3 can never match: the toolkit has only 2"),
    (unknown_aggregation, "aggregation.item_to_sub_area: Input should be 'worst'"),
    (unknown_field, "areas[0].colour: Extra inputs are not permitted"),
    (grade_as_text, "concern_grade: Input should be a valid integer (got '3')"),
    (empty_scale, "grade_scale: max_grade (3) must be greater than min_grade (3)"),
    (label_count_mismatch, "grade_scale.labels: 2 labels but the grade scale 1-5 has 5 grades"),
    (no_areas, "areas: List should have at least 1 item"),
    (area_without_sub_areas, "areas[1].sub_areas: List should have at least 1 item"),
    (badly_formed_id, "areas[0].sub_areas[0].items[1].id: String should match pattern"),
    (badly_formed_version, "version: String should match pattern"),
    (empty_descriptor, "items[0].descriptors[2]: String should have at least 1 character"),
]


def test_small_document_is_valid() -> None:
    definition = validate_definition(make_document())

    assert definition.id == "tiny-toolkit"
    assert definition.grade_scale.min_grade == 1
    assert definition.grade_scale.max_grade == 5
    assert definition.aggregation.item_to_sub_area == "worst"
    assert definition.concern_grade == 3
    assert definition.significant_concern_grade == 4


@pytest.mark.parametrize(
    ("break_document", "expected"), MALFORMED, ids=[case.__name__ for case, _ in MALFORMED]
)
def test_malformed_definition_is_refused_naming_the_problem(
    break_document: Callable[[dict[str, Any]], None], expected: str
) -> None:
    document = make_document()
    break_document(document)

    with pytest.raises(DefinitionInvalid) as caught:
        validate_definition(document)

    assert any(expected in problem for problem in caught.value.problems), caught.value.problems


def test_schema_and_semantic_problems_are_reported_together() -> None:
    document = make_document()
    drop_title(document)
    duplicate_item_id(document)
    four_descriptors(document)

    with pytest.raises(DefinitionInvalid) as caught:
        validate_definition(document)

    problems = caught.value.problems
    assert len(problems) == 3
    assert problems[0] == "title: Field required"
    assert any("duplicate id 'meals'" in problem for problem in problems[1:])
    assert any("4 descriptors" in problem for problem in problems[1:])


def test_document_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(DefinitionInvalid) as caught:
        validate_definition(["not", "a", "toolkit"])

    assert caught.value.problems[0].startswith("document: Input should be a valid dictionary")


def test_definition_invalid_message_joins_every_problem() -> None:
    document = make_document()
    drop_title(document)
    no_default_rule(document)

    with pytest.raises(DefinitionInvalid) as caught:
        validate_definition(document)

    assert str(caught.value) == "; ".join(caught.value.problems)


def test_published_json_schema_accepts_a_valid_document() -> None:
    validator = jsonschema.Draft202012Validator(definition_json_schema())

    assert list(validator.iter_errors(make_document())) == []


def test_published_json_schema_refuses_an_unknown_neglect_form() -> None:
    validator = jsonschema.Draft202012Validator(definition_json_schema())
    document = make_document()
    bad_neglect_form(document)

    errors = list(validator.iter_errors(document))

    assert errors
    assert any("financial" in error.message for error in errors)


def test_published_json_schema_declares_its_dialect_and_enumerates_neglect_forms() -> None:
    schema = definition_json_schema()

    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$defs"]["SubArea"]["properties"]["neglect_form"]["enum"] == list(NEGLECT_FORMS)


def test_canonical_sha256_ignores_key_order() -> None:
    document = make_document()
    reordered = dict(reversed(list(copy.deepcopy(document).items())))

    assert canonical_sha256(document) == canonical_sha256(reordered)
    assert len(canonical_sha256(document)) == 64


def test_canonical_sha256_changes_with_content() -> None:
    document = make_document()
    changed = copy.deepcopy(document)
    first_item(changed)["text"] = "A different question"

    assert canonical_sha256(document) != canonical_sha256(changed)


def test_canonical_sha256_of_definitions_ignores_spelled_out_defaults() -> None:
    document = make_document()
    explicit = copy.deepcopy(document)
    explicit.update(concern_grade=3, aggregation={"item_to_sub_area": "worst"})

    assert canonical_sha256(validate_definition(document)) == canonical_sha256(
        validate_definition(explicit)
    )


def test_canonical_sha256_hashes_sorted_compact_utf8_json() -> None:
    expected = hashlib.sha256('{"a":"é","b":[1,2]}'.encode()).hexdigest()

    assert canonical_sha256({"b": [1, 2], "a": "é"}) == expected


def test_demo_toolkit_validates_and_is_labelled_a_demonstration() -> None:
    definition = validate_definition(read_demo_toolkit_document())

    assert definition.id == "demo-neglect-profile"
    assert definition.version == "1.0.0"
    assert definition.demonstration is True
    assert definition.licence == "CC0-1.0 demonstration content"
    assert "demonstration" in definition.title.lower()


def test_demo_toolkit_has_four_areas_and_at_least_thirteen_sub_areas() -> None:
    definition = load_demo_toolkit()

    assert [area.title for area in definition.areas] == [
        "Physical care",
        "Safety and supervision",
        "Emotional care",
        "Developmental care and esteem",
    ]
    assert sum(len(area.sub_areas) for area in definition.areas) >= 13


def test_demo_toolkit_items_have_five_descriptors_and_sub_areas_one_to_three_items() -> None:
    definition = load_demo_toolkit()

    assert all(len(item.descriptors) == 5 for _, _, item in definition.iter_items())
    assert all(1 <= len(sub_area.items) <= 3 for _, sub_area in definition.iter_sub_areas())


def test_demo_toolkit_maps_sub_areas_onto_all_six_neglect_forms() -> None:
    definition = load_demo_toolkit()

    forms = {sub_area.neglect_form for _, sub_area in definition.iter_sub_areas()}

    assert forms == set(NEGLECT_FORMS)


def test_demo_toolkit_has_items_banded_for_each_age_group() -> None:
    definition = load_demo_toolkit()

    bands = {(item.min_age, item.max_age) for _, _, item in definition.iter_items()}

    assert {(0, 4), (5, 10), (11, None)} <= bands


def test_demo_toolkit_variant_groups_give_exactly_one_item_at_every_age() -> None:
    definition = load_demo_toolkit()
    members: dict[str, list[Item]] = {}
    for _, _, item in definition.iter_items():
        if item.variant_group is not None:
            members.setdefault(item.variant_group, []).append(item)

    assert set(members) == {"personal_hygiene", "care_when_absent"}
    for items in members.values():
        for age in range(18):
            assert sum(item.covers_age(age) for item in items) == 1


def test_demo_toolkit_levels_three_and_four_go_to_the_front_door() -> None:
    definition = load_demo_toolkit()

    assert {rule.level for rule in definition.level_rules} == {1, 2, 3, 4}
    for rule in definition.level_rules:
        assert rule.refer_to_front_door == (rule.level >= 3)
        assert ("Front Door" in rule.recommended_action) == (rule.level >= 3)
    assert definition.level_rules[-1].is_default
    assert definition.level_rules[-1].level == 1


def test_demo_toolkit_file_ships_inside_the_service_package() -> None:
    assert DEMO_TOOLKIT_PATH.name == "demo_neglect_toolkit.yaml"
    assert DEMO_TOOLKIT_PATH.parent.name == "toolkits"
    assert DEMO_TOOLKIT_PATH.is_file()


def test_demo_toolkit_matches_the_published_json_schema() -> None:
    validator = jsonschema.Draft202012Validator(definition_json_schema())

    assert list(validator.iter_errors(read_demo_toolkit_document())) == []
