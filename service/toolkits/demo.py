"""The demonstration toolkit shipped with the service, in our own words."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml

from service.toolkits.definition import ToolkitDefinition, validate_definition

DEMO_TOOLKIT_PATH = Path(__file__).with_name("demo_neglect_toolkit.yaml")


def read_demo_toolkit_document() -> object:
    """The demonstration toolkit as parsed YAML, as a partnership would publish it."""
    with DEMO_TOOLKIT_PATH.open(encoding="utf-8") as stream:
        return yaml.safe_load(stream)


@cache
def load_demo_toolkit() -> ToolkitDefinition:
    """The validated demonstration toolkit (cached; the model is immutable)."""
    return validate_definition(read_demo_toolkit_document())
