"""The census years the import reads and what differs between them.

Everything here follows the DfE's published Children in Need census specifications *as recalled*
(the service was built without access to them): check each year's element names and code lists
against the DfE's specification for that year before relying on an import. The collection's
`Header/CollectionDetails/Year` is the year the census is returned in, whose reference date is
31 March of that year (the 2023-24 census has Year 2024).

Differences between the years, as far as the import reads them:
- 2017-18 to 2023-24: the child's sex is `GenderCurrent` (1 male, 2 female, 0 not known,
  9 not specified).
- 2024-25 on: `Sex` (M, F or U) replaces it. Both are read in every year, since case systems
  changed at different times; a child giving both must give the same.
- Assessment factor codes were added over the years (child criminal exploitation, for example);
  the import accepts any well-formed code (digits and an optional letter) and reads only 16A,
  neglect. The other code lists (referral source, category of abuse, ethnicity, disability,
  primary need, reason for closure) did not change over these years.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Final

from schemas.reference_data import (
    CATEGORY_OF_ABUSE,
    DISABILITY,
    ETHNICITY,
    REFERRAL_SOURCE,
    code_list,
)


@dataclass(frozen=True)
class CensusYear:
    """One census year the import supports."""

    name: str
    """As the DfE writes it: "2023-24"."""
    collection_year: int
    """`Header/CollectionDetails/Year`."""
    sex_element: str
    """The element the specification names for the child's sex."""

    @property
    def reference_date(self) -> date:
        """31 March of the collection year: the census counts what was open on this day."""
        return date(self.collection_year, 3, 31)


CENSUS_YEARS: Final[dict[int, CensusYear]] = {
    year: CensusYear(
        name=f"{year - 1}-{year % 100:02d}",
        collection_year=year,
        sex_element="Sex" if year >= 2025 else "GenderCurrent",
    )
    for year in range(2018, 2026)
}
"""Collection year -> census year, 2017-18 (Year 2018) to 2024-25 (Year 2025)."""

COLLECTION: Final = "CIN"

GENDER_CURRENT: Final = {"1": "M", "2": "F", "0": "U", "9": "U"}
"""`GenderCurrent` codes to the service's sex (0 not known and 9 not specified are both U)."""
SEX: Final = frozenset({"M", "F", "U"})

NEGLECT_FACTOR: Final = "16A"
"""Assessment factor "abuse or neglect: neglect" (SPEC 5)."""
NEGLECT_CATEGORY: Final = "NEG"
ABUSE_OR_NEGLECT_NEED: Final = "N1"
"""Primary need "abuse or neglect": it does not tell neglect from abuse, so alone it does not make
an episode one of neglect."""

PRIMARY_NEED: Final = {
    "N0": "Not stated",
    "N1": "Abuse or neglect",
    "N2": "Child's disability or illness",
    "N3": "Parental disability or illness",
    "N4": "Family in acute stress",
    "N5": "Family dysfunction",
    "N6": "Socially unacceptable behaviour",
    "N7": "Low income",
    "N8": "Absent parenting",
    "N9": "Cases other than children in need",
}
REASON_FOR_CLOSURE: Final = {
    "RC1": "Adopted",
    "RC2": "Died",
    "RC3": "Child arrangements order",
    "RC4": "Special guardianship order",
    "RC5": "Transferred to services of another local authority",
    "RC6": "Transferred to adult social care services",
    "RC7": "Services ceased for any other reason, including the child no longer in need",
    "RC8": "Case closed after assessment, no further action",
    "RC9": "Case closed after assessment, referred to early help",
}
FACTOR_PATTERN: Final = re.compile(r"^[0-9]{1,2}[A-Z]?$")
UPN_UNKNOWN: Final = frozenset(
    {"UN1", "UN2", "UN3", "UN4", "UN5", "UN6", "UN7", "UN8", "UN9", "UN10"}
)

# The lists the API validates against (schemas/reference_data), unchanged over these years.
REFERRAL_SOURCES: Final = frozenset(code_list(REFERRAL_SOURCE))
CATEGORIES: Final = frozenset(code_list(CATEGORY_OF_ABUSE))
ETHNICITIES: Final = frozenset(code_list(ETHNICITY))
DISABILITIES: Final = frozenset(code_list(DISABILITY))
