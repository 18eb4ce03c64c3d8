"""Validation of referral, decision and withdrawal bodies, the child inside them, and ChildRef.

Each rule has a test that sends one bad value and checks that the error points at that field, so a
422 tells the sender exactly what to fix.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from schemas import reference_data
from schemas.children import ChildDetailsPublic, ChildIn, ChildRef, add_months
from schemas.common import today_in_uk
from schemas.reference_data import CURRENT_CENSUS_YEAR, UnknownCodeListError, code_list
from schemas.referrals import (
    DEFAULT_DECISION_OUTCOMES,
    IMMEDIATE_RISK_GUIDANCE,
    DecisionCreate,
    ReferralCreate,
    ReferralPublic,
    WithdrawCreate,
)
from tests.bodies import (
    synthetic_nhs_number_for,
    valid_child_body,
    valid_child_ref_body,
    valid_decision_body,
    valid_referral_body,
    valid_unborn_child_body,
    valid_withdraw_body,
)

Loc = tuple[str | int, ...]
_DROP = object()


def changed(body: dict[str, Any], loc: Loc, value: Any) -> dict[str, Any]:
    """A deep copy of `body` with the value at `loc` replaced, or removed when `value` is _DROP."""
    result = copy.deepcopy(body)
    parent: Any = result
    for key in loc[:-1]:
        parent = parent[key]
    if value is _DROP:
        del parent[loc[-1]]
    else:
        parent[loc[-1]] = value
    return result


def errors_of(model: type[BaseModel], body: dict[str, Any]) -> list[ErrorDetails]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    return caught.value.errors()


def assert_rejected_at(
    model: type[BaseModel], body: dict[str, Any], loc: Loc, message_part: str = ""
) -> None:
    """The body is refused with an error at exactly `loc` whose message contains `message_part`."""
    errors = errors_of(model, body)
    at_loc = [error for error in errors if error["loc"] == loc]
    assert at_loc, f"no error at {loc}; got {[(e['loc'], e['msg']) for e in errors]}"
    assert any(message_part in error["msg"] for error in at_loc), at_loc


def assert_referral_rejected(loc: Loc, value: Any, message_part: str = "") -> None:
    assert_rejected_at(
        ReferralCreate, changed(valid_referral_body(), loc, value), loc, message_part
    )


def days_from_today(days: int) -> str:
    return (today_in_uk() + timedelta(days=days)).isoformat()


# --- the valid bodies the API tests reuse ------------------------------------------------------


def test_valid_referral_body_is_accepted() -> None:
    referral = ReferralCreate.model_validate(valid_referral_body())
    assert referral.child.nhs_number == synthetic_nhs_number_for(0)


def test_valid_referral_body_for_an_unborn_child_is_accepted() -> None:
    body = valid_referral_body(child=valid_unborn_child_body(seed=3))
    referral = ReferralCreate.model_validate(body)
    assert referral.child.date_of_birth is None
    assert referral.child.expected_date_of_birth is not None


def test_valid_referral_bodies_of_different_seeds_name_different_children() -> None:
    first, second = valid_referral_body(seed=1), valid_referral_body(seed=2)
    assert first["child"]["nhs_number"] != second["child"]["nhs_number"]
    assert first["external_reference"] != second["external_reference"]


def test_valid_referral_body_takes_an_explicit_nhs_number() -> None:
    body = valid_referral_body(nhs_number="9990000050")
    assert ReferralCreate.model_validate(body).child.nhs_number == "9990000050"


def test_valid_referral_body_overrides_replace_top_level_keys() -> None:
    body = valid_referral_body(immediate_risk=True)
    assert ReferralCreate.model_validate(body).immediate_risk is True


def test_referral_body_round_trips_through_json_mode_dump() -> None:
    referral = ReferralCreate.model_validate(valid_referral_body())
    again = ReferralCreate.model_validate(referral.model_dump(mode="json"))
    assert again == referral


def test_minimal_referral_without_optional_fields_is_accepted() -> None:
    child = {
        "family_name": "Testerton",
        "date_of_birth": days_from_today(-800),
        "sex": "U",
    }
    body = valid_referral_body(child=child, household=[])
    body["referrer"] = changed(body["referrer"], ("phone",), _DROP)
    body["concerns"] = {"categories": ["other"], "summary": "Worried about the child."}
    body["parental_awareness"] = {"informed": True, "consent": "not_sought"}
    assert ReferralCreate.model_validate(body).child.given_name is None


# --- mass assignment ---------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["id", "status", "created_at", "agency_name", "urgent"])
def test_server_owned_field_is_refused(field: str) -> None:
    assert_referral_rejected((field,), "anything", "Extra inputs are not permitted")


def test_unknown_field_inside_child_is_refused() -> None:
    assert_referral_rejected(("child", "favourite_colour"), "blue", "Extra inputs")


# --- external_reference and received_at --------------------------------------------------------


def test_external_reference_is_required() -> None:
    assert_referral_rejected(("external_reference",), _DROP, "required")


def test_external_reference_must_not_be_empty() -> None:
    assert_referral_rejected(("external_reference",), "", "at least 1")


def test_external_reference_must_not_be_only_whitespace() -> None:
    assert_referral_rejected(("external_reference",), "   ", "at least 1")


def test_external_reference_must_not_exceed_100_characters() -> None:
    assert_referral_rejected(("external_reference",), "R" * 101, "at most 100")


def test_external_reference_of_100_characters_is_accepted() -> None:
    body = valid_referral_body(external_reference="R" * 100)
    assert ReferralCreate.model_validate(body).external_reference == "R" * 100


def test_external_reference_must_not_contain_nul() -> None:
    assert_referral_rejected(("external_reference",), "RFS\x001", "NUL")


def test_received_at_must_carry_a_utc_offset() -> None:
    assert_referral_rejected(("received_at",), "2025-01-06T09:00:00", "timezone")


def test_received_at_must_not_be_in_the_future() -> None:
    future = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    assert_referral_rejected(("received_at",), future, "future")


def test_received_at_within_a_minute_of_clock_skew_is_accepted() -> None:
    slightly_ahead = datetime.now(UTC) + timedelta(seconds=30)
    body = valid_referral_body(received_at=slightly_ahead.isoformat())
    assert ReferralCreate.model_validate(body).received_at == slightly_ahead


def test_received_at_in_the_past_is_accepted_for_back_loading() -> None:
    body = valid_referral_body(received_at="2024-11-04T10:15:00+00:00")
    received_at = ReferralCreate.model_validate(body).received_at
    assert received_at == datetime(2024, 11, 4, 10, 15, tzinfo=UTC)


def test_received_at_defaults_to_none_so_the_service_uses_now() -> None:
    assert ReferralCreate.model_validate(valid_referral_body()).received_at is None


# --- referrer ----------------------------------------------------------------------------------


def test_referrer_agency_type_must_be_known() -> None:
    assert_referral_rejected(("referrer", "agency_type"), "spaceship", "Input should be")


@pytest.mark.parametrize("field", ["agency_name", "name", "role"])
def test_referrer_text_field_must_not_be_empty(field: str) -> None:
    assert_referral_rejected(("referrer", field), "", "at least 1")


@pytest.mark.parametrize("field", ["agency_type", "agency_name", "name", "role", "source_code"])
def test_referrer_field_is_required(field: str) -> None:
    assert_referral_rejected(("referrer", field), _DROP, "required")


@pytest.mark.parametrize("email", ["not-an-email", "a@b", "two@at@example.org", "sp ace@x.org"])
def test_referrer_email_must_look_like_an_email_address(email: str) -> None:
    assert_referral_rejected(("referrer", "email"), email, "pattern")


def test_referrer_email_must_not_exceed_254_characters() -> None:
    assert_referral_rejected(("referrer", "email"), "a" * 250 + "@x.org", "at most 254")


@pytest.mark.parametrize("phone", ["call me", "12", "0163296000012345678901234", "+44 abc"])
def test_referrer_phone_must_look_like_a_phone_number(phone: str) -> None:
    assert_referral_rejected(("referrer", "phone"), phone, "pattern")


@pytest.mark.parametrize("phone", ["01632 960000", "+44 1632 960000", "(01632) 960-000"])
def test_referrer_phone_in_usual_formats_is_accepted(phone: str) -> None:
    body = changed(valid_referral_body(), ("referrer", "phone"), phone)
    assert ReferralCreate.model_validate(body).referrer.phone == phone


def test_referrer_needs_an_email_or_a_phone() -> None:
    body = valid_referral_body()
    body["referrer"]["email"] = None
    body["referrer"]["phone"] = None
    assert_rejected_at(ReferralCreate, body, ("referrer", "phone"), "phone: send a phone")


def test_referrer_with_only_an_email_is_accepted() -> None:
    body = changed(valid_referral_body(), ("referrer", "phone"), None)
    assert ReferralCreate.model_validate(body).referrer.email == "dsl@school.example.org"


def test_referrer_source_code_must_be_a_cin_referral_source() -> None:
    assert_referral_rejected(("referrer", "source_code"), "11", "not a CIN")


def test_referrer_source_code_is_case_sensitive() -> None:
    assert_referral_rejected(("referrer", "source_code"), "2a", "referral_source")


@pytest.mark.parametrize("code", list(code_list(reference_data.REFERRAL_SOURCE)))
def test_every_cin_referral_source_code_is_accepted(code: str) -> None:
    body = changed(valid_referral_body(), ("referrer", "source_code"), code)
    assert ReferralCreate.model_validate(body).referrer.source_code == code


# --- child: names ------------------------------------------------------------------------------


def test_child_family_name_is_required() -> None:
    assert_referral_rejected(("child", "family_name"), _DROP, "required")


def test_child_family_name_must_not_be_blank() -> None:
    assert_referral_rejected(("child", "family_name"), "   ", "at least 1")


def test_child_given_name_must_not_exceed_200_characters() -> None:
    assert_referral_rejected(("child", "given_name"), "A" * 201, "at most 200")


def test_child_given_name_must_not_contain_nul() -> None:
    assert_referral_rejected(("child", "given_name"), "Am\x00elia", "NUL")


def test_child_alias_must_not_be_empty() -> None:
    assert_rejected_at(
        ReferralCreate,
        changed(valid_referral_body(), ("child", "aliases"), ["Millie", ""]),
        ("child", "aliases", 1),
        "at least 1",
    )


def test_child_aliases_are_capped_at_twenty() -> None:
    assert_referral_rejected(("child", "aliases"), [f"Alias{i}" for i in range(21)], "at most 20")


# --- child: dates of birth and sex -------------------------------------------------------------


def test_child_date_of_birth_must_not_be_in_the_future() -> None:
    assert_referral_rejected(("child", "date_of_birth"), days_from_today(2), "future")


def test_child_born_today_is_accepted() -> None:
    body = changed(valid_referral_body(), ("child", "date_of_birth"), days_from_today(0))
    assert ReferralCreate.model_validate(body).child.date_of_birth == today_in_uk()


def test_child_must_be_under_eighteen() -> None:
    eighteen_years_ago = add_months(today_in_uk(), -18 * 12).isoformat()
    assert_referral_rejected(
        ("child", "date_of_birth"), eighteen_years_ago, "date_of_birth: the child must be under 18"
    )


def test_child_turning_eighteen_tomorrow_is_accepted() -> None:
    dob = add_months(today_in_uk(), -18 * 12) + timedelta(days=1)
    body = changed(valid_referral_body(), ("child", "date_of_birth"), dob.isoformat())
    assert ReferralCreate.model_validate(body).child.date_of_birth == dob


def test_child_needs_a_date_of_birth_or_an_expected_one() -> None:
    body = changed(valid_referral_body(), ("child", "date_of_birth"), _DROP)
    assert_rejected_at(ReferralCreate, body, ("child", "expected_date_of_birth"), "exactly one")


def test_child_must_not_have_both_date_of_birth_and_expected_one() -> None:
    assert_referral_rejected(
        ("child", "expected_date_of_birth"),
        days_from_today(60),
        "expected_date_of_birth: send exactly one",
    )


def test_invalid_date_of_birth_is_reported_once_not_also_as_missing() -> None:
    body = changed(valid_referral_body(), ("child", "date_of_birth"), "not a date")
    locs = [error["loc"] for error in errors_of(ReferralCreate, body)]
    assert locs == [("child", "date_of_birth")]


def test_unborn_child_must_have_sex_u() -> None:
    body = valid_referral_body(child=valid_unborn_child_body(sex="F"))
    assert_rejected_at(ReferralCreate, body, ("child", "sex"), "sex: must be U for an unborn child")


def test_expected_date_of_birth_more_than_31_days_ago_is_refused() -> None:
    body = valid_referral_body(
        child=valid_unborn_child_body(expected_date_of_birth=days_from_today(-32))
    )
    assert_rejected_at(
        ReferralCreate, body, ("child", "expected_date_of_birth"), "more than 31 days ago"
    )


def test_expected_date_of_birth_31_days_ago_is_accepted() -> None:
    body = valid_referral_body(
        child=valid_unborn_child_body(expected_date_of_birth=days_from_today(-31))
    )
    assert ReferralCreate.model_validate(body).child.expected_date_of_birth is not None


def test_expected_date_of_birth_more_than_ten_months_ahead_is_refused() -> None:
    too_far = add_months(today_in_uk(), 10) + timedelta(days=1)
    body = valid_referral_body(
        child=valid_unborn_child_body(expected_date_of_birth=too_far.isoformat())
    )
    assert_rejected_at(
        ReferralCreate, body, ("child", "expected_date_of_birth"), "more than 10 months ahead"
    )


def test_expected_date_of_birth_ten_months_ahead_is_accepted() -> None:
    edd = add_months(today_in_uk(), 10)
    body = valid_referral_body(
        child=valid_unborn_child_body(expected_date_of_birth=edd.isoformat())
    )
    assert ReferralCreate.model_validate(body).child.expected_date_of_birth == edd


@pytest.mark.parametrize("sex", ["X", "m", "male", ""])
def test_child_sex_must_be_m_f_or_u(sex: str) -> None:
    assert_referral_rejected(("child", "sex"), sex, "Input should be 'M', 'F' or 'U'")


def test_child_sex_is_required() -> None:
    assert_referral_rejected(("child", "sex"), _DROP, "required")


# --- child: code lists -------------------------------------------------------------------------


def test_child_ethnicity_must_be_a_cin_code() -> None:
    assert_referral_rejected(("child", "ethnicity"), "BRIT", "not a CIN 2024-25 ethnicity code")


def test_child_disability_must_be_a_cin_code() -> None:
    assert_rejected_at(
        ReferralCreate,
        changed(valid_referral_body(), ("child", "disabilities"), ["MOB", "WINGS"]),
        ("child", "disabilities", 1),
        "disability code",
    )


def test_child_disabilities_must_not_repeat() -> None:
    assert_referral_rejected(("child", "disabilities"), ["MOB", "VIS", "MOB"], "duplicates")


def test_child_disability_none_cannot_be_combined() -> None:
    assert_referral_rejected(("child", "disabilities"), ["NONE", "AUT"], "disabilities: NONE")


def test_child_with_several_disabilities_is_accepted() -> None:
    body = changed(valid_referral_body(), ("child", "disabilities"), ["AUT", "COMM", "LD"])
    assert ReferralCreate.model_validate(body).child.disabilities == ["AUT", "COMM", "LD"]


# --- child: communication, address and setting -------------------------------------------------


def test_child_interpreter_needed_must_be_a_boolean() -> None:
    assert_referral_rejected(("child", "interpreter_needed"), "sometimes", "valid boolean")


def test_child_communication_needs_must_not_exceed_10000_characters() -> None:
    assert_referral_rejected(("child", "communication_needs"), "x" * 10_001, "at most 10000")


def test_child_address_needs_at_least_one_line() -> None:
    assert_referral_rejected(("child", "address", "lines"), [], "at least 1")


def test_child_address_has_at_most_four_lines() -> None:
    assert_referral_rejected(("child", "address", "lines"), ["a", "b", "c", "d", "e"], "at most 4")


@pytest.mark.parametrize("postcode", ["SW1A1AAA", "12345", "SW1A  1AA", "S1", "ZZ1 1A1"])
def test_child_postcode_must_look_like_a_uk_postcode(postcode: str) -> None:
    assert_referral_rejected(("child", "address", "postcode"), postcode, "pattern")


@pytest.mark.parametrize(
    ("sent", "stored"),
    [("sw1a1aa", "SW1A 1AA"), ("M1 1AE", "M1 1AE"), ("b338th", "B33 8TH"), ("CR2 6XH", "CR2 6XH")],
)
def test_child_postcode_is_normalised_to_upper_case_with_one_space(sent: str, stored: str) -> None:
    body = changed(valid_referral_body(), ("child", "address", "postcode"), sent)
    address = ReferralCreate.model_validate(body).child.address
    assert address is not None
    assert address.postcode == stored


def test_child_school_or_setting_must_not_be_empty() -> None:
    assert_referral_rejected(("child", "school_or_setting"), "", "at least 1")


def test_child_gp_practice_must_not_exceed_200_characters() -> None:
    assert_referral_rejected(("child", "gp_practice"), "G" * 201, "at most 200")


# --- child: identifiers ------------------------------------------------------------------------


def test_child_nhs_number_with_wrong_check_digit_is_refused() -> None:
    assert_referral_rejected(("child", "nhs_number"), "9434765918", "check digit")


@pytest.mark.parametrize("nhs_number", ["943 476 5919", "943476591", "NHS4765919"])
def test_child_nhs_number_must_be_ten_digits(nhs_number: str) -> None:
    assert_referral_rejected(("child", "nhs_number"), nhs_number, "pattern")


def test_child_nhs_number_is_optional() -> None:
    body = changed(valid_referral_body(), ("child", "nhs_number"), None)
    assert ReferralCreate.model_validate(body).child.nhs_number is None


@pytest.mark.parametrize("la_child_id", ["LA-000123", "A" * 21, ""])
def test_child_la_child_id_must_be_one_to_twenty_alphanumerics(la_child_id: str) -> None:
    assert_referral_rejected(("child", "la_child_id"), la_child_id, "pattern")


@pytest.mark.parametrize("upn", ["A12345678901", "112345678901A", "A1234567890AB"])
def test_child_upn_must_have_a_upn_shape(upn: str) -> None:
    assert_referral_rejected(("child", "upn"), upn, "pattern")


def test_child_upn_is_normalised_to_upper_case() -> None:
    body = changed(valid_referral_body(), ("child", "upn"), "a12345678901b")
    assert ReferralCreate.model_validate(body).child.upn == "A12345678901B"


# --- household ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field", ["name", "relationship", "has_parental_responsibility", "lives_with_child"]
)
def test_household_member_field_is_required(field: str) -> None:
    assert_referral_rejected(("household", 0, field), _DROP, "required")


def test_household_member_date_of_birth_must_not_be_in_the_future() -> None:
    assert_referral_rejected(("household", 0, "date_of_birth"), days_from_today(3), "future")


def test_household_member_parental_responsibility_must_be_a_boolean() -> None:
    assert_referral_rejected(("household", 1, "has_parental_responsibility"), "unsure", "boolean")


def test_household_is_capped_at_thirty_people() -> None:
    member = valid_referral_body()["household"][0]
    assert_referral_rejected(("household",), [member] * 31, "at most 30")


def test_household_may_be_empty() -> None:
    assert ReferralCreate.model_validate(valid_referral_body(household=[])).household == []


# --- concerns ----------------------------------------------------------------------------------


def test_concern_categories_must_not_be_empty() -> None:
    assert_referral_rejected(("concerns", "categories"), [], "at least 1")


def test_concern_categories_are_required() -> None:
    assert_referral_rejected(("concerns", "categories"), _DROP, "required")


def test_concern_categories_must_not_repeat() -> None:
    assert_referral_rejected(("concerns", "categories"), ["neglect", "neglect"], "duplicates")


def test_concern_category_must_be_known() -> None:
    assert_referral_rejected(("concerns", "categories", 0), "bullying", "Input should be")


def test_neglect_forms_are_required_when_neglect_is_a_category() -> None:
    assert_referral_rejected(
        ("concerns", "neglect_forms"), [], "neglect_forms: required when 'neglect' is a category"
    )


def test_neglect_forms_cannot_be_left_out_when_neglect_is_a_category() -> None:
    assert_referral_rejected(("concerns", "neglect_forms"), _DROP, "neglect_forms: required")


def test_neglect_forms_are_forbidden_when_neglect_is_not_a_category() -> None:
    body = changed(valid_referral_body(), ("concerns", "categories"), ["emotional_abuse"])
    assert_rejected_at(
        ReferralCreate, body, ("concerns", "neglect_forms"), "neglect_forms: only allowed"
    )


def test_other_categories_without_neglect_forms_are_accepted() -> None:
    body = valid_referral_body()
    body["concerns"]["categories"] = ["physical_abuse", "exploitation"]
    body["concerns"]["neglect_forms"] = []
    concerns = ReferralCreate.model_validate(body).concerns
    assert concerns.neglect_forms == []


def test_neglect_form_must_be_one_of_the_six() -> None:
    assert_referral_rejected(("concerns", "neglect_forms", 1), "financial", "Input should be")


def test_neglect_forms_must_not_repeat() -> None:
    assert_referral_rejected(("concerns", "neglect_forms"), ["medical", "medical"], "duplicates")


def test_risk_factor_must_be_from_the_vocabulary() -> None:
    assert_referral_rejected(("concerns", "risk_factors", 0), "bad_luck", "Input should be")


def test_risk_factors_must_not_repeat() -> None:
    assert_referral_rejected(("concerns", "risk_factors"), ["poverty", "poverty"], "duplicates")


def test_vulnerability_must_be_from_the_vocabulary() -> None:
    assert_rejected_at(
        ReferralCreate,
        changed(valid_referral_body(), ("concerns", "vulnerabilities"), ["teenager"]),
        ("concerns", "vulnerabilities", 0),
        "Input should be",
    )


def test_vulnerabilities_must_not_repeat() -> None:
    assert_referral_rejected(
        ("concerns", "vulnerabilities"), ["under_one", "under_one"], "duplicates"
    )


def test_concerns_summary_is_required() -> None:
    assert_referral_rejected(("concerns", "summary"), _DROP, "required")


def test_concerns_summary_must_not_be_blank() -> None:
    assert_referral_rejected(("concerns", "summary"), "  \n ", "blank")


def test_concerns_summary_must_not_exceed_10000_characters() -> None:
    assert_referral_rejected(("concerns", "summary"), "x" * 10_001, "at most 10000")


@pytest.mark.parametrize(
    "field",
    [
        "what_has_changed",
        "impact_on_child",
        "strengths_and_protective_factors",
        "actions_taken",
        "child_views",
    ],
)
def test_concerns_free_text_must_not_contain_nul(field: str) -> None:
    assert_referral_rejected(("concerns", field), "before\x00after", "NUL")


# --- immediate risk, parental awareness, DSL ---------------------------------------------------


def test_immediate_risk_is_required() -> None:
    assert_referral_rejected(("immediate_risk",), _DROP, "required")


def test_immediate_risk_must_be_a_boolean() -> None:
    assert_referral_rejected(("immediate_risk",), "maybe", "boolean")


def test_parental_awareness_is_required() -> None:
    assert_referral_rejected(("parental_awareness",), _DROP, "required")


def test_parental_awareness_informed_is_required() -> None:
    assert_referral_rejected(("parental_awareness", "informed"), _DROP, "required")


def test_parental_consent_must_be_given_refused_or_not_sought() -> None:
    assert_referral_rejected(("parental_awareness", "consent"), "yes", "Input should be")


def test_reason_not_informed_is_required_when_parents_are_not_informed() -> None:
    body = changed(valid_referral_body(), ("parental_awareness", "informed"), False)
    assert_rejected_at(
        ReferralCreate,
        body,
        ("parental_awareness", "reason_not_informed"),
        "reason_not_informed: required when informed is false",
    )


def test_reason_not_informed_must_not_be_blank() -> None:
    body = valid_referral_body()
    body["parental_awareness"] = {"informed": False, "consent": "not_sought"}
    body["parental_awareness"]["reason_not_informed"] = " "
    assert_rejected_at(ReferralCreate, body, ("parental_awareness", "reason_not_informed"), "blank")


def test_parents_not_informed_with_a_reason_is_accepted() -> None:
    body = valid_referral_body()
    body["parental_awareness"] = {
        "informed": False,
        "consent": "not_sought",
        "reason_not_informed": "Telling the mother's partner would put the child at risk of harm.",
    }
    assert ReferralCreate.model_validate(body).parental_awareness.informed is False


def test_dsl_consulted_is_required() -> None:
    assert_referral_rejected(("dsl_consulted",), _DROP, "required")


def test_dsl_consulted_must_be_a_boolean() -> None:
    assert_referral_rejected(("dsl_consulted",), "asked", "boolean")


# --- decisions and withdrawals -----------------------------------------------------------------


def test_valid_decision_body_is_accepted() -> None:
    assert DecisionCreate.model_validate(valid_decision_body()).outcome == "early_help"


@pytest.mark.parametrize("outcome", DEFAULT_DECISION_OUTCOMES)
def test_every_default_decision_outcome_is_accepted(outcome: str) -> None:
    assert DecisionCreate.model_validate(valid_decision_body(outcome=outcome)).outcome == outcome


def test_decision_outcome_must_be_in_the_list() -> None:
    body = valid_decision_body(outcome="send_a_letter")
    assert_rejected_at(DecisionCreate, body, ("outcome",), "outcome: must be one of")


@pytest.mark.parametrize("field", ["outcome", "rationale", "decided_by"])
def test_decision_field_is_required(field: str) -> None:
    assert_rejected_at(DecisionCreate, changed(valid_decision_body(), (field,), _DROP), (field,))


def test_decision_rationale_must_not_be_blank() -> None:
    assert_rejected_at(DecisionCreate, valid_decision_body(rationale="\t"), ("rationale",), "blank")


def test_decision_rationale_must_not_exceed_10000_characters() -> None:
    body = valid_decision_body(rationale="r" * 10_001)
    assert_rejected_at(DecisionCreate, body, ("rationale",), "at most 10000")


def test_decided_by_must_not_be_empty() -> None:
    assert_rejected_at(DecisionCreate, valid_decision_body(decided_by=""), ("decided_by",))


def test_decided_at_must_not_be_in_the_future() -> None:
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    body = valid_decision_body(decided_at=future)
    assert_rejected_at(DecisionCreate, body, ("decided_at",), "future")


def test_decided_at_must_carry_a_utc_offset() -> None:
    body = valid_decision_body(decided_at="2025-03-01T12:00:00")
    assert_rejected_at(DecisionCreate, body, ("decided_at",), "timezone")


def test_decision_refuses_unknown_fields() -> None:
    body = valid_decision_body(strategy_discussion_due_at="2025-03-02T12:00:00Z")
    assert_rejected_at(DecisionCreate, body, ("strategy_discussion_due_at",), "Extra inputs")


def test_valid_withdraw_body_is_accepted() -> None:
    assert WithdrawCreate.model_validate(valid_withdraw_body()).reason.startswith("Sent in error")


def test_withdraw_reason_is_required() -> None:
    assert_rejected_at(WithdrawCreate, {}, ("reason",), "required")


def test_withdraw_reason_must_not_be_blank() -> None:
    assert_rejected_at(WithdrawCreate, valid_withdraw_body(reason="   "), ("reason",), "blank")


# --- ChildRef, which assessments and case events use to name a child ----------------------------


@pytest.mark.parametrize("keep", ["nhs_number", "la_child_id", "upn"])
def test_child_ref_with_one_identifier_is_accepted(keep: str) -> None:
    body = {keep: valid_child_ref_body()[keep]}
    assert getattr(ChildRef.model_validate(body), keep) == body[keep].upper()


def test_child_ref_with_family_name_and_date_of_birth_is_accepted() -> None:
    body = valid_child_ref_body(nhs_number=None, la_child_id=None, upn=None)
    assert ChildRef.model_validate(body).family_name == "Testerton"


def test_child_ref_with_nothing_to_match_on_is_refused() -> None:
    assert_rejected_at(ChildRef, {}, (), "child: send nhs_number, la_child_id, upn")


def test_child_ref_with_family_name_but_no_date_of_birth_is_refused() -> None:
    assert_rejected_at(ChildRef, {"family_name": "Testerton"}, (), "family_name with date_of_birth")


def test_child_ref_nhs_number_must_have_a_valid_check_digit() -> None:
    assert_rejected_at(ChildRef, {"nhs_number": "9434765918"}, ("nhs_number",), "check digit")


def test_child_ref_date_of_birth_must_not_be_in_the_future() -> None:
    body = {"family_name": "Testerton", "date_of_birth": days_from_today(5)}
    assert_rejected_at(ChildRef, body, ("date_of_birth",), "future")


def test_child_ref_refuses_unknown_fields() -> None:
    body = valid_child_ref_body(given_name="Amelia")
    assert_rejected_at(ChildRef, body, ("given_name",), "Extra inputs")


def test_child_ref_names_the_same_child_as_the_referral_of_the_same_seed() -> None:
    child = ChildIn.model_validate(valid_child_body(seed=5))
    ref = ChildRef.model_validate(valid_child_ref_body(seed=5))
    assert (ref.nhs_number, ref.family_name, ref.date_of_birth) == (
        child.nhs_number,
        child.family_name,
        child.date_of_birth,
    )


# --- responses ---------------------------------------------------------------------------------


def _stored_referral(**changes: Any) -> dict[str, Any]:
    submitted = ReferralCreate.model_validate(valid_referral_body()).model_dump(mode="json")
    now = datetime.now(UTC)
    stored: dict[str, Any] = {
        **submitted,
        "id": uuid4(),
        "status": "received",
        "urgent": False,
        "received_at": now,
        "decision_due_at": now + timedelta(hours=24),
        "child_id": uuid4(),
        "rereferral": False,
        "rereferral_count": 0,
        "agency_type": "school",
        "agency_name": "Sampletown Primary School",
        "client_id": "sampletown-primary",
        "created_at": now,
    }
    stored.update(changes)
    return stored


def test_referral_public_carries_immediate_risk_guidance_when_at_immediate_risk() -> None:
    referral = ReferralPublic.model_validate(_stored_referral(immediate_risk=True, urgent=True))
    assert referral.model_dump()["immediate_risk_guidance"] == IMMEDIATE_RISK_GUIDANCE
    assert "999" in IMMEDIATE_RISK_GUIDANCE


def test_referral_public_has_no_guidance_without_immediate_risk() -> None:
    referral = ReferralPublic.model_validate(_stored_referral())
    assert referral.model_dump()["immediate_risk_guidance"] is None


def test_submitted_child_stays_readable_after_due_date_and_code_list_have_moved_on() -> None:
    child = valid_unborn_child_body(expected_date_of_birth="2020-01-01", ethnicity="RETIRED")
    details = ChildDetailsPublic.model_validate(child)
    assert details.expected_date_of_birth is not None


def test_referral_public_schema_lists_the_guidance_as_read_only() -> None:
    schema = ReferralPublic.model_json_schema(mode="serialization")
    assert schema["properties"]["immediate_risk_guidance"]["readOnly"] is True


def test_referral_create_schema_lists_the_cin_ethnicity_codes() -> None:
    schema = ChildIn.model_json_schema()
    ethnicity = schema["properties"]["ethnicity"]["anyOf"][0]
    assert ethnicity["enum"] == list(code_list(reference_data.ETHNICITY))


# --- the code lists the schemas validate against -----------------------------------------------


def test_code_lists_of_the_current_census_year_hold_the_spec_codes() -> None:
    abuse = code_list(reference_data.CATEGORY_OF_ABUSE, CURRENT_CENSUS_YEAR)
    assert list(abuse) == ["NEG", "PHY", "EMO", "SAB", "MUL"]
    assert len(code_list(reference_data.REFERRAL_SOURCE)) == 22
    assert len(code_list(reference_data.ETHNICITY)) == 20
    assert len(code_list(reference_data.DISABILITY)) == 13


def test_code_list_keys_are_strings_even_where_yaml_would_read_a_number() -> None:
    assert code_list(reference_data.REFERRAL_SOURCE)["10"] == "Unknown"


def test_code_list_returns_a_copy_callers_cannot_corrupt() -> None:
    code_list(reference_data.ETHNICITY)["XXXX"] = "Invented"
    assert "XXXX" not in code_list(reference_data.ETHNICITY)


def test_code_list_of_an_unknown_census_year_raises() -> None:
    with pytest.raises(UnknownCodeListError, match="1999-00"):
        code_list(reference_data.ETHNICITY, "1999-00")


def test_code_list_of_an_unknown_name_raises() -> None:
    with pytest.raises(UnknownCodeListError, match="shoe_size"):
        code_list("shoe_size")
