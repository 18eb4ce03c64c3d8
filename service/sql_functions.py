"""The database functions' current definitions: the `.sql` files beside the modules that call them.

`alembic/env.py` registers them with alembic_utils, so autogenerate writes a frozen copy of a
changed function into a new migration, and `alembic check` fails while the database's copy differs
from its file. A file holds one or more functions, each starting at the beginning of a line with
`CREATE [OR REPLACE] FUNCTION schema.name(` and ending with `$$;`; only `--` comment lines may come
before the first. Comments about a function go inside its body, where PostgreSQL keeps them and
where the comparison sees them.
"""

from __future__ import annotations

import re
from pathlib import Path

from alembic_utils.pg_function import PGFunction
from sqlalchemy import text
from sqlalchemy.sql.elements import TextClause

SERVICE_ROOT = Path(__file__).resolve().parent

_FUNCTION_START = re.compile(
    r"^CREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\b", re.IGNORECASE | re.MULTILINE
)
_COMMENT_LINE = re.compile(r"^\s*(?:--.*)?$")
_DEFAULT = re.compile(r"\s+DEFAULT\s+|\s*=", re.IGNORECASE)


class BadFunctionFile(ValueError):
    """A `.sql` file in the service package that is not a list of functions."""


def function_definitions(root: Path = SERVICE_ROOT) -> list[str]:
    """Every `CREATE FUNCTION` statement in the `.sql` files under `root`, file by file."""
    statements: list[str] = []
    for path in sorted(root.rglob("*.sql")):
        source = path.read_text(encoding="utf-8")
        starts = [match.start() for match in _FUNCTION_START.finditer(source)]
        preamble = source[: starts[0]] if starts else source
        if not starts or not all(_COMMENT_LINE.match(line) for line in preamble.splitlines()):
            raise BadFunctionFile(f"{path}: expected CREATE FUNCTION statements only")
        for start, end in zip(starts, [*starts[1:], len(source)], strict=True):
            statement = source[start:end].strip()
            if not statement.endswith("$$;"):
                raise BadFunctionFile(f"{path}: a function must end with $$; ({statement[:60]})")
            statements.append(statement)
    return statements


class SqlFunction(PGFunction):
    """alembic_utils' `PGFunction` with a DROP statement that survives a parameter named like
    `p_default_issuer` (the library cuts every parameter at the first "default" it contains).

    It compares and renders exactly as `PGFunction`, so migrations keep plain `PGFunction`s.
    """

    @property
    def identity(self) -> str:
        return f"PGFunction: {self.schema}.{self.signature}"

    @classmethod
    def render_import_statement(cls) -> str:
        return PGFunction.render_import_statement()

    def render_self_for_migration(self, omit_definition: bool = False) -> str:
        rendered: str = super().render_self_for_migration(omit_definition)
        return rendered.replace(f"{type(self).__name__}(", "PGFunction(", 1)

    def to_sql_statement_drop(self, cascade: bool = False) -> TextClause:
        name, _, rest = self.signature.partition("(")
        arguments = rest.rpartition(")")[0]
        # Without their defaults (which, as in the library, must not contain a comma).
        kept = [_DEFAULT.split(each, maxsplit=1)[0].strip() for each in arguments.split(",")]
        return text(
            f'DROP FUNCTION {self.literal_schema}."{name.strip()}"({", ".join(kept)})'
            + (" CASCADE" if cascade else "")
        )


def registered_functions(root: Path = SERVICE_ROOT) -> list[PGFunction]:
    """The functions as alembic_utils entities, for `register_entities`."""
    return [SqlFunction.from_sql(statement) for statement in function_definitions(root)]
