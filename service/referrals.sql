CREATE OR REPLACE FUNCTION public.neglect_create_referral(
    p_client_id text, p_issuer text, p_default_issuer text, p_scope text,
    p_idempotency_key text, p_operation text, p_fingerprint text,
    p_nhs_number text, p_la_child_id text, p_upn text, p_given_name text, p_family_name text,
    p_family_name_key text, p_date_of_birth date, p_expected_date_of_birth date, p_sex text,
    p_ethnicity text,
    p_id uuid, p_external_reference text, p_urgent boolean, p_received_at timestamptz,
    p_decision_window interval, p_referral_source text, p_concern_categories text[],
    p_neglect_forms text[], p_risk_factors text[], p_vulnerabilities text[],
    p_parents_informed boolean, p_parental_consent text, p_body jsonb, p_request_id text,
    p_access_reason text,
    OUT outcome text, OUT client_agency_type text, OUT client_agency_name text,
    OUT referral_id uuid, OUT referral_child_id uuid, OUT referral_received_at timestamptz,
    OUT referral_decision_due_at timestamptz, OUT referral_rereferral_count integer,
    OUT referral_created_at timestamptz, OUT replay_status integer, OUT replay_body jsonb
) RETURNS record LANGUAGE plpgsql AS $$
-- POST /v1/referrals after the token's signature and the body are checked (SPEC 2.2). The
-- client check is `api.deps.authenticate`'s, made here to save its round trip: keep them alike.
-- `outcome` is one of:
--   created          the referral_* values describe the new referral;
--   unauthenticated  no enabled client with this id registered with this issuer;
--   forbidden        the client may not hold `p_scope`;
--   replay           the key was used before with this body: replay referral `referral_id`, or
--                    `replay_status` / `replay_body` for a response stored before this function;
--   key_reused       the key was used with another body;
--   in_flight        the key's first request has not finished.
-- Only `created` changes anything. A second referral with this client's external reference
-- raises unique_violation on uq_referral_client_external_reference, undoing the whole statement.
-- Re-referrals and `previous_received_at` are as `service.referrals` describes.
#variable_conflict use_column
DECLARE
    v_client record;
    v_stored record;
    v_child uuid;
    v_received timestamptz;
    v_count integer;
    v_previous timestamptz;
    v_created timestamptz;
BEGIN
    SELECT agency_type, agency_name, allowed_scopes, issuer, enabled INTO v_client
    FROM api_client WHERE client_id = p_client_id;
    IF NOT FOUND OR NOT v_client.enabled
            OR coalesce(v_client.issuer, p_default_issuer) IS DISTINCT FROM p_issuer THEN
        outcome := 'unauthenticated';
        RETURN;
    END IF;
    IF NOT p_scope = ANY (v_client.allowed_scopes) THEN
        outcome := 'forbidden';
        RETURN;
    END IF;
    client_agency_type := v_client.agency_type;
    client_agency_name := v_client.agency_name;

    -- A concurrent request with this key waits here until the first commits or rolls back.
    INSERT INTO idempotency_record (
        id, client_id, idempotency_key, operation, request_sha256, response_status, resource_id
    ) VALUES (
        gen_random_uuid(), p_client_id, p_idempotency_key, p_operation, p_fingerprint, 201, p_id
    )
    ON CONFLICT ON CONSTRAINT uq_idempotency_record_client_key DO NOTHING;
    IF NOT FOUND THEN
        SELECT operation, request_sha256, response_status, response_body, resource_id
        INTO v_stored
        FROM idempotency_record
        WHERE client_id = p_client_id AND idempotency_key = p_idempotency_key;
        IF NOT FOUND THEN
            outcome := 'in_flight';  -- purged by retention since the INSERT: retry
        ELSIF v_stored.operation <> p_operation OR v_stored.request_sha256 <> p_fingerprint THEN
            outcome := 'key_reused';
        ELSIF v_stored.resource_id IS NULL AND v_stored.response_body IS NULL THEN
            outcome := 'in_flight';
        ELSE
            outcome := 'replay';
            referral_id := v_stored.resource_id;
            replay_status := v_stored.response_status;
            replay_body := v_stored.response_body;
        END IF;
        RETURN;
    END IF;

    v_child := neglect_resolve_child(
        p_nhs_number, p_la_child_id, p_upn, p_given_name, p_family_name, p_family_name_key,
        p_date_of_birth, p_expected_date_of_birth, p_sex, p_ethnicity
    );
    -- Taken after the child's locks, so one child's referrals are received in the order they
    -- are stored and each counts every earlier one.
    v_received := coalesce(p_received_at, clock_timestamp());
    SELECT count(*) FILTER (WHERE received_at >= v_received - interval '12 months'),
           max(received_at) FILTER (WHERE received_at < v_received)
    INTO v_count, v_previous
    FROM referral
    WHERE child_id = v_child AND status <> 'withdrawn' AND received_at <= v_received;

    -- One statement: the referral, its audit event, and the child's next referrals relinked
    -- when this one is back-loaded.
    WITH inserted AS (
        INSERT INTO referral (
            id, client_id, agency_type, agency_name, external_reference, child_id, status, urgent,
            received_at, decision_due_at, referral_source, concern_categories, neglect_forms,
            risk_factors, vulnerabilities, parents_informed, parental_consent, rereferral,
            rereferral_count, previous_received_at, body
        ) VALUES (
            p_id, p_client_id, v_client.agency_type, v_client.agency_name, p_external_reference,
            v_child, 'received', p_urgent, v_received, v_received + p_decision_window,
            p_referral_source, p_concern_categories, p_neglect_forms, p_risk_factors,
            p_vulnerabilities, p_parents_informed, p_parental_consent, v_count > 0, v_count,
            v_previous, p_body
        )
        RETURNING created_at
    ), audited AS (
        INSERT INTO audit_event (
            client_id, agency_type, agency_name, action, resource_type, resource_id, child_id,
            request_id, access_reason
        ) VALUES (
            p_client_id, v_client.agency_type, v_client.agency_name, 'create', 'referral',
            p_id::text, v_child, p_request_id, p_access_reason
        )
    ), relinked AS (
        UPDATE referral SET previous_received_at = v_received
        WHERE child_id = v_child
          AND status <> 'withdrawn'
          AND received_at > v_received
          AND (previous_received_at IS NULL OR previous_received_at < v_received)
    )
    SELECT created_at INTO v_created FROM inserted;

    outcome := 'created';
    referral_id := p_id;
    referral_child_id := v_child;
    referral_received_at := v_received;
    referral_decision_due_at := v_received + p_decision_window;
    referral_rereferral_count := v_count;
    referral_created_at := v_created;
END
$$;
