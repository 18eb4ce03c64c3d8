"""The readiness probe's answer."""

from __future__ import annotations

from pydantic import Field

from .common import PublicModel
from .webhooks import WorkerHealth


class Readiness(PublicModel):
    status: str = Field(description="`ok`: the database answers")
    webhook_workers: WorkerHealth
