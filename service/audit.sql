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
