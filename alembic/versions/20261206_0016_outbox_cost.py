"""The outbox costs the referral create less: the recipients inlined, one statement, no
foreign-key checks on webhook_delivery

`neglect_webhook_recipients` becomes LANGUAGE sql, which the planner inlines into the INSERT that
`neglect_enqueue_webhook` runs (its body has no colon: alembic_utils escapes those twice in a SQL
function's frozen copy); that INSERT also writes the event, in a data-modifying WITH, so the
outbox is one statement instead of two. webhook_delivery's foreign keys to webhook_message and
webhook_subscription go: each check locked the referenced row, on every referral create the one
Front Door subscription that all concurrent creates share, for references that cannot dangle (the
runtime role deletes neither events nor, from now on, subscriptions: `service.db_roles`).
bench/outbox_costs.py measures each change. The functions are frozen copies of
service/webhooks/outbox.sql as of this revision; the downgrade restores 0013's.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 09:00:00+00:00
"""

from collections.abc import Sequence

from alembic_utils.pg_function import PGFunction

from alembic import op

# alembic_utils adds op.create_entity, replace_entity and drop_entity when it is imported.
# mypy: disable-error-code="attr-defined"

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEGLECT_WEBHOOK_RECIPIENTS = PGFunction(
    schema="public",
    signature="neglect_webhook_recipients( p_event_type text, p_agency_name text )",
    definition="returns SETOF uuid LANGUAGE sql STABLE AS $$\n-- The active subscriptions an event goes to, by SPEC 2.7. A referral received goes to the Front\n-- Door (the clients allowed to read every referral); every other event only to the agency it\n-- concerns (`p_agency_name`, the referring or assessing agency), as the records themselves are\n-- scoped (SPEC 2.6). The client must be enabled and allowed the event's scope.\n-- LANGUAGE sql so that the planner inlines it into the outbox's INSERT (a PL/pgSQL set-returning\n-- call cost the referral create about 20 microseconds more). No colon may appear in this body,\n-- comments included, as alembic_utils escapes the colons of a SQL function's frozen copy twice.\n    SELECT s.id\n    FROM webhook_subscription AS s\n    JOIN api_client AS c ON c.client_id = s.client_id\n    WHERE s.status = 'active'\n      AND p_event_type = ANY (s.event_types)\n      AND c.enabled\n      AND neglect_webhook_scope(p_event_type => p_event_type) = ANY (c.allowed_scopes)\n      AND (p_event_type = 'referral.received' OR c.agency_name = p_agency_name)\n$$",
)

NEGLECT_ENQUEUE_WEBHOOK = PGFunction(
    schema="public",
    signature="neglect_enqueue_webhook( p_event_type text, p_agency_name text, p_resource_id uuid, p_status text )",
    definition="returns text LANGUAGE plpgsql AS $$\n-- The transactional outbox\\: one event, written in the caller's transaction (it lands with the\n-- change it reports or not at all), with a pending delivery to each subscription entitled to it.\n-- Returns the event's id, its `webhook-id`.\n-- The payload is thin by construction\\: the record's id, its status and a link, nothing a caller\n-- could fill with personal data (the receiver reads the record with its own token, scoped and\n-- audited). The body is stored as the exact text every attempt signs and sends.\n-- The id is 'msg_' and 32 hex digits\\: the microsecond it occurred (14), then 18 random ones, so\n-- new ids sort last and the outbox's indexes grow at their right edge instead of at random pages.\nDECLARE\n    v_at timestamptz := clock_timestamp();\n    v_id text := 'msg_'\n        || lpad(to_hex((extract(epoch FROM v_at) * 1000000)::bigint), 14, '0')\n        || left(replace(gen_random_uuid()::text, '-', ''), 18);\n    v_kind text := split_part(p_event_type, '.', 1);\nBEGIN\n    -- One statement for the event and its deliveries\\: one executor run instead of two.\n    WITH message AS (\n        INSERT INTO webhook_message (id, event_type, agency_name, occurred_at, body)\n        VALUES (\n            v_id, p_event_type, p_agency_name, v_at,\n            jsonb_build_object(\n                'type', p_event_type,\n                'timestamp', to_char(v_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24\\:MI\\:SS.US\"Z\"'),\n                'data', jsonb_build_object(\n                    v_kind || '_id', p_resource_id,\n                    'status', p_status,\n                    'links', jsonb_build_object('self', '/v1/' || v_kind || 's/' || p_resource_id)\n                )\n            )::text\n        )\n        RETURNING id\n    )\n    INSERT INTO webhook_delivery (message_id, subscription_id, next_attempt_at)\n    SELECT message.id, recipient, v_at\n    FROM message,\n        neglect_webhook_recipients(p_event_type => p_event_type, p_agency_name => p_agency_name)\n            AS recipient;\n    RETURN v_id;\nEND\n$$",
)

NEGLECT_WEBHOOK_RECIPIENTS_BEFORE = PGFunction(
    schema="public",
    signature="neglect_webhook_recipients(p_event_type text, p_agency_name text)",
    definition="returns SETOF uuid\n LANGUAGE plpgsql\n STABLE\nAS $function$\n-- The active subscriptions an event goes to, by SPEC 2.7\\: a referral received goes to the Front\n-- Door (the clients allowed `referrals\\:read\\:all`); every other event only to the agency it\n-- concerns (`p_agency_name`\\: the referring or assessing agency), as the records themselves are\n-- scoped (SPEC 2.6). The client must be enabled and allowed the event's scope.\n-- (PL/pgSQL, not SQL\\: alembic_utils escapes the colons of a SQL function's frozen copy twice.)\nBEGIN\n    RETURN QUERY\n    SELECT s.id\n    FROM webhook_subscription AS s\n    JOIN api_client AS c ON c.client_id = s.client_id\n    WHERE s.status = 'active'\n      AND p_event_type = ANY (s.event_types)\n      AND c.enabled\n      AND neglect_webhook_scope(p_event_type => p_event_type) = ANY (c.allowed_scopes)\n      AND (p_event_type = 'referral.received' OR c.agency_name = p_agency_name);\nEND\n$function$",
)

NEGLECT_ENQUEUE_WEBHOOK_BEFORE = PGFunction(
    schema="public",
    signature="neglect_enqueue_webhook(p_event_type text, p_agency_name text, p_resource_id uuid, p_status text)",
    definition="returns text\n LANGUAGE plpgsql\nAS $function$\n-- The transactional outbox\\: one event, written in the caller's transaction (it lands with the\n-- change it reports or not at all), with a pending delivery to each subscription entitled to it.\n-- Returns the event's id, its `webhook-id`.\n-- The payload is thin by construction\\: the record's id, its status and a link, nothing a caller\n-- could fill with personal data (the receiver reads the record with its own token, scoped and\n-- audited). The body is stored as the exact text every attempt signs and sends.\n-- The id is 'msg_' and 32 hex digits\\: the microsecond it occurred (14), then 18 random ones, so\n-- new ids sort last and the outbox's indexes grow at their right edge instead of at random pages.\nDECLARE\n    v_at timestamptz := clock_timestamp();\n    v_id text := 'msg_'\n        || lpad(to_hex((extract(epoch FROM v_at) * 1000000)::bigint), 14, '0')\n        || left(replace(gen_random_uuid()::text, '-', ''), 18);\n    v_kind text := split_part(p_event_type, '.', 1);\nBEGIN\n    INSERT INTO webhook_message (id, event_type, agency_name, occurred_at, body)\n    VALUES (\n        v_id, p_event_type, p_agency_name, v_at,\n        jsonb_build_object(\n            'type', p_event_type,\n            'timestamp', to_char(v_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24\\:MI\\:SS.US\"Z\"'),\n            'data', jsonb_build_object(\n                v_kind || '_id', p_resource_id,\n                'status', p_status,\n                'links', jsonb_build_object('self', '/v1/' || v_kind || 's/' || p_resource_id)\n            )\n        )::text\n    );\n    INSERT INTO webhook_delivery (message_id, subscription_id, next_attempt_at)\n    SELECT v_id, recipient, v_at\n    FROM neglect_webhook_recipients(p_event_type => p_event_type, p_agency_name => p_agency_name)\n        AS recipient;\n    RETURN v_id;\nEND\n$function$",
)


def upgrade() -> None:
    op.replace_entity(NEGLECT_WEBHOOK_RECIPIENTS)
    op.replace_entity(NEGLECT_ENQUEUE_WEBHOOK)
    op.drop_constraint(
        "fk_webhook_delivery_message_id_webhook_message", "webhook_delivery", type_="foreignkey"
    )
    op.drop_constraint(
        "fk_webhook_delivery_subscription_id_webhook_subscription",
        "webhook_delivery",
        type_="foreignkey",
    )


def downgrade() -> None:
    op.create_foreign_key(
        "fk_webhook_delivery_subscription_id_webhook_subscription",
        "webhook_delivery",
        "webhook_subscription",
        ["subscription_id"],
        ["id"],
    )
    op.create_foreign_key(
        "fk_webhook_delivery_message_id_webhook_message",
        "webhook_delivery",
        "webhook_message",
        ["message_id"],
        ["id"],
    )
    op.replace_entity(NEGLECT_ENQUEUE_WEBHOOK_BEFORE)
    op.replace_entity(NEGLECT_WEBHOOK_RECIPIENTS_BEFORE)
