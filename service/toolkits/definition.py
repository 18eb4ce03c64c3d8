"""Neglect toolkit definitions: the document a partnership publishes, its schema and its checks.

A toolkit definition is data, not code. `validate_definition` turns a parsed YAML/JSON document
into a `ToolkitDefinition` or raises `DefinitionInvalid` listing every problem found: schema
violations (with their path) and the semantic ones a schema cannot express (duplicate ids,
descriptor counts that do not fit the grade scale, overlapping age bands, rules naming unknown
areas, no default rule...).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from schemas.common import NUL_FREE, LongText, ShortText
from schemas.vocabulary import NeglectFormName
from service.fingerprint import fingerprint

AggregationMethod = Literal["worst", "mode_worst_tie", "mean_round_up"]
AGGREGATION_METHODS: tuple[AggregationMethod, ...] = get_args(AggregationMethod)

MIN_LEVEL = 1
MAX_LEVEL = 4


Identifier = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,79}$")]
"""An id of a toolkit, area, sub-area or item: lower case letters, digits, `_`, `.`, `-`."""

VersionText = Annotated[
    str, StringConstraints(pattern=r"^[0-9]+(\.[0-9]+){0,2}(-[0-9A-Za-z.]+)?$", max_length=40)
]
"""A toolkit version such as `1.0.0`, `2.1` or `2.0.0-draft`."""

ItemText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=2_000),
    *NUL_FREE,
]
"""An item's question or one graded descriptor."""

AgeYears = Annotated[int, Field(ge=0, le=25)]


class _DefinitionModel(BaseModel):
    # strict: a definition is authored by hand, so "3" for 3 is a mistake worth reporting.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class GradeScale(_DefinitionModel):
    """The grades an item can take; lower is better. `not_known` is never a grade."""

    min_grade: int = Field(default=1, ge=0, le=10, description="Best grade: all needs met")
    max_grade: int = Field(default=5, ge=1, le=10, description="Worst grade: needs entirely unmet")
    labels: list[ShortText] | None = Field(
        default=None, description="One short label per grade, best (min_grade) first"
    )
    polarity: Literal["lower_is_better"] = "lower_is_better"
    allow_not_known: bool = Field(
        default=True, description="Whether `not_known` is an accepted response (never scored)"
    )

    @property
    def size(self) -> int:
        return self.max_grade - self.min_grade + 1

    def contains(self, grade: int) -> bool:
        return self.min_grade <= grade <= self.max_grade


class Item(_DefinitionModel):
    """One question graded by the practitioner, with one descriptor per grade."""

    id: Identifier
    text: ItemText
    guidance: LongText | None = None
    descriptors: list[ItemText] = Field(
        min_length=1, description="One descriptor per grade, best (min_grade) first"
    )
    min_age: AgeYears | None = Field(default=None, description="Youngest age in years, inclusive")
    max_age: AgeYears | None = Field(default=None, description="Oldest age in years, inclusive")
    variant_group: Identifier | None = Field(
        default=None,
        description=(
            "Items sharing a variant_group are age-specific versions of one question in one "
            "sub-area; their age bands must not overlap"
        ),
    )

    @property
    def is_age_banded(self) -> bool:
        return self.min_age is not None or self.max_age is not None

    def covers_age(self, age_years: int) -> bool:
        """Whether a child of this whole-year age is in the item's band (unbanded: always)."""
        if self.min_age is not None and age_years < self.min_age:
            return False
        return self.max_age is None or age_years <= self.max_age


class SubArea(_DefinitionModel):
    id: Identifier
    title: ShortText
    neglect_form: NeglectFormName
    items: list[Item] = Field(min_length=1)


class Area(_DefinitionModel):
    id: Identifier
    title: ShortText
    description: LongText | None = None
    sub_areas: list[SubArea] = Field(min_length=1)


class Aggregation(_DefinitionModel):
    """How grades combine upwards. Every method ignores `not_known` responses."""

    item_to_sub_area: AggregationMethod = "worst"
    sub_area_to_area: AggregationMethod = "worst"


class RuleConditions(_DefinitionModel):
    """Conditions of a level rule; all given must hold. Grades are effective area grades."""

    min_areas_at_significant_concern: int | None = Field(default=None, ge=1)
    min_areas_at_concern: int | None = Field(default=None, ge=1)
    min_highest_area_grade: int | None = None
    min_area_grades: dict[Identifier, int] | None = Field(
        default=None,
        min_length=1,
        description="Area id -> grade; each named area must be graded at least this",
    )

    @property
    def is_empty(self) -> bool:
        return (
            self.min_areas_at_significant_concern is None
            and self.min_areas_at_concern is None
            and self.min_highest_area_grade is None
            and not self.min_area_grades
        )


class LevelRule(_DefinitionModel):
    """One rule of the ordered level-of-need rules; the first that matches wins."""

    level: int = Field(ge=MIN_LEVEL, le=MAX_LEVEL)
    name: ShortText
    recommended_action: Annotated[LongText, StringConstraints(min_length=1)]
    refer_to_front_door: bool = False
    when: RuleConditions | None = Field(
        default=None,
        description="Omitted (or empty) on the final default rule, which always matches",
    )

    @property
    def is_default(self) -> bool:
        return self.when is None or self.when.is_empty


class ToolkitDefinition(_DefinitionModel):
    """A versioned neglect toolkit: areas -> sub-areas -> items, grading and levels of need."""

    id: Identifier
    version: VersionText
    title: ShortText
    publisher: ShortText
    licence: ShortText
    demonstration: bool = False
    description: LongText | None = None
    grade_scale: GradeScale = Field(default_factory=GradeScale)
    aggregation: Aggregation = Field(default_factory=Aggregation)
    concern_grade: int = 3
    significant_concern_grade: int = 4
    areas: list[Area] = Field(min_length=1)
    level_rules: list[LevelRule] = Field(min_length=1)

    def iter_sub_areas(self) -> Iterator[tuple[Area, SubArea]]:
        for area in self.areas:
            for sub_area in area.sub_areas:
                yield area, sub_area

    def iter_items(self) -> Iterator[tuple[Area, SubArea, Item]]:
        for area, sub_area in self.iter_sub_areas():
            for item in sub_area.items:
                yield area, sub_area, item


class DefinitionInvalid(Exception):
    """The document is not a valid toolkit definition; `problems` names every fault found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def definition_json_schema() -> dict[str, Any]:
    """The JSON Schema of a toolkit definition, as published at GET /v1/toolkits/schema.

    It covers structure only; `validate_definition` also checks what a schema cannot express.
    """
    schema = ToolkitDefinition.model_json_schema()
    return {"$schema": JSON_SCHEMA_DIALECT, **schema}


def validate_definition(document: object) -> ToolkitDefinition:
    """Check a parsed YAML/JSON document and return the definition it describes.

    Raises `DefinitionInvalid` listing every schema and semantic problem, each starting with its
    path.
    """
    problems: list[str] = []
    definition: ToolkitDefinition | None = None
    try:
        definition = ToolkitDefinition.model_validate(document)
    except ValidationError as exc:
        problems.extend(_describe_schema_error(error) for error in exc.errors())
    # Semantic checks read the raw document so they still run, and report, when the schema fails.
    problems.extend(_find_semantic_problems(document))
    if problems or definition is None:
        raise DefinitionInvalid(problems or ["document: not a valid toolkit definition"])
    return definition


def canonical_sha256(document: object) -> str:
    """`service.fingerprint.fingerprint` of a document (canonical JSON: sorted keys, compact,
    UTF-8).

    Given a `ToolkitDefinition`, hashes its full normalised form (defaults filled in), so two
    documents that differ only in spelled-out defaults or key order hash the same. Hash the
    validated definition when deciding whether a published version's content changed.
    """
    if isinstance(document, BaseModel):
        document = document.model_dump(mode="json")
    return fingerprint(document)


# --- schema problems ---------------------------------------------------------------------------


def _format_path(location: tuple[int | str, ...] | list[int | str]) -> str:
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path or "document"


def _describe_schema_error(error: Mapping[str, Any]) -> str:
    message = f"{_format_path(tuple(error['loc']))}: {error['msg']}"
    if error["type"] not in {"missing", "extra_forbidden"}:
        shown = repr(error.get("input"))
        if len(shown) <= 60:
            message += f" (got {shown})"
    return message


# --- semantic problems -------------------------------------------------------------------------
# These walk the raw document defensively: anything of the wrong shape has already been reported by
# the schema check and is skipped here.


def _as_mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


def _as_list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _as_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _as_text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _band_text(low: int | None, high: int | None) -> str:
    if high is None:
        return f"{low or 0}+"
    return f"{low or 0}-{high}"


class _SemanticCheck:
    def __init__(self, document: Mapping[str, object]) -> None:
        self.document = document
        self.problems: list[str] = []
        scale = _as_mapping(document.get("grade_scale", {}))
        self.min_grade = _as_int(scale.get("min_grade", 1))
        self.max_grade = _as_int(scale.get("max_grade", 5))
        # None when the scale itself is unusable: checks against it are then skipped.
        self.scale: range | None = None
        if self.min_grade is not None and self.max_grade is not None:
            if self.max_grade > self.min_grade:
                self.scale = range(self.min_grade, self.max_grade + 1)
        self.area_ids: list[str] = []

    def run(self) -> list[str]:
        self.check_scale()
        self.check_thresholds()
        self.check_structure()
        self.check_rules()
        return self.problems

    def out_of_scale(self, grade: int) -> bool:
        return self.scale is not None and grade not in self.scale

    @property
    def scale_text(self) -> str:
        return f"{self.min_grade}-{self.max_grade}"

    def check_scale(self) -> None:
        scale = _as_mapping(self.document.get("grade_scale", {}))
        if self.min_grade is not None and self.max_grade is not None and self.scale is None:
            self.problems.append(
                f"grade_scale: max_grade ({self.max_grade}) must be greater than "
                f"min_grade ({self.min_grade})"
            )
        labels = scale.get("labels")
        if self.scale is not None and isinstance(labels, list) and len(labels) != len(self.scale):
            self.problems.append(
                f"grade_scale.labels: {len(labels)} labels but the grade scale "
                f"{self.scale_text} has {len(self.scale)} grades"
            )

    def check_thresholds(self) -> None:
        concern = _as_int(self.document.get("concern_grade", 3))
        significant = _as_int(self.document.get("significant_concern_grade", 4))
        for name, grade in (("concern_grade", concern), ("significant_concern_grade", significant)):
            if grade is not None and self.out_of_scale(grade):
                self.problems.append(
                    f"{name}: grade {grade} is outside the grade scale {self.scale_text}"
                )
        if concern is not None and significant is not None and concern > significant:
            self.problems.append(
                f"concern_grade ({concern}) must not be greater than "
                f"significant_concern_grade ({significant})"
            )

    def check_structure(self) -> None:
        first_use: dict[str, str] = {}
        variant_groups: dict[str, list[tuple[str, str, str, int | None, int | None]]] = {}

        def claim(identifier: object, path: str) -> None:
            text = _as_text(identifier)
            if text is None:
                return
            if text in first_use:
                self.problems.append(
                    f"{path}.id: duplicate id '{text}' (already used at {first_use[text]})"
                )
            else:
                first_use[text] = path

        for area_index, raw_area in enumerate(_as_list(self.document.get("areas"))):
            area = _as_mapping(raw_area)
            area_path = f"areas[{area_index}]"
            claim(area.get("id"), area_path)
            if (area_id := _as_text(area.get("id"))) is not None:
                self.area_ids.append(area_id)
            for sub_index, raw_sub_area in enumerate(_as_list(area.get("sub_areas"))):
                sub_area = _as_mapping(raw_sub_area)
                sub_path = f"{area_path}.sub_areas[{sub_index}]"
                claim(sub_area.get("id"), sub_path)
                for item_index, raw_item in enumerate(_as_list(sub_area.get("items"))):
                    item = _as_mapping(raw_item)
                    item_path = f"{sub_path}.items[{item_index}]"
                    claim(item.get("id"), item_path)
                    self.check_item(item, item_path)
                    group = _as_text(item.get("variant_group"))
                    if group is not None:
                        variant_groups.setdefault(group, []).append(
                            (
                                item_path,
                                _as_text(item.get("id")) or item_path,
                                sub_path,
                                _as_int(item.get("min_age")),
                                _as_int(item.get("max_age")),
                            )
                        )
        for group, members in variant_groups.items():
            self.check_variant_group(group, members)

    def check_item(self, item: Mapping[str, object], item_path: str) -> None:
        descriptors = item.get("descriptors")
        if (
            self.scale is not None
            and isinstance(descriptors, list)
            and descriptors
            and len(descriptors) != len(self.scale)
        ):
            self.problems.append(
                f"{item_path}.descriptors: {len(descriptors)} descriptors but the grade "
                f"scale {self.scale_text} has {len(self.scale)} grades (one descriptor each)"
            )
        min_age = _as_int(item.get("min_age"))
        max_age = _as_int(item.get("max_age"))
        if min_age is not None and max_age is not None and min_age > max_age:
            self.problems.append(
                f"{item_path}: bad age band: min_age {min_age} is greater than max_age {max_age}"
            )

    def check_variant_group(
        self, group: str, members: list[tuple[str, str, str, int | None, int | None]]
    ) -> None:
        sub_paths = {sub_path for _, _, sub_path, _, _ in members}
        if len(sub_paths) > 1:
            self.problems.append(
                f"variant_group '{group}': its items must all be in one sub-area, "
                f"found in {', '.join(sorted(sub_paths))}"
            )
        for path, _, _, low, high in members:
            if low is None and high is None:
                self.problems.append(
                    f"{path}: item in variant_group '{group}' must have an age band "
                    "(min_age and/or max_age)"
                )
        banded = [member for member in members if member[3] is not None or member[4] is not None]
        for first_index, first in enumerate(banded):
            for second in banded[first_index + 1 :]:
                low = max(first[3] or 0, second[3] or 0)
                first_high = first[4] if first[4] is not None else 10**6
                second_high = second[4] if second[4] is not None else 10**6
                if low <= min(first_high, second_high):
                    self.problems.append(
                        f"{second[0]}: age band {_band_text(second[3], second[4])} of item "
                        f"'{second[1]}' overlaps age band {_band_text(first[3], first[4])} of "
                        f"item '{first[1]}' in variant_group '{group}'"
                    )

    def check_rules(self) -> None:
        rules = _as_list(self.document.get("level_rules"))
        default_indexes: list[int] = []
        known_areas = set(self.area_ids)
        area_count = len(self.area_ids)
        for index, raw_rule in enumerate(rules):
            rule = _as_mapping(raw_rule)
            path = f"level_rules[{index}]"
            raw_conditions = rule.get("when")
            conditions = _as_mapping(raw_conditions)
            if raw_conditions is None or not any(
                value is not None and value != {} for value in conditions.values()
            ):
                default_indexes.append(index)
                continue
            self.check_conditions(conditions, f"{path}.when", known_areas, area_count)
        if rules and not default_indexes:
            self.problems.append(
                "level_rules: no default rule: the last rule must have no conditions "
                "(omit `when`) so every assessment gets a level of need"
            )
        for index in default_indexes:
            if index != len(rules) - 1:
                self.problems.append(
                    f"level_rules[{index}]: a default rule (no conditions) must be the last rule; "
                    f"the rules after it can never match"
                )

    def check_conditions(
        self,
        conditions: Mapping[str, object],
        path: str,
        known_areas: set[str],
        area_count: int,
    ) -> None:
        for name in ("min_areas_at_significant_concern", "min_areas_at_concern"):
            count = _as_int(conditions.get(name))
            if count is not None and area_count and count > area_count:
                self.problems.append(
                    f"{path}.{name}: {count} can never match: the toolkit has "
                    f"only {area_count} areas"
                )
        highest = _as_int(conditions.get("min_highest_area_grade"))
        if highest is not None and self.out_of_scale(highest):
            self.problems.append(
                f"{path}.min_highest_area_grade: grade {highest} is outside the grade scale "
                f"{self.scale_text}"
            )
        for area_id, raw_grade in _as_mapping(conditions.get("min_area_grades")).items():
            if area_id not in known_areas:
                self.problems.append(
                    f"{path}.min_area_grades: unknown area id '{area_id}' referenced"
                )
            grade = _as_int(raw_grade)
            if grade is not None and self.out_of_scale(grade):
                self.problems.append(
                    f"{path}.min_area_grades.{area_id}: grade {grade} is outside the grade scale "
                    f"{self.scale_text}"
                )


def _find_semantic_problems(document: object) -> list[str]:
    if not isinstance(document, Mapping):
        return []
    return _SemanticCheck(document).run()
