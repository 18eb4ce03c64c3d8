"""`neglect-service toolkits ...`: publish and list toolkit versions, load the demonstration one.

`neglect-service dev` (and so `make run`) calls `toolkits_load_demo` to load the demonstration
toolkit too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from service.cli.common import console, err_console, resolved_url, with_session
from service.pagination import PageRequest
from service.toolkits.definition import DefinitionInvalid, validate_definition
from service.toolkits.versions import (
    PublishedVersion,
    list_toolkit_versions,
    publish_demo_toolkit,
    publish_toolkit_version,
)

toolkits_app = typer.Typer(
    help="Publish and list toolkit definitions (versions are immutable).", no_args_is_help=True
)

PUBLISHER = "neglect-service CLI"
LIST_LIMIT = 10_000


def _read_document(path: Path) -> object:
    """A definition file: JSON, or YAML (safe loader) for anything not ending in `.json`."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        return json.loads(text)
    return yaml.safe_load(text)


def _summary(published: PublishedVersion) -> dict[str, Any]:
    version = published.version
    return {
        "toolkit_id": version.toolkit_id,
        "version": version.version,
        "title": version.title,
        "sha256": version.sha256,
        "demonstration": version.demonstration,
        "created": published.created,
    }


def _print_published(published: PublishedVersion, as_json: bool) -> None:
    summary = _summary(published)
    if as_json:
        typer.echo(json.dumps(summary))
        return
    verb = "published" if published.created else "already published (identical; nothing changed)"
    console.print(f"toolkit {summary['toolkit_id']} {summary['version']} {verb}")
    console.print(f"  {summary['title']}")
    console.print(f"  sha256 {summary['sha256']}")


@toolkits_app.command("publish")
def toolkits_publish(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="YAML or JSON file")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts")] = False,
) -> None:
    """Validate a definition file and publish it as an immutable version."""
    try:
        document = _read_document(file)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        err_console.print(f"[red]error:[/red] cannot read {file}: {type(exc).__name__}")
        raise typer.Exit(2) from exc
    try:
        validate_definition(document)
    except DefinitionInvalid as exc:
        err_console.print(f"[red]error:[/red] {file} is not a valid toolkit definition:")
        for problem in exc.problems:
            err_console.print(f"  - {problem}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc
    resolved_url()
    published = with_session(
        lambda session: publish_toolkit_version(session, document, published_by=PUBLISHER)
    )
    _print_published(published, as_json)


@toolkits_app.command("load-demo")
def toolkits_load_demo(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts")] = False,
) -> None:
    """Publish the shipped demonstration toolkit (a no-op when it is already published)."""
    resolved_url()
    published = with_session(lambda session: publish_demo_toolkit(session, published_by=PUBLISHER))
    _print_published(published, as_json)


@toolkits_app.command("list")
def toolkits_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts")] = False,
) -> None:
    """List published toolkit versions."""
    resolved_url()
    page = with_session(lambda session: list_toolkit_versions(session, PageRequest(LIST_LIMIT)))
    versions = page.items
    if as_json:
        rows = [
            {
                "toolkit_id": version.toolkit_id,
                "version": version.version,
                "title": version.title,
                "publisher": version.publisher,
                "demonstration": version.demonstration,
                "sha256": version.sha256,
                "published_at": version.published_at.isoformat() if version.published_at else None,
            }
            for version in versions
        ]
        typer.echo(json.dumps(rows))
        return
    table = Table()
    table.add_column("toolkit", no_wrap=True)
    table.add_column("version", no_wrap=True)
    table.add_column("title")
    table.add_column("published")
    table.add_column("sha256", no_wrap=True)
    for version in versions:
        table.add_row(
            version.toolkit_id,
            version.version,
            version.title + (" [demonstration]" if version.demonstration else ""),
            f"{version.published_at:%Y-%m-%d %H:%M}" if version.published_at else "",
            version.sha256[:12],
        )
    console.print(table)
