"""Denied audit events: audit_event.denied_reason, and `neglect_record_audit` records it

Every refused access to a record (another agency's, or a missing one: the same answer and work) and
every missing scope appends a `denied` event with its reason, in a transaction of its own.

Revision ID: 0014
Revises: 0008
Create Date: 2026-12-06 04:40:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic_utils.pg_function import PGFunction

from alembic import op

# alembic_utils adds op.create_entity and drop_entity when it is imported.
# mypy: disable-error-code="attr-defined"

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RECORD_AUDIT = PGFunction(
    schema="public",
    signature='neglect_record_audit(\n    p_client_id text, p_agency_type text, p_agency_name text, p_action text,\n    p_resource_type text, p_resource_id text, p_child_id uuid, p_request_id text,\n    p_access_reason text, p_denied_reason text DEFAULT NULL\n)',
    definition="RETURNS bigint LANGUAGE plpgsql AS $$\n-- One event of the audit trail, in the caller's transaction: it lands with the change it\n-- records or not at all. Every create, read, list and export of personal data writes one, and\n-- every refused access a `denied` one with its reason. Returns the event's id.\nDECLARE\n    v_id bigint;\nBEGIN\n    INSERT INTO audit_event (\n        client_id, agency_type, agency_name, action, resource_type, resource_id, child_id,\n        request_id, access_reason, denied_reason\n    ) VALUES (\n        p_client_id, p_agency_type, p_agency_name, p_action, p_resource_type, p_resource_id,\n        p_child_id, p_request_id, p_access_reason, p_denied_reason\n    )\n    RETURNING id INTO v_id;\n    RETURN v_id;\nEND\n$$",
)
RECORD_AUDIT_BEFORE = PGFunction(
    schema="public",
    signature='neglect_record_audit(\n    p_client_id text, p_agency_type text, p_agency_name text, p_action text,\n    p_resource_type text, p_resource_id text, p_child_id uuid, p_request_id text,\n    p_access_reason text\n)',
    definition="RETURNS bigint LANGUAGE plpgsql AS $$\n-- One event of the audit trail, in the caller's transaction: it lands with the change it\n-- records or not at all. Every create, read, list and export of personal data writes one.\n-- Returns the event's id.\nDECLARE\n    v_id bigint;\nBEGIN\n    INSERT INTO audit_event (\n        client_id, agency_type, agency_name, action, resource_type, resource_id, child_id,\n        request_id, access_reason\n    ) VALUES (\n        p_client_id, p_agency_type, p_agency_name, p_action, p_resource_type, p_resource_id,\n        p_child_id, p_request_id, p_access_reason\n    )\n    RETURNING id INTO v_id;\n    RETURN v_id;\nEND\n$$",
)


def upgrade() -> None:
    op.add_column("audit_event", sa.Column("denied_reason", sa.Text(), nullable=True))
    op.drop_entity(RECORD_AUDIT_BEFORE)
    op.create_entity(RECORD_AUDIT)


def downgrade() -> None:
    op.drop_entity(RECORD_AUDIT)
    op.create_entity(RECORD_AUDIT_BEFORE)
    op.drop_column("audit_event", "denied_reason")
