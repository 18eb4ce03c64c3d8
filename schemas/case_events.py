"""Case events sent in batches by the council's case-management system (SPEC 2.4).

Each event is one member of a union discriminated on `type`. The route accepts the batch as
`CaseEventBatchIn` (a list of JSON objects) and validates each event on its own with
`parse_case_event`, so that one bad event is rejected with its reason while the rest of the batch is
stored. `CaseEventBatchIn` still documents every item as the union in OpenAPI, so clients see the
real contract.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Annotated, Any, Final, Literal, Self, get_args

from pydantic import (
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StrictBool,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema as cs

from schemas.children import ChildRef
from schemas.common import PastDate, PublicModel, ShortText, StrictModel
from schemas.examples import CASE_EVENT_BATCH_EXAMPLE

MAX_EVENTS_PER_BATCH: Final = 1000
_MAX_REASON_CHARS: Final = 1000


EventRef = Annotated[
    str,
    StringConstraints(min_length=1, max_length=100, pattern=r"^[!-~](?:[ -~]*[!-~])?$"),
]
"""An identifier from the sender's system: 1-100 printable ASCII characters, inner spaces only."""

CategoryOfAbuse = Literal["NEG", "PHY", "EMO", "SAB", "MUL"]
"""CIN census category of abuse: neglect, physical, emotional, sexual, multiple."""

FeedbackFrom = Literal["child", "parent_carer"]
"""Who gave feedback: the child, or a parent or carer."""
FEEDBACK_FROM: Final[tuple[str, ...]] = get_args(FeedbackFrom)

CaseEventChild = ChildRef
"""Who the event is about. The same reference assessments use, so a child is named one way
everywhere: nhs_number, la_child_id, upn, or family_name with date_of_birth (SPEC 2.1)."""


class _CaseEventBase(StrictModel):
    event_id: EventRef = Field(
        description="The sender's id for this event, unique per client; resending it is a no-op"
    )
    child: CaseEventChild
    occurred_on: PastDate = Field(description="The date the event happened (not in the future)")


class Section47StartedEvent(_CaseEventBase):
    """A Section 47 enquiry started; `occurred_on` is its start date."""

    type: Literal["section47_started"]
    enquiry_ref: EventRef
    strategy_discussion_on: PastDate = Field(
        description="The strategy discussion that initiated the enquiry; on or before occurred_on"
    )

    @model_validator(mode="after")
    def _discussion_precedes_enquiry(self) -> Self:
        if self.strategy_discussion_on > self.occurred_on:
            raise ValueError("strategy_discussion_on must be on or before occurred_on")
        return self


class IcpcHeldEvent(_CaseEventBase):
    """An initial child protection conference was held."""

    type: Literal["icpc_held"]
    enquiry_ref: EventRef = Field(description="The Section 47 enquiry that led to the conference")
    outcome: Literal["cp_plan", "no_plan"]
    categories: list[CategoryOfAbuse] = Field(
        default_factory=list,
        max_length=5,
        description="Categories of abuse the conference considered; required when a plan follows",
    )

    @model_validator(mode="after")
    def _check_categories(self) -> Self:
        if len(set(self.categories)) != len(self.categories):
            raise ValueError("categories must not repeat")
        if self.outcome == "cp_plan" and not self.categories:
            raise ValueError("categories must not be empty when the outcome is cp_plan")
        return self


class CpPlanStartedEvent(_CaseEventBase):
    """A child protection plan started."""

    type: Literal["cp_plan_started"]
    plan_ref: EventRef
    initial_category: CategoryOfAbuse
    domestic_abuse_focus: StrictBool = Field(description="Domestic abuse is the plan's focus")


class CpPlanCategoryChangedEvent(_CaseEventBase):
    """The category of abuse of an open child protection plan changed."""

    type: Literal["cp_plan_category_changed"]
    plan_ref: EventRef
    category: CategoryOfAbuse


class CpPlanEndedEvent(_CaseEventBase):
    """A child protection plan ended."""

    type: Literal["cp_plan_ended"]
    plan_ref: EventRef


class CinPlanStartedEvent(_CaseEventBase):
    """A child in need plan started."""

    type: Literal["cin_plan_started"]
    plan_ref: EventRef
    neglect: StrictBool = Field(description="Neglect is a reason for the plan")


class CinPlanEndedEvent(_CaseEventBase):
    """A child in need plan ended."""

    type: Literal["cin_plan_ended"]
    plan_ref: EventRef


class EarlyHelpAssessmentCompletedEvent(_CaseEventBase):
    """An early help assessment was completed."""

    type: Literal["early_help_assessment_completed"]
    assessment_ref: EventRef
    neglect_considered: StrictBool
    neglect_identified: StrictBool

    @model_validator(mode="after")
    def _identified_implies_considered(self) -> Self:
        if self.neglect_identified and not self.neglect_considered:
            raise ValueError("neglect_identified requires neglect_considered")
        return self


class SteppedUpToSocialCareEvent(_CaseEventBase):
    """The child's support stepped up from early help to children's social care."""

    type: Literal["stepped_up_to_social_care"]
    from_ref: EventRef | None = Field(
        default=None, description="The early help assessment or plan stepped up from"
    )
    reason: ShortText | None = None


class HealthAppointmentEvent(_CaseEventBase):
    """A medical or dental appointment fell due; `attended` says whether the child was seen."""

    type: Literal["health_appointment"]
    kind: Literal["medical", "dental"]
    attended: StrictBool


class FeedbackReceivedEvent(_CaseEventBase):
    """Feedback on the service from the child or a parent or carer."""

    type: Literal["feedback_received"]
    from_whom: FeedbackFrom
    rating: Annotated[int, Field(strict=True, ge=1, le=5)] = Field(description="1 poor to 5 good")
    about: ShortText = Field(description="What the feedback is about")


CaseEvent = Annotated[
    Section47StartedEvent
    | IcpcHeldEvent
    | CpPlanStartedEvent
    | CpPlanCategoryChangedEvent
    | CpPlanEndedEvent
    | CinPlanStartedEvent
    | CinPlanEndedEvent
    | EarlyHelpAssessmentCompletedEvent
    | SteppedUpToSocialCareEvent
    | HealthAppointmentEvent
    | FeedbackReceivedEvent,
    Field(discriminator="type"),
]
"""One case event; `type` selects its fields."""

CaseEventType = Literal[
    "section47_started",
    "icpc_held",
    "cp_plan_started",
    "cp_plan_category_changed",
    "cp_plan_ended",
    "cin_plan_started",
    "cin_plan_ended",
    "early_help_assessment_completed",
    "stepped_up_to_social_care",
    "health_appointment",
    "feedback_received",
]

CASE_EVENT_TYPES: Final[tuple[str, ...]] = get_args(CaseEventType)

_CASE_EVENT_ADAPTER: Final[TypeAdapter[CaseEvent]] = TypeAdapter(CaseEvent)


def parse_case_event(raw: object) -> CaseEvent:
    """Validate one event of a batch; raises `pydantic.ValidationError` when it is not valid."""
    return _CASE_EVENT_ADAPTER.validate_python(raw)


def summarise_validation_error(error: ValidationError, max_errors: int = 5) -> str:
    """A one-line rejection reason naming each failing field.

    Input values are deliberately left out: they may be NHS numbers or names, and reasons are
    returned to callers and may be logged.
    """
    parts: list[str] = []
    for detail in error.errors(include_url=False, include_input=False)[:max_errors]:
        loc = list(detail["loc"])
        # A discriminated union puts the tag first in the location; the caller knows its type.
        if loc and loc[0] in CASE_EVENT_TYPES:
            loc = loc[1:]
        if not loc and detail["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = ["type"]
        path = ".".join(str(part) for part in loc)
        message = detail["msg"].removeprefix("Value error, ")
        if loc:
            # Some shared validators already name their field; do not say it twice.
            message = message.removeprefix(f"{loc[-1]}: ")
        parts.append(f"{path}: {message}" if path else message)
    hidden = error.error_count() - len(parts)
    if hidden > 0:
        parts.append(f"and {hidden} more")
    reason = "; ".join(parts)
    # The message for an unknown `type` quotes the tag sent, which can be arbitrarily long.
    return reason if len(reason) <= _MAX_REASON_CHARS else reason[: _MAX_REASON_CHARS - 3] + "..."


class _DocumentedAsCaseEvent:
    """Makes a plain JSON-object field appear in JSON Schema / OpenAPI as the `CaseEvent` union."""

    def __get_pydantic_json_schema__(
        self, core_schema: cs.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return handler(_CASE_EVENT_ADAPTER.core_schema)


class CaseEventBatchIn(StrictModel):
    """The body of `POST /v1/case-events`.

    Each item is only checked to be a JSON object here; the route validates it with
    `parse_case_event` so a bad event is rejected on its own. OpenAPI shows each item as the
    `CaseEvent` union, which is the contract every event must meet to be stored.
    """

    model_config = ConfigDict(json_schema_extra={"examples": [CASE_EVENT_BATCH_EXAMPLE]})

    events: list[Annotated[dict[str, Any], _DocumentedAsCaseEvent()]] = Field(
        min_length=1,
        max_length=MAX_EVENTS_PER_BATCH,
        description=(
            "1 to 1,000 events. An event that is invalid or inconsistent is rejected with its "
            "reason in the response; the other events are still stored."
        ),
    )


CaseEventStatus = Literal["stored", "duplicate", "rejected"]


class CaseEventResult(PublicModel):
    """What happened to one event of the batch."""

    index: int = Field(ge=0, description="Position of the event in the batch, from 0")
    event_id: str | None = Field(
        description="The event's event_id; null when the event had no usable one"
    )
    status: CaseEventStatus
    reason: str | None = Field(default=None, description="Why the event was rejected")
    id: uuid.UUID | None = Field(
        default=None, description="The stored event's id (also for a duplicate); null if rejected"
    )


class CaseEventCounts(PublicModel):
    """How many events of the batch ended in each status."""

    stored: int = Field(ge=0)
    duplicate: int = Field(ge=0)
    rejected: int = Field(ge=0)


class CaseEventBatchResult(PublicModel):
    """The response to a batch: one result per event, in batch order, and the totals."""

    results: list[CaseEventResult]
    counts: CaseEventCounts

    @classmethod
    def from_results(cls, results: Sequence[CaseEventResult]) -> CaseEventBatchResult:
        """Build the response, counting the statuses so the totals always match the results."""
        statuses = [result.status for result in results]
        return cls(
            results=list(results),
            counts=CaseEventCounts(
                stored=statuses.count("stored"),
                duplicate=statuses.count("duplicate"),
                rejected=statuses.count("rejected"),
            ),
        )
