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
$$;

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
$$;

CREATE OR REPLACE FUNCTION public.audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_event is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE OR REPLACE FUNCTION public.neglect_record_audit(
    p_client_id text, p_agency_type text, p_agency_name text, p_action text,
    p_resource_type text, p_resource_id text, p_child_id uuid, p_request_id text,
    p_access_reason text, p_denied_reason text DEFAULT NULL
) RETURNS bigint LANGUAGE plpgsql AS $$
-- One event of the audit trail, in the caller's transaction: it lands with the change it
-- records or not at all. Every create, read, list and export of personal data writes one, and
-- every refused access a `denied` one with its reason. Returns the event's id.
DECLARE
    v_id bigint;
BEGIN
    INSERT INTO audit_event (
        client_id, agency_type, agency_name, action, resource_type, resource_id, child_id,
        request_id, access_reason, denied_reason
    ) VALUES (
        p_client_id, p_agency_type, p_agency_name, p_action, p_resource_type, p_resource_id,
        p_child_id, p_request_id, p_access_reason, p_denied_reason
    )
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;
