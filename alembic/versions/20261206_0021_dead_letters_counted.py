"""Dead letters counted: a partial index of dead-lettered deliveries by when they died

`/health/ready` now shows how many deliveries were dead-lettered in the last 24 hours, the number
a partnership alerts on when a referrer's system has stopped hearing back. Without an index that
count would read every delivery ever made; dead letters are few, so the partial index stays
small and costs a write only when a delivery dies.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06 15:40:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0021"
down_revision: str | Sequence[str] | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_webhook_delivery_dead_finished_at",
        "webhook_delivery",
        ["finished_at"],
        unique=False,
        postgresql_where=sa.text("status = 'dead'"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_webhook_delivery_dead_finished_at",
        table_name="webhook_delivery",
        postgresql_where=sa.text("status = 'dead'"),
    )
