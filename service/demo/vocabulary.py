"""What the demo partnership is made of: its agencies, the vocabulary its records use and the
weights every choice is drawn with (the proportions the generator's docstring lists)."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate
from random import Random
from typing import Final, Generic, TypeVar

from schemas.referrals import SECTION47_OUTCOME
from schemas.vocabulary import NeglectForm

T = TypeVar("T")


class Weighted(Generic[T]):
    """Values with relative weights, drawn with one `rng.random()` and a bisection."""

    def __init__(self, *pairs: tuple[T, float]) -> None:
        self.values = tuple(value for value, _ in pairs)
        self.cumulative = list(accumulate(weight for _, weight in pairs))
        self.total = self.cumulative[-1]

    def pick(self, rng: Random) -> T:
        return self.values[bisect_right(self.cumulative, rng.random() * self.total)]

    def sample(self, rng: Random, k: int) -> list[T]:
        """`k` distinct values (at most all of them), each drawn by weight among the rest."""
        chosen: list[T] = []
        while len(chosen) < min(k, len(self.values)):
            value = self.pick(rng)
            if value not in chosen:
                chosen.append(value)
        return chosen


@dataclass(frozen=True)
class Agency:
    """A sending agency: the API client its records come from and what it refers about."""

    client_id: str
    agency_type: str
    agency_name: str
    sources: tuple[str, ...]
    neglect_share: float
    referrer_role: str


AGENCIES: Final = Weighted(
    (Agency("demo-police", "police", "Demo Constabulary", ("6",), 0.21, "Police officer"), 0.27),
    (
        Agency("demo-school-1", "school", "Northtown Academy", ("2A",), 0.44, "Designated lead"),
        0.07,
    ),
    (
        Agency(
            "demo-school-2", "school", "Riverside Primary School", ("2A",), 0.46, "Head teacher"
        ),
        0.07,
    ),
    (
        Agency(
            "demo-school-3", "school", "Hillcrest High School", ("2A",), 0.42, "Designated lead"
        ),
        0.06,
    ),
    (
        Agency(
            "demo-health-visiting",
            "health",
            "Demo Community Health Services",
            ("3B", "3C"),
            0.45,
            "Health visitor",
        ),
        0.06,
    ),
    (
        Agency("demo-primary-care", "health", "Demo Primary Care Network", ("3A", "3D"), 0.4, "GP"),
        0.05,
    ),
    (
        Agency("demo-hospital", "health", "Demo Hospitals NHS Trust", ("3E", "3F"), 0.36, "Nurse"),
        0.04,
    ),
    (
        Agency(
            "demo-contact-centre",
            "other",
            "Demo Front Door contact centre",
            ("1A", "1B", "1C", "1D", "9", "10", "7"),
            0.33,
            "Contact officer",
        ),
        0.12,
    ),
    (
        Agency(
            "demo-council",
            "local_authority",
            "Demo Council services",
            ("5A", "5B", "5C"),
            0.36,
            "Social worker",
        ),
        0.07,
    ),
    (
        Agency(
            "demo-family-hubs", "early_help", "Demo Family Hubs", ("5D",), 0.48, "Family worker"
        ),
        0.07,
    ),
    (
        Agency(
            "demo-charity",
            "voluntary_sector",
            "Demo Children's Charity",
            ("8",),
            0.38,
            "Project worker",
        ),
        0.05,
    ),
    (
        Agency("demo-housing", "housing", "Demo Housing Options", ("4",), 0.47, "Housing officer"),
        0.04,
    ),
    (
        Agency("demo-nursery", "early_years", "Little Acorns Nursery", ("8",), 0.5, "Manager"),
        0.03,
    ),
)
ASSESSING_TYPES: Final = frozenset({"school", "health", "early_help"})
FAMILY_HUBS: Final = next(
    agency for agency in AGENCIES.values if agency.agency_type == "early_help"
)
SCHOOLS: Final = tuple(agency for agency in AGENCIES.values if agency.agency_type == "school")
HEALTH_VISITING: Final = next(
    agency for agency in AGENCIES.values if agency.client_id == "demo-health-visiting"
)

NEGLECT_FORM_WEIGHTS: Final = Weighted[str](
    *(
        (form.value, weight)
        for form, weight in (
            (NeglectForm.PHYSICAL, 30),
            (NeglectForm.SUPERVISION, 25),
            (NeglectForm.EMOTIONAL, 15),
            (NeglectForm.NUTRITIONAL, 12),
            (NeglectForm.MEDICAL, 10),
            (NeglectForm.EDUCATIONAL, 8),
        )
    )
)
OTHER_CATEGORIES: Final = Weighted(
    ("emotional_abuse", 34),
    ("physical_abuse", 28),
    ("exploitation", 12),
    ("sexual_abuse", 9),
    ("other", 17),
)
RISK_FACTORS: Final = Weighted(
    ("domestic_abuse", 24),
    ("parental_mental_health", 20),
    ("substance_misuse", 15),
    ("poverty", 12),
    ("poor_social_support", 6),
    ("send", 6),
    ("behavioural_problems", 5),
    ("unemployment", 3),
    ("parent_experienced_maltreatment", 3),
    ("parental_learning_difficulty", 2),
    ("chronic_ill_health", 1),
    ("young_carer", 1),
    ("no_positive_parenting_experience", 1),
    ("harmful_online_exposure", 1),
)
ETHNICITIES: Final = Weighted(
    ("WBRI", 70),
    ("WOTH", 5),
    ("MWBC", 3),
    ("MOTH", 2),
    ("MWBA", 1),
    ("MWAS", 1),
    ("APKN", 3),
    ("AIND", 2),
    ("ABAN", 1),
    ("AOTH", 1),
    ("BAFR", 3),
    ("BCRB", 1),
    ("BOTH", 1),
    ("CHNE", 1),
    ("WROM", 1),
    ("WIRT", 1),
    ("OOTH", 2),
    ("REFU", 1),
)
GIVEN_NAMES: Final = (
    "Alex", "Amara", "Ben", "Chloe", "Daniel", "Ella", "Finley", "Grace", "Harry", "Isla", "Jack",
    "Kai", "Layla", "Leo", "Mia", "Noah", "Olivia", "Oscar", "Poppy", "Reuben", "Ruby", "Sam",
    "Sofia", "Theo", "Zara", "Yusuf", "Maya", "Logan", "Evie", "Ibrahim",
)  # fmt: skip
FAMILY_NAMES: Final = (
    "Ashdown", "Brackley", "Carrow", "Dunmore", "Elstree", "Fenwick", "Garside", "Holloway",
    "Ingram", "Jessop", "Kettering", "Lowther", "Marlow", "Northcott", "Oakley", "Pennick",
    "Quarrie", "Redfern", "Stanway", "Thursby", "Upton", "Varley", "Whitmore", "Yardley",
    "Ahmed", "Begum", "Okafor", "Nowak", "Kowalski", "Mensah", "Chen", "Patel",
)  # fmt: skip

CIN_ASSESSMENT: Final = "child_in_need_assessment"
EARLY_HELP_OUTCOMES: Final = frozenset(
    {"family_wellbeing_intensive_support", "parenting_support", "family_hub_support", "early_help"}
)
OUTCOMES_NEGLECT: Final = Weighted(
    (SECTION47_OUTCOME, 9),
    (CIN_ASSESSMENT, 28),
    ("family_wellbeing_intensive_support", 10),
    ("parenting_support", 8),
    ("family_hub_support", 10),
    ("early_help", 15),
    ("signposted_universal", 6),
    ("no_further_action", 8),
)
OUTCOMES_OTHER: Final = Weighted(
    (SECTION47_OUTCOME, 7),
    (CIN_ASSESSMENT, 22),
    ("family_wellbeing_intensive_support", 6),
    ("parenting_support", 6),
    ("family_hub_support", 9),
    ("early_help", 14),
    ("signposted_universal", 12),
    ("no_further_action", 19),
)
RATIONALES: Final = {
    SECTION47_OUTCOME: (
        "Reasonable cause to suspect significant harm; strategy discussion convened."
    ),
    CIN_ASSESSMENT: "Needs appear complex; a social work assessment is needed.",
    "family_wellbeing_intensive_support": "Multiple needs; intensive family support offered.",
    "parenting_support": "Parenting support should meet the needs identified.",
    "family_hub_support": "Family hub can coordinate support with the family's agreement.",
    "early_help": "Needs can be met through an early help assessment and plan.",
    "signposted_universal": "Universal services can meet the needs; family signposted.",
    "no_further_action": "Information does not indicate unmet needs requiring a service.",
}
SUMMARIES: Final = {
    "neglect": "Concerns about the child's basic care: {forms}.",
    "emotional_abuse": "Concerns about emotional harm in the home.",
    "physical_abuse": "Unexplained injury or reported physical chastisement.",
    "exploitation": "Concerns the child is being exploited outside the home.",
    "sexual_abuse": "Disclosure or indicators of sexual harm.",
    "other": "Concerns about the child's welfare that need a view from the Front Door.",
}
CP_CATEGORIES_NEGLECT: Final = Weighted(("NEG", 80), ("MUL", 8), ("EMO", 9), ("PHY", 3))
CP_CATEGORIES_OTHER: Final = Weighted(
    ("EMO", 45), ("PHY", 16), ("SAB", 10), ("NEG", 20), ("MUL", 9)
)
ALL_CATEGORIES: Final = ("NEG", "PHY", "EMO", "SAB")
RATINGS_PARENT: Final = Weighted((1, 8), (2, 12), (3, 25), (4, 35), (5, 20))
RATINGS_CHILD: Final = Weighted((1, 5), (2, 10), (3, 25), (4, 35), (5, 25))

CONSENT: Final = Weighted(("given", 80), ("refused", 12), ("not_sought", 8))
SEVERITY: Final = Weighted((2, 25), (3, 45), (4, 25), (5, 5))
TREND: Final = Weighted((-1, 55), (0, 30), (1, 15))

# --- Disabilities and case audits (drawn from a second generator, so adding them left every
# other row of a seed as it was) ---

DISABILITY_RECORDED: Final = Weighted(("NONE", 70), ("codes", 12), ("not_recorded", 18))
"""What referrals record of a child's disability: NONE, one or two codes, or nothing."""
DISABILITY_CODES: Final = Weighted(
    ("LD", 20),
    ("AUT", 20),
    ("COMM", 18),
    ("BEH", 15),
    ("MOB", 6),
    ("HEAR", 4),
    ("DDA", 4),
    ("PC", 3),
    ("INC", 3),
    ("VIS", 3),
    ("HAND", 2),
    ("CON", 2),
)
AUDIT_CLIENT: Final = (
    "demo-partnership-qa",
    "local_authority",
    "Demo Safeguarding Children Partnership",
)
"""The client that records the partnership's multi-agency case audits."""
AUDIT_PANEL_AGENCIES: Final = Weighted(
    ("health", 30),
    ("police", 20),
    ("school", 20),
    ("early_help", 15),
    ("early_years", 5),
    ("voluntary_sector", 5),
    ("housing", 5),
)
"""Who sits on a panel beside the local authority."""
PRACTICE_GRADES_TOOLKIT: Final = Weighted((0, 12), (1, 58), (2, 24), (3, 6))
"""Practice grades where the toolkit was used, as positions on the audit scale (0 the best, as
in `schemas.case_audits.AUDIT_GRADES`); without it, `PRACTICE_GRADES_OTHER`."""
PRACTICE_GRADES_OTHER: Final = Weighted((0, 5), (1, 42), (2, 38), (3, 15))
AUDIT_LEARNING: Final = (
    "Chronology helped the panel see the cumulative impact of neglect.",
    "The child's lived experience was clear in the plan.",
    "Drift between reviews: actions were not followed up for two months.",
    "Health and school information was not shared with the lead professional.",
    "Toolkit scores were used well to show the family what had changed.",
    "The plan focused on parental engagement rather than outcomes for the child.",
)
