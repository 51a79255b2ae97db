-- The API processes' document caches hear of every change the projector commits through the
-- NOTIFY it issues in its transactions (projections/invalidation.py). Changes made by hand do not
-- go through it: a TRUNCATE or DELETE of the read tables (an operator's purge, a test resetting
-- them) tells every cache to empty itself, in the same transaction. An UPDATE by hand must be
-- followed by `SELECT pg_notify('orderview_cache', '{}')` (or a restart of the API).
-- OR REPLACE: a rebuild replays this file into its own schema (the function exists by then).
CREATE OR REPLACE FUNCTION ${service_schema}.flush_document_caches() RETURNS trigger
LANGUAGE plpgsql AS $$$$  -- (a doubled dollar sign here is one once placeholders are filled in)
BEGIN
    PERFORM pg_notify('orderview_cache', '{}');
    RETURN NULL;
END
$$$$;
CREATE TRIGGER flush_document_caches AFTER TRUNCATE OR DELETE ON ${orders}
    FOR EACH STATEMENT EXECUTE FUNCTION ${service_schema}.flush_document_caches();
CREATE TRIGGER flush_document_caches AFTER TRUNCATE OR DELETE ON ${participants}
    FOR EACH STATEMENT EXECUTE FUNCTION ${service_schema}.flush_document_caches();
