CREATE OR REPLACE FUNCTION public.neglect_lock_children(
    p_nhs_numbers text[], p_la_child_ids text[], p_upns text[], p_family_name_keys text[],
    p_dates_of_birth date[]
) RETURNS void LANGUAGE plpgsql AS $$
-- An advisory lock, held until the transaction ends, on every key the children described by the
-- arrays (item i of each is child i) could be matched or created on: 'child:nhs:<NHS number>',
-- 'child:la:<LA child id>', 'child:upn:<UPN>' and 'child:name:<family name key>:<YYYY-MM-DD>',
-- an empty or NULL value being no key. Each key is locked once, all of them in one fixed
-- (bytewise) order, so that transactions locking overlapping keys cannot deadlock, whether they
-- lock one child (`neglect_lock_child`) or a batch.
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(keys.key, 0))
    FROM (
        SELECT DISTINCT key.value COLLATE "C" AS key
        FROM unnest(p_nhs_numbers, p_la_child_ids, p_upns, p_family_name_keys, p_dates_of_birth)
            AS given (nhs_number, la_child_id, upn, family_name_key, date_of_birth)
        CROSS JOIN LATERAL (VALUES
            ('child:nhs:' || nullif(given.nhs_number, '')),
            ('child:la:' || nullif(given.la_child_id, '')),
            ('child:upn:' || nullif(given.upn, '')),
            ('child:name:' || nullif(given.family_name_key, '') || ':'
                || to_char(given.date_of_birth, 'YYYY-MM-DD'))
        ) AS key (value)
        WHERE key.value IS NOT NULL
        ORDER BY 1
    ) AS keys;
END
$$;

CREATE OR REPLACE FUNCTION public.neglect_lock_child(
    p_nhs_number text, p_la_child_id text, p_upn text, p_family_name_key text,
    p_date_of_birth date
) RETURNS void LANGUAGE plpgsql AS $$
-- The advisory locks of one child: `neglect_lock_children` with one item, so that a child's
-- keys, and the order they are locked in, have one definition for the API and the census import.
BEGIN
    PERFORM neglect_lock_children(
        ARRAY[p_nhs_number], ARRAY[p_la_child_id], ARRAY[p_upn], ARRAY[p_family_name_key],
        ARRAY[p_date_of_birth]
    );
END
$$;

CREATE OR REPLACE FUNCTION public.neglect_resolve_children(
    p_nhs_numbers text[], p_la_child_ids text[], p_upns text[], p_given_names text[],
    p_family_names text[], p_family_name_keys text[], p_dates_of_birth date[],
    p_expected_dates_of_birth date[], p_sexes text[], p_ethnicities text[]
) RETURNS TABLE (item integer, child_id uuid) LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
-- SPEC 2.1 for a batch (the census import): `neglect_resolve_child` for each item in item order,
-- in fewer statements. Both find the child holding each identifier sent and take the match from
-- `neglect_child_match`, the rule's one definition; a match learns, and a new child is created,
-- by the same expressions in both. tests/service/test_child_matching_batch.py checks, over
-- random batches sharing identifiers every way, that the two give the same children. Each
-- item's single call stays the API's path (a referral, an event): this statement's start-up cost
-- one child more than the whole single call. Empty strings are no value.
--
-- Item i of each array describes child i; one row (item, child_id) per item, in no set order.
-- The result is the items resolved one at a time in item order (each seeing what the earlier
-- ones created or taught), which is how the items are resolved where they interact (by
-- `neglect_resolve_child` itself, after the others): an item
-- sharing an identifier with another item, or any of whose identifiers' holders is a holder of
-- another item's, or every item of a batch where one has a family name and birth to match on.
-- The other items cannot see each other's effects (each reads and writes only the holders of
-- its own identifiers and the child it creates), so they are resolved together, in one statement,
-- and the interacting ones after them, one by one.
--
-- Concurrency: every item's advisory locks (`neglect_lock_children`) are taken first, so
-- concurrent first sightings of one child create it once; the partial unique indexes are the
-- backstop. The lookups run in statements after the locks, so they see what a transaction that
-- held the locks before committed.
--
-- Generic plans always (the SET clauses): the statements look rows up by key, and a plan for one
-- item, made afresh for each call as the default `auto` would, costs more than the call. A
-- generic plan is made once a session, so it must stay right however `child` grows after it:
-- every look-up of `child` is a subquery fenced with `OFFSET 0`, one probe per item, and
-- `enable_seqscan = off` makes each probe an index scan. Without the fences, a plan made while
-- the table was small (a session's first batch of a first import) hashed the whole table four
-- times a call, 60 ms a batch of 1,000 at 90,000 children instead of about 20; without the
-- setting, a plan made after `child` was analysed small scanned it whole for every item.
#variable_conflict use_column
DECLARE
    v_count integer := coalesce(cardinality(p_la_child_ids), 0);
    v_items integer[];
    v_ids uuid[];
    v_apart integer[];
    v_item integer;
    v_by_name boolean;
BEGIN
    IF ARRAY[
        cardinality(p_nhs_numbers), cardinality(p_upns), cardinality(p_given_names),
        cardinality(p_family_names), cardinality(p_family_name_keys),
        cardinality(p_dates_of_birth), cardinality(p_expected_dates_of_birth),
        cardinality(p_sexes), cardinality(p_ethnicities)
    ] <> array_fill(v_count, ARRAY[9]) THEN
        RAISE EXCEPTION 'neglect_resolve_children: the arrays differ in length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_count = 0 THEN
        RETURN;
    END IF;
    PERFORM neglect_lock_children(
        p_nhs_numbers, p_la_child_ids, p_upns, p_family_name_keys, p_dates_of_birth
    );

    -- A batch matching on name and birth is resolved one item at a time (see above).
    v_by_name := v_count > 1 AND EXISTS (
        SELECT FROM unnest(p_family_name_keys, p_dates_of_birth) AS given (key, born)
        WHERE given.key <> '' AND given.born IS NOT NULL
    );
    WITH held AS MATERIALIZED (
        -- Each item, and the child holding each identifier it sends, if any (one at most: the
        -- unique indexes).
        SELECT g.item::integer AS item, g.nhs_number, g.la_child_id, g.upn, g.given_name,
               g.family_name, g.family_name_key, g.date_of_birth, g.expected_date_of_birth,
               g.sex, g.ethnicity,
               nhs.id AS nhs_holder, la.id AS la_holder, la.nhs_number AS la_holder_nhs,
               upn.id AS upn_holder, upn.nhs_number AS upn_holder_nhs,
               upn.la_child_id AS upn_holder_la
        FROM (
            SELECT nullif(u.nhs_number, '') AS nhs_number,
                   nullif(u.la_child_id, '') AS la_child_id, nullif(u.upn, '') AS upn,
                   u.given_name, u.family_name,
                   nullif(u.family_name_key, '') AS family_name_key, u.date_of_birth,
                   u.expected_date_of_birth, u.sex, u.ethnicity, u.item
            FROM unnest(
                p_nhs_numbers, p_la_child_ids, p_upns, p_given_names, p_family_names,
                p_family_name_keys, p_dates_of_birth, p_expected_dates_of_birth, p_sexes,
                p_ethnicities
            ) WITH ORDINALITY AS u (
                nhs_number, la_child_id, upn, given_name, family_name, family_name_key,
                date_of_birth, expected_date_of_birth, sex, ethnicity, item
            )
        ) AS g
        LEFT JOIN LATERAL (
            SELECT c.id FROM child AS c WHERE c.nhs_number = g.nhs_number OFFSET 0
        ) AS nhs ON true
        LEFT JOIN LATERAL (
            SELECT c.id, c.nhs_number FROM child AS c WHERE c.la_child_id = g.la_child_id
            OFFSET 0
        ) AS la ON true
        LEFT JOIN LATERAL (
            SELECT c.id, c.nhs_number, c.la_child_id FROM child AS c WHERE c.upn = g.upn
            OFFSET 0
        ) AS upn ON true
    ),
    -- What two or more items share: an identifier, or a child holding one of theirs.
    shared AS (
        SELECT key.value
        FROM held AS h
        CROSS JOIN LATERAL unnest(ARRAY[
            'nhs:' || h.nhs_number, 'la:' || h.la_child_id, 'upn:' || h.upn,
            'holder:' || h.nhs_holder, 'holder:' || h.la_holder, 'holder:' || h.upn_holder
        ]) AS key (value)
        WHERE key.value IS NOT NULL
        GROUP BY key.value
        HAVING count(DISTINCT h.item) > 1
    ),
    judged AS MATERIALIZED (
        SELECT h.*, found.id AS match_id, found.nhs_number AS match_nhs,
               found.la_child_id AS match_la, found.upn AS match_upn,
               found.date_of_birth AS match_birth,
               CASE WHEN found.id IS NULL THEN gen_random_uuid() END AS new_id,
               v_by_name OR (v_count > 1 AND ARRAY[
                   'nhs:' || h.nhs_number, 'la:' || h.la_child_id, 'upn:' || h.upn,
                   'holder:' || h.nhs_holder, 'holder:' || h.la_holder, 'holder:' || h.upn_holder
               ] && (SELECT coalesce(array_agg(s.value), '{}') FROM shared AS s)) AS apart
        FROM held AS h
        LEFT JOIN LATERAL (
            SELECT m.id, m.nhs_number, m.la_child_id, m.upn, m.date_of_birth
            FROM child AS m
            WHERE m.id = neglect_child_match(
                h.nhs_number, h.la_child_id, h.upn, h.family_name_key, h.date_of_birth,
                h.nhs_holder, h.la_holder, h.la_holder_nhs,
                h.upn_holder, h.upn_holder_nhs, h.upn_holder_la
            )
            OFFSET 0
        ) AS found ON true
    ),
    created AS (
        INSERT INTO child (
            id, nhs_number, la_child_id, upn, given_name, family_name, family_name_key,
            date_of_birth, expected_date_of_birth, sex, ethnicity
        )
        SELECT j.new_id,
               CASE WHEN j.nhs_holder IS NULL THEN j.nhs_number END,
               CASE WHEN j.la_holder IS NULL THEN j.la_child_id END,
               CASE WHEN j.upn_holder IS NULL THEN j.upn END,
               j.given_name, j.family_name, j.family_name_key, j.date_of_birth,
               j.expected_date_of_birth, j.sex, j.ethnicity
        FROM judged AS j
        WHERE j.match_id IS NULL AND NOT j.apart
    ),
    -- A match learns what it lacks unless another child holds it (the match holds none of the
    -- values it lacks, so any holder is another child), and the birth of a child first
    -- referred unborn.
    learned AS (
        UPDATE child AS c SET
            nhs_number = coalesce(c.nhs_number, CASE WHEN j.nhs_holder IS NULL
                THEN j.nhs_number END),
            la_child_id = coalesce(c.la_child_id, CASE WHEN j.la_holder IS NULL
                THEN j.la_child_id END),
            upn = coalesce(c.upn, CASE WHEN j.upn_holder IS NULL THEN j.upn END),
            date_of_birth = coalesce(c.date_of_birth, j.date_of_birth),
            sex = CASE WHEN c.date_of_birth IS NULL AND j.date_of_birth IS NOT NULL
                THEN j.sex ELSE c.sex END,
            updated_at = now()
        FROM judged AS j
        WHERE c.id = j.match_id AND NOT j.apart
          AND (j.match_nhs IS NULL AND j.nhs_number IS NOT NULL AND j.nhs_holder IS NULL
               OR j.match_la IS NULL AND j.la_child_id IS NOT NULL AND j.la_holder IS NULL
               OR j.match_upn IS NULL AND j.upn IS NOT NULL AND j.upn_holder IS NULL
               OR j.match_birth IS NULL AND j.date_of_birth IS NOT NULL)
    )
    SELECT array_agg(j.item) FILTER (WHERE NOT j.apart),
           array_agg(coalesce(j.match_id, j.new_id)) FILTER (WHERE NOT j.apart),
           array_agg(j.item ORDER BY j.item) FILTER (WHERE j.apart)
    INTO v_items, v_ids, v_apart
    FROM judged AS j;

    IF coalesce(cardinality(v_items), 0) + coalesce(cardinality(v_apart), 0) <> v_count THEN
        RAISE EXCEPTION 'neglect_resolve_children: an item neither resolved nor set apart'
            USING ERRCODE = 'internal_error';
    END IF;
    RETURN QUERY SELECT resolved.item, resolved.child_id
        FROM unnest(v_items, v_ids) AS resolved (item, child_id);
    FOREACH v_item IN ARRAY coalesce(v_apart, '{}') LOOP
        item := v_item;
        child_id := neglect_resolve_child(
            p_nhs_number => p_nhs_numbers[v_item], p_la_child_id => p_la_child_ids[v_item],
            p_upn => p_upns[v_item], p_given_name => p_given_names[v_item],
            p_family_name => p_family_names[v_item],
            p_family_name_key => p_family_name_keys[v_item],
            p_date_of_birth => p_dates_of_birth[v_item],
            p_expected_date_of_birth => p_expected_dates_of_birth[v_item],
            p_sex => p_sexes[v_item], p_ethnicity => p_ethnicities[v_item]
        );
        RETURN NEXT;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION public.neglect_resolve_child(
    p_nhs_number text, p_la_child_id text, p_upn text, p_given_name text, p_family_name text,
    p_family_name_key text, p_date_of_birth date, p_expected_date_of_birth date, p_sex text,
    p_ethnicity text
) RETURNS uuid LANGUAGE plpgsql AS $$
-- SPEC 2.1 for one child (the API's creates and events): the child holding each identifier sent,
-- if any, then the match by `neglect_child_match`, the rule's one definition. A match learns the
-- identifiers it lacked, unless another child holds them, and the birth of a child first
-- referred unborn; a new child goes without any identifier that another child already holds.
-- `neglect_resolve_children` does the same for a batch, set-based, with the same expressions.
-- The child's advisory locks (`neglect_lock_child`) make concurrent first sightings of one child
-- create it once; the partial unique indexes are the backstop.
#variable_conflict use_column
DECLARE
    v_id uuid;
    v_nhs_holder uuid;
    v_la_holder uuid;
    v_la_holder_nhs text;
    v_upn_holder uuid;
    v_upn_holder_nhs text;
    v_upn_holder_la text;
BEGIN
    p_nhs_number := nullif(p_nhs_number, '');
    p_la_child_id := nullif(p_la_child_id, '');
    p_upn := nullif(p_upn, '');
    p_family_name_key := nullif(p_family_name_key, '');
    PERFORM neglect_lock_child(
        p_nhs_number, p_la_child_id, p_upn, p_family_name_key, p_date_of_birth
    );

    IF p_nhs_number IS NOT NULL THEN
        SELECT id INTO v_nhs_holder FROM child WHERE nhs_number = p_nhs_number;
    END IF;
    IF p_la_child_id IS NOT NULL THEN
        SELECT id, nhs_number INTO v_la_holder, v_la_holder_nhs
        FROM child WHERE la_child_id = p_la_child_id;
    END IF;
    IF p_upn IS NOT NULL THEN
        SELECT id, nhs_number, la_child_id INTO v_upn_holder, v_upn_holder_nhs, v_upn_holder_la
        FROM child WHERE upn = p_upn;
    END IF;
    v_id := neglect_child_match(
        p_nhs_number, p_la_child_id, p_upn, p_family_name_key, p_date_of_birth,
        v_nhs_holder, v_la_holder, v_la_holder_nhs, v_upn_holder, v_upn_holder_nhs,
        v_upn_holder_la
    );

    IF v_id IS NULL THEN
        v_id := gen_random_uuid();
        INSERT INTO child (
            id, nhs_number, la_child_id, upn, given_name, family_name, family_name_key,
            date_of_birth, expected_date_of_birth, sex, ethnicity
        ) VALUES (
            v_id,
            CASE WHEN v_nhs_holder IS NULL THEN p_nhs_number END,
            CASE WHEN v_la_holder IS NULL THEN p_la_child_id END,
            CASE WHEN v_upn_holder IS NULL THEN p_upn END,
            p_given_name, p_family_name, p_family_name_key, p_date_of_birth,
            p_expected_date_of_birth, p_sex, p_ethnicity
        );
        RETURN v_id;
    END IF;

    -- The match holds none of the values it lacks, so any holder is another child.
    UPDATE child AS c SET
        nhs_number = coalesce(c.nhs_number, CASE WHEN v_nhs_holder IS NULL
            THEN p_nhs_number END),
        la_child_id = coalesce(c.la_child_id, CASE WHEN v_la_holder IS NULL
            THEN p_la_child_id END),
        upn = coalesce(c.upn, CASE WHEN v_upn_holder IS NULL THEN p_upn END),
        date_of_birth = coalesce(c.date_of_birth, p_date_of_birth),
        sex = CASE WHEN c.date_of_birth IS NULL AND p_date_of_birth IS NOT NULL
            THEN p_sex ELSE c.sex END,
        updated_at = now()
    WHERE c.id = v_id
      AND (c.nhs_number IS NULL AND p_nhs_number IS NOT NULL AND v_nhs_holder IS NULL
           OR c.la_child_id IS NULL AND p_la_child_id IS NOT NULL AND v_la_holder IS NULL
           OR c.upn IS NULL AND p_upn IS NOT NULL AND v_upn_holder IS NULL
           OR c.date_of_birth IS NULL AND p_date_of_birth IS NOT NULL);
    RETURN v_id;
END
$$;

CREATE OR REPLACE FUNCTION public.neglect_child_by_name(
    p_family_name_key text, p_date_of_birth date, p_nhs_number text, p_la_child_id text,
    p_upn text
) RETURNS uuid LANGUAGE plpgsql STABLE AS $$
-- The last step of SPEC 2.1's match (`neglect_child_match`): the earliest created child with
-- this normalised family name and date of birth whose identifiers do not contradict those sent
-- (NULL: not sent). PL/pgSQL, so that its plan is kept for the session.
BEGIN
    RETURN (
        SELECT c.id FROM child AS c
        WHERE c.family_name_key = p_family_name_key
          AND c.date_of_birth = p_date_of_birth
          AND (p_nhs_number IS NULL OR c.nhs_number IS NULL OR c.nhs_number = p_nhs_number)
          AND (p_la_child_id IS NULL OR c.la_child_id IS NULL OR c.la_child_id = p_la_child_id)
          AND (p_upn IS NULL OR c.upn IS NULL OR c.upn = p_upn)
        ORDER BY c.created_at, c.id
        LIMIT 1
    );
END
$$;

CREATE OR REPLACE FUNCTION public.neglect_child_match(
    p_nhs_number text, p_la_child_id text, p_upn text, p_family_name_key text,
    p_date_of_birth date, p_nhs_holder uuid, p_la_holder uuid, p_la_holder_nhs text,
    p_upn_holder uuid, p_upn_holder_nhs text, p_upn_holder_la text
) RETURNS uuid LANGUAGE sql STABLE AS $$
-- SPEC 2.1's match, its one definition. Which stored child a child described by these
-- identifiers (NULL when not sent, never an empty string) is, given the child holding each
-- identifier (`p_*_holder`, NULL when none does; the unique indexes allow one at most) and that
-- holder's stronger identifiers. The NHS number first, then the LA child id, then the UPN, then
-- the normalised family name with the date of birth (`neglect_child_by_name`); a match on a
-- weaker key is refused when an identifier that outranks it differs (twins share a name and a
-- birthday, not an NHS number). NULL means a new child. One expression and no table, so
-- PostgreSQL inlines it into the statements that call it (`neglect_resolve_child`,
-- `neglect_resolve_children`); the look-up by name runs only when no identifier matched. No
-- colon may appear in this text (alembic_utils escapes an SQL function's colons twice).
SELECT CASE
    WHEN p_nhs_holder IS NOT NULL THEN p_nhs_holder
    WHEN p_la_holder IS NOT NULL
        AND (p_nhs_number IS NULL OR p_la_holder_nhs IS NULL OR p_la_holder_nhs = p_nhs_number)
        THEN p_la_holder
    WHEN p_upn_holder IS NOT NULL
        AND (p_nhs_number IS NULL OR p_upn_holder_nhs IS NULL
             OR p_upn_holder_nhs = p_nhs_number)
        AND (p_la_child_id IS NULL OR p_upn_holder_la IS NULL
             OR p_upn_holder_la = p_la_child_id)
        THEN p_upn_holder
    WHEN p_family_name_key IS NOT NULL AND p_date_of_birth IS NOT NULL THEN
        neglect_child_by_name(
            p_family_name_key, p_date_of_birth, p_nhs_number, p_la_child_id, p_upn
        )
END
$$;
