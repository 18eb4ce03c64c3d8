"""Child matching and the referral create as database functions; idempotency_record.resource_id

`neglect_resolve_child` is the one definition of child matching (SPEC 2.1): every create that
names a child calls it. `neglect_create_referral` is `POST /v1/referrals` in one statement and one
round trip: the client check, the idempotency claim, the child, the referral, the audit event and
the re-referral links commit together or not at all. A referral's idempotency record keeps the
referral's id rather than the response: the response is rendered from the referral as created.

`ix_referral_received_at` goes: `ix_referral_received_at_indicators` leads with the same column.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 19:20:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


LOCK_CHILD = """
CREATE FUNCTION neglect_lock_child(
    p_nhs_number text, p_la_child_id text, p_upn text, p_family_name_key text,
    p_date_of_birth date
) RETURNS void LANGUAGE plpgsql AS $$
-- An advisory lock, held until the transaction ends, on every key a child could be matched or
-- created on, taken in one fixed (bytewise) order so that transactions locking overlapping keys
-- cannot deadlock.
DECLARE
    v_keys text[] := '{}';
    v_key text;
BEGIN
    IF p_nhs_number <> '' THEN
        v_keys := v_keys || ('child:nhs:' || p_nhs_number);
    END IF;
    IF p_la_child_id <> '' THEN
        v_keys := v_keys || ('child:la:' || p_la_child_id);
    END IF;
    IF p_upn <> '' THEN
        v_keys := v_keys || ('child:upn:' || p_upn);
    END IF;
    IF p_family_name_key <> '' AND p_date_of_birth IS NOT NULL THEN
        v_keys := v_keys
            || ('child:name:' || p_family_name_key || ':' || to_char(p_date_of_birth, 'YYYY-MM-DD'));
    END IF;
    IF cardinality(v_keys) > 1 THEN
        v_keys := ARRAY(SELECT k FROM unnest(v_keys) AS k ORDER BY k COLLATE "C");
    END IF;
    FOREACH v_key IN ARRAY v_keys LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended(v_key, 0));
    END LOOP;
END
$$
"""

RESOLVE_CHILD = """
CREATE FUNCTION neglect_resolve_child(
    p_nhs_number text, p_la_child_id text, p_upn text, p_given_name text, p_family_name text,
    p_family_name_key text, p_date_of_birth date, p_expected_date_of_birth date, p_sex text,
    p_ethnicity text
) RETURNS uuid LANGUAGE plpgsql AS $$
-- SPEC 2.1: match on the NHS number, then the LA child id, then the UPN, then the normalised
-- family name with the date of birth; otherwise create the child. A match on a weaker key is
-- refused when an identifier that outranks it differs (twins share a name and a birthday, not an
-- NHS number). A matched child learns the identifiers it lacked, unless another child holds them,
-- and the birth of a child first referred unborn; a new child goes without any identifier that
-- another child already holds. The child's advisory locks (`neglect_lock_child`) make concurrent
-- first sightings of one child create it once; the partial unique indexes are the backstop.
#variable_conflict use_column
DECLARE
    v_id uuid;
    v_nhs text;
    v_la text;
    v_upn text;
    v_dob date;
    v_learn_nhs boolean;
    v_learn_la boolean;
    v_learn_upn boolean;
    v_learn_birth boolean;
BEGIN
    p_nhs_number := nullif(p_nhs_number, '');
    p_la_child_id := nullif(p_la_child_id, '');
    p_upn := nullif(p_upn, '');
    p_family_name_key := nullif(p_family_name_key, '');
    PERFORM neglect_lock_child(
        p_nhs_number, p_la_child_id, p_upn, p_family_name_key, p_date_of_birth
    );

    IF p_nhs_number IS NOT NULL THEN
        SELECT id, nhs_number, la_child_id, upn, date_of_birth
        INTO v_id, v_nhs, v_la, v_upn, v_dob
        FROM child WHERE nhs_number = p_nhs_number;
    END IF;
    IF v_id IS NULL AND p_la_child_id IS NOT NULL THEN
        SELECT id, nhs_number, la_child_id, upn, date_of_birth
        INTO v_id, v_nhs, v_la, v_upn, v_dob
        FROM child
        WHERE la_child_id = p_la_child_id
          AND (p_nhs_number IS NULL OR nhs_number IS NULL OR nhs_number = p_nhs_number);
    END IF;
    IF v_id IS NULL AND p_upn IS NOT NULL THEN
        SELECT id, nhs_number, la_child_id, upn, date_of_birth
        INTO v_id, v_nhs, v_la, v_upn, v_dob
        FROM child
        WHERE upn = p_upn
          AND (p_nhs_number IS NULL OR nhs_number IS NULL OR nhs_number = p_nhs_number)
          AND (p_la_child_id IS NULL OR la_child_id IS NULL OR la_child_id = p_la_child_id);
    END IF;
    IF v_id IS NULL AND p_family_name_key IS NOT NULL AND p_date_of_birth IS NOT NULL THEN
        SELECT id, nhs_number, la_child_id, upn, date_of_birth
        INTO v_id, v_nhs, v_la, v_upn, v_dob
        FROM child
        WHERE family_name_key = p_family_name_key
          AND date_of_birth = p_date_of_birth
          AND (p_nhs_number IS NULL OR nhs_number IS NULL OR nhs_number = p_nhs_number)
          AND (p_la_child_id IS NULL OR la_child_id IS NULL OR la_child_id = p_la_child_id)
          AND (p_upn IS NULL OR upn IS NULL OR upn = p_upn)
        ORDER BY created_at, id
        LIMIT 1;
    END IF;

    IF v_id IS NULL THEN
        v_id := gen_random_uuid();
        INSERT INTO child (
            id, nhs_number, la_child_id, upn, given_name, family_name, family_name_key,
            date_of_birth, expected_date_of_birth, sex, ethnicity
        ) VALUES (
            v_id,
            CASE WHEN EXISTS (SELECT 1 FROM child WHERE nhs_number = p_nhs_number)
                THEN NULL ELSE p_nhs_number END,
            CASE WHEN EXISTS (SELECT 1 FROM child WHERE la_child_id = p_la_child_id)
                THEN NULL ELSE p_la_child_id END,
            CASE WHEN EXISTS (SELECT 1 FROM child WHERE upn = p_upn)
                THEN NULL ELSE p_upn END,
            p_given_name, p_family_name, p_family_name_key, p_date_of_birth,
            p_expected_date_of_birth, p_sex, p_ethnicity
        );
        RETURN v_id;
    END IF;

    -- The match holds none of the values it lacks, so any holder is another child.
    v_learn_nhs := v_nhs IS NULL AND p_nhs_number IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM child WHERE nhs_number = p_nhs_number);
    v_learn_la := v_la IS NULL AND p_la_child_id IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM child WHERE la_child_id = p_la_child_id);
    v_learn_upn := v_upn IS NULL AND p_upn IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM child WHERE upn = p_upn);
    v_learn_birth := v_dob IS NULL AND p_date_of_birth IS NOT NULL;
    IF v_learn_nhs OR v_learn_la OR v_learn_upn OR v_learn_birth THEN
        UPDATE child SET
            nhs_number = CASE WHEN v_learn_nhs THEN p_nhs_number ELSE nhs_number END,
            la_child_id = CASE WHEN v_learn_la THEN p_la_child_id ELSE la_child_id END,
            upn = CASE WHEN v_learn_upn THEN p_upn ELSE upn END,
            date_of_birth = CASE WHEN v_learn_birth THEN p_date_of_birth ELSE date_of_birth END,
            sex = CASE WHEN v_learn_birth THEN p_sex ELSE sex END,
            updated_at = now()
        WHERE id = v_id;
    END IF;
    RETURN v_id;
END
$$
"""

CREATE_REFERRAL = """
CREATE FUNCTION neglect_create_referral(
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
) LANGUAGE plpgsql AS $$
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
$$
"""

FUNCTIONS = (LOCK_CHILD, RESOLVE_CHILD, CREATE_REFERRAL)


def upgrade() -> None:
    op.add_column("idempotency_record", sa.Column("resource_id", sa.UUID(), nullable=True))
    op.drop_index("ix_referral_received_at", table_name="referral")
    for function in FUNCTIONS:
        op.execute(function)


def downgrade() -> None:
    op.execute("DROP FUNCTION neglect_create_referral")
    op.execute("DROP FUNCTION neglect_resolve_child")
    op.execute("DROP FUNCTION neglect_lock_child")
    op.create_index("ix_referral_received_at", "referral", ["received_at"], unique=False)
    op.drop_column("idempotency_record", "resource_id")
