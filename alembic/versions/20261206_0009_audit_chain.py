"""audit trail hash-chained per agency (`audit_chain_head`, chain columns); `denied_reason`

Every audit event becomes a link of its agency's chain: `chain_seq` (1, 2, ... per agency),
`prev_hash` (the previous link's `row_hash`, 32 zero bytes for the first) and `row_hash`
(sha256 of `prev_hash` and the row's canonical bytes, `neglect_audit_row_hash`). The BEFORE
INSERT trigger `neglect_audit_chain_append` sets them, locking the agency's row of
`audit_chain_head` so that concurrent inserts queue instead of forking the chain. It is SECURITY
DEFINER, owned by the role that runs this migration: the runtime role (`neglect-service db
roles`) is granted nothing on `audit_chain_head`.

Events already stored are chained here, per agency in id order, with the append-only trigger
briefly disabled inside this migration's transaction. `denied_reason` (why access was refused,
for `denied` events) is part of the hash.

The two functions are frozen copies of service/audit.sql as of this revision.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 12:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


ROW_HASH = """
CREATE OR REPLACE FUNCTION public.neglect_audit_row_hash(
    p_prev_hash bytea, p_event public.audit_event
) RETURNS bytea LANGUAGE sql STABLE AS $$
-- One link of an agency's audit chain: sha256(previous link's hash || the row's canonical bytes).
-- The canonical text is every field, in this order, as `<UTF-8 byte length>:<text>` or `-` for
-- NULL, joined by `|`; occurred_at as microseconds since the Unix epoch (UTC). The verifier
-- (`service.audit_chain.row_hash`) computes the same bytes: change both together, or never.
-- No SET search_path of its own (it would cost every insert a configuration save and restore):
-- the chain trigger, its caller, runs with its search_path pinned to pg_catalog.
SELECT sha256(p_prev_hash || convert_to(array_to_string(ARRAY(
    SELECT coalesce(octet_length(convert_to(field, 'UTF8'))::text || ':' || field, '-')
    FROM unnest(ARRAY[
        p_event.chain_seq::text,
        p_event.id::text,
        (extract(epoch FROM p_event.occurred_at) * 1000000)::bigint::text,
        p_event.client_id::text,
        p_event.agency_type::text,
        p_event.agency_name::text,
        p_event.action::text,
        p_event.resource_type::text,
        p_event.resource_id::text,
        p_event.child_id::text,
        p_event.request_id::text,
        p_event.access_reason::text,
        p_event.denied_reason
    ]) WITH ORDINALITY AS fields (field, position)
    ORDER BY position
), '|'), 'UTF8'))
$$
"""

CHAIN_APPEND = """
CREATE OR REPLACE FUNCTION public.neglect_audit_chain_append() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- BEFORE INSERT on audit_event: link the new row to its agency's chain. The agency's head row is
-- locked until the inserting transaction ends, so concurrent inserts for one agency queue here
-- and cannot fork the chain. SECURITY DEFINER: the runtime role holds no privilege on
-- audit_chain_head, so it can neither read nor move a head; the owner's function does.
DECLARE
    v_seq bigint;
    v_hash bytea;
BEGIN
    SELECT seq, hash INTO v_seq, v_hash
    FROM public.audit_chain_head WHERE agency_name = NEW.agency_name FOR UPDATE;
    IF NOT FOUND THEN
        -- The agency's first event: a concurrent first insert waits here for ours, or we for it.
        INSERT INTO public.audit_chain_head (agency_name, seq, hash)
        VALUES (NEW.agency_name, 0, decode(repeat('00', 32), 'hex'))
        ON CONFLICT (agency_name) DO NOTHING;
        SELECT seq, hash INTO STRICT v_seq, v_hash
        FROM public.audit_chain_head WHERE agency_name = NEW.agency_name FOR UPDATE;
    END IF;
    -- Whatever the inserting statement said, the chain decides these.
    NEW.chain_seq := v_seq + 1;
    NEW.prev_hash := v_hash;
    NEW.row_hash := public.neglect_audit_row_hash(v_hash, NEW);
    UPDATE public.audit_chain_head SET seq = NEW.chain_seq, hash = NEW.row_hash
    WHERE agency_name = NEW.agency_name;
    RETURN NEW;
END
$$
"""

# The events stored before this revision, chained per agency in id order.
CHAIN_EXISTING = """
DO $$
DECLARE
    r public.audit_event;
    v_agency text;
    v_seq bigint;
    v_hash bytea;
BEGIN
    FOR r IN SELECT * FROM public.audit_event ORDER BY agency_name, id LOOP
        IF v_agency IS DISTINCT FROM r.agency_name THEN
            v_agency := r.agency_name;
            v_seq := 0;
            v_hash := decode(repeat('00', 32), 'hex');
        END IF;
        v_seq := v_seq + 1;
        r.chain_seq := v_seq;
        r.prev_hash := v_hash;
        v_hash := public.neglect_audit_row_hash(r.prev_hash, r);
        UPDATE public.audit_event SET chain_seq = v_seq, prev_hash = r.prev_hash, row_hash = v_hash
        WHERE id = r.id;
    END LOOP;
    INSERT INTO public.audit_chain_head (agency_name, seq, hash)
    SELECT DISTINCT ON (agency_name) agency_name, chain_seq, row_hash
    FROM public.audit_event
    ORDER BY agency_name, chain_seq DESC;
END
$$
"""


def upgrade() -> None:
    op.add_column("audit_event", sa.Column("denied_reason", sa.Text(), nullable=True))
    op.add_column("audit_event", sa.Column("chain_seq", sa.BigInteger(), nullable=True))
    op.add_column("audit_event", sa.Column("prev_hash", sa.LargeBinary(), nullable=True))
    op.add_column("audit_event", sa.Column("row_hash", sa.LargeBinary(), nullable=True))
    op.create_table(
        "audit_chain_head",
        sa.Column("agency_name", sa.String(length=200), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("agency_name", name=op.f("pk_audit_chain_head")),
    )
    op.execute(ROW_HASH)
    op.execute(CHAIN_APPEND)
    # ADD COLUMN holds audit_event's exclusive lock until this transaction commits, so no event
    # lands unchained between the backfill and the trigger.
    op.execute("ALTER TABLE audit_event DISABLE TRIGGER audit_event_no_update_delete")
    op.execute(CHAIN_EXISTING)
    op.execute("ALTER TABLE audit_event ENABLE TRIGGER audit_event_no_update_delete")
    for column in ("chain_seq", "prev_hash", "row_hash"):
        op.alter_column("audit_event", column, nullable=False)
    op.create_unique_constraint(
        "uq_audit_event_agency_chain_seq", "audit_event", ["agency_name", "chain_seq"]
    )
    op.execute(
        "CREATE TRIGGER audit_event_chain BEFORE INSERT ON audit_event "
        "FOR EACH ROW EXECUTE FUNCTION public.neglect_audit_chain_append()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER audit_event_chain ON audit_event")
    op.execute("DROP FUNCTION public.neglect_audit_chain_append()")
    op.execute("DROP FUNCTION public.neglect_audit_row_hash(bytea, public.audit_event)")
    op.drop_constraint("uq_audit_event_agency_chain_seq", "audit_event", type_="unique")
    op.drop_table("audit_chain_head")
    op.drop_column("audit_event", "row_hash")
    op.drop_column("audit_event", "prev_hash")
    op.drop_column("audit_event", "chain_seq")
    op.drop_column("audit_event", "denied_reason")
