"""webhook_subscription, webhook_message, webhook_delivery, webhook_attempt, webhook_worker:
webhooks from a transactional outbox (SPEC 2.7, Standard Webhooks v1.0.0)

A subscription holds its client's endpoint, event types and signing secrets (encrypted under the
key-encryption key). `neglect_enqueue_webhook` writes an event (`webhook_message`, its exact body)
with a pending delivery to each entitled subscription (`neglect_webhook_recipients`) in the
transaction of the change; `neglect_create_referral` now calls it too, inside its one statement,
for `referral.received`. Workers claim deliveries and record each attempt (`webhook_attempt`) and
their heartbeat (`webhook_worker`). The functions are frozen copies of service/webhooks/outbox.sql
and service/referrals.sql as of this revision.

Revision ID: 0013
Revises: 0010
Create Date: 2026-12-06 06:30:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic_utils.pg_function import PGFunction
from sqlalchemy.dialects import postgresql

from alembic import op

# alembic_utils adds op.create_entity, replace_entity and drop_entity when it is imported.
# mypy: disable-error-code="attr-defined"

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEGLECT_CREATE_REFERRAL = PGFunction(
    schema="public",
    signature="neglect_create_referral( p_client_id text, p_issuer text, p_default_issuer text, p_scope text, p_idempotency_key text, p_operation text, p_fingerprint text, p_nhs_number text, p_la_child_id text, p_upn text, p_given_name text, p_family_name text, p_family_name_key text, p_date_of_birth date, p_expected_date_of_birth date, p_sex text, p_ethnicity text, p_id uuid, p_external_reference text, p_urgent boolean, p_received_at timestamptz, p_decision_window interval, p_referral_source text, p_concern_categories text[], p_neglect_forms text[], p_risk_factors text[], p_vulnerabilities text[], p_parents_informed boolean, p_parental_consent text, p_body jsonb, p_request_id text, p_access_reason text, OUT outcome text, OUT client_agency_type text, OUT client_agency_name text, OUT referral_id uuid, OUT referral_child_id uuid, OUT referral_received_at timestamptz, OUT referral_decision_due_at timestamptz, OUT referral_rereferral_count integer, OUT referral_agency_rereferral_count integer, OUT referral_created_at timestamptz, OUT replay_status integer, OUT replay_body jsonb )",
    definition="returns record LANGUAGE plpgsql AS $$\n-- POST /v1/referrals in one round trip, after the route has checked the token's signature, that\n-- it holds `p_scope`, and the body (SPEC 2.2). `outcome` is one of\\:\n--   created                                 the referral_* values describe the new referral;\n--   unregistered, wrong_issuer, forbidden   `neglect_check_client`'s answer for `p_scope`;\n--   replay, key_reused, in_flight, purged   `neglect_claim_key`'s answer\\: a replay is of referral\n--                                           `referral_id`, or of `replay_status` / `replay_body`\n--                                           for a response stored before referrals were claimed\n--                                           with their id.\n-- Only `created` changes anything. A second referral with this client's external reference\n-- raises unique_violation on uq_referral_client_external_reference, undoing the whole statement.\n-- Re-referrals are as `service.referrals` describes.\n#variable_conflict use_column\nDECLARE\n    v_client record;\n    v_claim record;\n    v_child uuid;\n    v_received timestamptz;\n    v_count integer;\n    v_agency_count integer;\n    v_others integer;\n    v_event bigint;\n    v_relinked integer;\nBEGIN\n    v_client := neglect_check_client(\n        p_client_id => p_client_id, p_issuer => p_issuer, p_default_issuer => p_default_issuer,\n        p_required_scopes => ARRAY[p_scope], p_token_scopes => ARRAY[p_scope]\n    );\n    IF v_client.outcome <> 'authenticated' THEN\n        outcome := v_client.outcome;\n        RETURN;\n    END IF;\n    client_agency_type := v_client.agency_type;\n    client_agency_name := v_client.agency_name;\n\n    v_claim := neglect_claim_key(\n        p_client_id => p_client_id, p_idempotency_key => p_idempotency_key,\n        p_operation => p_operation, p_fingerprint => p_fingerprint, p_resource_id => p_id,\n        p_response_status => 201\n    );\n    IF v_claim.outcome <> 'claimed' THEN\n        outcome := v_claim.outcome;\n        referral_id := v_claim.resource_id;\n        replay_status := v_claim.response_status;\n        replay_body := v_claim.response_body;\n        RETURN;\n    END IF;\n\n    v_child := neglect_resolve_child(\n        p_nhs_number => p_nhs_number, p_la_child_id => p_la_child_id, p_upn => p_upn,\n        p_given_name => p_given_name, p_family_name => p_family_name,\n        p_family_name_key => p_family_name_key, p_date_of_birth => p_date_of_birth,\n        p_expected_date_of_birth => p_expected_date_of_birth, p_sex => p_sex,\n        p_ethnicity => p_ethnicity\n    );\n    -- Taken after the child's locks, so one child's referrals are received in the order they\n    -- are stored and each counts every earlier one.\n    v_received := coalesce(p_received_at, clock_timestamp());\n    -- The re-referral context twice\\: the partnership's (the Front Door's to see) and the sending\n    -- agency's own history of the child (all a partner may learn of it).\n    SELECT count(*) FILTER (\n               WHERE status <> 'withdrawn' AND received_at <= v_received\n                 AND received_at >= v_received - interval '12 months'\n           ),\n           count(*) FILTER (\n               WHERE status <> 'withdrawn' AND received_at <= v_received\n                 AND received_at >= v_received - interval '12 months'\n                 AND agency_name = v_client.agency_name\n           ),\n           count(*)\n    INTO v_count, v_agency_count, v_others\n    FROM referral\n    WHERE child_id = v_child;\n\n    INSERT INTO referral (\n        id, client_id, agency_type, agency_name, external_reference, child_id, status, urgent,\n        received_at, decision_due_at, referral_source, concern_categories, neglect_forms,\n        risk_factors, vulnerabilities, parents_informed, parental_consent, rereferral,\n        rereferral_count, agency_rereferral_count, body\n    ) VALUES (\n        p_id, p_client_id, v_client.agency_type, v_client.agency_name, p_external_reference,\n        v_child, 'received', p_urgent, v_received, v_received + p_decision_window,\n        p_referral_source, p_concern_categories, p_neglect_forms, p_risk_factors,\n        p_vulnerabilities, p_parents_informed, p_parental_consent, v_count > 0, v_count,\n        v_agency_count, p_body\n    )\n    RETURNING created_at INTO referral_created_at;\n    v_event := neglect_record_audit(\n        p_client_id => p_client_id, p_agency_type => v_client.agency_type,\n        p_agency_name => v_client.agency_name, p_action => 'create',\n        p_resource_type => 'referral', p_resource_id => p_id::text, p_child_id => v_child,\n        p_request_id => p_request_id, p_access_reason => p_access_reason\n    );\n    -- The Front Door hears of it (webhooks, SPEC 2.7), in this same statement's transaction.\n    PERFORM neglect_enqueue_webhook(\n        p_event_type => 'referral.received', p_agency_name => v_client.agency_name,\n        p_resource_id => p_id, p_status => 'received'\n    );\n    -- The new referral's previous one, and its successors' when it is back-loaded. A child's only\n    -- referral follows none and precedes none\\: nothing to relink.\n    IF v_others > 0 THEN\n        v_relinked := neglect_relink_referrals(p_child_ids => ARRAY[v_child]);\n    END IF;\n\n    outcome := 'created';\n    referral_id := p_id;\n    referral_child_id := v_child;\n    referral_received_at := v_received;\n    referral_decision_due_at := v_received + p_decision_window;\n    referral_rereferral_count := v_count;\n    referral_agency_rereferral_count := v_agency_count;\nEND\n$$",
)

NEGLECT_WEBHOOK_SCOPE = PGFunction(
    schema="public",
    signature="neglect_webhook_scope(p_event_type text)",
    definition="returns text LANGUAGE plpgsql IMMUTABLE AS $$\n-- The scope a client must be allowed to receive an event type\\: the one that lets it read the\n-- record the event names. NULL for a type that does not exist.\nBEGIN\n    RETURN CASE p_event_type\n        WHEN 'referral.received' THEN 'referrals\\:read\\:all'\n        WHEN 'referral.decided' THEN 'referrals\\:read'\n        WHEN 'referral.withdrawn' THEN 'referrals\\:read'\n        WHEN 'assessment.completed' THEN 'assessments\\:read'\n    END;\nEND\n$$",
)

NEGLECT_WEBHOOK_RECIPIENTS = PGFunction(
    schema="public",
    signature="neglect_webhook_recipients( p_event_type text, p_agency_name text )",
    definition="returns SETOF uuid LANGUAGE plpgsql STABLE AS $$\n-- The active subscriptions an event goes to, by SPEC 2.7\\: a referral received goes to the Front\n-- Door (the clients allowed `referrals\\:read\\:all`); every other event only to the agency it\n-- concerns (`p_agency_name`\\: the referring or assessing agency), as the records themselves are\n-- scoped (SPEC 2.6). The client must be enabled and allowed the event's scope.\n-- (PL/pgSQL, not SQL\\: alembic_utils escapes the colons of a SQL function's frozen copy twice.)\nBEGIN\n    RETURN QUERY\n    SELECT s.id\n    FROM webhook_subscription AS s\n    JOIN api_client AS c ON c.client_id = s.client_id\n    WHERE s.status = 'active'\n      AND p_event_type = ANY (s.event_types)\n      AND c.enabled\n      AND neglect_webhook_scope(p_event_type => p_event_type) = ANY (c.allowed_scopes)\n      AND (p_event_type = 'referral.received' OR c.agency_name = p_agency_name);\nEND\n$$",
)

NEGLECT_ENQUEUE_WEBHOOK = PGFunction(
    schema="public",
    signature="neglect_enqueue_webhook( p_event_type text, p_agency_name text, p_resource_id uuid, p_status text )",
    definition="returns text LANGUAGE plpgsql AS $$\n-- The transactional outbox\\: one event, written in the caller's transaction (it lands with the\n-- change it reports or not at all), with a pending delivery to each subscription entitled to it.\n-- Returns the event's id, its `webhook-id`.\n-- The payload is thin by construction\\: the record's id, its status and a link, nothing a caller\n-- could fill with personal data (the receiver reads the record with its own token, scoped and\n-- audited). The body is stored as the exact text every attempt signs and sends.\n-- The id is 'msg_' and 32 hex digits\\: the microsecond it occurred (14), then 18 random ones, so\n-- new ids sort last and the outbox's indexes grow at their right edge instead of at random pages.\nDECLARE\n    v_at timestamptz := clock_timestamp();\n    v_id text := 'msg_'\n        || lpad(to_hex((extract(epoch FROM v_at) * 1000000)::bigint), 14, '0')\n        || left(replace(gen_random_uuid()::text, '-', ''), 18);\n    v_kind text := split_part(p_event_type, '.', 1);\nBEGIN\n    INSERT INTO webhook_message (id, event_type, agency_name, occurred_at, body)\n    VALUES (\n        v_id, p_event_type, p_agency_name, v_at,\n        jsonb_build_object(\n            'type', p_event_type,\n            'timestamp', to_char(v_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24\\:MI\\:SS.US\"Z\"'),\n            'data', jsonb_build_object(\n                v_kind || '_id', p_resource_id,\n                'status', p_status,\n                'links', jsonb_build_object('self', '/v1/' || v_kind || 's/' || p_resource_id)\n            )\n        )::text\n    );\n    INSERT INTO webhook_delivery (message_id, subscription_id, next_attempt_at)\n    SELECT v_id, recipient, v_at\n    FROM neglect_webhook_recipients(p_event_type => p_event_type, p_agency_name => p_agency_name)\n        AS recipient;\n    RETURN v_id;\nEND\n$$",
)

NEGLECT_REPLAY_WEBHOOKS = PGFunction(
    schema="public",
    signature="neglect_replay_webhooks( p_subscription_id uuid, p_message_id text, p_since timestamptz, p_until timestamptz, p_dead_only boolean, p_limit integer )",
    definition="returns integer LANGUAGE plpgsql AS $$\n-- Send past events to a subscription again, with their own ids (the receiver's dedupe key)\\: one\n-- event (`p_message_id`), or those that occurred in [p_since, p_until), oldest first, at most\n-- `p_limit`; with `p_dead_only`, only those whose delivery here is dead-lettered. Only events the\n-- subscription is entitled to now (`neglect_webhook_recipients`), delivered before or not. A\n-- delivery already pending is left as it is. Returns how many were made pending.\nDECLARE\n    v_count integer;\nBEGIN\n    INSERT INTO webhook_delivery AS d (message_id, subscription_id, next_attempt_at)\n    SELECT m.id, p_subscription_id, clock_timestamp()\n    FROM webhook_message AS m\n    WHERE (p_message_id IS NULL OR m.id = p_message_id)\n      AND (p_since IS NULL OR m.occurred_at >= p_since)\n      AND (p_until IS NULL OR m.occurred_at < p_until)\n      AND (NOT p_dead_only OR EXISTS (\n          SELECT 1 FROM webhook_delivery AS dead\n          WHERE dead.message_id = m.id AND dead.subscription_id = p_subscription_id\n            AND dead.status = 'dead'\n      ))\n      AND p_subscription_id IN (\n          SELECT neglect_webhook_recipients(\n              p_event_type => m.event_type, p_agency_name => m.agency_name\n          )\n      )\n    ORDER BY m.occurred_at, m.id\n    LIMIT p_limit\n    ON CONFLICT (message_id, subscription_id) DO UPDATE\n        SET status = 'pending', attempts = 0, next_attempt_at = excluded.next_attempt_at,\n            lease = NULL, finished_at = NULL\n        WHERE d.status <> 'pending';\n    GET DIAGNOSTICS v_count = ROW_COUNT;\n    RETURN v_count;\nEND\n$$",
)

NEGLECT_END_WEBHOOK_SUBSCRIPTION = PGFunction(
    schema="public",
    signature="neglect_end_webhook_subscription( p_subscription_id uuid, p_status text, p_reason text )",
    definition="returns void LANGUAGE plpgsql AS $$\n-- Stop a subscription\\: `disabled` (its endpoint answered 410 Gone) or `deleted` (its client\n-- deleted it). Its pending deliveries are cancelled; a worker holding one finds it so when it\n-- records its attempt.\nBEGIN\n    UPDATE webhook_subscription\n    SET status = p_status, disabled_reason = p_reason, disabled_at = clock_timestamp()\n    WHERE id = p_subscription_id AND status = 'active';\n    UPDATE webhook_delivery\n    SET status = 'cancelled', lease = NULL, finished_at = clock_timestamp()\n    WHERE subscription_id = p_subscription_id AND status = 'pending';\nEND\n$$",
)

NEGLECT_CREATE_REFERRAL_BEFORE = PGFunction(
    schema="public",
    signature="neglect_create_referral(p_client_id text, p_issuer text, p_default_issuer text, p_scope text, p_idempotency_key text, p_operation text, p_fingerprint text, p_nhs_number text, p_la_child_id text, p_upn text, p_given_name text, p_family_name text, p_family_name_key text, p_date_of_birth date, p_expected_date_of_birth date, p_sex text, p_ethnicity text, p_id uuid, p_external_reference text, p_urgent boolean, p_received_at timestamp with time zone, p_decision_window interval, p_referral_source text, p_concern_categories text[], p_neglect_forms text[], p_risk_factors text[], p_vulnerabilities text[], p_parents_informed boolean, p_parental_consent text, p_body jsonb, p_request_id text, p_access_reason text, OUT outcome text, OUT client_agency_type text, OUT client_agency_name text, OUT referral_id uuid, OUT referral_child_id uuid, OUT referral_received_at timestamp with time zone, OUT referral_decision_due_at timestamp with time zone, OUT referral_rereferral_count integer, OUT referral_agency_rereferral_count integer, OUT referral_created_at timestamp with time zone, OUT replay_status integer, OUT replay_body jsonb)",
    definition="returns record\n LANGUAGE plpgsql\nAS $function$\n-- POST /v1/referrals in one round trip, after the route has checked the token's signature, that\n-- it holds `p_scope`, and the body (SPEC 2.2). `outcome` is one of\\:\n--   created                                 the referral_* values describe the new referral;\n--   unregistered, wrong_issuer, forbidden   `neglect_check_client`'s answer for `p_scope`;\n--   replay, key_reused, in_flight, purged   `neglect_claim_key`'s answer\\: a replay is of referral\n--                                           `referral_id`, or of `replay_status` / `replay_body`\n--                                           for a response stored before referrals were claimed\n--                                           with their id.\n-- Only `created` changes anything. A second referral with this client's external reference\n-- raises unique_violation on uq_referral_client_external_reference, undoing the whole statement.\n-- Re-referrals are as `service.referrals` describes.\n#variable_conflict use_column\nDECLARE\n    v_client record;\n    v_claim record;\n    v_child uuid;\n    v_received timestamptz;\n    v_count integer;\n    v_agency_count integer;\n    v_others integer;\n    v_event bigint;\n    v_relinked integer;\nBEGIN\n    v_client := neglect_check_client(\n        p_client_id => p_client_id, p_issuer => p_issuer, p_default_issuer => p_default_issuer,\n        p_required_scopes => ARRAY[p_scope], p_token_scopes => ARRAY[p_scope]\n    );\n    IF v_client.outcome <> 'authenticated' THEN\n        outcome := v_client.outcome;\n        RETURN;\n    END IF;\n    client_agency_type := v_client.agency_type;\n    client_agency_name := v_client.agency_name;\n\n    v_claim := neglect_claim_key(\n        p_client_id => p_client_id, p_idempotency_key => p_idempotency_key,\n        p_operation => p_operation, p_fingerprint => p_fingerprint, p_resource_id => p_id,\n        p_response_status => 201\n    );\n    IF v_claim.outcome <> 'claimed' THEN\n        outcome := v_claim.outcome;\n        referral_id := v_claim.resource_id;\n        replay_status := v_claim.response_status;\n        replay_body := v_claim.response_body;\n        RETURN;\n    END IF;\n\n    v_child := neglect_resolve_child(\n        p_nhs_number => p_nhs_number, p_la_child_id => p_la_child_id, p_upn => p_upn,\n        p_given_name => p_given_name, p_family_name => p_family_name,\n        p_family_name_key => p_family_name_key, p_date_of_birth => p_date_of_birth,\n        p_expected_date_of_birth => p_expected_date_of_birth, p_sex => p_sex,\n        p_ethnicity => p_ethnicity\n    );\n    -- Taken after the child's locks, so one child's referrals are received in the order they\n    -- are stored and each counts every earlier one.\n    v_received := coalesce(p_received_at, clock_timestamp());\n    -- The re-referral context twice\\: the partnership's (the Front Door's to see) and the sending\n    -- agency's own history of the child (all a partner may learn of it).\n    SELECT count(*) FILTER (\n               WHERE status <> 'withdrawn' AND received_at <= v_received\n                 AND received_at >= v_received - interval '12 months'\n           ),\n           count(*) FILTER (\n               WHERE status <> 'withdrawn' AND received_at <= v_received\n                 AND received_at >= v_received - interval '12 months'\n                 AND agency_name = v_client.agency_name\n           ),\n           count(*)\n    INTO v_count, v_agency_count, v_others\n    FROM referral\n    WHERE child_id = v_child;\n\n    INSERT INTO referral (\n        id, client_id, agency_type, agency_name, external_reference, child_id, status, urgent,\n        received_at, decision_due_at, referral_source, concern_categories, neglect_forms,\n        risk_factors, vulnerabilities, parents_informed, parental_consent, rereferral,\n        rereferral_count, agency_rereferral_count, body\n    ) VALUES (\n        p_id, p_client_id, v_client.agency_type, v_client.agency_name, p_external_reference,\n        v_child, 'received', p_urgent, v_received, v_received + p_decision_window,\n        p_referral_source, p_concern_categories, p_neglect_forms, p_risk_factors,\n        p_vulnerabilities, p_parents_informed, p_parental_consent, v_count > 0, v_count,\n        v_agency_count, p_body\n    )\n    RETURNING created_at INTO referral_created_at;\n    v_event := neglect_record_audit(\n        p_client_id => p_client_id, p_agency_type => v_client.agency_type,\n        p_agency_name => v_client.agency_name, p_action => 'create',\n        p_resource_type => 'referral', p_resource_id => p_id::text, p_child_id => v_child,\n        p_request_id => p_request_id, p_access_reason => p_access_reason\n    );\n    -- The new referral's previous one, and its successors' when it is back-loaded. A child's only\n    -- referral follows none and precedes none\\: nothing to relink.\n    IF v_others > 0 THEN\n        v_relinked := neglect_relink_referrals(p_child_ids => ARRAY[v_child]);\n    END IF;\n\n    outcome := 'created';\n    referral_id := p_id;\n    referral_child_id := v_child;\n    referral_received_at := v_received;\n    referral_decision_due_at := v_received + p_decision_window;\n    referral_rereferral_count := v_count;\n    referral_agency_rereferral_count := v_agency_count;\nEND\n$function$",
)


def upgrade() -> None:
    op.create_table(
        "webhook_message",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("agency_name", sa.String(length=200), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_message")),
    )
    op.create_index(
        "ix_webhook_message_occurred_at", "webhook_message", ["occurred_at"], unique=False
    )
    op.create_table(
        "webhook_worker",
        sa.Column("worker_id", sa.String(length=100), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("succeeded", sa.BigInteger(), nullable=False),
        sa.Column("failed", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("worker_id", name=op.f("pk_webhook_worker")),
    )
    op.create_table(
        "webhook_subscription",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("event_types", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=20), server_default="active", nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("kek_id", sa.String(length=32), nullable=False),
        sa.Column("secret_enc", sa.LargeBinary(), nullable=False),
        sa.Column("previous_secret_enc", sa.LargeBinary(), nullable=True),
        sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("secret_rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('active', 'disabled', 'deleted')",
            name=op.f("ck_webhook_subscription_status"),
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["api_client.client_id"],
            name=op.f("fk_webhook_subscription_client_id_api_client"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_subscription")),
    )
    op.create_index(
        "ix_webhook_subscription_client_id_created_at",
        "webhook_subscription",
        ["client_id", "created_at", "id"],
        unique=False,
    )
    op.create_table(
        "webhook_delivery",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("message_id", sa.String(length=40), nullable=False),
        sa.Column("subscription_id", sa.UUID(), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease", sa.UUID(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'succeeded', 'dead', 'cancelled')",
            name=op.f("ck_webhook_delivery_status"),
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["webhook_message.id"],
            name=op.f("fk_webhook_delivery_message_id_webhook_message"),
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["webhook_subscription.id"],
            name=op.f("fk_webhook_delivery_subscription_id_webhook_subscription"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_delivery")),
        sa.UniqueConstraint("message_id", "subscription_id", name="uq_webhook_delivery_message"),
    )
    op.create_index(
        "ix_webhook_delivery_due",
        "webhook_delivery",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_webhook_delivery_subscription_id_id",
        "webhook_delivery",
        ["subscription_id", "id"],
        unique=False,
    )
    op.create_table(
        "webhook_attempt",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("delivery_id", sa.BigInteger(), nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("webhook_timestamp", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(length=300), nullable=True),
        sa.Column("worker_id", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["webhook_delivery.id"],
            name=op.f("fk_webhook_attempt_delivery_id_webhook_delivery"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_attempt")),
    )
    op.create_index(
        "ix_webhook_attempt_delivery_id", "webhook_attempt", ["delivery_id", "id"], unique=False
    )
    op.create_entity(NEGLECT_WEBHOOK_SCOPE)
    op.create_entity(NEGLECT_WEBHOOK_RECIPIENTS)
    op.create_entity(NEGLECT_ENQUEUE_WEBHOOK)
    op.create_entity(NEGLECT_REPLAY_WEBHOOKS)
    op.create_entity(NEGLECT_END_WEBHOOK_SUBSCRIPTION)
    op.replace_entity(NEGLECT_CREATE_REFERRAL)


def downgrade() -> None:
    op.replace_entity(NEGLECT_CREATE_REFERRAL_BEFORE)
    op.drop_entity(NEGLECT_END_WEBHOOK_SUBSCRIPTION)
    op.drop_entity(NEGLECT_REPLAY_WEBHOOKS)
    op.drop_entity(NEGLECT_ENQUEUE_WEBHOOK)
    op.drop_entity(NEGLECT_WEBHOOK_RECIPIENTS)
    op.drop_entity(NEGLECT_WEBHOOK_SCOPE)
    op.drop_index("ix_webhook_attempt_delivery_id", table_name="webhook_attempt")
    op.drop_table("webhook_attempt")
    op.drop_index("ix_webhook_delivery_subscription_id_id", table_name="webhook_delivery")
    op.drop_index(
        "ix_webhook_delivery_due",
        table_name="webhook_delivery",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_table("webhook_delivery")
    op.drop_index("ix_webhook_subscription_client_id_created_at", table_name="webhook_subscription")
    op.drop_table("webhook_subscription")
    op.drop_table("webhook_worker")
    op.drop_index("ix_webhook_message_occurred_at", table_name="webhook_message")
    op.drop_table("webhook_message")
