"""Published toolkit versions on the wire.

The definition document itself is described by the JSON Schema at `GET /v1/toolkits/schema`; it is
sent and returned as a plain JSON object so that every problem in it, including those a schema
cannot express, is reported together.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from .common import PublicModel

ToolkitId = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,79}$"),
    Field(description="A toolkit id: lower case letters, digits, `_`, `.`, `-`"),
]
ToolkitVersionText = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9]+(\.[0-9]+){0,2}(-[0-9A-Za-z.]+)?$", max_length=40),
    Field(description="A toolkit version such as `1.0.0`, `2.1` or `2.0.0-draft`"),
]


class ToolkitVersionSummary(PublicModel):
    """One published, immutable toolkit version."""

    toolkit_id: str
    version: str
    title: str
    publisher: str
    licence: str
    demonstration: bool = Field(description="Demonstration content: not for real assessments")
    sha256: str = Field(description="sha256 of the definition's canonical JSON")
    published_by: str | None = Field(default=None, description="Client that published it")
    published_at: datetime | None = None


class ToolkitVersionPublic(ToolkitVersionSummary):
    """A published toolkit version with its full definition (defaults filled in)."""

    definition: dict[str, Any] = Field(
        description="The definition, valid against the schema at GET /v1/toolkits/schema"
    )
