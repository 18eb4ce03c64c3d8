"""Applying the Alembic migrations, for the CLI, the tests and the benchmarks alike."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

MIGRATION_LOCK_KEY = 0x6E65676C656374
"""The PostgreSQL advisory lock every Alembic run takes first ("neglect" in ASCII), so that two
release steps started together run one after the other: the second then finds the schema at head
and does nothing, instead of failing half-way on tables the first has just made."""


class MigrationsNotFound(RuntimeError):
    """No alembic.ini with its `alembic/` folder beside it could be found."""


def alembic_ini() -> Path:
    """alembic.ini from NEGLECT_ALEMBIC_INI, the working directory (the image's /app) or the
    source tree; an installed package has no migrations of its own."""
    candidates = [
        Path(os.environ["NEGLECT_ALEMBIC_INI"]) if os.environ.get("NEGLECT_ALEMBIC_INI") else None,
        Path.cwd() / "alembic.ini",
        PROJECT_ROOT / "alembic.ini",
    ]
    for candidate in candidates:
        if (
            candidate is not None
            and candidate.is_file()
            and (candidate.parent / "alembic").is_dir()
        ):
            return candidate
    raise MigrationsNotFound("alembic.ini not found: run from the project (or image) folder")


def migrate_database(url: str) -> None:
    """`alembic upgrade head` against `url`, without Alembic's own logging set-up; waits for any
    other migration in progress on that database (`MIGRATION_LOCK_KEY`)."""
    from alembic.config import Config

    from alembic import command

    ini = alembic_ini()
    config = Config(str(ini))
    config.set_main_option("script_location", str(ini.parent / "alembic"))
    config.attributes["database_url"] = url
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")
