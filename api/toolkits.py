"""Toolkit definitions: the published schema, publishing versions (admin), reading them, and
scoring a body against one without storing it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Response, Security

from schemas.assessments import ScorePublic, ScoreRequest
from schemas.common import Page
from schemas.examples import TOOLKIT_DEFINITION_EXAMPLE
from schemas.toolkits import ToolkitVersionPublic, ToolkitVersionSummary
from service.assessments import score_without_storing
from service.audit import record_access
from service.auth.caller import Caller
from service.toolkits.definition import definition_json_schema
from service.toolkits.versions import (
    get_toolkit_version,
    list_toolkit_versions,
    publish_toolkit_version,
)

from .deps import DATA_LAG_DOC, AdminDep, PageDep, ReadSessionDep, SessionDep, authenticate
from .responses import problems

router = APIRouter(prefix="/v1", tags=["toolkits"])

ToolkitReader = Annotated[Caller, Security(authenticate, scopes=["assessments:read"])]
AssessmentWriter = Annotated[Caller, Security(authenticate, scopes=["assessments:write"])]

ToolkitIdPath = Annotated[
    str, Path(pattern=r"^[a-z0-9][a-z0-9_.-]{0,79}$", description="The toolkit's id")
]
VersionPath = Annotated[
    str,
    Path(
        pattern=r"^[0-9]+(\.[0-9]+){0,2}(-[0-9A-Za-z.]+)?$",
        max_length=40,
        description="The version, e.g. `1.0.0`",
    ),
]


@router.get("/toolkits/schema", responses=problems(401, 403))
async def get_toolkit_schema(caller: ToolkitReader) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a toolkit definition.

    Publishing also checks what a schema cannot express: unique ids, one descriptor per grade,
    age bands, and level rules that name known areas and end with a default rule.
    """
    return definition_json_schema()


@router.post(
    "/toolkits",
    status_code=201,
    responses={
        200: {"model": ToolkitVersionPublic, "description": "Already published with this content"},
        **problems(401, 403, 409, 413, 422),
    },
)
async def publish_toolkit(
    document: Annotated[
        dict[str, Any],
        Body(
            description="A toolkit definition, valid against GET /v1/toolkits/schema",
            examples=[TOOLKIT_DEFINITION_EXAMPLE],
        ),
    ],
    session: SessionDep,
    caller: AdminDep,
    response: Response,
) -> ToolkitVersionPublic:
    """Publish a toolkit version. Once published it is immutable: the same content again is a
    no-op (200), other content under the same id and version is 409."""
    published = await publish_toolkit_version(session, document, published_by=caller.client_id)
    public = ToolkitVersionPublic.model_validate(published.version)
    if published.created:
        await record_access(
            session, caller, "create", "toolkit_version", published.version.id, child_id=None
        )
        response.headers["Location"] = f"/v1/toolkits/{public.toolkit_id}/versions/{public.version}"
    else:
        response.status_code = 200
    return public


@router.get("/toolkits", responses={**problems(401, 403, 422, 503), 200: {"headers": DATA_LAG_DOC}})
async def list_toolkits(
    session: ReadSessionDep,
    caller: ToolkitReader,
    page: PageDep,
    toolkit_id: Annotated[
        str | None, Query(pattern=r"^[a-z0-9][a-z0-9_.-]{0,79}$", description="Only this toolkit")
    ] = None,
) -> Page[ToolkitVersionSummary]:
    """Published toolkit versions, by toolkit id and then oldest first; read on the read replica
    when one is configured, so a version just published may be missing for as long as
    `X-Data-Lag-Seconds` says."""
    return await list_toolkit_versions(session, page, toolkit_id=toolkit_id)


@router.get("/toolkits/{toolkit_id}/versions/{version}", responses=problems(401, 403, 404, 422))
async def get_toolkit(
    toolkit_id: ToolkitIdPath, version: VersionPath, session: SessionDep, caller: ToolkitReader
) -> ToolkitVersionPublic:
    """One published toolkit version with its full definition."""
    return ToolkitVersionPublic.model_validate(
        await get_toolkit_version(session, toolkit_id, version)
    )


@router.post(
    "/toolkits/{toolkit_id}/versions/{version}/score",
    responses=problems(401, 403, 404, 413, 422),
)
async def score_toolkit_responses(
    toolkit_id: ToolkitIdPath,
    version: VersionPath,
    body: ScoreRequest,
    session: SessionDep,
    caller: AssessmentWriter,
) -> ScorePublic:
    """Score responses against a published version without storing anything (a dry run).

    Missing, unknown, out-of-band or out-of-scale responses are 422 naming each item.
    """
    return await score_without_storing(session, caller, toolkit_id, version, body)
