-- The C++/PostgreSQL border, in both directions. The probes are compiled into the library
-- but not part of the extension's SQL; declare them here.
CREATE SCHEMA border_test;
CREATE FUNCTION border_test.throw_deep(code text) RETURNS void
    AS '$libdir/amebo', 'amebo_selftest_throw_deep' LANGUAGE C STRICT;
CREATE FUNCTION border_test.pg_error_in_cpp(input text) RETURNS integer
    AS '$libdir/amebo', 'amebo_selftest_pg_error_in_cpp' LANGUAGE C STRICT;
CREATE FUNCTION border_test.destroyed() RETURNS integer
    AS '$libdir/amebo', 'amebo_selftest_destroyed' LANGUAGE C STRICT;

-- C++ to PostgreSQL: an amebo::Error thrown four frames deep, with objects alive in each,
-- reaches the client with its SQLSTATE, message, detail and hint.
SELECT border_test.throw_deep('AM999');
SELECT regress.outcome($$SELECT border_test.throw_deep('22012')$$);
DO $$
BEGIN
    PERFORM border_test.throw_deep('22012');
EXCEPTION WHEN division_by_zero THEN
    RAISE NOTICE 'caught as division_by_zero';
END
$$;
-- The four frames' objects were destroyed each time (3 throws so far).
SELECT border_test.destroyed() AS destroyed_after_throws;

-- PostgreSQL to C++: int4in() raising inside a guarded call unwinds the C++ objects of the
-- calling frame (two per call, also when it succeeds) and reaches the client unchanged.
SELECT border_test.pg_error_in_cpp('40');
SELECT border_test.pg_error_in_cpp('forty');
SELECT regress.outcome($$SELECT border_test.pg_error_in_cpp('forty')$$);
SELECT border_test.destroyed() AS destroyed_after_pg_errors;

-- C++ thrown inside a guarded call leaves PostgreSQL's error handling intact: the
-- PostgreSQL errors that follow are still caught and reported.
CREATE FUNCTION border_test.throw_inside_call() RETURNS void
    AS '$libdir/amebo', 'amebo_selftest_throw_inside_call' LANGUAGE C STRICT;
SELECT border_test.throw_inside_call();
SELECT regress.outcome($$SELECT border_test.throw_inside_call()$$);
SELECT border_test.pg_error_in_cpp('still fine?');
SELECT 1 / 0;
SELECT border_test.pg_error_in_cpp('41');

-- The error aborts the transaction cleanly: the append before it is gone, and the session
-- goes on working.
BEGIN;
SELECT amebo.append_event('border-1', 'border.tested', '{}');
SELECT border_test.pg_error_in_cpp('not a number');
COMMIT;
SELECT amebo.stream_version('border-1');
SELECT amebo.append_event('border-1', 'border.tested', '{}');
SELECT count(*) FROM amebo.read_stream('border-1');

DROP SCHEMA border_test CASCADE;
