"""The committed `openapi.yaml` is the app's contract as it is now, not as it was."""

from __future__ import annotations

import difflib

from api.openapi_export import OPENAPI_PATH, render_openapi


def test_committed_openapi_yaml_matches_the_app() -> None:
    committed = OPENAPI_PATH.read_text(encoding="utf-8") if OPENAPI_PATH.exists() else ""
    generated = render_openapi()
    diff = "".join(
        difflib.unified_diff(
            committed.splitlines(keepends=True),
            generated.splitlines(keepends=True),
            "openapi.yaml (committed)",
            "openapi.yaml (generated)",
            n=2,
        )
    )
    assert committed == generated, (
        "openapi.yaml is out of date: run `make openapi` and commit the result.\n" + diff[:4000]
    )
