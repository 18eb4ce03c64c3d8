"""The scopes of SPEC 2.6."""

from __future__ import annotations

SCOPES: dict[str, str] = {
    "referrals:write": "Send Requests for Support and withdraw your own",
    "referrals:read": "Read your own agency's referrals",
    "referrals:read:all": "Read every referral (the Front Door)",
    "referrals:decide": "Record the Front Door's decision on a referral",
    "assessments:write": "Send toolkit assessments",
    "assessments:read": "Read your own agency's toolkit assessments",
    "case-events:write": "Send case events from the council's case system",
    "audits:write": "Record multi-agency case audits",
    "audits:read": "Read your own agency's multi-agency case audits",
    "indicators:read": "Read the partnership's indicators (small numbers suppressed)",
    "indicators:read:unsuppressed": "Read exact indicator figures",
    "audit:read": "Read the audit trail",
    "webhooks:manage": "Subscribe your own endpoints to webhooks, see their deliveries, replay",
    "admin": "Register clients, publish toolkit versions",
}


WRITE_REFERRALS = "referrals:write"
"""Send referrals (and withdraw your own)."""
MANAGE_WEBHOOKS = "webhooks:manage"
"""Manage the client's own webhook subscriptions."""
READ_ALL_REFERRALS = "referrals:read:all"
"""The Front Door's scope: lifts agency scoping on referrals, assessments and child timelines."""


def parse_scopes(raw: str | None) -> list[str]:
    """Scopes from an RFC 6749 space-separated string, in order, without repeats."""
    seen: dict[str, None] = {}
    for scope in (raw or "").split():
        seen.setdefault(scope, None)
    return list(seen)


def unknown_scopes(scopes: list[str]) -> list[str]:
    return [scope for scope in scopes if scope not in SCOPES]
