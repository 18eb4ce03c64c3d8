"""Who is calling: the registered client behind a verified token."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Caller:
    client_id: str
    agency_type: str
    agency_name: str
    scopes: frozenset[str]
    request_id: str | None = None
    access_reason: str | None = None

    def has(self, scope: str) -> bool:
        return scope in self.scopes
