"""Scoring a neglect toolkit assessment: a pure, deterministic function of its inputs.

Grades are combined upwards (item -> sub-area -> area) with the definition's aggregation methods,
`not_known` is never scored, and no single total is produced anywhere: good care in one area must
not hide poor care in another.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict

from schemas.vocabulary import NEGLECT_FORMS, NeglectFormName
from service.toolkits.definition import AggregationMethod, Item, LevelRule, ToolkitDefinition

NOT_KNOWN: Final[Literal["not_known"]] = "not_known"

ResponseValue = int | Literal["not_known"]

ResponseProblemCode = Literal[
    "missing_response",
    "unknown_item",
    "out_of_age_band",
    "out_of_scale",
    "invalid_grade",
    "not_known_not_allowed",
    "unknown_area",
]


class ResponsesInvalid(Exception):
    """Responses or overrides that do not fit the definition.

    Each problem is `{"item_id" | "area_id": ..., "code": ResponseProblemCode, "message": ...}`.
    """

    def __init__(self, problems: list[dict[str, str]]) -> None:
        super().__init__("; ".join(problem["message"] for problem in problems))
        self.problems = problems


class _ResultModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LevelOfNeed(_ResultModel):
    level: int
    name: str
    recommended_action: str
    refer_to_front_door: bool
    rule_index: int
    """Position of the matching rule in the definition's `level_rules`."""


class DistanceTravelled(_ResultModel):
    """Previous grade minus current grade (positive = improvement); None where either is None."""

    items: dict[str, int | None]
    sub_areas: dict[str, int | None]
    areas: dict[str, int | None]


class TargetOutcome(_ResultModel):
    item_id: str
    target_grade: int
    current_grade: int | None
    met: bool | None
    """current grade <= target; None when the item is now not_known or not assessed."""


class ScoreResult(_ResultModel):
    """Everything the scoring engine computes for one assessment; JSON-serialisable as is.

    Grade maps are keyed by id in definition order; a None grade means no scored evidence.
    Area grades are effective (after practitioner overrides) unless named `computed_`.
    """

    toolkit_id: str
    toolkit_version: str
    item_grades: dict[str, int | None]
    """Every item assessed for this child; None = answered `not_known`."""
    sub_area_grades: dict[str, int | None]
    computed_area_grades: dict[str, int | None]
    area_grades: dict[str, int | None]
    overridden_area_ids: list[str]
    neglect_form_profile: dict[NeglectFormName, int | None]
    highest_area_grade: int | None
    areas_at_concern: int
    areas_at_significant_concern: int
    level_of_need: LevelOfNeed
    strength_area_ids: list[str]
    insufficient_evidence_sub_area_ids: list[str]
    insufficient_evidence_area_ids: list[str]
    not_applicable_sub_area_ids: list[str]
    """Sub-areas with no item in the child's age band."""
    not_applicable_area_ids: list[str]
    distance_travelled: DistanceTravelled | None = None
    targets: list[TargetOutcome] = []


def aggregate_grades(grades: Sequence[int], method: AggregationMethod) -> int | None:
    """Combine grades (lower is better) with one aggregation method; None when there are none.

    `worst`: the highest grade. `mode_worst_tie`: the most frequent grade, ties going to the
    higher (worse) grade. `mean_round_up`: the mean rounded up to the next whole grade.
    """
    if not grades:
        return None
    if method == "worst":
        return max(grades)
    if method == "mode_worst_tie":
        counts = Counter(grades)
        return max(counts, key=lambda grade: (counts[grade], grade))
    # Integer ceiling division: exact, unlike math.ceil on a float mean.
    return -(-sum(grades) // len(grades))


def _as_grade(value: object) -> int | None:
    # bool is an int subclass, but True is no grade.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _item_applies(item: Item, child_age_years: int | None) -> bool | None:
    """True: a response is required; False: refused; None: optional (age unknown, banded item)."""
    if not item.is_age_banded:
        return True
    if child_age_years is None:
        return None
    return item.covers_age(child_age_years)


def _check_responses(
    definition: ToolkitDefinition,
    responses: Mapping[str, object],
    child_age_years: int | None,
    overrides: Mapping[str, object],
) -> list[dict[str, str]]:
    problems: list[dict[str, str]] = []
    scale = definition.grade_scale
    scale_text = f"{scale.min_grade}-{scale.max_grade}"
    known_items: set[str] = set()
    for _, _, item in definition.iter_items():
        known_items.add(item.id)
        applies = _item_applies(item, child_age_years)
        if item.id not in responses:
            if applies is True:
                problems.append(
                    {
                        "item_id": item.id,
                        "code": "missing_response",
                        "message": f"item '{item.id}': no response (give a grade or not_known)",
                    }
                )
            continue
        if applies is False:
            problems.append(
                {
                    "item_id": item.id,
                    "code": "out_of_age_band",
                    "message": (
                        f"item '{item.id}': a child aged {child_age_years} is outside the item's "
                        f"age band"
                    ),
                }
            )
            continue
        value = responses[item.id]
        if value == NOT_KNOWN:
            if not scale.allow_not_known:
                problems.append(
                    {
                        "item_id": item.id,
                        "code": "not_known_not_allowed",
                        "message": f"item '{item.id}': this toolkit does not accept not_known",
                    }
                )
        elif (grade := _as_grade(value)) is None:
            problems.append(
                {
                    "item_id": item.id,
                    "code": "invalid_grade",
                    "message": f"item '{item.id}': {value!r} is neither a grade nor not_known",
                }
            )
        elif not scale.contains(grade):
            problems.append(
                {
                    "item_id": item.id,
                    "code": "out_of_scale",
                    "message": (
                        f"item '{item.id}': grade {value} is outside the grade scale {scale_text}"
                    ),
                }
            )
    for item_id in sorted(set(responses) - known_items):
        problems.append(
            {
                "item_id": item_id,
                "code": "unknown_item",
                "message": f"item '{item_id}': not an item of toolkit {definition.id} "
                f"{definition.version}",
            }
        )
    known_areas = {area.id for area in definition.areas}
    for area_id in sorted(overrides):
        raw_grade = overrides[area_id]
        grade = _as_grade(raw_grade)
        if area_id not in known_areas:
            problems.append(
                {
                    "area_id": area_id,
                    "code": "unknown_area",
                    "message": f"override of area '{area_id}': not an area of this toolkit",
                }
            )
        elif grade is None or not scale.contains(grade):
            problems.append(
                {
                    "area_id": area_id,
                    "code": "out_of_scale",
                    "message": (
                        f"override of area '{area_id}': {raw_grade!r} is not a grade of the "
                        f"scale {scale_text}"
                    ),
                }
            )
    return problems


def _count_at_least(grades: Iterable[int | None], threshold: int) -> int:
    return sum(1 for grade in grades if grade is not None and grade >= threshold)


def _rule_matches(
    rule: LevelRule,
    area_grades: Mapping[str, int | None],
    highest: int | None,
    at_concern: int,
    at_significant_concern: int,
) -> bool:
    conditions = rule.when
    if conditions is None:
        return True
    if (
        conditions.min_areas_at_significant_concern is not None
        and at_significant_concern < conditions.min_areas_at_significant_concern
    ):
        return False
    if conditions.min_areas_at_concern is not None and at_concern < conditions.min_areas_at_concern:
        return False
    if conditions.min_highest_area_grade is not None and (
        highest is None or highest < conditions.min_highest_area_grade
    ):
        return False
    for area_id, minimum in (conditions.min_area_grades or {}).items():
        grade = area_grades.get(area_id)
        if grade is None or grade < minimum:
            return False
    return True


def _decide_level(
    definition: ToolkitDefinition,
    area_grades: Mapping[str, int | None],
    highest: int | None,
    at_concern: int,
    at_significant_concern: int,
) -> LevelOfNeed:
    for index, rule in enumerate(definition.level_rules):
        if _rule_matches(rule, area_grades, highest, at_concern, at_significant_concern):
            return LevelOfNeed(
                level=rule.level,
                name=rule.name,
                recommended_action=rule.recommended_action,
                refer_to_front_door=rule.refer_to_front_door,
                rule_index=index,
            )
    # validate_definition guarantees a final rule without conditions.
    raise ValueError(f"toolkit {definition.id} {definition.version} has no default level rule")


def _subtract(previous: int | None, current: int | None) -> int | None:
    if previous is None or current is None:
        return None
    return previous - current


def _compare_grades(
    previous: Mapping[str, int | None], current: Mapping[str, int | None]
) -> dict[str, int | None]:
    keys = [*current, *(key for key in previous if key not in current)]
    return {key: _subtract(previous.get(key), current.get(key)) for key in keys}


def score_assessment(
    definition: ToolkitDefinition,
    responses: Mapping[str, ResponseValue],
    child_age_years: int | None,
    overrides: Mapping[str, int] | None = None,
    previous: ScoreResult | None = None,
    previous_targets: Iterable[tuple[str, int]] = (),
) -> ScoreResult:
    """Score one assessment against a validated definition.

    `responses` maps item id -> grade or "not_known". Every item in the child's age band needs a
    response; items outside it must have none. With `child_age_years` None, age-banded items are
    optional. `overrides` maps area id -> the practitioner's grade (the reason is the caller's
    business). `previous` (the last assessment's result) adds distance travelled;
    `previous_targets` are (item id, target grade) pairs set earlier.

    Raises `ResponsesInvalid` naming every bad item or override.
    """
    if child_age_years is not None and child_age_years < 0:
        raise ValueError("child_age_years must not be negative")
    overrides = overrides or {}
    problems = _check_responses(definition, responses, child_age_years, overrides)
    if problems:
        raise ResponsesInvalid(problems)

    method = definition.aggregation
    item_grades: dict[str, int | None] = {}
    sub_area_grades: dict[str, int | None] = {}
    computed_area_grades: dict[str, int | None] = {}
    insufficient_sub_areas: list[str] = []
    insufficient_areas: list[str] = []
    not_applicable_sub_areas: list[str] = []
    not_applicable_areas: list[str] = []
    profile_grades: dict[NeglectFormName, list[int]] = {form: [] for form in NEGLECT_FORMS}

    for area in definition.areas:
        scored_sub_area_grades: list[int] = []
        area_assessed = False
        for sub_area in area.sub_areas:
            scored: list[int] = []
            assessed = False
            for item in sub_area.items:
                if item.id not in responses:
                    continue
                assessed = True
                value = responses[item.id]
                grade = None if value == NOT_KNOWN else int(value)
                item_grades[item.id] = grade
                if grade is not None:
                    scored.append(grade)
            sub_grade = aggregate_grades(scored, method.item_to_sub_area)
            sub_area_grades[sub_area.id] = sub_grade
            if not assessed:
                not_applicable_sub_areas.append(sub_area.id)
                continue
            area_assessed = True
            if sub_grade is None:
                insufficient_sub_areas.append(sub_area.id)
            else:
                scored_sub_area_grades.append(sub_grade)
                profile_grades[sub_area.neglect_form].append(sub_grade)
        area_grade = aggregate_grades(scored_sub_area_grades, method.sub_area_to_area)
        computed_area_grades[area.id] = area_grade
        if not area_assessed:
            not_applicable_areas.append(area.id)
        elif area_grade is None:
            insufficient_areas.append(area.id)

    area_grades = {
        area_id: overrides.get(area_id, grade) for area_id, grade in computed_area_grades.items()
    }
    known_grades = [grade for grade in area_grades.values() if grade is not None]
    highest = max(known_grades) if known_grades else None
    at_concern = _count_at_least(area_grades.values(), definition.concern_grade)
    at_significant = _count_at_least(area_grades.values(), definition.significant_concern_grade)
    strength_ceiling = definition.grade_scale.min_grade + 1

    distance = None
    if previous is not None:
        distance = DistanceTravelled(
            items=_compare_grades(previous.item_grades, item_grades),
            sub_areas=_compare_grades(previous.sub_area_grades, sub_area_grades),
            areas=_compare_grades(previous.area_grades, area_grades),
        )
    targets = []
    for item_id, target_grade in previous_targets:
        current = item_grades.get(item_id)
        targets.append(
            TargetOutcome(
                item_id=item_id,
                target_grade=target_grade,
                current_grade=current,
                met=None if current is None else current <= target_grade,
            )
        )

    return ScoreResult(
        toolkit_id=definition.id,
        toolkit_version=definition.version,
        item_grades=item_grades,
        sub_area_grades=sub_area_grades,
        computed_area_grades=computed_area_grades,
        area_grades=area_grades,
        overridden_area_ids=[area_id for area_id in computed_area_grades if area_id in overrides],
        neglect_form_profile={
            form: max(grades) if grades else None for form, grades in profile_grades.items()
        },
        highest_area_grade=highest,
        areas_at_concern=at_concern,
        areas_at_significant_concern=at_significant,
        level_of_need=_decide_level(definition, area_grades, highest, at_concern, at_significant),
        strength_area_ids=[
            area_id
            for area_id, grade in area_grades.items()
            if grade is not None and grade <= strength_ceiling
        ],
        insufficient_evidence_sub_area_ids=insufficient_sub_areas,
        insufficient_evidence_area_ids=insufficient_areas,
        not_applicable_sub_area_ids=not_applicable_sub_areas,
        not_applicable_area_ids=not_applicable_areas,
        distance_travelled=distance,
        targets=targets,
    )
