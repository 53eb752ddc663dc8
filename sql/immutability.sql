-- Events are immutable, and reads need the right to read them.
SELECT amebo.append_event('fixed-1', 'fixed.created', '{"a": 1}');

-- Not even the owner may change them.
UPDATE amebo.events SET payload = '{"a": 2}' WHERE stream = 'fixed-1';
DELETE FROM amebo.events WHERE stream = 'fixed-1';
TRUNCATE amebo.events;
SELECT payload FROM amebo.events WHERE stream = 'fixed-1';

-- An ordinary role has no privilege on the table; the read functions, which scan it
-- directly, check SELECT on it themselves.
CREATE ROLE amebo_regress_reader;
GRANT USAGE ON SCHEMA amebo TO amebo_regress_reader;
GRANT EXECUTE ON FUNCTION amebo.read_all(bigint, integer, text[], timestamptz, jsonb),
    amebo.stream_version(text), amebo.read_stream(text, bigint, integer) TO amebo_regress_reader;
SET ROLE amebo_regress_reader;
UPDATE amebo.events SET payload = '{}';
DELETE FROM amebo.events;
SELECT count(*) FROM amebo.read_all();
SELECT amebo.stream_version('fixed-1');
SELECT count(*) FROM amebo.read_stream('fixed-1');
RESET ROLE;
GRANT SELECT ON amebo.events TO amebo_regress_reader;
SET ROLE amebo_regress_reader;
SELECT count(*) FROM amebo.read_all(payload_filter => '{"a": 1}');
SELECT amebo.stream_version('fixed-1');
UPDATE amebo.events SET payload = '{}';
RESET ROLE;
REVOKE ALL ON amebo.events FROM amebo_regress_reader;
REVOKE ALL ON FUNCTION amebo.read_all(bigint, integer, text[], timestamptz, jsonb),
    amebo.stream_version(text), amebo.read_stream(text, bigint, integer) FROM amebo_regress_reader;
REVOKE ALL ON SCHEMA amebo FROM amebo_regress_reader;
DROP ROLE amebo_regress_reader;

-- Two-phase commit of an append is refused: a prepared transaction would hold read_all back
-- with no session to finish it.
BEGIN;
SELECT amebo.append_event('fixed-2', 'fixed.created', '{}');
PREPARE TRANSACTION 'amebo_regress';
SELECT amebo.stream_version('fixed-2');
