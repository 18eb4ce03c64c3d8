"""Database tables, one module per resource. Wire schemas live in `schemas/`.

Importing this package registers every table on `metadata` (Alembic autogenerate needs them all).
"""

from . import case_events as case_events
from .assessments import Assessment, ToolkitVersion
from .base import metadata
from .children import Child
from .foundation import ApiClient, AuditEvent, IdempotencyRecord, SigningKey
from .referrals import Referral

__all__ = [
    "ApiClient",
    "Assessment",
    "AuditEvent",
    "Child",
    "IdempotencyRecord",
    "Referral",
    "SigningKey",
    "ToolkitVersion",
    "metadata",
]
