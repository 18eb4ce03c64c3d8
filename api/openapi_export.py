"""Render the app's OpenAPI document as the committed `openapi.yaml` (`make openapi`).

`FastAPI.openapi()` needs no lifespan, so this runs without a database.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from api.main import create_app
from service.settings import Settings

OPENAPI_PATH = Path(__file__).resolve().parent.parent / "openapi.yaml"


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (descriptions) as literal blocks, readable like the docstrings."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def build_openapi() -> dict[str, Any]:
    """The OpenAPI document of a freshly built app (independent of the environment's settings)."""
    schema: dict[str, Any] = create_app(Settings(database_url=None)).openapi()
    return schema


def render_openapi() -> str:
    """The document as YAML in a stable form: FastAPI's key order, block style, no line folding."""
    return yaml.dump(
        build_openapi(),
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=1_000_000,
    )


def write_openapi(path: Path = OPENAPI_PATH) -> bool:
    """Write the document to `path`; True when the file changed."""
    rendered = render_openapi()
    if path.exists() and path.read_text(encoding="utf-8") == rendered:
        return False
    path.write_text(rendered, encoding="utf-8")
    return True


def main() -> None:
    changed = write_openapi()
    sys.stdout.write(f"{OPENAPI_PATH.name} {'updated' if changed else 'unchanged'}\n")


if __name__ == "__main__":
    main()
