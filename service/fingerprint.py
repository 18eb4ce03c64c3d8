"""The one canonical JSON of a value and its sha256 fingerprint.

Canonical JSON is compact, with keys sorted, written in UTF-8 (orjson): two values that differ
only in key order have the same fingerprint. Every stored fingerprint is computed here: an
idempotent create's request (`request_sha256`), a case event's payload (`payload_sha256`, also
as the demo generator stores it) and a published toolkit definition (`sha256`).
"""

from __future__ import annotations

import hashlib
import json

import orjson


def canonical_json(value: object) -> bytes:
    """`value` as canonical JSON: compact, keys sorted, UTF-8."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def fingerprint(value: object, *, scope: str | None = None) -> str:
    """Hex sha256 of `value`'s canonical JSON, preceded by `scope` and a NUL when given (so the
    same body sent to two operations has two fingerprints)."""
    canonical = canonical_json(value)
    if scope is not None:
        canonical = scope.encode() + b"\x00" + canonical
    return hashlib.sha256(canonical).hexdigest()


def ascii_escaped_fingerprint(value: object) -> str:
    """The fingerprint case events were stored with before there was one canonical JSON: the
    same, except that every character from DEL (U+007F) up was written as a `\\u` escape.

    Only for recognising an event stored then when it is sent again; for a payload without such
    characters it equals `fingerprint(value)`.
    """
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
