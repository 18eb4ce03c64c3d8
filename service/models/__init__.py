"""Database tables, one module per concept. Wire schemas live in `schemas/`.

Importing this package registers every table on `metadata` (Alembic autogenerate needs them all).
"""

from . import case_events as case_events
from .assessments import Assessment
from .audit import AuditChainHead, AuditEvent
from .base import metadata
from .case_audits import CaseAudit
from .census import CensusImport
from .children import Child
from .clients import ApiClient
from .feed import FeedKey, FeedSnapshot, FeedSnapshotPoint
from .idempotency import IdempotencyRecord
from .indicators import IndicatorCell, IndicatorChange, IndicatorRollup
from .keys import SigningKey
from .rate_limits import RateLimitCounter
from .referrals import Referral
from .toolkits import ToolkitVersion
from .webhooks import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookFanOut,
    WebhookMessage,
    WebhookSubscription,
    WebhookWorker,
)

__all__ = [
    "ApiClient",
    "Assessment",
    "AuditChainHead",
    "AuditEvent",
    "CaseAudit",
    "CensusImport",
    "Child",
    "FeedKey",
    "FeedSnapshot",
    "FeedSnapshotPoint",
    "IdempotencyRecord",
    "IndicatorCell",
    "IndicatorChange",
    "IndicatorRollup",
    "RateLimitCounter",
    "Referral",
    "SigningKey",
    "ToolkitVersion",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookFanOut",
    "WebhookMessage",
    "WebhookSubscription",
    "WebhookWorker",
    "metadata",
]
