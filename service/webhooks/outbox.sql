CREATE OR REPLACE FUNCTION public.neglect_webhook_scope(p_event_type text)
RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
-- The scope a client must be allowed to receive an event type: the one that lets it read the
-- record the event names. NULL for a type that does not exist.
BEGIN
    RETURN CASE p_event_type
        WHEN 'referral.received' THEN 'referrals:read:all'
        WHEN 'referral.decided' THEN 'referrals:read'
        WHEN 'referral.withdrawn' THEN 'referrals:read'
        WHEN 'assessment.completed' THEN 'assessments:read'
    END;
END
$$;

CREATE OR REPLACE FUNCTION public.neglect_webhook_recipients(
    p_event_type text, p_agency_name text
) RETURNS SETOF uuid LANGUAGE plpgsql STABLE AS $$
-- The active subscriptions an event goes to, by SPEC 2.7: a referral received goes to the Front
-- Door (the clients allowed `referrals:read:all`); every other event only to the agency it
-- concerns (`p_agency_name`: the referring or assessing agency), as the records themselves are
-- scoped (SPEC 2.6). The client must be enabled and allowed the event's scope.
-- (PL/pgSQL, not SQL: alembic_utils escapes the colons of a SQL function's frozen copy twice.)
BEGIN
    RETURN QUERY
    SELECT s.id
    FROM webhook_subscription AS s
    JOIN api_client AS c ON c.client_id = s.client_id
    WHERE s.status = 'active'
      AND p_event_type = ANY (s.event_types)
      AND c.enabled
      AND neglect_webhook_scope(p_event_type => p_event_type) = ANY (c.allowed_scopes)
      AND (p_event_type = 'referral.received' OR c.agency_name = p_agency_name);
END
$$;

CREATE OR REPLACE FUNCTION public.neglect_enqueue_webhook(
    p_event_type text, p_agency_name text, p_resource_id uuid, p_status text
) RETURNS text LANGUAGE plpgsql AS $$
-- The transactional outbox: one event, written in the caller's transaction (it lands with the
-- change it reports or not at all). Returns the event's id, its `webhook-id`.
-- The event and its place in the fan-out queue are all it adds to the change: a worker makes the
-- event's deliveries (`neglect_fan_out_webhooks`). Writing them here as well (a second row, its four index entries
-- and the look-up of the recipients) cost every referral create more than the event itself,
-- under concurrency (bench/outbox_costs.py).
-- The payload is thin by construction: the record's id, its status and a link, nothing a caller
-- could fill with personal data (the receiver reads the record with its own token, scoped and
-- audited). The body is stored as the exact text every attempt signs and sends.
-- The id is 'msg_' and 32 hex digits: the microsecond it occurred (14), then 18 random ones, so
-- new ids sort last and the outbox's indexes grow at their right edge instead of at random pages.
DECLARE
    v_at timestamptz := clock_timestamp();
    v_id text := 'msg_'
        || lpad(to_hex((extract(epoch FROM v_at) * 1000000)::bigint), 14, '0')
        || left(replace(gen_random_uuid()::text, '-', ''), 18);
    v_kind text := split_part(p_event_type, '.', 1);
BEGIN
    INSERT INTO webhook_message (id, event_type, agency_name, occurred_at, body)
    VALUES (
        v_id, p_event_type, p_agency_name, v_at,
        jsonb_build_object(
            'type', p_event_type,
            'timestamp', to_char(v_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            'data', jsonb_build_object(
                v_kind || '_id', p_resource_id,
                'status', p_status,
                'links', jsonb_build_object('self', '/v1/' || v_kind || 's/' || p_resource_id)
            )
        )::text
    );
    INSERT INTO webhook_fan_out (message_id) VALUES (v_id);
    RETURN v_id;
END
$$;

CREATE OR REPLACE FUNCTION public.neglect_fan_out_webhooks(p_limit integer)
RETURNS integer LANGUAGE plpgsql AS $$
-- A worker's first step: the deliveries of up to `p_limit` events not yet fanned out, oldest
-- first, one pending delivery to each subscription entitled to the event
-- (`neglect_webhook_recipients`: active, its client enabled and allowed the event's scope, the
-- Front Door's or the agency's the event concerns) that had been made when the event occurred.
-- Entitlement is judged now, as a replay judges it: a subscription deleted, or a client disabled
-- or narrowed, since the event occurred gets nothing, as its pending deliveries would have been
-- cancelled. Due when the event occurred, so older events are sent first. Several workers
-- share the work (`SKIP LOCKED`); a delivery a replay made first is kept. Returns how many events
-- were fanned out.
DECLARE
    v_count integer;
BEGIN
    WITH taken AS (
        DELETE FROM webhook_fan_out AS queued
        WHERE queued.message_id IN (
            SELECT waiting.message_id
            FROM webhook_fan_out AS waiting
            ORDER BY waiting.message_id
            LIMIT p_limit
            FOR UPDATE SKIP LOCKED
        )
        RETURNING queued.message_id
    ), batch AS (
        SELECT m.id, m.event_type, m.agency_name, m.occurred_at
        FROM taken JOIN webhook_message AS m ON m.id = taken.message_id
    ), made AS (
        INSERT INTO webhook_delivery (message_id, subscription_id, next_attempt_at)
        SELECT batch.id, s.id, batch.occurred_at
        FROM batch
        CROSS JOIN LATERAL neglect_webhook_recipients(
            p_event_type => batch.event_type, p_agency_name => batch.agency_name
        ) AS recipient
        JOIN webhook_subscription AS s ON s.id = recipient
        WHERE s.created_at <= batch.occurred_at
        ON CONFLICT (message_id, subscription_id) DO NOTHING
    )
    SELECT count(*) INTO v_count FROM taken;
    RETURN v_count;
END
$$;

CREATE OR REPLACE FUNCTION public.neglect_replay_webhooks(
    p_subscription_id uuid, p_message_id text, p_since timestamptz, p_until timestamptz,
    p_dead_only boolean, p_limit integer
) RETURNS integer LANGUAGE plpgsql AS $$
-- Send past events to a subscription again, with their own ids (the receiver's dedupe key): one
-- event (`p_message_id`), or those that occurred in [p_since, p_until), oldest first, at most
-- `p_limit`; with `p_dead_only`, only those whose delivery here is dead-lettered. Only events the
-- subscription is entitled to now (`neglect_webhook_recipients`), delivered before or not. A
-- delivery already pending is left as it is. Returns how many were made pending.
DECLARE
    v_count integer;
BEGIN
    INSERT INTO webhook_delivery AS d (message_id, subscription_id, next_attempt_at)
    SELECT m.id, p_subscription_id, clock_timestamp()
    FROM webhook_message AS m
    WHERE (p_message_id IS NULL OR m.id = p_message_id)
      AND (p_since IS NULL OR m.occurred_at >= p_since)
      AND (p_until IS NULL OR m.occurred_at < p_until)
      AND (NOT p_dead_only OR EXISTS (
          SELECT 1 FROM webhook_delivery AS dead
          WHERE dead.message_id = m.id AND dead.subscription_id = p_subscription_id
            AND dead.status = 'dead'
      ))
      AND p_subscription_id IN (
          SELECT neglect_webhook_recipients(
              p_event_type => m.event_type, p_agency_name => m.agency_name
          )
      )
    ORDER BY m.occurred_at, m.id
    LIMIT p_limit
    ON CONFLICT (message_id, subscription_id) DO UPDATE
        SET status = 'pending', attempts = 0, next_attempt_at = excluded.next_attempt_at,
            lease = NULL, finished_at = NULL
        WHERE d.status <> 'pending';
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

CREATE OR REPLACE FUNCTION public.neglect_end_webhook_subscription(
    p_subscription_id uuid, p_status text, p_reason text
) RETURNS void LANGUAGE plpgsql AS $$
-- Stop a subscription: `disabled` (its endpoint answered 410 Gone) or `deleted` (its client
-- deleted it). Its pending deliveries are cancelled; a worker holding one finds it so when it
-- records its attempt.
BEGIN
    UPDATE webhook_subscription
    SET status = p_status, disabled_reason = p_reason, disabled_at = clock_timestamp()
    WHERE id = p_subscription_id AND status = 'active';
    UPDATE webhook_delivery
    SET status = 'cancelled', lease = NULL, finished_at = clock_timestamp()
    WHERE subscription_id = p_subscription_id AND status = 'pending';
END
$$;
