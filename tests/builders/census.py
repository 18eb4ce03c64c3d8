"""Synthetic Children in Need census files, built from the DfE specification's structure.

`simulate` makes children with a history over several census years (episodes, assessments,
Section 47 enquiries, ICPCs, child protection plans with category changes at reviews and repeat
plans, child in need plans); `census_xml` writes the file one census year would hold: every
episode open at some time in that year (1 April to 31 March), as the local authority knew it on
31 March. Consecutive years' files overlap as real ones do: the second repeats what was still
open at the end of the first, now with the ends and changes it did not know yet.

Everything is made up and reproducible from the seed. Nothing here uses the service's code, so
tests can compute expected figures from the files independently.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Final

CATEGORY_WEIGHTS: Final = (("NEG", 45), ("EMO", 28), ("PHY", 12), ("SAB", 5), ("MUL", 10))
SOURCES: Final = ("1A", "1B", "2A", "3A", "3B", "3E", "4", "5A", "5D", "6", "8", "9", "10")
ETHNICITIES: Final = ("WBRI", "WOTH", "MWBC", "AIND", "APKN", "BAFR", "BCRB", "CHNE", "NOBT")
FACTORS: Final = ("1B", "2B", "3A", "3B", "4B", "5B", "6B", "8B", "14A", "17A", "18B", "22A")


@dataclass
class SimPlan:
    started_on: date
    ended_on: date | None
    initial: str
    changes: list[tuple[date, str]] = field(default_factory=list)
    reviews: list[date] = field(default_factory=list)
    previous: int = 0

    def category_on(self, day: date) -> str:
        category = self.initial
        for changed_on, changed_to in self.changes:
            if changed_on <= day:
                category = changed_to
        return category


@dataclass
class SimEpisode:
    referral_on: date
    source: str
    need: str
    nfa: bool
    closed_on: date | None = None
    reason: str | None = None
    assessments: list[tuple[date, date | None, list[str]]] = field(default_factory=list)
    section47s: list[tuple[date, date | None]] = field(default_factory=list)
    cp_plans: list[SimPlan] = field(default_factory=list)
    cin_plans: list[tuple[date, date | None]] = field(default_factory=list)


@dataclass
class SimChild:
    la_child_id: str
    upn: str | None
    birth_on: date | None
    expected_birth_on: date | None
    sex: str
    ethnicity: str
    disabilities: list[str]
    episodes: list[SimEpisode] = field(default_factory=list)


def _pick(rng: random.Random, weights: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([code for code, _ in weights], [weight for _, weight in weights])[0]


def _upn(rng: random.Random) -> str:
    return "A" + "".join(str(rng.randrange(10)) for _ in range(12))


def simulate(
    children: int,
    seed: int = 2024,
    first_day: date = date(2021, 4, 1),
    last_day: date = date(2024, 3, 31),
    id_prefix: str = "C",
) -> list[SimChild]:
    """`children` children whose records fall between `first_day` and `last_day`."""
    rng = random.Random(seed)
    span = (last_day - first_day).days
    made = []
    for number in range(children):
        unborn = rng.random() < 0.01
        first_referral = first_day + timedelta(days=rng.randrange(span - 30))
        if unborn:
            first_referral = last_day - timedelta(days=rng.randrange(60))
            birth_on, expected = None, last_day + timedelta(days=20 + rng.randrange(100))
        else:
            birth_on = first_referral - timedelta(days=rng.randrange(1, 17 * 365))
            expected = None
        child = SimChild(
            la_child_id=f"{id_prefix}{number:07d}",
            upn=_upn(rng)
            if birth_on
            and first_referral - birth_on > timedelta(days=5 * 365)
            and rng.random() < 0.7
            else None,
            birth_on=birth_on,
            expected_birth_on=expected,
            sex="0" if unborn else rng.choice("12"),
            ethnicity=rng.choice(ETHNICITIES),
            disabilities=["NONE"]
            if rng.random() < 0.8
            else rng.sample(["MOB", "LD", "AUT", "COMM"], 2),
        )
        day = first_referral
        plans_so_far = rng.choice((0, 0, 0, 0, 1, 2))
        while day <= last_day and len(child.episodes) < 4:
            episode = _episode(rng, day, last_day, plans_so_far)
            plans_so_far += len(episode.cp_plans)
            child.episodes.append(episode)
            if episode.closed_on is None:
                break
            # Often referred again soon after, so re-referrals within 12 months occur.
            gap = rng.randrange(5, 200) if rng.random() < 0.5 else rng.randrange(200, 700)
            day = episode.closed_on + timedelta(days=gap)
        made.append(child)
    return made


def _episode(
    rng: random.Random, referral_on: date, last_day: date, plans_before: int
) -> SimEpisode:
    nfa = rng.random() < 0.15
    episode = SimEpisode(
        referral_on=referral_on,
        source=rng.choice(SOURCES),
        need=rng.choice(("N1", "N1", "N1", "N2", "N4", "N5", "N6", "N8")),
        nfa=nfa,
    )
    if nfa:
        closed_on = referral_on + timedelta(days=rng.randrange(0, 5))
        if closed_on <= last_day:
            episode.closed_on, episode.reason = closed_on, "RC8"
        return episode
    busy_until = referral_on
    started = referral_on + timedelta(days=rng.randrange(0, 6))
    authorised = started + timedelta(days=rng.randrange(8, 50))
    factors = rng.sample(FACTORS, rng.randrange(0, 3))
    if rng.random() < 0.4:
        factors.append("16A")
    if started <= last_day:
        episode.assessments.append(
            (started, authorised if authorised <= last_day else None, factors)
        )
        busy_until = max(busy_until, started)
    if rng.random() < 0.45:
        s47_on = referral_on + timedelta(days=rng.randrange(0, 12))
        icpc_on = None
        if rng.random() < 0.65:
            icpc_on = s47_on + timedelta(days=rng.randrange(6, 36))
        if s47_on <= last_day:
            episode.section47s.append(
                (s47_on, icpc_on if icpc_on and icpc_on <= last_day else None)
            )
            busy_until = max(busy_until, s47_on)
            if icpc_on and icpc_on <= last_day:
                busy_until = max(busy_until, icpc_on)
                if rng.random() < 0.8:
                    plan = _cp_plan(rng, icpc_on, last_day, plans_before)
                    episode.cp_plans.append(plan)
                    busy_until = max(busy_until, plan.ended_on or date.max)
                    # Some children start a second plan in the same episode after the first ends.
                    if plan.ended_on and rng.random() < 0.15:
                        second_on = plan.ended_on + timedelta(days=rng.randrange(20, 200))
                        if second_on <= last_day:
                            episode.section47s.append((second_on - timedelta(days=12), second_on))
                            second = _cp_plan(rng, second_on, last_day, plans_before + 1)
                            episode.cp_plans.append(second)
                            busy_until = max(busy_until, second.ended_on or date.max)
    if rng.random() < 0.4 and authorised <= last_day:
        cin_on = authorised + timedelta(days=rng.randrange(0, 10))
        if cin_on <= last_day:
            ends = cin_on + timedelta(days=rng.randrange(40, 420))
            episode.cin_plans.append((cin_on, ends if ends <= last_day else None))
            busy_until = max(busy_until, ends if ends <= last_day else date.max)
    if busy_until != date.max:
        closed_on = max(busy_until, authorised) + timedelta(days=rng.randrange(1, 40))
        if closed_on <= last_day:
            episode.closed_on, episode.reason = (
                closed_on,
                rng.choice(("RC7", "RC7", "RC8", "RC9", "RC5")),
            )
    return episode


def _cp_plan(rng: random.Random, started_on: date, last_day: date, plans_before: int) -> SimPlan:
    initial = _pick(rng, CATEGORY_WEIGHTS)
    days = rng.randrange(60, 800)
    ended_on = started_on + timedelta(days=days)
    plan = SimPlan(
        started_on=started_on,
        ended_on=ended_on if ended_on <= last_day else None,
        initial=initial,
        previous=plans_before if rng.random() < 0.9 else plans_before + 1,
    )
    review = started_on + timedelta(days=rng.randrange(80, 100))
    while review < ended_on and review <= last_day:
        plan.reviews.append(review)
        review += timedelta(days=rng.randrange(150, 190))
    # Categories change at review conferences.
    for review_day in plan.reviews:
        if rng.random() < 0.18:
            current = plan.category_on(review_day)
            plan.changes.append(
                (review_day, rng.choice([c for c, _ in CATEGORY_WEIGHTS if c != current]))
            )
    return plan


# --- Writing one year's file -------------------------------------------------------------------


def _d(value: date) -> str:
    return value.isoformat()


def _known(value: date | None, reference: date) -> date | None:
    return value if value is not None and value <= reference else None


def census_xml(children: list[SimChild], collection_year: int, la_code: str = "201") -> bytes:
    """The census file of `collection_year` (2024 for 2023-24)."""
    reference = date(collection_year, 3, 31)
    year_start = date(collection_year - 1, 4, 1)
    sex_element = "Sex" if collection_year >= 2025 else "GenderCurrent"
    parts = [
        "<?xml version='1.0' encoding='utf-8'?>\n<Message><Header><CollectionDetails>"
        f"<Collection>CIN</Collection><Year>{collection_year}</Year>"
        f"<ReferenceDate>{_d(reference)}</ReferenceDate></CollectionDetails>"
        f"<Source><SourceLevel>L</SourceLevel><LEA>{la_code}</LEA><SoftwareCode>synthetic"
        "</SoftwareCode><Release>1</Release><SerialNo>1</SerialNo>"
        f"<DateTime>{collection_year}-05-01T09:00:00</DateTime></Source>"
        "<Content><CBDSLevels><CBDSLevel>Child</CBDSLevel></CBDSLevels></Content></Header><Children>"
    ]
    for child in children:
        episodes = [
            episode
            for episode in child.episodes
            if episode.referral_on <= reference
            and (episode.closed_on is None or episode.closed_on >= year_start)
        ]
        if not episodes:
            continue
        parts.append("<Child><ChildIdentifiers>")
        parts.append(f"<LAchildID>{child.la_child_id}</LAchildID>")
        parts.append(f"<UPN>{child.upn}</UPN>" if child.upn else "<UPNunknown>UN1</UPNunknown>")
        if child.birth_on:
            parts.append(f"<PersonBirthDate>{_d(child.birth_on)}</PersonBirthDate>")
        if child.expected_birth_on:
            parts.append(
                f"<ExpectedPersonBirthDate>{_d(child.expected_birth_on)}</ExpectedPersonBirthDate>"
            )
        sex = (
            child.sex
            if sex_element == "GenderCurrent"
            else {"1": "M", "2": "F"}.get(child.sex, "U")
        )
        parts.append(f"<{sex_element}>{sex}</{sex_element}></ChildIdentifiers>")
        parts.append(
            f"<ChildCharacteristics><Ethnicity>{child.ethnicity}</Ethnicity><Disabilities>"
            + "".join(f"<Disability>{code}</Disability>" for code in child.disabilities)
            + "</Disabilities></ChildCharacteristics>"
        )
        for episode in episodes:
            parts.append(_episode_xml(episode, reference))
        parts.append("</Child>")
    parts.append("</Children></Message>\n")
    return "".join(parts).encode()


def _episode_xml(episode: SimEpisode, reference: date) -> str:
    closed_on = _known(episode.closed_on, reference)
    out = [f"<CINdetails><CINreferralDate>{_d(episode.referral_on)}</CINreferralDate>"]
    out.append(f"<ReferralSource>{episode.source}</ReferralSource>")
    out.append(f"<PrimaryNeedCode>{episode.need}</PrimaryNeedCode>")
    if closed_on:
        out.append(f"<CINclosureDate>{_d(closed_on)}</CINclosureDate>")
        out.append(f"<ReasonForClosure>{episode.reason}</ReasonForClosure>")
    out.append(f"<ReferralNFA>{'true' if episode.nfa else 'false'}</ReferralNFA>")
    for started, authorised, factors in episode.assessments:
        if started > reference:
            continue
        out.append(
            f"<Assessments><AssessmentActualStartDate>{_d(started)}</AssessmentActualStartDate>"
        )
        known = _known(authorised, reference)
        if known:
            out.append(f"<AssessmentAuthorisationDate>{_d(known)}</AssessmentAuthorisationDate>")
            out.append(
                "<AssessmentFactors>"
                + "".join(f"<AssessmentFactor>{code}</AssessmentFactor>" for code in factors)
                + "</AssessmentFactors>"
            )
        out.append("</Assessments>")
    for started, ended in episode.cin_plans:
        if started > reference:
            continue
        out.append(f"<CINPlanDates><CINPlanStartDate>{_d(started)}</CINPlanStartDate>")
        known = _known(ended, reference)
        if known:
            out.append(f"<CINPlanEndDate>{_d(known)}</CINPlanEndDate>")
        out.append("</CINPlanDates>")
    for started, icpc_on in episode.section47s:
        if started > reference:
            continue
        out.append(f"<Section47><S47ActualStartDate>{_d(started)}</S47ActualStartDate>")
        out.append(f"<InitialCPCtarget>{_d(started + timedelta(days=21))}</InitialCPCtarget>")
        known = _known(icpc_on, reference)
        if known:
            out.append(f"<DateOfInitialCPC>{_d(known)}</DateOfInitialCPC>")
        out.append(
            f"<ICPCnotRequired>{'false' if icpc_on else 'true'}</ICPCnotRequired></Section47>"
        )
    for plan in episode.cp_plans:
        if plan.started_on > reference:
            continue
        ended = _known(plan.ended_on, reference)
        as_of = ended - timedelta(days=1) if ended else reference
        out.append(f"<ChildProtectionPlans><CPPstartDate>{_d(plan.started_on)}</CPPstartDate>")
        if ended:
            out.append(f"<CPPendDate>{_d(ended)}</CPPendDate>")
        out.append(f"<InitialCategoryOfAbuse>{plan.initial}</InitialCategoryOfAbuse>")
        out.append(f"<LatestCategoryOfAbuse>{plan.category_on(as_of)}</LatestCategoryOfAbuse>")
        out.append(f"<NumberOfPreviousCPP>{plan.previous}</NumberOfPreviousCPP>")
        reviews = [day for day in plan.reviews if day <= reference]
        if reviews:
            out.append(
                "<Reviews>"
                + "".join(f"<CPPreviewDate>{_d(day)}</CPPreviewDate>" for day in reviews)
                + "</Reviews>"
            )
        out.append("</ChildProtectionPlans>")
    out.append("</CINdetails>")
    return "".join(out)
