"""The database roles: the owner migrates, the runtime role serves (`neglect-service db roles`).

The role that owns a table can `ALTER TABLE audit_event DISABLE TRIGGER USER`, and a superuser can
`SET session_replication_role = replica`; either silences the audit trail's append-only and chain
triggers. So the service connects as a runtime role that owns nothing and holds only what the
service needs: SELECT, INSERT, UPDATE and DELETE on the domain tables, SELECT and INSERT on
`audit_event`, `webhook_message` and `webhook_attempt`, no
DELETE on `webhook_subscription`, nothing on `audit_chain_head` (the chain trigger, SECURITY
DEFINER, writes it for it), nothing on `alembic_version`; USAGE on the sequences; EXECUTE on the
functions. `ensure_runtime_role`, run by the owner (the role that migrates), creates it and grants
exactly that, again after each migration (the default privileges it sets also cover tables that
later migrations create, but only a run grants a new audit table narrowly). It also gives the role
its statement timeout in this database (`ALTER ROLE ... IN DATABASE ... SET statement_timeout`):
behind a transaction-mode pooler no connection parameter can carry it, and the role's setting is
what the server enforces on statements outside a transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from service.settings import ROLE_NAME_PATTERN, Settings

DEFAULT_RUNTIME_ROLE: Final = "neglect_app"
ROLE_NAME: Final = re.compile(ROLE_NAME_PATTERN)

# Tables the runtime role is granted less than the domain tables' SELECT, INSERT, UPDATE, DELETE.
NARROW_GRANTS: Final[dict[str, tuple[str, ...]]] = {
    "audit_event": ("SELECT", "INSERT"),
    "audit_chain_head": (),
    "alembic_version": (),
    # A webhook event and a record of an attempt, once written, stay as written: what was sent,
    # and what came back, are evidence like the audit trail.
    "webhook_message": ("SELECT", "INSERT"),
    "webhook_attempt": ("SELECT", "INSERT"),
    # A subscription ends by its status, never by DELETE: its deliveries, which name it without a
    # foreign key (the referral create's cost, service/models/webhooks.py), never dangle.
    "webhook_subscription": ("SELECT", "INSERT", "UPDATE"),
}
DOMAIN_PRIVILEGES: Final = "SELECT, INSERT, UPDATE, DELETE"
# One run at a time per database: concurrent GRANTs on one object fail ("tuple concurrently
# updated"). An arbitrary constant, as service.auth.keys does.
_ROLES_LOCK: Final = 0x6E65726F

_DUPLICATE_SQLSTATES: Final = frozenset({"42710", "23505"})  # duplicate_object, unique_violation


class RuntimeRoleRefused(ValueError):
    """The named role cannot be the runtime role, or the database is not ready for one."""


@dataclass(frozen=True)
class RuntimeRole:
    """What `ensure_runtime_role` did."""

    name: str
    created: bool
    password_set: bool
    database: str
    schema: str
    owner: str
    domain_tables: list[str]
    statement_timeout_ms: int | None = None


def check_role_name(name: str) -> str:
    if not ROLE_NAME.fullmatch(name):
        raise RuntimeRoleRefused(
            f"{name!r} is not a plain role name (lower-case letters, digits, underscores)"
        )
    return name


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def url_user(url: str) -> str | None:
    return make_url(url.replace("postgres://", "postgresql://", 1)).username


def runtime_role_name(settings: Settings) -> str:
    """`NEGLECT_RUNTIME_ROLE`; else, when an owner URL is set apart, the user `DATABASE_URL`
    connects as (that is the runtime role); else `neglect_app`."""
    if settings.runtime_role is not None:
        return settings.runtime_role
    if settings.database_url is not None and settings.owner_database_url is not None:
        user = url_user(settings.database_url)
        if user is not None and user != url_user(settings.owner_database_url):
            return check_role_name(user)
    return DEFAULT_RUNTIME_ROLE


def runtime_database_url(owner_url: str, role: str, password: str | None = None) -> str:
    """`owner_url` with the runtime role as its user (same server, database and options)."""
    url = make_url(owner_url.replace("postgres://", "postgresql://", 1))
    return url.set(username=role, password=password).render_as_string(hide_password=False)


async def _create_role(session: AsyncSession, role: str) -> bool:
    """Create the login role unless it exists; False when it did (or a concurrent run made it)."""
    exists = await session.scalar(
        text("SELECT true FROM pg_roles WHERE rolname = :role"), {"role": role}
    )
    if exists:
        return False
    try:
        async with session.begin_nested():
            await session.execute(text(f"CREATE ROLE {_quoted(role)} LOGIN"))
    except DBAPIError as exc:
        # Roles are cluster-wide: another database's run may create the same name at once.
        if getattr(exc.orig, "sqlstate", None) not in _DUPLICATE_SQLSTATES:
            raise
        return False
    return True


async def _refuse_powerful(session: AsyncSession, role: str, owner: str) -> None:
    row = (
        await session.execute(
            text(
                "SELECT rolsuper, rolcreaterole, pg_has_role(:role, :owner, 'MEMBER') AS member "
                "FROM pg_roles WHERE rolname = :role"
            ),
            {"role": role, "owner": owner},
        )
    ).one()
    why = (
        "it owns the tables (or is a member of their owner)"
        if row.member
        else "it is a superuser"
        if row.rolsuper
        else "it has CREATEROLE, so it could make itself a member of the owner"
        if row.rolcreaterole
        else None
    )
    if why is not None:
        raise RuntimeRoleRefused(
            f"role {role!r} cannot be the runtime role: {why}, and could disable the audit "
            "trail's triggers; name another role"
        )


async def ensure_runtime_role(
    session: AsyncSession,
    role: str,
    password: str | None = None,
    statement_timeout_ms: int | None = None,
) -> RuntimeRole:
    """Create (unless it exists) and grant the runtime role, as the owner of the tables.

    Idempotent, and it narrows as well as widens: every earlier grant on the tables is revoked
    first, in this transaction, so a run leaves exactly the privileges the module describes. An
    existing role keeps its password unless `password` is given, and its statement timeout in
    this database unless `statement_timeout_ms` is.
    """
    check_role_name(role)
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ROLES_LOCK})
    place = (
        await session.execute(
            text(
                "SELECT current_database() AS database, current_schema() AS schema, "
                "(SELECT tableowner FROM pg_tables WHERE schemaname = current_schema() "
                "AND tablename = 'audit_event') AS owner"
            )
        )
    ).one()
    if place.owner is None:
        raise RuntimeRoleRefused("audit_event does not exist here: migrate the database first")
    created = await _create_role(session, role)
    await _refuse_powerful(session, role, place.owner)

    quoted_role = _quoted(role)
    schema = _quoted(place.schema)
    if password is not None:
        # format() quotes the literal; the statement cannot take a bound parameter.
        statement = await session.scalar(
            text(
                "SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', "
                "CAST(:role AS text), CAST(:password AS text))"
            ),
            {"role": role, "password": password},
        )
        await session.execute(text(str(statement)))
    else:
        await session.execute(text(f"ALTER ROLE {quoted_role} LOGIN"))

    objects = (
        await session.execute(
            text(
                "SELECT c.relkind::text AS kind, c.relname::text AS name FROM pg_class c "
                "WHERE c.relnamespace = current_schema()::regnamespace "
                "AND c.relkind IN ('r', 'p', 'S') AND pg_get_userbyid(c.relowner) = :owner "
                "UNION ALL SELECT 'f'::text, p.oid::regprocedure::text FROM pg_proc p "
                "WHERE p.pronamespace = current_schema()::regnamespace AND p.prokind = 'f' "
                "AND pg_get_userbyid(p.proowner) = :owner ORDER BY 1, 2"
            ),
            {"owner": place.owner},
        )
    ).all()
    tables = [row.name for row in objects if row.kind in ("r", "p")]
    owner = _quoted(place.owner)
    defaults = f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema} GRANT"
    statements = [
        f"GRANT CONNECT ON DATABASE {_quoted(place.database)} TO {quoted_role}",
        f"GRANT USAGE ON SCHEMA {schema} TO {quoted_role}",
        # What later migrations create; a run after each one narrows the audit tables again.
        f"{defaults} {DOMAIN_PRIVILEGES} ON TABLES TO {quoted_role}",
        f"{defaults} USAGE, SELECT ON SEQUENCES TO {quoted_role}",
        f"{defaults} EXECUTE ON FUNCTIONS TO {quoted_role}",
    ]
    for name in tables:
        table = f"{schema}.{_quoted(name)}"
        statements.append(f"REVOKE ALL ON {table} FROM {quoted_role}")
        privileges = NARROW_GRANTS.get(name, (DOMAIN_PRIVILEGES,))
        if privileges:
            statements.append(f"GRANT {', '.join(privileges)} ON {table} TO {quoted_role}")
    for row in objects:
        if row.kind == "S":
            statements.append(
                f"GRANT USAGE, SELECT ON SEQUENCE {schema}.{_quoted(row.name)} TO {quoted_role}"
            )
        elif row.kind == "f":
            # regprocedure's text is already quoted and qualified as needed.
            statements.append(f"GRANT EXECUTE ON FUNCTION {row.name} TO {quoted_role}")
    if statement_timeout_ms is not None:
        statements.append(
            f"ALTER ROLE {quoted_role} IN DATABASE {_quoted(place.database)} "
            f"SET statement_timeout = {int(statement_timeout_ms)}"
        )
    for statement in statements:
        await session.execute(text(statement))
    return RuntimeRole(
        name=role,
        created=created,
        password_set=password is not None,
        database=place.database,
        schema=place.schema,
        owner=place.owner,
        domain_tables=[name for name in tables if name not in NARROW_GRANTS],
        statement_timeout_ms=statement_timeout_ms,
    )
