"""The re-referral rule for bulk loads, as SQL text: a module of its own, free of the database
layer, so that the census import's worker processes can use it without importing the service."""

from __future__ import annotations


def count_rereferrals_of(selection: str) -> str:
    """A bulk load's UPDATE of the re-referral flag and counts, by the rule's one definition
    (`neglect_rereferral_counts`), of the stored referrals `loaded` that `selection` (fixed SQL
    over `loaded`, with the caller's parameters) picks, once the load's referrals are all stored.
    A load copies referrals with none; only those that count some are written."""
    return f"""
    UPDATE referral AS target
    SET rereferral = true,
        rereferral_count = counted.rereferral_count,
        agency_rereferral_count = counted.agency_rereferral_count
    FROM referral AS loaded
    CROSS JOIN LATERAL neglect_rereferral_counts(
        p_child_id => loaded.child_id, p_received_at => loaded.received_at,
        p_agency_name => loaded.agency_name, p_referral_id => loaded.id
    ) AS counted
    WHERE ({selection}) AND counted.rereferral_count > 0 AND target.id = loaded.id
    """  # noqa: S608 - the callers' selections are fixed text
