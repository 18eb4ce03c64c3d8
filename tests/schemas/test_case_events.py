from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.case_events import (
    CASE_EVENT_TYPES,
    MAX_EVENTS_PER_BATCH,
    CaseEventBatchIn,
    CaseEventBatchResult,
    CaseEventResult,
    CinPlanEndedEvent,
    CinPlanStartedEvent,
    CpPlanCategoryChangedEvent,
    CpPlanEndedEvent,
    CpPlanStartedEvent,
    EarlyHelpAssessmentCompletedEvent,
    FeedbackReceivedEvent,
    HealthAppointmentEvent,
    IcpcHeldEvent,
    Section47StartedEvent,
    SteppedUpToSocialCareEvent,
    parse_case_event,
    summarise_validation_error,
)

VALID_NHS_NUMBER = "9990000018"
# Far enough ahead to be tomorrow in England whatever the machine's time zone.
FUTURE_DAY = date.today() + timedelta(days=2)

TYPE_SPECIFIC_FIELDS: dict[str, dict[str, Any]] = {
    "section47_started": {"enquiry_ref": "S47-001", "strategy_discussion_on": "2023-05-01"},
    "icpc_held": {"enquiry_ref": "S47-001", "outcome": "cp_plan", "categories": ["NEG", "EMO"]},
    "cp_plan_started": {
        "plan_ref": "CP-1",
        "initial_category": "NEG",
        "domestic_abuse_focus": True,
    },
    "cp_plan_category_changed": {"plan_ref": "CP-1", "category": "MUL"},
    "cp_plan_ended": {"plan_ref": "CP-1"},
    "cin_plan_started": {"plan_ref": "CIN-1", "neglect": True},
    "cin_plan_ended": {"plan_ref": "CIN-1"},
    "early_help_assessment_completed": {
        "assessment_ref": "EH-7",
        "neglect_considered": True,
        "neglect_identified": False,
    },
    "stepped_up_to_social_care": {"from_ref": "EH-7", "reason": "Neglect persisted"},
    "health_appointment": {"kind": "dental", "attended": False},
    "feedback_received": {"from_whom": "parent_carer", "rating": 4, "about": "Family support"},
}

EXPECTED_CLASS: dict[str, type] = {
    "section47_started": Section47StartedEvent,
    "icpc_held": IcpcHeldEvent,
    "cp_plan_started": CpPlanStartedEvent,
    "cp_plan_category_changed": CpPlanCategoryChangedEvent,
    "cp_plan_ended": CpPlanEndedEvent,
    "cin_plan_started": CinPlanStartedEvent,
    "cin_plan_ended": CinPlanEndedEvent,
    "early_help_assessment_completed": EarlyHelpAssessmentCompletedEvent,
    "stepped_up_to_social_care": SteppedUpToSocialCareEvent,
    "health_appointment": HealthAppointmentEvent,
    "feedback_received": FeedbackReceivedEvent,
}


def make_event(event_type: str = "cp_plan_started", **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": event_type,
        "event_id": "evt-1",
        "child": {"nhs_number": VALID_NHS_NUMBER},
        "occurred_on": "2023-05-02",
        **TYPE_SPECIFIC_FIELDS[event_type],
    }
    event.update(overrides)
    return event


def assert_refused(raw: object, field: str) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        parse_case_event(raw)
    assert field in summarise_validation_error(caught.value)
    return caught.value


def test_every_spec_event_type_has_an_example() -> None:
    assert set(TYPE_SPECIFIC_FIELDS) == set(CASE_EVENT_TYPES) == set(EXPECTED_CLASS)


@pytest.mark.parametrize("event_type", CASE_EVENT_TYPES)
def test_each_event_type_parses_to_its_own_class(event_type: str) -> None:
    event = parse_case_event(make_event(event_type))

    assert type(event) is EXPECTED_CLASS[event_type]
    assert event.type == event_type
    assert event.occurred_on == date(2023, 5, 2)


def test_icpc_categories_parse_as_codes() -> None:
    event = parse_case_event(make_event("icpc_held"))

    assert isinstance(event, IcpcHeldEvent)
    assert event.categories == ["NEG", "EMO"]


def test_unknown_type_is_refused_naming_the_type_field() -> None:
    error = assert_refused(make_event() | {"type": "plan_started"}, "type")

    assert error.errors()[0]["type"] == "union_tag_invalid"


def test_missing_type_is_refused() -> None:
    event = make_event()
    del event["type"]

    assert_refused(event, "type")


def test_non_object_event_is_refused() -> None:
    with pytest.raises(ValidationError):
        parse_case_event(["not", "an", "object"])


def test_unknown_field_is_refused() -> None:
    assert_refused(make_event(agency="Police"), "agency")


def test_field_of_another_event_type_is_refused() -> None:
    assert_refused(make_event("cp_plan_ended", rating=3), "rating")


def test_missing_type_specific_field_is_refused() -> None:
    event = make_event("cp_plan_started")
    del event["initial_category"]

    assert_refused(event, "initial_category")


def test_future_occurred_on_is_refused() -> None:
    assert_refused(make_event(occurred_on=FUTURE_DAY.isoformat()), "occurred_on")


def test_today_is_not_the_future() -> None:
    event = parse_case_event(make_event(occurred_on=(date.today() - timedelta(days=1)).isoformat()))

    assert event.occurred_on == date.today() - timedelta(days=1)


def test_event_id_longer_than_100_characters_is_refused() -> None:
    assert_refused(make_event(event_id="x" * 101), "event_id")


def test_empty_event_id_is_refused() -> None:
    assert_refused(make_event(event_id=""), "event_id")


def test_event_id_with_control_character_is_refused() -> None:
    assert_refused(make_event(event_id="evt\x00-1"), "event_id")


def test_nhs_number_with_wrong_check_digit_is_refused() -> None:
    assert_refused(make_event(child={"nhs_number": "9990000019"}), "child.nhs_number")


def test_nhs_number_with_spaces_is_refused() -> None:
    assert_refused(make_event(child={"nhs_number": "999 000 0018"}), "child.nhs_number")


def test_rejection_reason_does_not_echo_the_nhs_number() -> None:
    error = assert_refused(make_event(child={"nhs_number": "9990000019"}), "nhs_number")

    assert "9990000019" not in summarise_validation_error(error)


def test_child_without_any_match_key_is_refused() -> None:
    assert_refused(make_event(child={}), "child")


def test_child_matched_on_family_name_and_date_of_birth_is_accepted() -> None:
    event = parse_case_event(
        make_event(child={"family_name": "Testchild", "date_of_birth": "2015-02-03"})
    )

    assert event.child.family_name == "Testchild"
    assert event.child.nhs_number is None


def test_child_family_name_without_date_of_birth_is_not_a_match_key() -> None:
    assert_refused(make_event(child={"family_name": "Testchild"}), "child")


@pytest.mark.parametrize("upn", ["A12345678901B", "Z123456789012"])
def test_child_with_permanent_or_temporary_upn_is_accepted(upn: str) -> None:
    assert parse_case_event(make_event(child={"upn": upn})).child.upn == upn


def test_child_with_malformed_upn_is_refused() -> None:
    assert_refused(make_event(child={"upn": "123456789012A"}), "child.upn")


def test_child_with_la_child_id_over_20_characters_is_refused() -> None:
    assert_refused(make_event(child={"la_child_id": "A" * 21}), "child.la_child_id")


def test_unknown_category_of_abuse_is_refused() -> None:
    assert_refused(make_event(initial_category="NEGLECT"), "initial_category")


def test_rating_above_five_is_refused() -> None:
    assert_refused(make_event("feedback_received", rating=6), "rating")


def test_rating_as_text_is_refused() -> None:
    assert_refused(make_event("feedback_received", rating="4"), "rating")


def test_attended_as_text_is_refused() -> None:
    assert_refused(make_event("health_appointment", attended="yes"), "attended")


def test_unknown_appointment_kind_is_refused() -> None:
    assert_refused(make_event("health_appointment", kind="optician"), "kind")


def test_feedback_from_unknown_person_is_refused() -> None:
    assert_refused(make_event("feedback_received", from_whom="teacher"), "from_whom")


def test_icpc_leading_to_a_plan_without_categories_is_refused() -> None:
    assert_refused(make_event("icpc_held", categories=[]), "categories")


def test_icpc_without_a_plan_may_omit_categories() -> None:
    event = make_event("icpc_held", outcome="no_plan")
    del event["categories"]

    parsed = parse_case_event(event)

    assert isinstance(parsed, IcpcHeldEvent)
    assert parsed.categories == []


def test_icpc_with_repeated_category_is_refused() -> None:
    assert_refused(make_event("icpc_held", categories=["NEG", "NEG"]), "categories")


def test_strategy_discussion_after_section47_start_is_refused() -> None:
    assert_refused(
        make_event("section47_started", strategy_discussion_on="2023-05-03"),
        "strategy_discussion_on",
    )


def test_neglect_identified_without_being_considered_is_refused() -> None:
    assert_refused(
        make_event(
            "early_help_assessment_completed", neglect_considered=False, neglect_identified=True
        ),
        "neglect_considered",
    )


def test_step_up_needs_no_reference_or_reason() -> None:
    event = make_event("stepped_up_to_social_care")
    del event["from_ref"], event["reason"]

    parsed = parse_case_event(event)

    assert isinstance(parsed, SteppedUpToSocialCareEvent)
    assert parsed.from_ref is None


def test_permissive_batch_keeps_a_bad_event_for_per_event_rejection() -> None:
    batch = CaseEventBatchIn.model_validate({"events": [make_event(), {"type": "unknown"}]})

    assert batch.events[1] == {"type": "unknown"}


def test_empty_batch_is_refused() -> None:
    with pytest.raises(ValidationError):
        CaseEventBatchIn.model_validate({"events": []})


def test_batch_over_the_limit_is_refused() -> None:
    with pytest.raises(ValidationError):
        CaseEventBatchIn.model_validate({"events": [make_event()] * (MAX_EVENTS_PER_BATCH + 1)})


def test_batch_at_the_limit_is_accepted() -> None:
    batch = CaseEventBatchIn.model_validate({"events": [make_event()] * MAX_EVENTS_PER_BATCH})

    assert len(batch.events) == MAX_EVENTS_PER_BATCH


def test_batch_with_unknown_top_level_field_is_refused() -> None:
    with pytest.raises(ValidationError):
        CaseEventBatchIn.model_validate({"events": [make_event()], "client": "x"})


def test_permissive_batch_documents_events_as_the_discriminated_union() -> None:
    schema = CaseEventBatchIn.model_json_schema()

    items = schema["properties"]["events"]["items"]
    assert items["discriminator"]["propertyName"] == "type"
    assert set(items["discriminator"]["mapping"]) == set(CASE_EVENT_TYPES)


def test_batch_result_counts_each_status() -> None:
    results = [
        CaseEventResult(index=0, event_id="a", status="stored", id=uuid.uuid4()),
        CaseEventResult(index=1, event_id="b", status="duplicate", id=uuid.uuid4()),
        CaseEventResult(index=2, event_id=None, status="rejected", reason="type: unknown"),
        CaseEventResult(index=3, event_id="d", status="stored", id=uuid.uuid4()),
    ]

    outcome = CaseEventBatchResult.from_results(results)

    assert (outcome.counts.stored, outcome.counts.duplicate, outcome.counts.rejected) == (2, 1, 1)
    assert outcome.results == results


def test_rejection_reason_names_the_field_once() -> None:
    error = assert_refused(make_event(child={}), "child")

    assert not summarise_validation_error(error).startswith("child: child:")


def test_rejection_reason_for_a_long_unknown_type_is_bounded() -> None:
    error = assert_refused(make_event() | {"type": "x" * 5000}, "type")

    assert len(summarise_validation_error(error)) <= 1000
