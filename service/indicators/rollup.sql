CREATE OR REPLACE FUNCTION public.neglect_note_indicator_change() RETURNS trigger
LANGUAGE plpgsql AS $$
-- A statement trigger on every table an indicator reads (`service.indicators.rollup`): notes the
-- writing transaction in `indicator_change` once, so that the rollup knows its cells may be out
-- of date. The flag is transaction-local, so every later statement of the transaction costs one
-- setting read; on a rollback, of the transaction or of the savepoint that noted it, the note and
-- the flag go with the write.
BEGIN
    IF current_setting('neglect.indicator_change_noted', true) IS DISTINCT FROM 'on' THEN
        INSERT INTO indicator_change (xid) VALUES (pg_current_xact_id()::text::bigint);
        PERFORM set_config('neglect.indicator_change_noted', 'on', true);
    END IF;
    RETURN NULL;
END
$$;
