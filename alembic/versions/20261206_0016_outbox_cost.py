"""The outbox costs the referral create less: the recipients inlined, no foreign-key checks on
webhook_delivery, and the create's audit event last

`neglect_create_referral` appends its audit event last, after the outbox and the relinking:
appending it locks the agency's audit chain head until the commit, so whatever the create does
after it lengthens every concurrent create's wait for that lock (the outbox did).

`neglect_webhook_recipients` becomes LANGUAGE sql, which the planner inlines into the INSERT that
`neglect_enqueue_webhook` runs (its body has no colon: alembic_utils escapes those twice in a SQL
function's frozen copy). webhook_delivery's foreign keys to webhook_message and
webhook_subscription go: each check locked the referenced row, on every referral create the one
Front Door subscription that all concurrent creates share, for references that cannot dangle (the
runtime role deletes neither events nor, from now on, subscriptions: `service.db_roles`).
bench/outbox_costs.py measures each change. The functions are frozen copies of
service/webhooks/outbox.sql and service/referrals.sql as of this revision; the downgrade restores
the previous ones.

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


NEGLECT_CREATE_REFERRAL = PGFunction(
    schema="public",
    signature="neglect_create_referral( p_client_id text, p_issuer text, p_default_issuer text, p_scope text, p_idempotency_key text, p_operation text, p_fingerprint text, p_nhs_number text, p_la_child_id text, p_upn text, p_given_name text, p_family_name text, p_family_name_key text, p_date_of_birth date, p_expected_date_of_birth date, p_sex text, p_ethnicity text, p_id uuid, p_external_reference text, p_urgent boolean, p_received_at timestamptz, p_decision_window interval, p_referral_source text, p_concern_categories text[], p_neglect_forms text[], p_risk_factors text[], p_vulnerabilities text[], p_parents_informed boolean, p_parental_consent text, p_body jsonb, p_request_id text, p_access_reason text, OUT outcome text, OUT client_agency_type text, OUT client_agency_name text, OUT referral_id uuid, OUT referral_child_id uuid, OUT referral_received_at timestamptz, OUT referral_decision_due_at timestamptz, OUT referral_rereferral_count integer, OUT referral_agency_rereferral_count integer, OUT referral_created_at timestamptz, OUT replay_status integer, OUT replay_body jsonb )",
    definition="returns record LANGUAGE plpgsql AS $$\n-- POST /v1/referrals in one round trip, after the route has checked the token's signature, that\n-- it holds `p_scope`, and the body (SPEC 2.2). `outcome` is one of\\:\n--   created                                 the referral_* values describe the new referral;\n--   unregistered, wrong_issuer, forbidden   `neglect_check_client`'s answer for `p_scope`;\n--   replay, key_reused, in_flight, purged   `neglect_claim_key`'s answer\\: a replay is of referral\n--                                           `referral_id`, or of `replay_status` / `replay_body`\n--                                           for a response stored before referrals were claimed\n--                                           with their id.\n-- Only `created` changes anything. A second referral with this client's external reference\n-- raises unique_violation on uq_referral_client_external_reference, undoing the whole statement.\n-- Re-referrals are as `service.referrals` describes.\n#variable_conflict use_column\nDECLARE\n    v_client record;\n    v_claim record;\n    v_child uuid;\n    v_received timestamptz;\n    v_count integer;\n    v_agency_count integer;\n    v_event bigint;\n    v_relinked integer;\nBEGIN\n    v_client := neglect_check_client(\n        p_client_id => p_client_id, p_issuer => p_issuer, p_default_issuer => p_default_issuer,\n        p_required_scopes => ARRAY[p_scope], p_token_scopes => ARRAY[p_scope]\n    );\n    IF v_client.outcome <> 'authenticated' THEN\n        outcome := v_client.outcome;\n        RETURN;\n    END IF;\n    client_agency_type := v_client.agency_type;\n    client_agency_name := v_client.agency_name;\n\n    v_claim := neglect_claim_key(\n        p_client_id => p_client_id, p_idempotency_key => p_idempotency_key,\n        p_operation => p_operation, p_fingerprint => p_fingerprint, p_resource_id => p_id,\n        p_response_status => 201\n    );\n    IF v_claim.outcome <> 'claimed' THEN\n        outcome := v_claim.outcome;\n        referral_id := v_claim.resource_id;\n        replay_status := v_claim.response_status;\n        replay_body := v_claim.response_body;\n        RETURN;\n    END IF;\n\n    v_child := neglect_resolve_child(\n        p_nhs_number => p_nhs_number, p_la_child_id => p_la_child_id, p_upn => p_upn,\n        p_given_name => p_given_name, p_family_name => p_family_name,\n        p_family_name_key => p_family_name_key, p_date_of_birth => p_date_of_birth,\n        p_expected_date_of_birth => p_expected_date_of_birth, p_sex => p_sex,\n        p_ethnicity => p_ethnicity\n    );\n    -- Taken after the child's locks, so one child's referrals are received in the order they\n    -- are stored and each counts every earlier one.\n    v_received := coalesce(p_received_at, clock_timestamp());\n    -- The re-referral context twice\\: the partnership's (the Front Door's to see) and the sending\n    -- agency's own history of the child (all a partner may learn of it).\n    SELECT counted.rereferral_count, counted.agency_rereferral_count\n    INTO v_count, v_agency_count\n    FROM neglect_rereferral_counts(\n        p_child_id => v_child, p_received_at => v_received,\n        p_agency_name => v_client.agency_name, p_referral_id => p_id\n    ) AS counted;\n\n    INSERT INTO referral (\n        id, client_id, agency_type, agency_name, external_reference, child_id, status, urgent,\n        received_at, decision_due_at, referral_source, concern_categories, neglect_forms,\n        risk_factors, vulnerabilities, parents_informed, parental_consent, rereferral,\n        rereferral_count, agency_rereferral_count, body\n    ) VALUES (\n        p_id, p_client_id, v_client.agency_type, v_client.agency_name, p_external_reference,\n        v_child, 'received', p_urgent, v_received, v_received + p_decision_window,\n        p_referral_source, p_concern_categories, p_neglect_forms, p_risk_factors,\n        p_vulnerabilities, p_parents_informed, p_parental_consent, v_count > 0, v_count,\n        v_agency_count, p_body\n    )\n    RETURNING created_at INTO referral_created_at;\n    -- The Front Door hears of it (webhooks, SPEC 2.7), in this same statement's transaction.\n    PERFORM neglect_enqueue_webhook(\n        p_event_type => 'referral.received', p_agency_name => v_client.agency_name,\n        p_resource_id => p_id, p_status => 'received'\n    );\n    -- The new referral's previous one, and its successors' when it is back-loaded. A child's only\n    -- referral follows none and precedes none\\: nothing to relink.\n    IF EXISTS (SELECT FROM referral WHERE child_id = v_child AND id <> p_id) THEN\n        v_relinked := neglect_relink_referrals(p_child_ids => ARRAY[v_child]);\n    END IF;\n    -- The audit event last\\: appending it locks the agency's chain head until the commit, so every\n    -- other create of this agency waits from here on. Work done before it (the outbox, the\n    -- relinking) overlaps theirs; after it, it would lengthen the wait of each one.\n    v_event := neglect_record_audit(\n        p_client_id => p_client_id, p_agency_type => v_client.agency_type,\n        p_agency_name => v_client.agency_name, p_action => 'create',\n        p_resource_type => 'referral', p_resource_id => p_id::text, p_child_id => v_child,\n        p_request_id => p_request_id, p_access_reason => p_access_reason\n    );\n\n    outcome := 'created';\n    referral_id := p_id;\n    referral_child_id := v_child;\n    referral_received_at := v_received;\n    referral_decision_due_at := v_received + p_decision_window;\n    referral_rereferral_count := v_count;\n    referral_agency_rereferral_count := v_agency_count;\nEND\n$$",
)

NEGLECT_WEBHOOK_RECIPIENTS_BEFORE = PGFunction(
    schema="public",
    signature="neglect_webhook_recipients(p_event_type text, p_agency_name text)",
    definition="returns SETOF uuid\n LANGUAGE plpgsql\n STABLE\nAS $function$\n-- The active subscriptions an event goes to, by SPEC 2.7\\: a referral received goes to the Front\n-- Door (the clients allowed `referrals\\:read\\:all`); every other event only to the agency it\n-- concerns (`p_agency_name`\\: the referring or assessing agency), as the records themselves are\n-- scoped (SPEC 2.6). The client must be enabled and allowed the event's scope.\n-- (PL/pgSQL, not SQL\\: alembic_utils escapes the colons of a SQL function's frozen copy twice.)\nBEGIN\n    RETURN QUERY\n    SELECT s.id\n    FROM webhook_subscription AS s\n    JOIN api_client AS c ON c.client_id = s.client_id\n    WHERE s.status = 'active'\n      AND p_event_type = ANY (s.event_types)\n      AND c.enabled\n      AND neglect_webhook_scope(p_event_type => p_event_type) = ANY (c.allowed_scopes)\n      AND (p_event_type = 'referral.received' OR c.agency_name = p_agency_name);\nEND\n$function$",
)


NEGLECT_CREATE_REFERRAL_BEFORE = PGFunction(
    schema="public",
    signature="neglect_create_referral(p_client_id text, p_issuer text, p_default_issuer text, p_scope text, p_idempotency_key text, p_operation text, p_fingerprint text, p_nhs_number text, p_la_child_id text, p_upn text, p_given_name text, p_family_name text, p_family_name_key text, p_date_of_birth date, p_expected_date_of_birth date, p_sex text, p_ethnicity text, p_id uuid, p_external_reference text, p_urgent boolean, p_received_at timestamp with time zone, p_decision_window interval, p_referral_source text, p_concern_categories text[], p_neglect_forms text[], p_risk_factors text[], p_vulnerabilities text[], p_parents_informed boolean, p_parental_consent text, p_body jsonb, p_request_id text, p_access_reason text, OUT outcome text, OUT client_agency_type text, OUT client_agency_name text, OUT referral_id uuid, OUT referral_child_id uuid, OUT referral_received_at timestamp with time zone, OUT referral_decision_due_at timestamp with time zone, OUT referral_rereferral_count integer, OUT referral_agency_rereferral_count integer, OUT referral_created_at timestamp with time zone, OUT replay_status integer, OUT replay_body jsonb)",
    definition="returns record\n LANGUAGE plpgsql\nAS $function$\n-- POST /v1/referrals in one round trip, after the route has checked the token's signature, that\n-- it holds `p_scope`, and the body (SPEC 2.2). `outcome` is one of\\:\n--   created                                 the referral_* values describe the new referral;\n--   unregistered, wrong_issuer, forbidden   `neglect_check_client`'s answer for `p_scope`;\n--   replay, key_reused, in_flight, purged   `neglect_claim_key`'s answer\\: a replay is of referral\n--                                           `referral_id`, or of `replay_status` / `replay_body`\n--                                           for a response stored before referrals were claimed\n--                                           with their id.\n-- Only `created` changes anything. A second referral with this client's external reference\n-- raises unique_violation on uq_referral_client_external_reference, undoing the whole statement.\n-- Re-referrals are as `service.referrals` describes.\n#variable_conflict use_column\nDECLARE\n    v_client record;\n    v_claim record;\n    v_child uuid;\n    v_received timestamptz;\n    v_count integer;\n    v_agency_count integer;\n    v_event bigint;\n    v_relinked integer;\nBEGIN\n    v_client := neglect_check_client(\n        p_client_id => p_client_id, p_issuer => p_issuer, p_default_issuer => p_default_issuer,\n        p_required_scopes => ARRAY[p_scope], p_token_scopes => ARRAY[p_scope]\n    );\n    IF v_client.outcome <> 'authenticated' THEN\n        outcome := v_client.outcome;\n        RETURN;\n    END IF;\n    client_agency_type := v_client.agency_type;\n    client_agency_name := v_client.agency_name;\n\n    v_claim := neglect_claim_key(\n        p_client_id => p_client_id, p_idempotency_key => p_idempotency_key,\n        p_operation => p_operation, p_fingerprint => p_fingerprint, p_resource_id => p_id,\n        p_response_status => 201\n    );\n    IF v_claim.outcome <> 'claimed' THEN\n        outcome := v_claim.outcome;\n        referral_id := v_claim.resource_id;\n        replay_status := v_claim.response_status;\n        replay_body := v_claim.response_body;\n        RETURN;\n    END IF;\n\n    v_child := neglect_resolve_child(\n        p_nhs_number => p_nhs_number, p_la_child_id => p_la_child_id, p_upn => p_upn,\n        p_given_name => p_given_name, p_family_name => p_family_name,\n        p_family_name_key => p_family_name_key, p_date_of_birth => p_date_of_birth,\n        p_expected_date_of_birth => p_expected_date_of_birth, p_sex => p_sex,\n        p_ethnicity => p_ethnicity\n    );\n    -- Taken after the child's locks, so one child's referrals are received in the order they\n    -- are stored and each counts every earlier one.\n    v_received := coalesce(p_received_at, clock_timestamp());\n    -- The re-referral context twice\\: the partnership's (the Front Door's to see) and the sending\n    -- agency's own history of the child (all a partner may learn of it).\n    SELECT counted.rereferral_count, counted.agency_rereferral_count\n    INTO v_count, v_agency_count\n    FROM neglect_rereferral_counts(\n        p_child_id => v_child, p_received_at => v_received,\n        p_agency_name => v_client.agency_name, p_referral_id => p_id\n    ) AS counted;\n\n    INSERT INTO referral (\n        id, client_id, agency_type, agency_name, external_reference, child_id, status, urgent,\n        received_at, decision_due_at, referral_source, concern_categories, neglect_forms,\n        risk_factors, vulnerabilities, parents_informed, parental_consent, rereferral,\n        rereferral_count, agency_rereferral_count, body\n    ) VALUES (\n        p_id, p_client_id, v_client.agency_type, v_client.agency_name, p_external_reference,\n        v_child, 'received', p_urgent, v_received, v_received + p_decision_window,\n        p_referral_source, p_concern_categories, p_neglect_forms, p_risk_factors,\n        p_vulnerabilities, p_parents_informed, p_parental_consent, v_count > 0, v_count,\n        v_agency_count, p_body\n    )\n    RETURNING created_at INTO referral_created_at;\n    v_event := neglect_record_audit(\n        p_client_id => p_client_id, p_agency_type => v_client.agency_type,\n        p_agency_name => v_client.agency_name, p_action => 'create',\n        p_resource_type => 'referral', p_resource_id => p_id::text, p_child_id => v_child,\n        p_request_id => p_request_id, p_access_reason => p_access_reason\n    );\n    -- The Front Door hears of it (webhooks, SPEC 2.7), in this same statement's transaction.\n    PERFORM neglect_enqueue_webhook(\n        p_event_type => 'referral.received', p_agency_name => v_client.agency_name,\n        p_resource_id => p_id, p_status => 'received'\n    );\n    -- The new referral's previous one, and its successors' when it is back-loaded. A child's only\n    -- referral follows none and precedes none\\: nothing to relink.\n    IF EXISTS (SELECT FROM referral WHERE child_id = v_child AND id <> p_id) THEN\n        v_relinked := neglect_relink_referrals(p_child_ids => ARRAY[v_child]);\n    END IF;\n\n    outcome := 'created';\n    referral_id := p_id;\n    referral_child_id := v_child;\n    referral_received_at := v_received;\n    referral_decision_due_at := v_received + p_decision_window;\n    referral_rereferral_count := v_count;\n    referral_agency_rereferral_count := v_agency_count;\nEND\n$function$",
)


def upgrade() -> None:
    op.replace_entity(NEGLECT_WEBHOOK_RECIPIENTS)
    op.replace_entity(NEGLECT_CREATE_REFERRAL)
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
    op.replace_entity(NEGLECT_CREATE_REFERRAL_BEFORE)
    op.replace_entity(NEGLECT_WEBHOOK_RECIPIENTS_BEFORE)
