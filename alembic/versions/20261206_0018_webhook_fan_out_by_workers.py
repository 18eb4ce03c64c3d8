"""Workers fan webhook events out: the change writes its event and nothing else

The outbox's cost to every referral create (issue 12): `neglect_enqueue_webhook` wrote the event
and, in the same transaction, a delivery to each subscription entitled to it, the second row with
its four index entries, its sequence and the look-up of the recipients costing more than the
event itself under concurrency (bench/outbox_costs.py). Now it writes the event and its id in
`webhook_fan_out`, a queue a worker takes from (`neglect_fan_out_webhooks`,
service/webhooks/outbox.sql) to make the deliveries. The queue is kept apart from the events, so
they stay as written, and small: autovacuum cleans it after every thousand rows taken instead of
after a fifth of the table. Events already stored have their deliveries and are not queued. The
downgrade first fans out what waits, so no event is left without its deliveries. The functions
are frozen copies of service/webhooks/outbox.sql as of this revision.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 12:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic_utils.pg_function import PGFunction

from alembic import op

# alembic_utils adds op.create_entity, replace_entity and drop_entity when it is imported.
# mypy: disable-error-code="attr-defined"

revision: str = "0018"
down_revision: str | Sequence[str] | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


NEGLECT_ENQUEUE_WEBHOOK = PGFunction(
    schema="public",
    signature="neglect_enqueue_webhook( p_event_type text, p_agency_name text, p_resource_id uuid, p_status text )",
    definition="returns text LANGUAGE plpgsql AS $$\n-- The transactional outbox\\: one event, written in the caller's transaction (it lands with the\n-- change it reports or not at all). Returns the event's id, its `webhook-id`.\n-- The event and its place in the fan-out queue are all it adds to the change\\: a worker makes the\n-- event's deliveries (`neglect_fan_out_webhooks`). Writing them here as well (a second row, its four index entries\n-- and the look-up of the recipients) cost every referral create more than the event itself,\n-- under concurrency (bench/outbox_costs.py).\n-- The payload is thin by construction\\: the record's id, its status and a link, nothing a caller\n-- could fill with personal data (the receiver reads the record with its own token, scoped and\n-- audited). The body is stored as the exact text every attempt signs and sends.\n-- The id is 'msg_' and 32 hex digits\\: the microsecond it occurred (14), then 18 random ones, so\n-- new ids sort last and the outbox's indexes grow at their right edge instead of at random pages.\nDECLARE\n    v_at timestamptz := clock_timestamp();\n    v_id text := 'msg_'\n        || lpad(to_hex((extract(epoch FROM v_at) * 1000000)::bigint), 14, '0')\n        || left(replace(gen_random_uuid()::text, '-', ''), 18);\n    v_kind text := split_part(p_event_type, '.', 1);\nBEGIN\n    INSERT INTO webhook_message (id, event_type, agency_name, occurred_at, body)\n    VALUES (\n        v_id, p_event_type, p_agency_name, v_at,\n        jsonb_build_object(\n            'type', p_event_type,\n            'timestamp', to_char(v_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24\\:MI\\:SS.US\"Z\"'),\n            'data', jsonb_build_object(\n                v_kind || '_id', p_resource_id,\n                'status', p_status,\n                'links', jsonb_build_object('self', '/v1/' || v_kind || 's/' || p_resource_id)\n            )\n        )::text\n    );\n    INSERT INTO webhook_fan_out (message_id) VALUES (v_id);\n    RETURN v_id;\nEND\n$$",
)


NEGLECT_FAN_OUT_WEBHOOKS = PGFunction(
    schema="public",
    signature="neglect_fan_out_webhooks(p_limit integer)",
    definition="returns integer LANGUAGE plpgsql AS $$\n-- A worker's first step\\: the deliveries of up to `p_limit` events not yet fanned out, oldest\n-- first, one pending delivery to each subscription entitled to the event\n-- (`neglect_webhook_recipients`\\: active, its client enabled and allowed the event's scope, the\n-- Front Door's or the agency's the event concerns) that had been made when the event occurred.\n-- Entitlement is judged now, as a replay judges it\\: a subscription deleted, or a client disabled\n-- or narrowed, since the event occurred gets nothing, as its pending deliveries would have been\n-- cancelled. Due when the event occurred, so older events are sent first. Several workers\n-- share the work (`SKIP LOCKED`); a delivery a replay made first is kept. Returns how many events\n-- were fanned out.\nDECLARE\n    v_count integer;\nBEGIN\n    WITH taken AS (\n        DELETE FROM webhook_fan_out AS queued\n        WHERE queued.message_id IN (\n            SELECT waiting.message_id\n            FROM webhook_fan_out AS waiting\n            ORDER BY waiting.message_id\n            LIMIT p_limit\n            FOR UPDATE SKIP LOCKED\n        )\n        RETURNING queued.message_id\n    ), batch AS (\n        SELECT m.id, m.event_type, m.agency_name, m.occurred_at\n        FROM taken JOIN webhook_message AS m ON m.id = taken.message_id\n    ), made AS (\n        INSERT INTO webhook_delivery (message_id, subscription_id, next_attempt_at)\n        SELECT batch.id, s.id, batch.occurred_at\n        FROM batch\n        CROSS JOIN LATERAL neglect_webhook_recipients(\n            p_event_type => batch.event_type, p_agency_name => batch.agency_name\n        ) AS recipient\n        JOIN webhook_subscription AS s ON s.id = recipient\n        WHERE s.created_at <= batch.occurred_at\n        ON CONFLICT (message_id, subscription_id) DO NOTHING\n    )\n    SELECT count(*) INTO v_count FROM taken;\n    RETURN v_count;\nEND\n$$",
)


NEGLECT_ENQUEUE_WEBHOOK_BEFORE = PGFunction(
    schema="public",
    signature="neglect_enqueue_webhook(p_event_type text, p_agency_name text, p_resource_id uuid, p_status text)",
    definition="returns text\n LANGUAGE plpgsql\nAS $function$\n-- The transactional outbox\\: one event, written in the caller's transaction (it lands with the\n-- change it reports or not at all), with a pending delivery to each subscription entitled to it.\n-- Returns the event's id, its `webhook-id`.\n-- The payload is thin by construction\\: the record's id, its status and a link, nothing a caller\n-- could fill with personal data (the receiver reads the record with its own token, scoped and\n-- audited). The body is stored as the exact text every attempt signs and sends.\n-- The id is 'msg_' and 32 hex digits\\: the microsecond it occurred (14), then 18 random ones, so\n-- new ids sort last and the outbox's indexes grow at their right edge instead of at random pages.\nDECLARE\n    v_at timestamptz := clock_timestamp();\n    v_id text := 'msg_'\n        || lpad(to_hex((extract(epoch FROM v_at) * 1000000)::bigint), 14, '0')\n        || left(replace(gen_random_uuid()::text, '-', ''), 18);\n    v_kind text := split_part(p_event_type, '.', 1);\nBEGIN\n    INSERT INTO webhook_message (id, event_type, agency_name, occurred_at, body)\n    VALUES (\n        v_id, p_event_type, p_agency_name, v_at,\n        jsonb_build_object(\n            'type', p_event_type,\n            'timestamp', to_char(v_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24\\:MI\\:SS.US\"Z\"'),\n            'data', jsonb_build_object(\n                v_kind || '_id', p_resource_id,\n                'status', p_status,\n                'links', jsonb_build_object('self', '/v1/' || v_kind || 's/' || p_resource_id)\n            )\n        )::text\n    );\n    INSERT INTO webhook_delivery (message_id, subscription_id, next_attempt_at)\n    SELECT v_id, recipient, v_at\n    FROM neglect_webhook_recipients(p_event_type => p_event_type, p_agency_name => p_agency_name)\n        AS recipient;\n    RETURN v_id;\nEND\n$function$",
)


def upgrade() -> None:
    op.create_table(
        "webhook_fan_out",
        sa.Column("message_id", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_webhook_fan_out")),
    )
    op.execute(
        "ALTER TABLE webhook_fan_out SET (autovacuum_vacuum_scale_factor = 0, "
        "autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_insert_scale_factor = 0, "
        "autovacuum_vacuum_insert_threshold = 1000)"
    )
    op.create_entity(NEGLECT_FAN_OUT_WEBHOOKS)
    op.replace_entity(NEGLECT_ENQUEUE_WEBHOOK)


def downgrade() -> None:
    op.replace_entity(NEGLECT_ENQUEUE_WEBHOOK_BEFORE)
    op.execute("SELECT neglect_fan_out_webhooks(p_limit => 2147483647)")
    op.drop_entity(NEGLECT_FAN_OUT_WEBHOOKS)
    op.drop_table("webhook_fan_out")
