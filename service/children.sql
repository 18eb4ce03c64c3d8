CREATE OR REPLACE FUNCTION public.neglect_lock_child(
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
$$;

CREATE OR REPLACE FUNCTION public.neglect_resolve_child(
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
$$;
