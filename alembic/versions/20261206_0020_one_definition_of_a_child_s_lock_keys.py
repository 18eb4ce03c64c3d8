"""One definition of a child's lock keys: `neglect_lock_child` calls `neglect_lock_children`

Migration 0019 added `neglect_lock_children` for the census import's batches beside
`neglect_lock_child`, each building the keys a child is locked on ('child:nhs:...', 'child:la:...',
'child:upn:...', 'child:name:...') and their order, on which the absence of deadlocks between a
batch and an API request depends. The single-child function now calls the batch one with one
item (the same CPU per call within noise: 112-131 against 125-127 us in alternating loops of 3,000
calls). The function is a frozen copy of service/children.sql as of this revision; the downgrade
restores the previous one.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06 14:25:00+00:00
"""

from collections.abc import Sequence

from alembic_utils.pg_function import PGFunction

from alembic import op

# alembic_utils adds op.create_entity, replace_entity and drop_entity when it is imported.
# mypy: disable-error-code="attr-defined"

revision: str = "0020"
down_revision: str | Sequence[str] | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


NEGLECT_LOCK_CHILD = PGFunction(
    schema="public",
    signature="neglect_lock_child( p_nhs_number text, p_la_child_id text, p_upn text, p_family_name_key text, p_date_of_birth date )",
    definition="returns void LANGUAGE plpgsql AS $$\n-- The advisory locks of one child\\: `neglect_lock_children` with one item, so that a child's\n-- keys, and the order they are locked in, have one definition for the API and the census import.\nBEGIN\n    PERFORM neglect_lock_children(\n        ARRAY[p_nhs_number], ARRAY[p_la_child_id], ARRAY[p_upn], ARRAY[p_family_name_key],\n        ARRAY[p_date_of_birth]\n    );\nEND\n$$",
)


NEGLECT_LOCK_CHILD_BEFORE = PGFunction(
    schema="public",
    signature="neglect_lock_child(p_nhs_number text, p_la_child_id text, p_upn text, p_family_name_key text, p_date_of_birth date)",
    definition="returns void\n LANGUAGE plpgsql\nAS $function$\n-- An advisory lock, held until the transaction ends, on every key a child could be matched or\n-- created on, taken in one fixed (bytewise) order so that transactions locking overlapping keys\n-- cannot deadlock.\nDECLARE\n    v_keys text[] := '{}';\n    v_key text;\nBEGIN\n    IF p_nhs_number <> '' THEN\n        v_keys := v_keys || ('child\\:nhs\\:' || p_nhs_number);\n    END IF;\n    IF p_la_child_id <> '' THEN\n        v_keys := v_keys || ('child\\:la\\:' || p_la_child_id);\n    END IF;\n    IF p_upn <> '' THEN\n        v_keys := v_keys || ('child\\:upn\\:' || p_upn);\n    END IF;\n    IF p_family_name_key <> '' AND p_date_of_birth IS NOT NULL THEN\n        v_keys := v_keys\n            || ('child\\:name\\:' || p_family_name_key || '\\:' || to_char(p_date_of_birth, 'YYYY-MM-DD'));\n    END IF;\n    IF cardinality(v_keys) > 1 THEN\n        v_keys := ARRAY(SELECT k FROM unnest(v_keys) AS k ORDER BY k COLLATE \"C\");\n    END IF;\n    FOREACH v_key IN ARRAY v_keys LOOP\n        PERFORM pg_advisory_xact_lock(hashtextextended(v_key, 0));\n    END LOOP;\nEND\n$function$",
)


def upgrade() -> None:
    op.replace_entity(NEGLECT_LOCK_CHILD)


def downgrade() -> None:
    op.replace_entity(NEGLECT_LOCK_CHILD_BEFORE)
