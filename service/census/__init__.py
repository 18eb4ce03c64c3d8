"""Import of the DfE Children in Need census XML (SPEC 2.9): a partnership's history from day one.

The structure read follows the DfE's published CIN census specifications for 2017-18 to 2024-25
*as recalled* (the service was written without access to them): check it against the DfE's
specification for each year before relying on an import. `spec.py` lists the years and how they
differ. The file is a `Message` with a `Header` (`CollectionDetails`: `Collection` CIN, `Year`,
`ReferenceDate`; `Source/LEA`) and `Children`, each `Child` with:

    ChildIdentifiers: LAchildID, UPN, FormerUPN, UPNunknown, PersonBirthDate,
                      ExpectedPersonBirthDate, GenderCurrent (Sex from 2024-25), PersonDeathDate
    ChildCharacteristics: Ethnicity, Disabilities/Disability
    CINdetails (one per episode): CINreferralDate, ReferralSource, PrimaryNeedCode,
        CINclosureDate, ReasonForClosure, DateOfInitialCPC, ReferralNFA,
        Assessments: AssessmentActualStartDate, AssessmentInternalReviewDate,
                     AssessmentAuthorisationDate, AssessmentFactors/AssessmentFactor
        CINPlanDates: CINPlanStartDate, CINPlanEndDate
        Section47: S47ActualStartDate, InitialCPCtarget, DateOfInitialCPC, ICPCnotRequired
        ChildProtectionPlans: CPPstartDate, CPPendDate, InitialCategoryOfAbuse,
                              LatestCategoryOfAbuse, NumberOfPreviousCPP, Reviews/CPPreviewDate

`parse` reads and checks a file, `plan` maps a child onto the service's records (children matched
as the API matches them, a referral per episode, case events through the API's rules), `load`
stores them in bulk with the file's identity for provenance.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.census.load import (
        CensusFileRefused,
        ImportReport,
        Workers,
        default_workers,
        import_census_file,
    )
    from service.census.model import Problem

__all__ = [
    "CensusFileRefused",
    "ImportReport",
    "Problem",
    "Workers",
    "default_workers",
    "import_census_file",
]


def __getattr__(name: str) -> object:
    """The names above, imported when first asked for: a worker process of the import imports
    `service.census.store` alone, not `load` and, through it, the rest of the service."""
    if name == "Problem":
        from service.census.model import Problem

        return Problem
    if name in __all__:
        from service.census import load

        return getattr(load, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
