-- Helpers the other regression scripts share.
CREATE SCHEMA regress;
-- Runs a statement and returns its SQLSTATE and message, or 'ok'.
CREATE FUNCTION regress.outcome(query text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE query;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;
