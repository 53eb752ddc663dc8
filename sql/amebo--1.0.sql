-- amebo 1.0: the event store core.
\echo Use "CREATE EXTENSION amebo" to load this file. \quit

-- Global order of all events. No CACHE: read_all's horizon relies on positions being handed
-- out in sequence order (see src/store/inflight.hpp).
CREATE SEQUENCE amebo.events_position_seq AS bigint NO CYCLE;

-- Every event, immutable once appended. Written only by amebo.append_event(s).
CREATE TABLE amebo.events (
    position    bigint      NOT NULL,
    event_id    uuid        NOT NULL,
    stream      text        NOT NULL,
    version     bigint      NOT NULL,
    action      text        NOT NULL,
    payload     jsonb       NOT NULL,
    metadata    jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL,
    -- read_all pages by position.
    CONSTRAINT events_pkey PRIMARY KEY (position),
    -- read_stream, stream_version and the append path's head lookup; also the guard that
    -- no stream ever holds two events with one version.
    CONSTRAINT events_stream_version_key UNIQUE (stream, version),
    -- Idempotent retries look events up by id.
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);
ALTER SEQUENCE amebo.events_position_seq OWNED BY amebo.events.position;

COMMENT ON TABLE amebo.events IS 'amebo: every appended event, in global position order';

SELECT pg_catalog.pg_extension_config_dump('amebo.events', '');
SELECT pg_catalog.pg_extension_config_dump('amebo.events_position_seq', '');

-- Refuses UPDATE, DELETE and TRUNCATE of events, for every role including the owner.
CREATE FUNCTION amebo.refuse_event_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    RAISE EXCEPTION 'events are immutable'
        USING ERRCODE = 'AM003',
              DETAIL = format('%s on amebo.events is not allowed.', TG_OP),
              HINT = 'Append a compensating event instead.';
END
$$;

CREATE TRIGGER events_immutable
    BEFORE UPDATE OR DELETE OR TRUNCATE ON amebo.events
    FOR EACH STATEMENT EXECUTE FUNCTION amebo.refuse_event_change();

CREATE FUNCTION amebo.append_event(stream text, action text, payload jsonb,
                                   expected_version bigint DEFAULT NULL,
                                   metadata jsonb DEFAULT NULL,
                                   event_id uuid DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'amebo_append_event' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION amebo.append_event(text, text, jsonb, bigint, jsonb, uuid) IS
    'appends one event to a stream; returns the stream''s new version';

CREATE FUNCTION amebo.append_events(stream text, events jsonb,
                                    expected_version bigint DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'amebo_append_events' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION amebo.append_events(text, jsonb, bigint) IS
    'appends a JSON array of events to a stream atomically; returns the stream''s new version';

CREATE FUNCTION amebo.stream_version(stream text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'amebo_stream_version' LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION amebo.stream_version(text) IS
    'the number of events in a stream (0 when empty)';

CREATE FUNCTION amebo.read_stream(stream text, after_version bigint DEFAULT 0,
                                  max_count integer DEFAULT NULL)
RETURNS SETOF amebo.events
AS 'MODULE_PATHNAME', 'amebo_read_stream' LANGUAGE C STABLE PARALLEL SAFE ROWS 100;
COMMENT ON FUNCTION amebo.read_stream(text, bigint, integer) IS
    'a stream''s events after a version, in version order';

CREATE FUNCTION amebo.read_all(after_position bigint DEFAULT 0, max_count integer DEFAULT 1000,
                               actions text[] DEFAULT NULL, since timestamptz DEFAULT NULL,
                               payload_filter jsonb DEFAULT NULL)
RETURNS SETOF amebo.events
AS 'MODULE_PATHNAME', 'amebo_read_all' LANGUAGE C VOLATILE ROWS 1000;
COMMENT ON FUNCTION amebo.read_all(bigint, integer, text[], timestamptz, jsonb) IS
    'committed events after a position, in position order, never skipping a late commit';

CREATE FUNCTION amebo.inflight_appends(OUT pid integer, OUT first_position bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'amebo_inflight_appends' LANGUAGE C VOLATILE ROWS 10;
COMMENT ON FUNCTION amebo.inflight_appends() IS
    'open transactions that appended events, which hold read_all back at their first position';

CREATE FUNCTION amebo.new_event_id()
RETURNS uuid
AS 'MODULE_PATHNAME', 'amebo_new_event_id' LANGUAGE C VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION amebo.new_event_id() IS
    'a new time-ordered event id (UUID version 7), as append_event generates';
