"""Reading a census file: defended XML parsing, then each `Child` read and checked on its own.

The file is parsed with lxml as a stream (`iterparse`), one `Child` at a time, so a file of any
size reads in little memory. It is refused whole when it is not well-formed XML, declares a DTD
(a census file has none; refusing it rules out entity expansion "bombs" and external entities,
which are also switched off in the parser), has another root than `Message`, or a `Header` that
names no supported CIN collection year and local authority. Otherwise every child is read and
checked, and each problem names the child (its LAchildID) and the item at fault.

A child's checks are the census's own (dates present and well-formed, codes from the year's
lists, nothing after the census reference date, an episode's activities inside the episode) and
the case-event rules of the API (`service.case_event_rules`): a plan ends after the day it starts,
child protection plans do not overlap, an ICPC is not held before its Section 47 enquiry.
"""

from __future__ import annotations

import itertools
import mmap
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, BinaryIO, Final, TypeVar
from xml.sax.saxutils import quoteattr

from lxml import etree

from schemas.common import today_in_uk
from schemas.identifiers import is_valid_la_child_id, is_valid_upn
from service.case_event_rules import PlanFacts, cp_plan_overlap, icpc_refusal, plan_end_refusal
from service.census import spec
from service.census.model import (
    CensusAssessment,
    CensusChild,
    CensusCinPlan,
    CensusCpPlan,
    CensusEpisode,
    CensusHeader,
    CensusSection47,
    Problem,
)

T = TypeVar("T")
FILE_ITEM: Final = "file"
_TRUE: Final = frozenset({"true", "1"})
_FALSE: Final = frozenset({"false", "0"})


@dataclass
class CensusFile:
    """A file read in full: its header, the children that passed every check, and the problems.

    `children_read` counts every `Child` element, valid or not.
    """

    header: CensusHeader | None
    children: list[CensusChild] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    children_read: int = 0

    @property
    def refused(self) -> bool:
        """A problem with the file itself: nothing in it can be imported."""
        return self.header is None or any(problem.child is None for problem in self.problems)


def _local(tag: Any) -> str:
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def _text(element: Any) -> str:
    return (element.text or "").strip()


class _Items:
    """The sub-elements of one element by local name (`leaves`: text of those without children,
    `groups`: those with children), and the problems found reading them.

    Read in one pass over the element, since a file holds a hundred thousand children.
    """

    __slots__ = ("groups", "leaves", "path", "problems", "who")

    def __init__(self, element: Any, path: str, who: str | None, problems: list[Problem]) -> None:
        leaves: dict[str, str] = {}
        groups: dict[str, list[Any]] = {}
        repeated: list[str] = []
        for sub in element:
            tag = sub.tag
            if "}" in tag:
                tag = tag.rpartition("}")[2]
            if len(sub):
                group = groups.get(tag)
                if group is None:
                    groups[tag] = [sub]
                else:
                    group.append(sub)
            else:
                if tag in leaves:
                    repeated.append(tag)
                text = sub.text
                leaves[tag] = text.strip() if text else ""
        self.leaves = leaves
        self.groups = groups
        self.path = path
        self.who = who
        self.problems = problems
        if repeated:
            for tag in repeated:
                self.fail(self.where(tag), "appears more than once")

    def where(self, name: str, index: int | None = None) -> str:
        item = name if index is None else f"{name}[{index}]"
        return f"{self.path}/{item}" if self.path else item

    def fail(self, item: str, message: str) -> None:
        self.problems.append(Problem(self.who, item, message))

    def all(self, name: str) -> list[Any]:
        return self.groups.get(name, [])

    def has(self, name: str) -> bool:
        return name in self.leaves or name in self.groups

    def text(self, name: str, required: bool = False) -> str | None:
        value = self.leaves.get(name)
        if value:
            return value
        if required:
            self.fail(self.where(name), "missing")
        return None

    def parsed(
        self, name: str, convert: Callable[[str], T], what: str, required: bool = False
    ) -> T | None:
        raw = self.text(name, required)
        if raw is None:
            return None
        try:
            return convert(raw)
        except ValueError:
            self.fail(self.where(name), f"not {what}")
            return None

    def day(self, name: str, required: bool = False) -> date | None:
        raw = self.leaves.get(name)
        if raw:
            try:
                return date.fromisoformat(raw)
            except ValueError:
                self.fail(self.where(name), "not a date (YYYY-MM-DD)")
                return None
        if required:
            self.fail(self.where(name), "missing")
        return None

    def flag(self, name: str) -> bool | None:
        return self.parsed(name, _boolean, "true or false (or 1 or 0)")

    def code(
        self, name: str, codes: frozenset[str] | dict[str, str], required: bool = False
    ) -> str | None:
        value = self.text(name, required)
        if value is not None and value not in codes:
            self.fail(self.where(name), "not a code of the census list")
            return None
        return value


def _boolean(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(raw)


def _count(raw: str) -> int:
    value = int(raw)
    if value < 0 or value > 99:
        raise ValueError(raw)
    return value


def _parser_events(source: BinaryIO) -> Any:
    # Entities are never expanded and nothing is fetched from the network; a DTD is refused
    # outright below, since a census file has none.
    return etree.iterparse(
        source,
        events=("start", "end"),
        tag=("{*}Message", "{*}Header", "{*}Children", "{*}Child"),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


def read_census(
    source: BinaryIO | Path,
    today: date | None = None,
    on_child: Callable[[CensusChild], None] | None = None,
) -> CensusFile:
    """Read and check a whole census file; see the module docstring.

    With `on_child`, each valid child is handed to it as soon as it is read (and not kept in
    `children`), so that a caller can store children while the rest of the file is read.
    """
    result = CensusFile(header=None)
    try:
        if isinstance(source, Path):
            with source.open("rb") as stream:
                _read(stream, result, today or today_in_uk(), on_child)
        else:
            _read(source, result, today or today_in_uk(), on_child)
    except etree.XMLSyntaxError as error:
        result.problems.append(Problem(None, FILE_ITEM, f"not well-formed XML: {error.msg}"))
    if result.header is None and not any(p.child is None for p in result.problems):
        result.problems.append(Problem(None, "Message/Header", "missing"))
    return result


def _read(
    source: BinaryIO,
    result: CensusFile,
    today: date,
    on_child: Callable[[CensusChild], None] | None,
) -> None:
    seen_ids: dict[str, int] = {}
    children_seen = False
    root_checked = False
    events = _parser_events(source)
    for event, element in events:
        name = _local(element.tag)
        if not root_checked:
            root_checked = True
            if not _acceptable_root(element.getroottree().getroot(), result):
                return
        if event == "start":
            if name == "Children":
                children_seen = True
            continue
        if name == "Header" and _depth(element) == 1:
            result.header = _read_header(element, result.problems)
            if result.header is None:
                return
        elif name == "Child" and _local(element.getparent().tag) == "Children":
            if result.header is None:
                result.problems.append(Problem(None, "Message/Header", "must come before Children"))
                return
            result.children_read += 1
            child = _read_child(
                element, result.children_read, result.header, today, result.problems
            )
            if child is not None:
                first = seen_ids.setdefault(child.la_child_id, child.position)
                if first != child.position:
                    result.problems.append(_repeated(child, first))
                elif on_child is not None:
                    on_child(child)
                else:
                    result.children.append(child)
            _release(element)
    if not root_checked and not _acceptable_root(events.root, result):
        return
    if result.header is not None and not children_seen:
        result.problems.append(Problem(None, "Message/Children", "missing"))


def _depth(element: Any) -> int:
    depth = 0
    parent = element.getparent()
    while parent is not None:
        depth += 1
        parent = parent.getparent()
    return depth


def _release(element: Any) -> None:
    """Free what was read: the element's content and the elements before it."""
    element.clear(keep_tail=False)
    parent = element.getparent()
    while element.getprevious() is not None:
        del parent[0]


def _acceptable_root(root: Any, result: CensusFile) -> bool:
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        result.problems.append(
            Problem(None, FILE_ITEM, "declares a DTD; a census file has none, so it is refused")
        )
        return False
    if _local(root.tag) != "Message":
        result.problems.append(
            Problem(None, FILE_ITEM, f"the root element is {_local(root.tag)}, not Message")
        )
        return False
    return True


def _read_header(element: Any, problems: list[Problem]) -> CensusHeader | None:
    before = len(problems)
    header = _Items(element, "Message/Header", None, problems)
    details_elements = header.all("CollectionDetails")
    source_elements = header.all("Source")
    if not details_elements:
        header.fail(header.where("CollectionDetails"), "missing")
        return None
    details = _Items(details_elements[0], header.where("CollectionDetails"), None, problems)
    collection = details.text("Collection", required=True)
    if collection is not None and collection != spec.COLLECTION:
        details.fail(details.where("Collection"), f"{collection}, not {spec.COLLECTION}")
    year_number = details.parsed("Year", int, "a year", required=True)
    census_year = spec.CENSUS_YEARS.get(year_number) if year_number is not None else None
    if year_number is not None and census_year is None:
        first, last = min(spec.CENSUS_YEARS), max(spec.CENSUS_YEARS)
        details.fail(
            details.where("Year"),
            f"{year_number} is not a supported census year ({first} to {last}, that is "
            f"{spec.CENSUS_YEARS[first].name} to {spec.CENSUS_YEARS[last].name})",
        )
    reference = details.day("ReferenceDate")
    if (
        census_year is not None
        and reference is not None
        and reference != census_year.reference_date
    ):
        details.fail(
            details.where("ReferenceDate"),
            f"{reference.isoformat()}, but the {census_year.name} census counts to "
            f"{census_year.reference_date.isoformat()}",
        )
    la_code = None
    if not source_elements:
        header.fail(header.where("Source"), "missing")
    else:
        source = _Items(source_elements[0], header.where("Source"), None, problems)
        la_code = source.text("LEA", required=True)
        if la_code is not None and not (la_code.isalnum() and len(la_code) <= 10):
            source.fail(source.where("LEA"), "not a local authority code")
    if len(problems) > before or census_year is None or la_code is None:
        return None
    return CensusHeader(
        census_year=census_year.name,
        collection_year=census_year.collection_year,
        reference_date=census_year.reference_date,
        la_code=la_code,
    )


class _ChildChecks:
    """Reads one `Child`, recording each problem against it."""

    def __init__(
        self, who: str, header: CensusHeader, today: date, problems: list[Problem]
    ) -> None:
        self.who = who
        self.latest = min(header.reference_date, today)
        self.header = header
        self.problems = problems

    def items(self, element: Any, path: str) -> _Items:
        return _Items(element, path, self.who, self.problems)

    def fail(self, item: str, message: str) -> None:
        self.problems.append(Problem(self.who, item, message))

    def not_late(self, items: _Items, name: str, value: date | None) -> date | None:
        if value is not None and value > self.latest:
            items.fail(
                items.where(name),
                f"{value.isoformat()} is after the census reference date "
                f"{self.header.reference_date.isoformat()}"
                if value > self.header.reference_date
                else f"{value.isoformat()} is in the future",
            )
            return None
        return value

    def day(self, items: _Items, name: str, required: bool = False) -> date | None:
        value = items.day(name, required)
        if value is not None and value > self.latest:
            return self.not_late(items, name, value)
        return value


def _read_child(
    element: Any, position: int, header: CensusHeader, today: date, problems: list[Problem]
) -> CensusChild | None:
    before = len(problems)
    top = _Items(element, "", f"child {position}", problems)
    identifiers = top.all("ChildIdentifiers")
    if not identifiers:
        top.fail("ChildIdentifiers", "missing")
        return None
    ids = _Items(identifiers[0], "ChildIdentifiers", top.who, problems)
    la_child_id = ids.text("LAchildID", required=True)
    if la_child_id is not None:
        if is_valid_la_child_id(la_child_id):
            who = la_child_id
            # Problems already noted for this child name it by its LAchildID too.
            for index in range(before, len(problems)):
                problems[index] = Problem(who, problems[index].item, problems[index].message)
            top.who = ids.who = who
        else:
            ids.fail(ids.where("LAchildID"), "not 1 to 20 letters and digits")
            la_child_id = None
    checks = _ChildChecks(top.who or f"child {position}", header, today, problems)
    upn = ids.text("UPN")
    if upn is not None:
        upn = upn.upper()
        if not is_valid_upn(upn):
            ids.fail(ids.where("UPN"), "not a UPN: a letter, 11 digits, then a digit or letter")
            upn = None
    former_upn = ids.text("FormerUPN")
    upn_unknown = ids.code("UPNunknown", spec.UPN_UNKNOWN)
    birth_on = checks.day(ids, "PersonBirthDate")
    expected_birth_on = ids.day("ExpectedPersonBirthDate")
    if birth_on is None and expected_birth_on is None and not ids.has("PersonBirthDate"):
        ids.fail(ids.where("PersonBirthDate"), "missing, and no ExpectedPersonBirthDate either")
    sex = _sex(ids)
    died_on = checks.day(ids, "PersonDeathDate")
    if died_on is not None and birth_on is not None and died_on < birth_on:
        ids.fail(ids.where("PersonDeathDate"), "before PersonBirthDate")
    ethnicity: str | None = None
    disabilities: list[str] = []
    characteristics = top.all("ChildCharacteristics")
    if characteristics:
        traits = _Items(characteristics[0], "ChildCharacteristics", top.who, problems)
        ethnicity = traits.code("Ethnicity", spec.ETHNICITIES)
        for listing in traits.all("Disabilities"):
            for index, disability in enumerate(listing, start=1):
                code = _text(disability)
                if code not in spec.DISABILITIES:
                    traits.fail(
                        f"ChildCharacteristics/Disabilities/Disability[{index}]",
                        "not a code of the census list",
                    )
                elif code not in disabilities:
                    disabilities.append(code)
        if "NONE" in disabilities and len(disabilities) > 1:
            traits.fail(
                "ChildCharacteristics/Disabilities", "NONE cannot be combined with another code"
            )
    episodes = [
        episode
        for index, cin in enumerate(top.all("CINdetails"), start=1)
        if (episode := _read_episode(checks, cin, f"CINdetails[{index}]")) is not None
    ]
    if not top.all("CINdetails"):
        top.fail("CINdetails", "missing: a child in the census has at least one episode")
    if len(problems) > before or la_child_id is None or sex is None:
        return None
    child = CensusChild(
        position=position,
        la_child_id=la_child_id,
        upn=upn,
        former_upn=former_upn,
        upn_unknown=upn_unknown,
        birth_on=birth_on,
        expected_birth_on=expected_birth_on if birth_on is None else None,
        sex="U" if birth_on is None else sex,
        died_on=died_on,
        ethnicity=ethnicity,
        disabilities=disabilities,
        episodes=sorted(episodes, key=lambda episode: episode.referral_on),
    )
    _check_across_episodes(checks, child)
    return None if len(problems) > before else child


def _sex(ids: _Items) -> str | None:
    gender = ids.text("GenderCurrent")
    sex = ids.text("Sex")
    from_gender = spec.GENDER_CURRENT.get(gender) if gender is not None else None
    if gender is not None and from_gender is None:
        ids.fail(ids.where("GenderCurrent"), "not 1, 2, 0 or 9")
        return None
    if sex is not None and sex not in spec.SEX:
        ids.fail(ids.where("Sex"), "not M, F or U")
        return None
    if sex is not None and from_gender is not None and sex != from_gender:
        ids.fail(ids.where("Sex"), "differs from GenderCurrent")
        return None
    if sex is None and from_gender is None:
        ids.fail(ids.where("GenderCurrent"), "missing, and no Sex either")
        return None
    return sex or from_gender


def _inside_episode(
    checks: _ChildChecks, items: _Items, name: str, value: date | None, episode: CensusEpisode
) -> None:
    if value is None:
        return
    if value < episode.referral_on:
        items.fail(
            items.where(name), f"{value.isoformat()} is before the episode's CINreferralDate"
        )
    elif episode.closed_on is not None and value > episode.closed_on:
        items.fail(items.where(name), f"{value.isoformat()} is after the episode's CINclosureDate")


def _read_episode(checks: _ChildChecks, element: Any, path: str) -> CensusEpisode | None:
    before = len(checks.problems)
    cin = checks.items(element, path)
    referral_on = checks.day(cin, "CINreferralDate", required=True)
    source = cin.code("ReferralSource", spec.REFERRAL_SOURCES, required=True)
    primary_need = cin.code("PrimaryNeedCode", spec.PRIMARY_NEED)
    closed_on = checks.day(cin, "CINclosureDate")
    closure_reason = cin.code("ReasonForClosure", spec.REASON_FOR_CLOSURE)
    if closed_on is not None and closure_reason is None and not cin.has("ReasonForClosure"):
        cin.fail(cin.where("ReasonForClosure"), "missing for a closed episode")
    if closed_on is None and closure_reason is not None and not cin.has("CINclosureDate"):
        cin.fail(cin.where("CINclosureDate"), "missing, although a ReasonForClosure is given")
    if referral_on is not None and closed_on is not None and closed_on < referral_on:
        cin.fail(cin.where("CINclosureDate"), "before the CINreferralDate")
    if referral_on is None or source is None:
        return None
    episode = CensusEpisode(
        referral_on=referral_on,
        referral_source=source,
        primary_need=primary_need,
        closed_on=closed_on,
        closure_reason=closure_reason,
        icpc_on=checks.day(cin, "DateOfInitialCPC"),
        referral_nfa=cin.flag("ReferralNFA"),
    )
    for index, sub in enumerate(cin.all("Assessments"), start=1):
        assessment = _read_assessment(
            checks, episode, checks.items(sub, cin.where("Assessments", index))
        )
        if assessment is not None:
            episode.assessments.append(assessment)
    for index, sub in enumerate(cin.all("CINPlanDates"), start=1):
        plan = _read_cin_plan(checks, episode, checks.items(sub, cin.where("CINPlanDates", index)))
        if plan is not None:
            episode.cin_plans.append(plan)
    for index, sub in enumerate(cin.all("Section47"), start=1):
        enquiry = _read_section47(checks, episode, checks.items(sub, cin.where("Section47", index)))
        if enquiry is not None:
            episode.section47s.append(enquiry)
    for index, sub in enumerate(cin.all("ChildProtectionPlans"), start=1):
        cp_plan = _read_cp_plan(
            checks, episode, checks.items(sub, cin.where("ChildProtectionPlans", index))
        )
        if cp_plan is not None:
            episode.cp_plans.append(cp_plan)
    return None if len(checks.problems) > before else episode


def _read_assessment(
    checks: _ChildChecks, episode: CensusEpisode, items: _Items
) -> CensusAssessment | None:
    started_on = checks.day(items, "AssessmentActualStartDate", required=True)
    _inside_episode(checks, items, "AssessmentActualStartDate", started_on, episode)
    reviewed_on = checks.day(items, "AssessmentInternalReviewDate")
    authorised_on = checks.day(items, "AssessmentAuthorisationDate")
    if started_on is not None and authorised_on is not None and authorised_on < started_on:
        items.fail(items.where("AssessmentAuthorisationDate"), "before AssessmentActualStartDate")
    factors: list[str] = []
    for listing in items.all("AssessmentFactors"):
        for index, factor in enumerate(listing, start=1):
            code = _text(factor).upper()
            if not spec.FACTOR_PATTERN.match(code):
                items.fail(
                    f"{items.where('AssessmentFactors')}/AssessmentFactor[{index}]",
                    "not an assessment factor code",
                )
            elif code not in factors:
                factors.append(code)
    if started_on is None:
        return None
    return CensusAssessment(started_on, reviewed_on, authorised_on, factors)


def _read_cin_plan(
    checks: _ChildChecks, episode: CensusEpisode, items: _Items
) -> CensusCinPlan | None:
    started_on = checks.day(items, "CINPlanStartDate", required=True)
    ended_on = checks.day(items, "CINPlanEndDate")
    _inside_episode(checks, items, "CINPlanStartDate", started_on, episode)
    _inside_episode(checks, items, "CINPlanEndDate", ended_on, episode)
    if started_on is None:
        return None
    if ended_on is not None:
        refusal = plan_end_refusal(PlanFacts("cin", "", started_on), ended_on)
        if refusal is not None:
            items.fail(items.where("CINPlanEndDate"), refusal)
    return CensusCinPlan(started_on, ended_on)


def _read_section47(
    checks: _ChildChecks, episode: CensusEpisode, items: _Items
) -> CensusSection47 | None:
    started_on = checks.day(items, "S47ActualStartDate", required=True)
    _inside_episode(checks, items, "S47ActualStartDate", started_on, episode)
    target_on = items.day("InitialCPCtarget")
    icpc_on = checks.day(items, "DateOfInitialCPC")
    _inside_episode(checks, items, "DateOfInitialCPC", icpc_on, episode)
    not_required = items.flag("ICPCnotRequired")
    if not_required and icpc_on is not None:
        items.fail(items.where("DateOfInitialCPC"), "given, although ICPCnotRequired is true")
    if started_on is None:
        return None
    if icpc_on is not None:
        refusal = icpc_refusal(None, started_on, icpc_on)
        if refusal is not None:
            items.fail(items.where("DateOfInitialCPC"), refusal)
    return CensusSection47(started_on, target_on, icpc_on, not_required)


def _read_cp_plan(
    checks: _ChildChecks, episode: CensusEpisode, items: _Items
) -> CensusCpPlan | None:
    started_on = checks.day(items, "CPPstartDate", required=True)
    ended_on = checks.day(items, "CPPendDate")
    _inside_episode(checks, items, "CPPstartDate", started_on, episode)
    _inside_episode(checks, items, "CPPendDate", ended_on, episode)
    initial = items.code("InitialCategoryOfAbuse", spec.CATEGORIES, required=True)
    latest = items.code("LatestCategoryOfAbuse", spec.CATEGORIES, required=True)
    previous = items.parsed("NumberOfPreviousCPP", _count, "a number of plans from 0 to 99")
    reviews: list[date] = []
    for index, listing in enumerate(items.all("Reviews"), start=1):
        for review in listing:
            if _local(review.tag) != "CPPreviewDate":
                continue
            try:
                day = date.fromisoformat(_text(review))
            except ValueError:
                items.fail(
                    f"{items.where('Reviews', index)}/CPPreviewDate", "not a date (YYYY-MM-DD)"
                )
                continue
            if started_on is not None and (
                day < started_on or (ended_on is not None and day > ended_on)
            ):
                items.fail(
                    f"{items.where('Reviews', index)}/CPPreviewDate",
                    f"{day.isoformat()} is outside the plan",
                )
            elif day > checks.latest:
                items.fail(
                    f"{items.where('Reviews', index)}/CPPreviewDate",
                    f"{day.isoformat()} is after the census reference date",
                )
            else:
                reviews.append(day)
    if started_on is None or initial is None or latest is None:
        return None
    if ended_on is not None:
        refusal = plan_end_refusal(PlanFacts("cp", "", started_on), ended_on)
        if refusal is not None:
            items.fail(items.where("CPPendDate"), refusal)
    return CensusCpPlan(started_on, ended_on, initial, latest, previous, sorted(reviews))


def _check_across_episodes(checks: _ChildChecks, child: CensusChild) -> None:
    """What no single episode shows: repeated dates, and child protection plans that overlap.

    Each check needs two of what it compares, which most children do not have."""
    episodes = child.episodes
    if len(episodes) > 1:
        referral_days = [episode.referral_on for episode in episodes]
        for day in {day for day in referral_days if referral_days.count(day) > 1}:
            checks.fail(
                "CINdetails/CINreferralDate",
                f"two episodes have the referral date {day.isoformat()}",
            )
    located = [
        (plan, f"CINdetails[{e}]/ChildProtectionPlans[{p}]")
        for e, episode in enumerate(episodes, start=1)
        if episode.cp_plans
        for p, plan in enumerate(episode.cp_plans, start=1)
    ]
    if len(located) > 1:
        earlier: list[PlanFacts] = []
        for plan, where in sorted(located, key=lambda pair: pair[0].started_on):
            refusal = cp_plan_overlap(plan.started_on, earlier)
            if refusal is not None:
                checks.fail(f"{where}/CPPstartDate", refusal)
            earlier.append(
                PlanFacts(
                    "cp", f"CPP-{plan.started_on.isoformat()}", plan.started_on, plan.ended_on
                )
            )
    enquiry_days = [enquiry.started_on for episode in episodes for enquiry in episode.section47s]
    if len(enquiry_days) > 1:
        for day in {day for day in enquiry_days if enquiry_days.count(day) > 1}:
            checks.fail(
                "CINdetails/Section47/S47ActualStartDate",
                f"two Section 47 enquiries start on {day.isoformat()}",
            )
    for e, episode in enumerate(episodes, start=1):
        if len(episode.cin_plans) > 1:
            cin_days = [plan.started_on for plan in episode.cin_plans]
            for day in {day for day in cin_days if cin_days.count(day) > 1}:
                checks.fail(
                    f"CINdetails[{e}]/CINPlanDates/CINPlanStartDate",
                    f"two child in need plans start on {day.isoformat()}",
                )


@dataclass
class CensusScan:
    """What the first pass over a file found (`scan_census`).

    `header` is None when the file is refused (`problems` says why). `first_positions` maps each
    LAchildID given to more than one child to the position of its first child. `split` says
    whether the file's children can be cut out of its bytes and read apart (`child_chunks`):
    every `Child` sits directly in `Children`, and `namespaces` and `encoding` are what a cut-out
    needs to be read on its own.
    """

    header: CensusHeader | None
    children: int = 0
    problems: list[Problem] = field(default_factory=list)
    first_positions: dict[str, int] = field(default_factory=dict)
    split: bool = True
    namespaces: dict[str | None, str] = field(default_factory=dict)
    encoding: str = "UTF-8"


def scan_census(source: BinaryIO | Path) -> CensusScan:
    """See `_scan`."""
    if isinstance(source, Path):
        with source.open("rb") as stream:
            return _scan(stream)
    return _scan(source)


def _scan(source: BinaryIO) -> CensusScan:
    """A quick first pass over the whole file: well-formed, no DTD, a `Message` with a supported
    `Header`; how many children it holds and which LAchildIDs repeat. Children are not checked,
    so a file that will be refused is refused before anything is stored."""
    result = CensusFile(header=None)
    scan = CensusScan(header=None)
    seen: dict[str, int] = {}
    root_checked = False
    try:
        events = _parser_events(source)
        for event, element in events:
            name = _local(element.tag)
            if not root_checked:
                root_checked = True
                if not _acceptable_root(element.getroottree().getroot(), result):
                    break
                scan.encoding = element.getroottree().docinfo.encoding or "UTF-8"
            if event == "start":
                if name == "Children":
                    scan.namespaces = dict(element.nsmap)
                continue
            if name == "Header" and _depth(element) == 1:
                result.header = _read_header(element, result.problems)
                if result.header is None:
                    break
            elif name == "Child":
                scan.children += 1
                if _local(element.getparent().tag) != "Children":
                    scan.split = False
                la_child_id = _la_child_id(element)
                if la_child_id:
                    first = seen.setdefault(la_child_id, scan.children)
                    if first != scan.children:
                        scan.first_positions[la_child_id] = first
                _release(element)
        if not root_checked:
            _acceptable_root(events.root, result)
    except etree.XMLSyntaxError as error:
        result.problems.append(Problem(None, FILE_ITEM, f"not well-formed XML: {error.msg}"))
    if result.header is None and not result.problems:
        result.problems.append(Problem(None, "Message/Header", "missing"))
    scan.problems = result.problems
    scan.header = None if result.problems else result.header
    return scan


def _la_child_id(child: Any) -> str:
    """The child's first `ChildIdentifiers/LAchildID`, stripped (`findtext` with that path and
    any namespace, a few times slower: the scan reads one per child)."""
    for part in child:
        if _local(part.tag) == "ChildIdentifiers":
            for leaf in part:
                if _local(leaf.tag) == "LAchildID":
                    return (leaf.text or "").strip()
    return ""


# A `Child` start tag, with or without a namespace prefix (not `Children`, `ChildIdentifiers`...).
_CHILD_START: Final = re.compile(rb"<(?:[A-Za-z_][\w.\-]*:)?Child(?=[\s/>])")
# Where the name of one could end: searched for first, since a pattern that starts with a literal
# is found several times faster (`_child_starts`).
_CHILD_NAME: Final = re.compile(rb"Child(?=[\s/>])")
_CHILDREN_END: Final = re.compile(rb"</(?:[A-Za-z_][\w.\-]*:)?Children\s*>")


def child_chunks(
    data: bytes | mmap.mmap, scan: CensusScan, size: int
) -> list[tuple[int, int, int]]:
    """The file's children cut into runs of `size`, as (position of the first child, start byte,
    end byte); empty when the file cannot be cut safely (read it whole instead).

    A run of well-formed sibling elements is itself well-formed, and every real `Child` start tag
    matches `_CHILD_START`: so when the matches are exactly as many as the `Child` elements the
    scan counted (text in a comment or CDATA section would add one), each is a child's start.
    """
    if (
        not scan.split
        or scan.children == 0
        or scan.encoding.upper().replace("-", "")
        not in (
            "UTF8",
            "ASCII",
            "USASCII",
            "ISO88591",
            "LATIN1",
        )
    ):
        return []
    starts = _child_starts(data)
    ends = [match.start() for match in _CHILDREN_END.finditer(data, starts[-1] if starts else 0)]
    if len(starts) != scan.children or len(ends) != 1:
        return []
    bounds = [*starts[::size], ends[0]]
    return [
        (index * size + 1, start, end)
        for index, (start, end) in enumerate(itertools.pairwise(bounds))
    ]


def _child_starts(data: bytes | mmap.mmap) -> list[int]:
    """Where `_CHILD_START` matches in `data`: each `Child` name found, the tag it starts (the
    nearest `<` before it, since a prefix holds none) taken when the pattern matches there."""
    starts = []
    for match in _CHILD_NAME.finditer(data):
        name = match.start()
        before = data[name - 1] if name else 0
        if before == 0x3C:  # `<`, no prefix
            starts.append(name - 1)
        elif before == 0x3A:  # `:`, after a prefix
            tag = data.rfind(b"<", 0, name)
            found = _CHILD_START.match(data, tag) if tag >= 0 else None
            if found is not None and found.end() == match.end():
                starts.append(tag)
    return starts


def chunk_document(scan: CensusScan, chunk: bytes) -> bytes:
    """A run of children cut from the file, as a document of its own: the file's encoding and the
    namespaces in scope at `Children`."""
    declarations = "".join(
        f" xmlns={quoteattr(uri)}" if prefix is None else f" xmlns:{prefix}={quoteattr(uri)}"
        for prefix, uri in scan.namespaces.items()
    )
    head = f"<?xml version='1.0' encoding='{scan.encoding}'?>\n<Children{declarations}>"
    return head.encode(scan.encoding) + chunk + b"</Children>"


def read_chunk(
    document: bytes,
    header: CensusHeader,
    first_position: int,
    first_positions: dict[str, int],
    today: date | None = None,
) -> CensusFile:
    """Read and check the children of `chunk_document`, as `read_census` reads a whole file;
    `first_positions` (the scan's) refuses a child whose LAchildID an earlier child gave."""
    result = CensusFile(header=header)
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    children = etree.fromstring(document, parser)
    day = today or today_in_uk()
    for position, element in enumerate(children, start=first_position):
        result.children_read += 1
        child = _read_child(element, position, header, day, result.problems)
        if child is None:
            continue
        first = first_positions.get(child.la_child_id, position)
        if first != position:
            result.problems.append(_repeated(child, first))
        else:
            result.children.append(child)
    return result


def _repeated(child: CensusChild, first: int) -> Problem:
    return Problem(
        child.la_child_id,
        "ChildIdentifiers/LAchildID",
        f"the same LAchildID as child {first} in the file; a child appears once",
    )
