"""CIN census import: census_import (provenance), imported referrals and case events

A referral imported from the Children in Need census leaves empty what the census does not
record (urgency, decision due time, concerns, parental awareness); a check keeps those required of
every referral sent to the API. A Section 47 enquiry imported from the census has no strategy
discussion date. `care_plan.previous_cp_plans` keeps the census NumberOfPreviousCPP.

Revision ID: 0012
Revises: 0013
Create Date: 2026-12-06 12:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LIVE_ONLY = (
    ("urgent", sa.Boolean()),
    ("decision_due_at", sa.DateTime(timezone=True)),
    ("concern_categories", sa.ARRAY(sa.Text())),
    ("neglect_forms", sa.ARRAY(sa.Text())),
    ("risk_factors", sa.ARRAY(sa.Text())),
    ("vulnerabilities", sa.ARRAY(sa.Text())),
    ("parents_informed", sa.Boolean()),
    ("parental_consent", sa.String(length=20)),
)

_LIVE_REFERRAL_COMPLETE = (
    "census_import_id IS NOT NULL OR (urgent IS NOT NULL AND decision_due_at IS NOT NULL "
    "AND concern_categories IS NOT NULL AND neglect_forms IS NOT NULL "
    "AND risk_factors IS NOT NULL AND vulnerabilities IS NOT NULL "
    "AND parents_informed IS NOT NULL AND parental_consent IS NOT NULL)"
)


def upgrade() -> None:
    op.create_table(
        "census_import",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("file_name", sa.String(length=255), nullable=True),
        sa.Column("census_year", sa.String(length=7), nullable=False),
        sa.Column("la_code", sa.String(length=10), nullable=False),
        sa.Column("reference_date", sa.Date(), nullable=False),
        sa.Column("children", sa.Integer(), nullable=False),
        sa.Column("imported_by", sa.String(length=64), nullable=False),
        sa.Column(
            "imported_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("children_imported", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_census_import")),
        sa.UniqueConstraint("sha256", name="uq_census_import_sha256"),
    )
    op.add_column("referral", sa.Column("census_import_id", sa.UUID(), nullable=True))
    op.create_foreign_key(
        op.f("fk_referral_census_import_id_census_import"),
        "referral",
        "census_import",
        ["census_import_id"],
        ["id"],
    )
    for name, column_type in _LIVE_ONLY:
        op.alter_column("referral", name, existing_type=column_type, nullable=True)
    op.create_check_constraint(
        op.f("ck_referral_live_referral_complete"), "referral", _LIVE_REFERRAL_COMPLETE
    )
    op.add_column("case_event", sa.Column("census_import_id", sa.UUID(), nullable=True))
    op.create_foreign_key(
        op.f("fk_case_event_census_import_id_census_import"),
        "case_event",
        "census_import",
        ["census_import_id"],
        ["id"],
    )
    op.add_column("care_plan", sa.Column("previous_cp_plans", sa.Integer(), nullable=True))
    op.alter_column(
        "section47_enquiry", "strategy_discussion_on", existing_type=sa.Date(), nullable=True
    )


def downgrade() -> None:
    # Imported records cannot live without the columns they need: they go with the import.
    op.execute(
        "DELETE FROM care_plan_category_change WHERE case_event_id IN "
        "(SELECT id FROM case_event WHERE census_import_id IS NOT NULL) OR care_plan_id IN "
        "(SELECT p.id FROM care_plan p JOIN case_event e ON e.id = p.started_event_id "
        "WHERE e.census_import_id IS NOT NULL)"
    )
    op.execute(
        "DELETE FROM care_plan WHERE started_event_id IN "
        "(SELECT id FROM case_event WHERE census_import_id IS NOT NULL)"
    )
    op.execute(
        "UPDATE care_plan SET ended_on = NULL, ended_event_id = NULL WHERE ended_event_id IN "
        "(SELECT id FROM case_event WHERE census_import_id IS NOT NULL)"
    )
    op.execute(
        "DELETE FROM icpc WHERE case_event_id IN "
        "(SELECT id FROM case_event WHERE census_import_id IS NOT NULL)"
    )
    op.execute(
        "DELETE FROM section47_enquiry WHERE case_event_id IN "
        "(SELECT id FROM case_event WHERE census_import_id IS NOT NULL)"
    )
    op.execute("DELETE FROM case_event WHERE census_import_id IS NOT NULL")
    op.execute("DELETE FROM referral WHERE census_import_id IS NOT NULL")
    op.alter_column(
        "section47_enquiry", "strategy_discussion_on", existing_type=sa.Date(), nullable=False
    )
    op.drop_column("care_plan", "previous_cp_plans")
    op.drop_constraint(
        op.f("fk_case_event_census_import_id_census_import"), "case_event", type_="foreignkey"
    )
    op.drop_column("case_event", "census_import_id")
    op.drop_constraint(op.f("ck_referral_live_referral_complete"), "referral", type_="check")
    for name, column_type in _LIVE_ONLY:
        op.alter_column("referral", name, existing_type=column_type, nullable=False)
    op.drop_constraint(
        op.f("fk_referral_census_import_id_census_import"), "referral", type_="foreignkey"
    )
    op.drop_column("referral", "census_import_id")
    op.drop_table("census_import")
