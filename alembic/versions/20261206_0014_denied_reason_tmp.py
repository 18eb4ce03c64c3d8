"""TEMPORARY (replaced by 0009 at merge): audit_event.denied_reason

Revision ID: 0014
Revises: 0008
Create Date: 2026-12-06 04:20:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("audit_event", sa.Column("denied_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("audit_event", "denied_reason")
