"""What a census file says, as read: one `CensusChild` per `Child`, and problems found on the way.

Field names are the service's; each says which census item it comes from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a file, or one child of it, cannot be imported: the child, the item and the reason.

    `child` is the child's LAchildID (or its position in the file when it has none); None for a
    problem with the file itself. `item` is the path of the element at fault inside the child
    (`CINdetails[2]/ChildProtectionPlans[1]/CPPendDate`), or inside the file.
    """

    child: str | None
    item: str
    message: str


@dataclass(frozen=True, slots=True)
class CensusHeader:
    """`Header`: which collection, year and local authority the file is."""

    census_year: str
    collection_year: int
    reference_date: date
    la_code: str


@dataclass(slots=True)
class CensusAssessment:
    """`Assessments`: a social work assessment of the episode."""

    started_on: date  # AssessmentActualStartDate
    internal_review_on: date | None  # AssessmentInternalReviewDate
    authorised_on: date | None  # AssessmentAuthorisationDate
    factors: list[str]  # AssessmentFactors/AssessmentFactor


@dataclass(slots=True)
class CensusSection47:
    """`Section47`: an enquiry and its initial child protection conference."""

    started_on: date  # S47ActualStartDate
    icpc_target_on: date | None  # InitialCPCtarget
    icpc_on: date | None  # DateOfInitialCPC
    icpc_not_required: bool | None  # ICPCnotRequired


@dataclass(slots=True)
class CensusCpPlan:
    """`ChildProtectionPlans`: one child protection plan."""

    started_on: date  # CPPstartDate
    ended_on: date | None  # CPPendDate
    initial_category: str  # InitialCategoryOfAbuse
    latest_category: str  # LatestCategoryOfAbuse
    previous_plans: int | None  # NumberOfPreviousCPP
    reviews: list[date]  # Reviews/CPPreviewDate


@dataclass(slots=True)
class CensusCinPlan:
    """`CINPlanDates`: one child in need plan."""

    started_on: date  # CINPlanStartDate
    ended_on: date | None  # CINPlanEndDate


@dataclass(slots=True)
class CensusEpisode:
    """`CINdetails`: one episode of need, from referral to closure."""

    referral_on: date  # CINreferralDate
    referral_source: str  # ReferralSource
    primary_need: str | None  # PrimaryNeedCode
    closed_on: date | None  # CINclosureDate
    closure_reason: str | None  # ReasonForClosure
    icpc_on: date | None  # DateOfInitialCPC (of the episode)
    referral_nfa: bool | None  # ReferralNFA
    assessments: list[CensusAssessment] = field(default_factory=list)
    cin_plans: list[CensusCinPlan] = field(default_factory=list)
    section47s: list[CensusSection47] = field(default_factory=list)
    cp_plans: list[CensusCpPlan] = field(default_factory=list)

    @property
    def neglect(self) -> bool:
        """The import's rule for "neglect" in an episode (the indicator catalogue states it): an
        assessment recorded factor 16A, or a child protection plan of the episode was under
        neglect (NEG) at its start or latest. Primary need N1, "abuse or neglect", is not enough
        on its own; nor is MUL, as in DfE statistics."""
        for assessment in self.assessments:
            if "16A" in assessment.factors:
                return True
        for plan in self.cp_plans:
            if plan.initial_category == "NEG" or plan.latest_category == "NEG":
                return True
        return False


@dataclass(slots=True)
class CensusChild:
    """`Child`: identifiers, characteristics and episodes."""

    position: int
    """1 for the file's first child."""
    la_child_id: str  # ChildIdentifiers/LAchildID
    upn: str | None  # UPN
    former_upn: str | None  # FormerUPN
    upn_unknown: str | None  # UPNunknown
    birth_on: date | None  # PersonBirthDate
    expected_birth_on: date | None  # ExpectedPersonBirthDate
    sex: str  # GenderCurrent or Sex, as M, F or U
    died_on: date | None  # PersonDeathDate
    ethnicity: str | None  # ChildCharacteristics/Ethnicity
    disabilities: list[str]  # ChildCharacteristics/Disabilities/Disability
    episodes: list[CensusEpisode] = field(default_factory=list)
