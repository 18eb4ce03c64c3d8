"""One example of every request body, shown in the OpenAPI document, `/docs` and `/redoc`.

Each is posted as it stands by tests/api/test_examples.py and must succeed, in this order: publish
the example toolkit, score against it, send the referral (it makes the example child), assess
the child, send its case events, record a case audit of the work with it, decide the referral,
withdraw another one, register a client, issue a feed key, subscribe to webhooks, rotate the
subscription's secret, replay its past events, and import a census file of one other child. So
they name one synthetic child (an NHS number from the 999 test range) and one toolkit.

Dates are fixed, so the document does not change from day to day: far enough in the past to stay
valid, and the child (born 2018-05-14) stays under 18, as a referral requires, until 2036-05-14.
"""

from __future__ import annotations

from typing import Any, Final

EXAMPLE_NHS_NUMBER: Final = "9992048174"
EXAMPLE_DATE_OF_BIRTH: Final = "2018-05-14"
EXAMPLE_TOOLKIT_ID: Final = "example-neglect-toolkit"
EXAMPLE_TOOLKIT_VERSION: Final = "1.0.0"

_DESCRIPTORS: Final = [
    "Needs fully met",
    "Needs mostly met",
    "Needs partly met",
    "Needs largely unmet",
    "Needs entirely unmet",
]


def _item(item_id: str, text: str) -> dict[str, Any]:
    return {"id": item_id, "text": text, "descriptors": list(_DESCRIPTORS)}


TOOLKIT_DEFINITION_EXAMPLE: Final[dict[str, Any]] = {
    "id": EXAMPLE_TOOLKIT_ID,
    "version": EXAMPLE_TOOLKIT_VERSION,
    "title": "Example neglect toolkit (for trying the API)",
    "publisher": "Example Safeguarding Children Partnership",
    "licence": "CC0-1.0",
    "areas": [
        {
            "id": "physical_care",
            "title": "Physical care",
            "sub_areas": [
                {
                    "id": "nutrition",
                    "title": "Food and drink",
                    "neglect_form": "nutritional",
                    "items": [_item("meals", "Regular, sufficient meals")],
                },
                {
                    "id": "clothing",
                    "title": "Clothing and hygiene",
                    "neglect_form": "physical",
                    "items": [_item("clean_clothes", "Clean clothes fit for the weather")],
                },
            ],
        },
        {
            "id": "safety",
            "title": "Safety and supervision",
            "sub_areas": [
                {
                    "id": "supervision",
                    "title": "Supervision",
                    "neglect_form": "supervision",
                    "items": [_item("supervised", "Supervised as the child's age needs")],
                }
            ],
        },
    ],
    "level_rules": [
        {
            "level": 3,
            "name": "Targeted",
            "recommended_action": "Request for Support to the Children's Front Door",
            "refer_to_front_door": True,
            "when": {"min_areas_at_significant_concern": 1},
        },
        {
            "level": 2,
            "name": "Early help",
            "recommended_action": "Early help assessment",
            "when": {"min_areas_at_concern": 1},
        },
        {"level": 1, "name": "Universal", "recommended_action": "Universal services"},
    ],
}

_RESPONSES: Final[list[dict[str, Any]]] = [
    {"item_id": "meals", "grade": 4, "evidence": "No breakfast on 9 of the last 10 school days."},
    {"item_id": "clean_clothes", "grade": 3, "evidence": "Same uniform all week, unwashed."},
    {"item_id": "supervised", "grade": "not_known"},
]

SCORE_REQUEST_EXAMPLE: Final[dict[str, Any]] = {
    "child_date_of_birth": EXAMPLE_DATE_OF_BIRTH,
    "completed_on": "2025-11-10",
    "responses": _RESPONSES,
}

REFERRAL_CREATE_EXAMPLE: Final[dict[str, Any]] = {
    "external_reference": "NPS-RFS-2025-0042",
    "referrer": {
        "agency_type": "school",
        "agency_name": "Northtown Primary School",
        "name": "Pat Example",
        "role": "Designated safeguarding lead",
        "email": "dsl@northtown-primary.example.org",
        "phone": "01632 960000",
        "source_code": "2A",
    },
    "child": {
        "given_name": "Amelia",
        "family_name": "Example",
        "date_of_birth": EXAMPLE_DATE_OF_BIRTH,
        "sex": "F",
        "ethnicity": "WBRI",
        "first_language": "English",
        "disabilities": ["NONE"],
        "address": {"lines": ["12 Example Street"], "town": "Northtown", "postcode": "ZZ1 1AA"},
        "school_or_setting": "Northtown Primary School",
        "gp_practice": "Example Lane Surgery",
        "nhs_number": EXAMPLE_NHS_NUMBER,
    },
    "household": [
        {
            "name": "Sam Example",
            "relationship": "mother",
            "has_parental_responsibility": True,
            "lives_with_child": True,
            "date_of_birth": "1991-03-02",
        }
    ],
    "concerns": {
        "categories": ["neglect"],
        "neglect_forms": ["nutritional", "physical"],
        "risk_factors": ["poverty"],
        "summary": "Arrives hungry most days and in the same unwashed clothes all week.",
        "what_has_changed": "Over the last half term this has happened on most days.",
        "impact_on_child": "Tired in lessons and withdrawn from friends.",
        "strengths_and_protective_factors": "Mother engages with school and wants help.",
    },
    "immediate_risk": False,
    "parental_awareness": {"informed": True, "consent": "given"},
    "dsl_consulted": True,
}

DECISION_CREATE_EXAMPLE: Final[dict[str, Any]] = {
    "outcome": "early_help",
    "rationale": "Needs are at level 2; the family agrees to early help support.",
    "decided_by": "Front Door team manager",
}

WITHDRAW_CREATE_EXAMPLE: Final[dict[str, Any]] = {
    "reason": "Sent in error: a duplicate of an earlier referral.",
}

ASSESSMENT_CREATE_EXAMPLE: Final[dict[str, Any]] = {
    "child": {"nhs_number": EXAMPLE_NHS_NUMBER},
    "toolkit_id": EXAMPLE_TOOLKIT_ID,
    "toolkit_version": EXAMPLE_TOOLKIT_VERSION,
    "assessor": {
        "name": "Jo Example",
        "role": "Family support worker",
        "agency": "Northtown Early Help",
    },
    "started_on": "2025-11-03",
    "completed_on": "2025-11-10",
    "responses": _RESPONSES,
    "strengths": "Mother is warm with Amelia and keen to accept help.",
    "child_voice": {
        "seen": True,
        "seen_alone": True,
        "method": "Conversation at school",
        "words": "There isn't always food at home at the weekend.",
    },
    "parent_carer_views": "Money is very tight since her hours were cut.",
    "targets": [{"item_id": "meals", "target_grade": 2, "review_on": "2026-02-10"}],
    "household_ref": "HH-0042",
}

CASE_EVENT_BATCH_EXAMPLE: Final[dict[str, Any]] = {
    "events": [
        {
            "type": "early_help_assessment_completed",
            "event_id": "EH-2025-0042",
            "child": {"nhs_number": EXAMPLE_NHS_NUMBER},
            "occurred_on": "2025-11-10",
            "assessment_ref": "EHA-0042",
            "neglect_considered": True,
            "neglect_identified": True,
        },
        {
            "type": "health_appointment",
            "event_id": "HA-2025-0107",
            "child": {"nhs_number": EXAMPLE_NHS_NUMBER},
            "occurred_on": "2025-11-20",
            "kind": "dental",
            "attended": False,
        },
    ]
}

CLIENT_CREATE_EXAMPLE: Final[dict[str, Any]] = {
    "name": "Northtown Primary MIS",
    "agency_type": "school",
    "agency_name": "Northtown Primary School",
    "scopes": ["referrals:write", "referrals:read", "assessments:write", "assessments:read"],
}

CASE_AUDIT_CREATE_EXAMPLE: Final[dict[str, Any]] = {
    "child": {"nhs_number": EXAMPLE_NHS_NUMBER},
    "audited_work": "early_help_assessment",
    "neglect_featured": True,
    "audited_on": "2025-12-01",
    "panel_agencies": ["local_authority", "school", "health"],
    "practice_grade": "good",
    "impact_grade": "requires_improvement",
    "toolkit_used": True,
    "toolkit_use_effective": True,
    "learning": "The toolkit made the neglect visible early; the plan needed a review date.",
}

FEED_KEY_CREATE_EXAMPLE: Final[dict[str, Any]] = {"name": "Power BI: neglect dashboard"}
"""For a client that may read indicators (`indicators:read`); another is refused with 409."""

TOKEN_REQUEST_EXAMPLE: Final[dict[str, Any]] = {
    "grant_type": "client_credentials",
    "scope": "referrals:write referrals:read",
}
"""Form fields; the client authenticates with HTTP Basic (`client_secret_basic`)."""


WEBHOOK_CREATE_EXAMPLE: Final[dict[str, Any]] = {
    "url": "https://mis.northtown-primary.example/hooks/neglect",
    "event_types": ["referral.decided", "referral.withdrawn"],
    "description": "Safeguarding lead's MIS",
}

WEBHOOK_ROTATE_EXAMPLE: Final[dict[str, Any]] = {"grace_period_s": 86400}

WEBHOOK_REPLAY_EXAMPLE: Final[dict[str, Any]] = {
    "since": "2026-12-01T00:00:00Z",
    "until": "2026-12-02T00:00:00Z",
}

# A Children in Need census return of one synthetic child (its own, not the example child: the
# census names children by the LA's id, never by NHS number): a referral, an assessment naming
# neglect (factor 16A), a Section 47 enquiry, an initial conference and a child protection plan
# under neglect, still open at the census date.
CENSUS_FILE_EXAMPLE: Final = """<?xml version="1.0" encoding="utf-8"?>
<Message>
  <Header>
    <CollectionDetails>
      <Collection>CIN</Collection><Year>2024</Year><ReferenceDate>2024-03-31</ReferenceDate>
    </CollectionDetails>
    <Source>
      <SourceLevel>L</SourceLevel><LEA>201</LEA><SoftwareCode>example</SoftwareCode>
      <Release>1</Release><SerialNo>1</SerialNo><DateTime>2024-05-01T09:00:00</DateTime>
    </Source>
    <Content><CBDSLevels><CBDSLevel>Child</CBDSLevel></CBDSLevels></Content>
  </Header>
  <Children>
    <Child>
      <ChildIdentifiers>
        <LAchildID>EXAMPLE0001</LAchildID>
        <UPNunknown>UN1</UPNunknown>
        <PersonBirthDate>2019-07-05</PersonBirthDate>
        <GenderCurrent>1</GenderCurrent>
      </ChildIdentifiers>
      <ChildCharacteristics>
        <Ethnicity>WBRI</Ethnicity>
        <Disabilities><Disability>NONE</Disability></Disabilities>
      </ChildCharacteristics>
      <CINdetails>
        <CINreferralDate>2023-08-23</CINreferralDate>
        <ReferralSource>3E</ReferralSource>
        <PrimaryNeedCode>N1</PrimaryNeedCode>
        <ReferralNFA>false</ReferralNFA>
        <Assessments>
          <AssessmentActualStartDate>2023-08-26</AssessmentActualStartDate>
          <AssessmentAuthorisationDate>2023-10-06</AssessmentAuthorisationDate>
          <AssessmentFactors><AssessmentFactor>16A</AssessmentFactor></AssessmentFactors>
        </Assessments>
        <Section47>
          <S47ActualStartDate>2023-08-23</S47ActualStartDate>
          <InitialCPCtarget>2023-09-13</InitialCPCtarget>
          <DateOfInitialCPC>2023-09-03</DateOfInitialCPC>
          <ICPCnotRequired>false</ICPCnotRequired>
        </Section47>
        <ChildProtectionPlans>
          <CPPstartDate>2023-09-03</CPPstartDate>
          <InitialCategoryOfAbuse>NEG</InitialCategoryOfAbuse>
          <LatestCategoryOfAbuse>NEG</LatestCategoryOfAbuse>
          <NumberOfPreviousCPP>0</NumberOfPreviousCPP>
          <Reviews><CPPreviewDate>2023-11-27</CPPreviewDate></Reviews>
        </ChildProtectionPlans>
      </CINdetails>
    </Child>
  </Children>
</Message>
"""
