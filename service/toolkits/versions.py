"""Published toolkit versions: publishing (immutable once published), reading and listing.

A version's identity is its toolkit id and version; its content is fixed by the sha256 of the
validated definition's canonical JSON, so re-sending the same definition (even with defaults
spelled out or keys reordered) is a no-op, and sending other content under a published version
is refused.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from sqlalchemy import select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from schemas.common import Page
from schemas.toolkits import ToolkitVersionSummary
from service.errors import (
    Conflict,
    FieldProblem,
    NotFound,
    Unprocessable,
    field_problem,
    problem_count,
)
from service.models import ToolkitVersion
from service.pagination import Keyset, PageRequest
from service.toolkits.definition import (
    DefinitionInvalid,
    ToolkitDefinition,
    canonical_sha256,
    validate_definition,
)
from service.toolkits.demo import read_demo_toolkit_document


class DefinitionRefused(Unprocessable):
    """A toolkit definition with problems; `errors` lists every one."""

    problem = "invalid-toolkit-definition"
    title = "The toolkit definition is not valid"


class ToolkitVersionExists(Conflict):
    problem = "toolkit-version-exists"
    title = "This toolkit version is already published with other content"


_PROBLEM_PATH = re.compile(r"^(?P<path>[A-Za-z0-9_.\[\]]+): (?P<message>.+)$", re.DOTALL)
_INDEX = re.compile(r"\[(\d+)\]")


def describe_definition_problems(problems: Sequence[str]) -> list[FieldProblem]:
    """`errors` entries (`field`, `message`, `code`) for `DefinitionInvalid.problems`.

    Fields are spelled like request validation errors: `body.areas.0.sub_areas.1.id`.
    """
    errors = []
    for problem in problems:
        match = _PROBLEM_PATH.match(problem)
        if match is None:
            field, message = "body", problem
        elif match["path"] == "document":
            field, message = "body", match["message"]
        else:
            field = "body." + _INDEX.sub(r".\1", match["path"]).lstrip(".")
            message = match["message"]
        errors.append(field_problem(field, message, "invalid_definition"))
    return errors


def check_definition(document: object) -> ToolkitDefinition:
    """`validate_definition`, raising `DefinitionRefused` (a 422 listing every problem)."""
    try:
        return validate_definition(document)
    except DefinitionInvalid as exc:
        raise DefinitionRefused(
            f"the definition has {problem_count(exc.problems)}; see `errors`",
            describe_definition_problems(exc.problems),
        ) from exc


@dataclass(frozen=True)
class PublishedVersion:
    version: ToolkitVersion
    created: bool
    """False when the identical definition was already published (a no-op)."""


async def publish_toolkit_version(
    session: AsyncSession, document: object, published_by: str | None
) -> PublishedVersion:
    """Publish a definition as an immutable version.

    Raises `DefinitionRefused` for an invalid document and `ToolkitVersionExists` when the id and
    version are already published with different content. Safe under concurrency: the unique
    (toolkit_id, version) constraint decides which of two simultaneous publications wins.
    """
    definition = check_definition(document)
    sha256 = canonical_sha256(definition)
    inserted = await session.scalar(
        insert(ToolkitVersion)
        .values(
            id=uuid.uuid4(),
            toolkit_id=definition.id,
            version=definition.version,
            sha256=sha256,
            title=definition.title,
            publisher=definition.publisher,
            licence=definition.licence,
            demonstration=definition.demonstration,
            definition=definition.model_dump(mode="json"),
            published_by=published_by,
        )
        .on_conflict_do_nothing(constraint="uq_toolkit_version_toolkit_id_version")
        .returning(col(ToolkitVersion.id))
    )
    existing = await find_toolkit_version(session, definition.id, definition.version)
    if existing is None:  # pragma: no cover - the row was inserted or conflicted just now
        raise Conflict("the toolkit version could not be published; retry")
    if inserted is None and existing.sha256 != sha256:
        raise ToolkitVersionExists(
            f"toolkit {definition.id} version {definition.version} is already published with "
            f"other content (sha256 {existing.sha256}); publish the change as a new version"
        )
    return PublishedVersion(version=existing, created=inserted is not None)


async def publish_demo_toolkit(session: AsyncSession, published_by: str | None) -> PublishedVersion:
    """Publish the shipped demonstration toolkit (a no-op when it is already published)."""
    return await publish_toolkit_version(session, read_demo_toolkit_document(), published_by)


async def find_toolkit_version(
    session: AsyncSession, toolkit_id: str, version: str
) -> ToolkitVersion | None:
    found: ToolkitVersion | None = await session.scalar(
        select(ToolkitVersion).where(
            col(ToolkitVersion.toolkit_id) == toolkit_id, col(ToolkitVersion.version) == version
        )
    )
    return found


async def get_toolkit_version(
    session: AsyncSession, toolkit_id: str, version: str
) -> ToolkitVersion:
    found = await find_toolkit_version(session, toolkit_id, version)
    if found is None:
        raise NotFound(f"no toolkit {toolkit_id} version {version} is published")
    return found


_KEYSET: Final = Keyset[tuple[uuid.UUID]](tuple[uuid.UUID])
"""By toolkit id, then publication: a page starts after the version with this id."""


async def list_toolkit_versions(
    session: AsyncSession, page: PageRequest, *, toolkit_id: str | None = None
) -> Page[ToolkitVersionSummary]:
    """Ordered by toolkit id, then publication (oldest first), one page at a time (an empty
    page after a cursor naming no version)."""
    order = (
        col(ToolkitVersion.toolkit_id),
        col(ToolkitVersion.published_at),
        col(ToolkitVersion.id),
    )
    query = select(ToolkitVersion).order_by(*order).limit(page.fetch)
    if toolkit_id is not None:
        query = query.where(col(ToolkitVersion.toolkit_id) == toolkit_id)
    after = _KEYSET.after(page)
    if after is not None:
        last = (
            await session.execute(select(*order).where(col(ToolkitVersion.id) == after[0]))
        ).one_or_none()
        if last is None:
            # Versions are never deleted, so only a cursor we never issued names nothing.
            return Page[ToolkitVersionSummary](items=[])
        query = query.where(tuple_(*order) > tuple_(*last))
    versions = (await session.scalars(query)).all()
    return _KEYSET.page(
        versions, page, lambda version: (version.id,), ToolkitVersionSummary.model_validate
    )


_DEFINITIONS: Final[dict[str, ToolkitDefinition]] = {}
_MAX_CACHED_DEFINITIONS: Final = 64


def definition_of(version: ToolkitVersion) -> ToolkitDefinition:
    """The parsed definition of a published version (cached by sha256: versions are immutable)."""
    cached = _DEFINITIONS.get(version.sha256)
    if cached is not None:
        return cached
    definition = ToolkitDefinition.model_validate(version.definition)
    if len(_DEFINITIONS) >= _MAX_CACHED_DEFINITIONS:
        _DEFINITIONS.pop(next(iter(_DEFINITIONS)))
    _DEFINITIONS[version.sha256] = definition
    return definition
