"""feed_key, feed_snapshot, feed_snapshot_point: the BI feed's credentials and paging snapshots

`feed_key` holds the SHA-256 of each feed key (never the key) and the client it belongs to.
`feed_snapshot` and `feed_snapshot_point` hold the rows of an OData query frozen at its first
page, so its later pages read the same rows while data arrives; both are UNLOGGED, since a
snapshot expires within the hour and a crash only makes a client start its pull again.

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-06 10:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "feed_key",
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("key_sha256", sa.String(length=64), nullable=False),
        sa.Column("key_hint", sa.String(length=16), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["api_client.client_id"],
            name=op.f("fk_feed_key_client_id_api_client"),
        ),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_feed_key")),
        sa.UniqueConstraint("key_sha256", name=op.f("uq_feed_key_key_sha256")),
    )
    op.create_index(op.f("ix_feed_key_client_id"), "feed_key", ["client_id"], unique=False)
    op.create_table(
        "feed_snapshot",
        sa.Column("snapshot_id", sa.UUID(), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("query_sha256", sa.String(length=64), nullable=False),
        sa.Column("suppressed", sa.Boolean(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("snapshot_id", name=op.f("pk_feed_snapshot")),
        prefixes=["UNLOGGED"],
    )
    op.create_index("ix_feed_snapshot_created_at", "feed_snapshot", ["created_at"], unique=False)
    op.create_table(
        "feed_snapshot_point",
        sa.Column("snapshot_id", sa.UUID(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("point_id", sa.Text(), nullable=False),
        sa.Column("indicator_id", sa.Text(), nullable=False),
        sa.Column("indicator_title", sa.Text(), nullable=False),
        sa.Column("unit", sa.Text(), nullable=False),
        sa.Column("period", sa.Text(), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("time_period", sa.Integer(), nullable=False),
        sa.Column("time_identifier", sa.Text(), nullable=False),
        sa.Column("breakdown", sa.Text(), nullable=True),
        sa.Column("breakdown_group", sa.Text(), nullable=True),
        sa.Column("numerator", sa.Integer(), nullable=True),
        sa.Column("denominator", sa.Integer(), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("suppressed", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["feed_snapshot.snapshot_id"],
            name=op.f("fk_feed_snapshot_point_snapshot_id_feed_snapshot"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("snapshot_id", "position", name=op.f("pk_feed_snapshot_point")),
        prefixes=["UNLOGGED"],
    )


def downgrade() -> None:
    op.drop_table("feed_snapshot_point")
    op.drop_index("ix_feed_snapshot_created_at", table_name="feed_snapshot")
    op.drop_table("feed_snapshot")
    op.drop_index(op.f("ix_feed_key_client_id"), table_name="feed_key")
    op.drop_table("feed_key")
