"""The Children in Need census on the wire: an imported episode as read back, and import reports.

The import (`neglect-service import cin-census`, `POST /v1/census-imports`) follows the DfE's CIN
census XML specifications for 2017-18 to 2024-25 as recalled; check them against the DfE's own.
"""

from __future__ import annotations

from datetime import date
from uuid import UUID

from pydantic import Field

from schemas.common import PublicModel


class CensusAssessmentPublic(PublicModel):
    """An assessment of the episode (`Assessments`)."""

    start_date: date
    internal_review_date: date | None = None
    authorisation_date: date | None = None
    factors: list[str] = Field(default_factory=list, description="Assessment factor codes")


class CensusSection47Public(PublicModel):
    """A Section 47 enquiry of the episode (`Section47`)."""

    start_date: date
    initial_cpc_target: date | None = None
    initial_cpc_date: date | None = None
    icpc_not_required: bool | None = None


class CensusCpPlanPublic(PublicModel):
    """A child protection plan of the episode (`ChildProtectionPlans`)."""

    start_date: date
    end_date: date | None = None
    initial_category: str
    latest_category: str
    number_of_previous_plans: int | None = None
    review_dates: list[date] = Field(default_factory=list)


class CensusCinPlanPublic(PublicModel):
    """A child in need plan of the episode (`CINPlanDates`)."""

    start_date: date
    end_date: date | None = None


class CensusChildPublic(PublicModel):
    """The child as the census file described them (`ChildIdentifiers`, `ChildCharacteristics`)."""

    upn: str | None = None
    former_upn: str | None = None
    upn_unknown: str | None = None
    date_of_birth: date | None = None
    expected_date_of_birth: date | None = None
    sex: str
    date_of_death: date | None = None
    ethnicity: str | None = None
    disabilities: list[str] = Field(default_factory=list)


class CensusEpisodePublic(PublicModel):
    """An episode of need (`CINdetails`) imported from a CIN census file, as the latest file that
    changed it described it."""

    census_year: str = Field(description="The census year of that file, e.g. 2023-24")
    reference_date: date = Field(description="31 March of that census year")
    la_code: str = Field(description="The local authority (Header/Source/LEA)")
    la_child_id: str
    referral_date: date
    referral_source: str
    primary_need: str | None = None
    referral_nfa: bool | None = None
    closure_date: date | None = None
    reason_for_closure: str | None = None
    initial_cpc_date: date | None = None
    neglect: bool = Field(
        description="Neglect by the import's rule: assessment factor 16A, or a CP plan of the "
        "episode under NEG at its start or latest"
    )
    assessments: list[CensusAssessmentPublic] = Field(default_factory=list)
    section47_enquiries: list[CensusSection47Public] = Field(default_factory=list)
    child_protection_plans: list[CensusCpPlanPublic] = Field(default_factory=list)
    cin_plans: list[CensusCinPlanPublic] = Field(default_factory=list)
    child: CensusChildPublic
    fingerprint: str = Field(description="SHA-256 of what the file says about the episode")


class CensusProblemPublic(PublicModel):
    """Why a child of the file (or the file) was not imported."""

    child: str | None = Field(description="The child's LAchildID; null for the file itself")
    item: str = Field(description="The element at fault, e.g. CINdetails[2]/CPPendDate")
    message: str


class CensusImportPublic(PublicModel):
    """What an import of a census file did."""

    census_import_id: UUID | None = Field(description="The file's provenance id; null on a dry run")
    sha256: str = Field(description="SHA-256 of the file: its identity")
    file_name: str | None = None
    census_year: str
    la_code: str
    reference_date: date
    dry_run: bool
    already_imported: bool = Field(description="This file was imported before")
    children_in_file: int
    children_imported: int = Field(description="Children imported or already up to date")
    children_changed: int = Field(description="Children with anything new or updated")
    children_skipped: int = Field(description="Children left out whole; see problems")
    referrals_created: int
    referrals_updated: int
    events_created: dict[str, int] = Field(description="Case events stored, by type")
    problems: list[CensusProblemPublic]
    seconds: float
