"""A partial index of each child's referrals that recorded disabilities

The indicators' disability breakdown looks up, for every unit of a series, the child's latest
referral that recorded a non-empty `body -> 'child' -> 'disabilities'`. Through
`ix_referral_child_id_received_at_id` that meant reading each of the child's referrals' bodies
from the heap, newest first, until one had disabilities: every referral of a child with none
recorded, for every unit. With this index, whose predicate is the look-up's condition, the
look-up reads one index entry and the body of the referral it finds, and nothing for a child with
none recorded. At 200,000 demo referrals the 86 disability series took about 15% less time.

Why not more: the look-up still reads the body of the referral it finds. Carrying the
disabilities in an index so that it reads no body at all (35% less) needs them in a column, and a
stored generated column rejects an INSERT that gives every column of a referral (as
`INSERT ... SELECT (jsonb_populate_record(NULL::referral, ...)).*` does) and rewrites the table
when added. A write pays for this index only the predicate and, for a referral with
disabilities, one more index entry (a few microseconds of server CPU an insert).

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06 15:55:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0022"
down_revision: str | Sequence[str] | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A frozen copy of `service.models.referrals.RECORDED_DISABILITIES` as of this revision.
RECORDED_DISABILITIES = (
    "jsonb_typeof(body -> 'child' -> 'disabilities') = 'array' "
    "AND body -> 'child' -> 'disabilities' <> '[]'::jsonb"
)


def upgrade() -> None:
    op.create_index(
        "ix_referral_child_id_received_at_disabilities",
        "referral",
        ["child_id", "received_at", "id"],
        unique=False,
        postgresql_where=sa.text(RECORDED_DISABILITIES),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_referral_child_id_received_at_disabilities",
        table_name="referral",
        postgresql_where=sa.text(RECORDED_DISABILITIES),
    )
