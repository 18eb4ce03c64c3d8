from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from schemas.indicators import BREAKDOWNS
from service.indicators.catalogue import (
    IndicatorMeta,
    load_breakdown_definitions,
    load_catalogue,
    parse_catalogue,
)

EXPECTED_IDS = {
    "neglect_referral_share",
    "cp_plan_neglect_share",
    "cp_plan_starts_neglect_share",
    "icpc_neglect_children",
    "repeat_cp_plan_neglect",
    "cp_plan_neglect_domestic_abuse_share",
    "neglect_plans_open",
    "toolkit_assessments",
    "early_help_neglect_identified",
    "early_help_neglect_stepped_up_share",
    "rereferral_after_toolkit_share",
    "health_appointment_attendance",
    "family_feedback",
    "rereferral_rate_12m",
    "referral_decision_24h_share",
    "icpc_within_15_working_days_share",
    "toolkit_improvement_share",
    "toolkit_mean_grade_change",
    "audit_neglect_impact_good_share",
    "audit_neglect_toolkit_used_share",
    "audit_neglect_practice_effective_share",
}


def make_entry(**overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": "example_share",
        "title": "Example",
        "definition": "An example.",
        "numerator": "Things",
        "denominator": "All things",
        "unit": "percent",
        "polarity": "neutral",
        "source_measure": "None",
        "timing": "in_period",
        "breakdowns": ["age_band"],
        "periods": ["month"],
    }
    entry.update(overrides)
    return entry


DISCLOSURE_CONTROL: dict[str, Any] = {
    "suppression": "Counts of 1 to 5 are hidden.",
    "perturbation": "Other counts get the table's noise.",
    "cell_key_modulus": 256,
    "perturbation_table": [
        {"count": 6, "first_key": 0, "last_key": 255, "noise": 0},
        {"count": 7, "first_key": 0, "last_key": 127, "noise": -1},
        {"count": 7, "first_key": 128, "last_key": 255, "noise": 1},
    ],
}


def make_document(*entries: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "disclosure_control": overrides.get("disclosure_control", DISCLOSURE_CONTROL),
        "breakdowns": {name: f"{name} explained" for name in BREAKDOWNS},
        "indicators": list(entries),
    }


def test_catalogue_holds_exactly_the_twenty_one_indicators() -> None:
    assert set(load_catalogue()) == EXPECTED_IDS


def test_every_entry_is_keyed_by_its_own_id() -> None:
    assert all(key == meta.id for key, meta in load_catalogue().items())


@pytest.mark.parametrize("indicator_id", sorted(EXPECTED_IDS))
def test_entry_round_trips_through_validation(indicator_id: str) -> None:
    meta = load_catalogue()[indicator_id]

    assert IndicatorMeta.model_validate(meta.model_dump()) == meta


@pytest.mark.parametrize("indicator_id", sorted(EXPECTED_IDS))
def test_entry_has_a_denominator_unless_it_is_a_count(indicator_id: str) -> None:
    meta = load_catalogue()[indicator_id]

    assert (meta.denominator is None) == (meta.unit == "count")


def test_open_plan_indicators_offer_snapshots() -> None:
    catalogue = load_catalogue()

    assert "snapshot" in catalogue["cp_plan_neglect_share"].periods
    assert "snapshot" in catalogue["neglect_plans_open"].periods


def test_neglect_plans_open_breaks_down_by_plan_type() -> None:
    assert "plan_type" in load_catalogue()["neglect_plans_open"].breakdowns


def test_referral_source_is_offered_only_for_referral_indicators() -> None:
    offering = {
        meta.id for meta in load_catalogue().values() if "referral_source" in meta.breakdowns
    }

    assert offering == {
        "neglect_referral_share",
        "rereferral_rate_12m",
        "referral_decision_24h_share",
    }


def test_statutory_timeliness_indicators_are_higher_is_better() -> None:
    catalogue = load_catalogue()

    assert catalogue["icpc_within_15_working_days_share"].polarity == "higher_is_better"
    assert catalogue["referral_decision_24h_share"].polarity == "higher_is_better"
    assert catalogue["rereferral_rate_12m"].polarity == "lower_is_better"


def test_family_feedback_is_a_mean() -> None:
    assert load_catalogue()["family_feedback"].unit == "mean"


def test_every_breakdown_has_a_definition() -> None:
    definitions = load_breakdown_definitions()

    assert set(definitions) == set(BREAKDOWNS)
    assert all(len(text) > 20 for text in definitions.values())


def test_changing_a_returned_catalogue_does_not_change_the_next_one() -> None:
    load_catalogue().clear()

    assert set(load_catalogue()) == EXPECTED_IDS


def test_count_with_a_denominator_is_refused() -> None:
    with pytest.raises(ValidationError, match="denominator"):
        parse_catalogue(make_document(make_entry(unit="count")))


def test_percent_without_a_denominator_is_refused() -> None:
    with pytest.raises(ValidationError, match="denominator"):
        parse_catalogue(make_document(make_entry(denominator=None)))


def test_snapshot_for_an_in_period_indicator_is_refused() -> None:
    with pytest.raises(ValidationError, match="snapshot"):
        parse_catalogue(make_document(make_entry(periods=["snapshot"])))


def test_unknown_breakdown_is_refused() -> None:
    with pytest.raises(ValidationError):
        parse_catalogue(make_document(make_entry(breakdowns=["postcode"])))


def test_unknown_period_is_refused() -> None:
    with pytest.raises(ValidationError):
        parse_catalogue(make_document(make_entry(periods=["week"])))


def test_repeated_indicator_id_is_refused() -> None:
    with pytest.raises(ValidationError, match="repeat"):
        parse_catalogue(make_document(make_entry(), make_entry()))


def test_unknown_entry_field_is_refused() -> None:
    with pytest.raises(ValidationError):
        parse_catalogue(make_document(make_entry(sql="select 1")))


def test_valid_document_parses() -> None:
    assert list(parse_catalogue(make_document(make_entry()))) == ["example_share"]


def test_every_indicator_breaks_down_by_the_childs_age_sex_ethnicity_and_disability() -> None:
    # Every indicator counts things about children (issue 14: disproportionality).
    lacking = {
        meta.id: sorted({"age_band", "sex", "ethnicity", "disability"} - set(meta.breakdowns))
        for meta in load_catalogue().values()
    }

    assert {indicator: missing for indicator, missing in lacking.items() if missing} == {}


def test_feedback_from_and_audited_work_are_offered_only_where_they_mean_something() -> None:
    def offering(breakdown: str) -> set[str]:
        return {meta.id for meta in load_catalogue().values() if breakdown in meta.breakdowns}

    assert offering("feedback_from") == {"family_feedback"}
    assert offering("audited_work") == {
        "audit_neglect_impact_good_share",
        "audit_neglect_toolkit_used_share",
        "audit_neglect_practice_effective_share",
    }


def test_a_perturbation_table_that_does_not_start_at_six_is_refused() -> None:
    control = {
        **DISCLOSURE_CONTROL,
        "perturbation_table": [{"count": 5, "first_key": 0, "last_key": 255, "noise": 0}],
    }

    with pytest.raises(ValidationError, match="start at 6"):
        parse_catalogue(make_document(make_entry(), disclosure_control=control))


def test_a_cell_key_modulus_other_than_the_record_keys_range_is_refused() -> None:
    control = {**DISCLOSURE_CONTROL, "cell_key_modulus": 100}

    with pytest.raises(ValidationError, match="256"):
        parse_catalogue(make_document(make_entry(), disclosure_control=control))


def test_a_perturbation_table_with_a_gap_is_refused() -> None:
    control = {
        **DISCLOSURE_CONTROL,
        "perturbation_table": [{"count": 6, "first_key": 1, "last_key": 255, "noise": 0}],
    }

    with pytest.raises(ValidationError, match="no noise for key 0"):
        parse_catalogue(make_document(make_entry(), disclosure_control=control))
