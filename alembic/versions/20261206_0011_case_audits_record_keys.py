"""case_audit; a disclosure-control record key on every record an indicator counts

`case_audit` holds multi-agency case audits (SPEC 2.8).

`record_key` (0-255, random, fixed at insert by the column default) goes on `child`, `referral`,
`assessment`, `case_event`, `care_plan`, `icpc` and `case_audit`: the cell-key method of
`service.indicators.perturbation` derives each published cell's noise from the keys of the records
in it. A default, not application code, so every write path gets one unchanged, the referral
create function in PL/pgSQL included. Adding a column with a volatile default rewrites the table,
which draws a key for every existing row; on a large database this holds each table's lock while
it is rewritten, so run it in a quiet window.

Revision ID: 0011
Revises: 0008
Create Date: 2026-12-06 12:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RECORD_KEY_DEFAULT = "floor(random() * 256)::smallint"
KEYED_TABLES = ("child", "referral", "assessment", "case_event", "care_plan", "icpc")


def upgrade() -> None:
    for table in KEYED_TABLES:
        op.add_column(
            table,
            sa.Column(
                "record_key",
                sa.SmallInteger(),
                server_default=sa.text(RECORD_KEY_DEFAULT),
                nullable=False,
            ),
        )
    op.create_table(
        "case_audit",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("agency_type", sa.String(length=50), nullable=False),
        sa.Column("agency_name", sa.String(length=200), nullable=False),
        sa.Column("child_id", sa.UUID(), nullable=False),
        sa.Column("audited_work", sa.String(length=30), nullable=False),
        sa.Column("neglect_featured", sa.Boolean(), nullable=False),
        sa.Column("audited_on", sa.Date(), nullable=False),
        sa.Column("panel_agencies", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("practice_grade", sa.String(length=40), nullable=False),
        sa.Column("impact_grade", sa.String(length=40), nullable=False),
        sa.Column("toolkit_used", sa.Boolean(), nullable=False),
        sa.Column("toolkit_use_effective", sa.Boolean(), nullable=True),
        sa.Column("learning", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "record_key",
            sa.SmallInteger(),
            server_default=sa.text(RECORD_KEY_DEFAULT),
            nullable=False,
        ),
        sa.CheckConstraint(
            "audited_work IN ('early_help_assessment', 'child_in_need_plan', "
            "'child_protection_plan')",
            name=op.f("ck_case_audit_audited_work"),
        ),
        sa.CheckConstraint(
            "(toolkit_use_effective IS NULL) = (NOT toolkit_used)",
            name=op.f("ck_case_audit_effective_only_when_used"),
        ),
        sa.ForeignKeyConstraint(
            ["child_id"], ["child.id"], name=op.f("fk_case_audit_child_id_child")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_audit")),
    )
    op.create_index(
        "ix_case_audit_agency_name_audited_on",
        "case_audit",
        ["agency_name", "audited_on"],
        unique=False,
    )
    op.create_index("ix_case_audit_audited_on", "case_audit", ["audited_on"], unique=False)
    op.create_index("ix_case_audit_child_id", "case_audit", ["child_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_case_audit_child_id", table_name="case_audit")
    op.drop_index("ix_case_audit_audited_on", table_name="case_audit")
    op.drop_index("ix_case_audit_agency_name_audited_on", table_name="case_audit")
    op.drop_table("case_audit")
    for table in reversed(KEYED_TABLES):
        op.drop_column(table, "record_key")
