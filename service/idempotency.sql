CREATE OR REPLACE FUNCTION public.neglect_claim_key(
    p_client_id text, p_idempotency_key text, p_operation text, p_fingerprint text,
    p_resource_id uuid, p_response_status integer,
    OUT outcome text, OUT resource_id uuid, OUT response_status integer, OUT response_body jsonb
) RETURNS record LANGUAGE plpgsql AS $$
-- Claim an idempotency key for a create (SPEC 3), in the caller's transaction. The claim is an
-- INSERT ... ON CONFLICT DO NOTHING: a concurrent request with the same key waits on the unique
-- index until the first commits or rolls back, then finds its record, so no check-then-insert
-- window exists. A create that makes its resource in this transaction (the referral) claims with
-- the resource's id and status; the others store their answer later (`store_response`).
-- `outcome` is one of:
--   claimed     this request owns the key;
--   replay      the key was used before with this body: replay resource `resource_id`, or the
--               stored `response_status` and `response_body`;
--   key_reused  the key was used with another operation or body;
--   in_flight   the key's first request has not finished;
--   purged      retention deleted the key's record since the INSERT: retry.
DECLARE
    v_stored record;
BEGIN
    INSERT INTO idempotency_record (
        id, client_id, idempotency_key, operation, request_sha256, response_status, resource_id
    ) VALUES (
        gen_random_uuid(), p_client_id, p_idempotency_key, p_operation, p_fingerprint,
        p_response_status, p_resource_id
    )
    ON CONFLICT ON CONSTRAINT uq_idempotency_record_client_key DO NOTHING;
    IF FOUND THEN
        outcome := 'claimed';
        RETURN;
    END IF;
    SELECT r.operation, r.request_sha256, r.response_status, r.response_body, r.resource_id
    INTO v_stored
    FROM idempotency_record AS r
    WHERE r.client_id = p_client_id AND r.idempotency_key = p_idempotency_key;
    IF NOT FOUND THEN
        outcome := 'purged';
    ELSIF v_stored.operation <> p_operation OR v_stored.request_sha256 <> p_fingerprint THEN
        outcome := 'key_reused';
    ELSIF v_stored.resource_id IS NULL AND v_stored.response_body IS NULL THEN
        outcome := 'in_flight';
    ELSE
        outcome := 'replay';
        resource_id := v_stored.resource_id;
        response_status := v_stored.response_status;
        response_body := v_stored.response_body;
    END IF;
END
$$;
