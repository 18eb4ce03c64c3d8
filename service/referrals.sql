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
    OUT referral_agency_rereferral_count integer,
    OUT referral_created_at timestamptz, OUT replay_status integer, OUT replay_body jsonb
) RETURNS record LANGUAGE plpgsql AS $$
-- POST /v1/referrals in one round trip, after the route has checked the token's signature, that
-- it holds `p_scope`, and the body (SPEC 2.2). `outcome` is one of:
--   created                                 the referral_* values describe the new referral;
--   unregistered, wrong_issuer, forbidden   `neglect_check_client`'s answer for `p_scope`;
--   replay, key_reused, in_flight, purged   `neglect_claim_key`'s answer: a replay is of referral
--                                           `referral_id`, or of `replay_status` / `replay_body`
--                                           for a response stored before referrals were claimed
--                                           with their id.
-- Only `created` changes anything. A second referral with this client's external reference
-- raises unique_violation on uq_referral_client_external_reference, undoing the whole statement.
-- Re-referrals are as `service.referrals` describes.
#variable_conflict use_column
DECLARE
    v_client record;
    v_claim record;
    v_child uuid;
    v_received timestamptz;
    v_count integer;
    v_agency_count integer;
    v_event bigint;
    v_relinked integer;
BEGIN
    v_client := neglect_check_client(
        p_client_id => p_client_id, p_issuer => p_issuer, p_default_issuer => p_default_issuer,
        p_required_scopes => ARRAY[p_scope], p_token_scopes => ARRAY[p_scope]
    );
    IF v_client.outcome <> 'authenticated' THEN
        outcome := v_client.outcome;
        RETURN;
    END IF;
    client_agency_type := v_client.agency_type;
    client_agency_name := v_client.agency_name;

    v_claim := neglect_claim_key(
        p_client_id => p_client_id, p_idempotency_key => p_idempotency_key,
        p_operation => p_operation, p_fingerprint => p_fingerprint, p_resource_id => p_id,
        p_response_status => 201
    );
    IF v_claim.outcome <> 'claimed' THEN
        outcome := v_claim.outcome;
        referral_id := v_claim.resource_id;
        replay_status := v_claim.response_status;
        replay_body := v_claim.response_body;
        RETURN;
    END IF;

    v_child := neglect_resolve_child(
        p_nhs_number => p_nhs_number, p_la_child_id => p_la_child_id, p_upn => p_upn,
        p_given_name => p_given_name, p_family_name => p_family_name,
        p_family_name_key => p_family_name_key, p_date_of_birth => p_date_of_birth,
        p_expected_date_of_birth => p_expected_date_of_birth, p_sex => p_sex,
        p_ethnicity => p_ethnicity
    );
    -- Taken after the child's locks, so one child's referrals are received in the order they
    -- are stored and each counts every earlier one.
    v_received := coalesce(p_received_at, clock_timestamp());
    -- The re-referral context twice: the partnership's (the Front Door's to see) and the sending
    -- agency's own history of the child (all a partner may learn of it).
    SELECT counted.rereferral_count, counted.agency_rereferral_count
    INTO v_count, v_agency_count
    FROM neglect_rereferral_counts(
        p_child_id => v_child, p_received_at => v_received,
        p_agency_name => v_client.agency_name, p_referral_id => p_id
    ) AS counted;

    INSERT INTO referral (
        id, client_id, agency_type, agency_name, external_reference, child_id, status, urgent,
        received_at, decision_due_at, referral_source, concern_categories, neglect_forms,
        risk_factors, vulnerabilities, parents_informed, parental_consent, rereferral,
        rereferral_count, agency_rereferral_count, body
    ) VALUES (
        p_id, p_client_id, v_client.agency_type, v_client.agency_name, p_external_reference,
        v_child, 'received', p_urgent, v_received, v_received + p_decision_window,
        p_referral_source, p_concern_categories, p_neglect_forms, p_risk_factors,
        p_vulnerabilities, p_parents_informed, p_parental_consent, v_count > 0, v_count,
        v_agency_count, p_body
    )
    RETURNING created_at INTO referral_created_at;
    -- The Front Door hears of it (webhooks, SPEC 2.7), in this same statement's transaction.
    PERFORM neglect_enqueue_webhook(
        p_event_type => 'referral.received', p_agency_name => v_client.agency_name,
        p_resource_id => p_id, p_status => 'received'
    );
    -- The new referral's previous one, and its successors' when it is back-loaded. A child's only
    -- referral follows none and precedes none: nothing to relink.
    IF EXISTS (SELECT FROM referral WHERE child_id = v_child AND id <> p_id) THEN
        v_relinked := neglect_relink_referrals(p_child_ids => ARRAY[v_child]);
    END IF;
    -- The audit event last: appending it locks the agency's chain head until the commit, so every
    -- other create of this agency waits from here on. Work done before it (the outbox, the
    -- relinking) overlaps theirs; after it, it would lengthen the wait of each one.
    v_event := neglect_record_audit(
        p_client_id => p_client_id, p_agency_type => v_client.agency_type,
        p_agency_name => v_client.agency_name, p_action => 'create',
        p_resource_type => 'referral', p_resource_id => p_id::text, p_child_id => v_child,
        p_request_id => p_request_id, p_access_reason => p_access_reason
    );

    outcome := 'created';
    referral_id := p_id;
    referral_child_id := v_child;
    referral_received_at := v_received;
    referral_decision_due_at := v_received + p_decision_window;
    referral_rereferral_count := v_count;
    referral_agency_rereferral_count := v_agency_count;
END
$$;

CREATE OR REPLACE FUNCTION public.neglect_rereferral_counts(
    p_child_id uuid, p_received_at timestamptz, p_agency_name text, p_referral_id uuid
) RETURNS TABLE (rereferral_count integer, agency_rereferral_count integer)
LANGUAGE sql STABLE AS $$
-- The re-referral rule (DfE C1; SPEC 2.2), its one definition. A referral of child `p_child_id`
-- received at `p_received_at` counts the child's other non-withdrawn referrals received in the
-- 12 months up to and including that moment (`received_at - interval '12 months'`, the same
-- calendar date and time or the end of a shorter month, in the session's time zone, UTC for the
-- service), and, of those, the ones agency `p_agency_name` sent. `p_referral_id` is the referral
-- itself, never counted. `neglect_create_referral` calls it once as it stores a referral (only
-- the referrals stored before it exist then); a bulk load calls it for every loaded referral
-- once they are all stored, from an UPDATE, which gives the same counts when no referral of the
-- load was withdrawn after a later one was received. STABLE and one SELECT, so PostgreSQL
-- inlines it into such a statement as an index probe per referral.
-- Only the child is a condition of the scan; the rest are filters of the counts, so that a plan
-- made while the table is small or empty still reads the child's referrals by its index, never
-- every referral of the last year by the index on `received_at`.
    SELECT (count(*) FILTER (
                WHERE r.status <> 'withdrawn' AND r.received_at <= p_received_at
                  AND r.received_at >= p_received_at - interval '12 months'
            ))::integer,
           (count(*) FILTER (
                WHERE r.status <> 'withdrawn' AND r.received_at <= p_received_at
                  AND r.received_at >= p_received_at - interval '12 months'
                  AND r.agency_name = p_agency_name
            ))::integer
    FROM referral AS r
    WHERE r.child_id = p_child_id AND r.id <> p_referral_id
$$;

CREATE OR REPLACE FUNCTION public.neglect_relink_referrals(p_child_ids uuid[])
RETURNS integer LANGUAGE plpgsql AS $$
-- `referral.previous_received_at` of every referral of these children, withdrawn or not: when
-- the child's latest earlier non-withdrawn referral was received, NULL when none was. Run after
-- a create, a withdrawal and the demo data's bulk load, under the children's advisory locks where
-- others may write. Returns how many referrals changed.
-- One statement reads every referral of the children, child by child through the index on the
-- child (a lateral join cannot become a scan of the whole table, so a plan cached while the table
-- was small stays right as it grows), and updates by its key each referral whose value changes:
-- set-based, so a bulk load relinks hundreds of thousands of children in one pass.
DECLARE
    v_relinked integer;
BEGIN
    UPDATE referral AS target
    SET previous_received_at = linked.previous_received_at
    FROM (SELECT DISTINCT unnest(p_child_ids)) AS child (id)
    CROSS JOIN LATERAL (
        SELECT r.id, r.previous_received_at AS stored,
               max(r.received_at) FILTER (WHERE r.status <> 'withdrawn') OVER (
                   ORDER BY r.received_at
                   RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW EXCLUDE GROUP
               ) AS previous_received_at
        FROM referral AS r
        WHERE r.child_id = child.id
    ) AS linked
    WHERE linked.stored IS DISTINCT FROM linked.previous_received_at
      AND target.id = linked.id;
    GET DIAGNOSTICS v_relinked = ROW_COUNT;
    RETURN v_relinked;
END
$$;
