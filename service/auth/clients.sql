CREATE OR REPLACE FUNCTION public.neglect_check_client(
    p_client_id text, p_issuer text, p_default_issuer text, p_required_scopes text[],
    p_token_scopes text[],
    OUT outcome text, OUT agency_type text, OUT agency_name text, OUT granted_scopes text[],
    OUT missing_scopes text[]
) RETURNS record LANGUAGE plpgsql AS $$
-- The registered client behind a verified token (SPEC 2.6), for every authenticated route and
-- inside `neglect_create_referral`. `outcome` is one of:
--   authenticated  agency_type, agency_name and granted_scopes (the token's scopes the client is
--                  allowed) are set;
--   unregistered   no client with this id, or it is disabled;
--   wrong_issuer   the client is registered with another issuer than the token's; one registered
--                  without an issuer is ours, `p_default_issuer`;
--   forbidden      missing_scopes (those of p_required_scopes not granted, in order) is set.
DECLARE
    v_client record;
BEGIN
    SELECT c.agency_type, c.agency_name, c.allowed_scopes, c.issuer, c.enabled INTO v_client
    FROM api_client AS c WHERE c.client_id = p_client_id;
    IF NOT FOUND OR NOT v_client.enabled THEN
        outcome := 'unregistered';
        RETURN;
    END IF;
    IF coalesce(v_client.issuer, p_default_issuer) IS DISTINCT FROM p_issuer THEN
        outcome := 'wrong_issuer';
        RETURN;
    END IF;
    -- The usual case, a token holding only allowed scopes and all the required ones, is decided
    -- by array containment alone, without a query.
    IF p_token_scopes <@ v_client.allowed_scopes THEN
        granted_scopes := p_token_scopes;
    ELSE
        granted_scopes := ARRAY(
            SELECT token.scope FROM unnest(p_token_scopes) AS token (scope)
            WHERE token.scope = ANY (v_client.allowed_scopes)
        );
    END IF;
    IF NOT p_required_scopes <@ granted_scopes THEN
        missing_scopes := ARRAY(
            SELECT required.scope
            FROM unnest(p_required_scopes) WITH ORDINALITY AS required (scope, position)
            WHERE NOT required.scope = ANY (granted_scopes)
            ORDER BY required.position
        );
        outcome := 'forbidden';
        RETURN;
    END IF;
    outcome := 'authenticated';
    agency_type := v_client.agency_type;
    agency_name := v_client.agency_name;
END
$$;
