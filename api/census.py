"""Upload a Children in Need census file for import (scope `admin`)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Final

from fastapi import APIRouter, Query, Request

from schemas.census import CensusImportPublic
from schemas.examples import CENSUS_FILE_EXAMPLE
from service.census import CensusFileRefused, import_census_file
from service.errors import FieldInvalid, ValidationFailed, field_problem

from .deps import AdminDep
from .responses import problems

router = APIRouter(prefix="/v1", tags=["administration"])

CENSUS_IMPORTS_PATH: Final = "/v1/census-imports"
"""Takes a file as its body, up to `NEGLECT_MAX_CENSUS_FILE_BYTES` (see `api.main`)."""

_XML_BODY: Final = {
    "requestBody": {
        "required": True,
        "description": "The census XML file as it is returned to the DfE",
        "content": {
            "application/xml": {
                "schema": {"type": "string", "format": "binary"},
                "example": CENSUS_FILE_EXAMPLE,
            }
        },
    }
}


@router.post(
    "/census-imports",
    response_model=CensusImportPublic,
    responses=problems(401, 403, 413, 422, 503),
    openapi_extra=_XML_BODY,
)
async def post_census_import(
    request: Request,
    caller: AdminDep,
    dry_run: Annotated[bool, Query(description="Read and check the file; store nothing")] = False,
    file_name: Annotated[
        str | None, Query(max_length=255, description="The file's name, for the provenance")
    ] = None,
) -> CensusImportPublic:
    """Import a DfE Children in Need census XML file (2017-18 to 2024-25) sent as the body. A
    child that fails a check is left out whole and listed in `problems`; the rest is imported.
    The same file again changes nothing; the next year's adds what is new. A file that is not
    well-formed XML, declares a DTD or has no supported header is 422 and stores nothing."""
    with tempfile.NamedTemporaryFile(prefix="census-", suffix=".xml") as upload:
        async for chunk in request.stream():
            upload.write(chunk)
        upload.flush()
        if upload.tell() == 0:
            raise FieldInvalid("body", "empty: send the census XML file", "empty")
        try:
            report = await import_census_file(
                request.app.state.session_factory,
                Path(upload.name),
                caller,
                file_name=file_name or "upload.xml",
                dry_run=dry_run,
            )
        except CensusFileRefused as refused:
            raise ValidationFailed(
                "the census file was refused; nothing was stored",
                [
                    field_problem(f"body.{problem.item}", problem.message, "census_file")
                    for problem in refused.problems
                ],
            ) from refused
    return CensusImportPublic.model_validate(report.as_json())
