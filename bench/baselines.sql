-- The two baselines amebo's append path is measured against (bench/run.sh loads this file
-- into a fresh state before every measurement; it needs CREATE EXTENSION amebo only for
-- amebo.new_event_id(), so that every variant stores the same kind of ids).
--
-- plain:   the physical limit. A table with exactly amebo.events' columns, constraints and
--          indexes (primary key on position, unique (stream, version), unique event_id),
--          positions from a sequence. The benchmark fills it with a bare INSERT ... SELECT:
--          no version check, no idempotency check, no concurrency control.
-- plstore: what a typical user would write instead of amebo, in PL/pgSQL, with the same
--          semantics: expected-version check (SQLSTATE AM001), idempotent retries by
--          event_id (AM002 when the id is stored with other content), consecutive versions,
--          and per-stream concurrency safety through a streams table whose row is locked
--          (SELECT ... FOR UPDATE) for the rest of the transaction. Row locks, unlike
--          advisory locks, take no lock-table space, so one transaction can append to
--          100,000 streams, as amebo can. append_event; append_events written set-based
--          (one INSERT ... SELECT per batch, as a user fluent in SQL would) and
--          append_events_loop (the same with a FOR loop and one INSERT per event).

DROP SCHEMA IF EXISTS plain CASCADE;
DROP SCHEMA IF EXISTS plstore CASCADE;

CREATE SCHEMA plain;
CREATE SEQUENCE plain.events_position_seq AS bigint NO CYCLE;
CREATE TABLE plain.events (
    position    bigint      NOT NULL,
    event_id    uuid        NOT NULL,
    stream      text        NOT NULL,
    version     bigint      NOT NULL,
    action      text        NOT NULL,
    payload     jsonb       NOT NULL,
    metadata    jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL,
    CONSTRAINT events_pkey PRIMARY KEY (position),
    CONSTRAINT events_stream_version_key UNIQUE (stream, version),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);
ALTER SEQUENCE plain.events_position_seq OWNED BY plain.events.position;

CREATE SCHEMA plstore;
CREATE SEQUENCE plstore.events_position_seq AS bigint NO CYCLE;
CREATE TABLE plstore.events (
    position    bigint      NOT NULL,
    event_id    uuid        NOT NULL,
    stream      text        NOT NULL,
    version     bigint      NOT NULL,
    action      text        NOT NULL,
    payload     jsonb       NOT NULL,
    metadata    jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL,
    CONSTRAINT events_pkey PRIMARY KEY (position),
    CONSTRAINT events_stream_version_key UNIQUE (stream, version),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);
ALTER SEQUENCE plstore.events_position_seq OWNED BY plstore.events.position;

-- One row per stream: its current version, and the row every appender locks.
CREATE TABLE plstore.streams (
    stream  text   PRIMARY KEY,
    version bigint NOT NULL
);

-- Locks the stream's row (creating it at version 0 on first use) and returns its version.
CREATE FUNCTION plstore.lock_stream(p_stream text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_version bigint;
BEGIN
    SELECT version INTO v_version FROM plstore.streams WHERE stream = p_stream FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO plstore.streams (stream, version) VALUES (p_stream, 0)
            ON CONFLICT (stream) DO NOTHING;
        SELECT version INTO v_version FROM plstore.streams WHERE stream = p_stream FOR UPDATE;
    END IF;
    RETURN v_version;
END
$$;

CREATE FUNCTION plstore.stream_version(p_stream text) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT version FROM plstore.streams WHERE stream = p_stream), 0)
$$;

CREATE FUNCTION plstore.append_event(p_stream text, p_action text, p_payload jsonb,
                                     p_expected_version bigint DEFAULT NULL,
                                     p_metadata jsonb DEFAULT NULL,
                                     p_event_id uuid DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_version bigint;
    v_stored plstore.events;
BEGIN
    IF p_stream IS NULL OR p_action IS NULL OR p_payload IS NULL THEN
        RAISE EXCEPTION 'stream, action and payload must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF jsonb_typeof(p_payload) <> 'object' THEN
        RAISE EXCEPTION 'payload must be a JSON object' USING ERRCODE = '22023';
    END IF;
    v_version := plstore.lock_stream(p_stream);
    IF p_event_id IS NOT NULL THEN
        SELECT * INTO v_stored FROM plstore.events WHERE event_id = p_event_id;
        IF FOUND THEN
            IF v_stored.stream = p_stream AND v_stored.action = p_action
               AND v_stored.payload = p_payload THEN
                RETURN v_stored.version;
            END IF;
            RAISE EXCEPTION 'event % was already appended with different content', p_event_id
                USING ERRCODE = 'AM002';
        END IF;
    END IF;
    IF p_expected_version IS NOT NULL AND p_expected_version <> v_version THEN
        RAISE EXCEPTION 'version conflict on stream "%": expected version %, actual version %',
            p_stream, p_expected_version, v_version USING ERRCODE = 'AM001';
    END IF;
    INSERT INTO plstore.events
        (position, event_id, stream, version, action, payload, metadata, recorded_at)
    VALUES (nextval('plstore.events_position_seq'), coalesce(p_event_id, amebo.new_event_id()),
            p_stream, v_version + 1, p_action, p_payload, coalesce(p_metadata, '{}'), now());
    UPDATE plstore.streams SET version = v_version + 1 WHERE stream = p_stream;
    RETURN v_version + 1;
END
$$;

-- p_events: a JSON array of {action, payload, metadata?, event_id?}, as amebo.append_events.
-- Set-based: one INSERT ... SELECT for the whole batch.
CREATE FUNCTION plstore.append_events(p_stream text, p_events jsonb,
                                      p_expected_version bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_version bigint;
    v_count integer;
    v_with_id integer;
    v_stored integer;
    v_same boolean;
    v_stored_version bigint;
BEGIN
    IF p_stream IS NULL OR p_events IS NULL THEN
        RAISE EXCEPTION 'stream and events must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF jsonb_typeof(p_events) <> 'array' OR jsonb_array_length(p_events) = 0 THEN
        RAISE EXCEPTION 'events must be a non-empty JSON array' USING ERRCODE = '22023';
    END IF;
    SELECT count(*), count(*) FILTER (WHERE jsonb_typeof(e -> 'event_id') = 'string')
      INTO v_count, v_with_id
      FROM jsonb_array_elements(p_events) AS e
     WHERE jsonb_typeof(e -> 'action') = 'string' AND jsonb_typeof(e -> 'payload') = 'object';
    IF v_count <> jsonb_array_length(p_events) THEN
        RAISE EXCEPTION 'every event needs a string action and an object payload'
            USING ERRCODE = '22023';
    END IF;
    v_version := plstore.lock_stream(p_stream);
    IF v_with_id > 0 THEN
        SELECT count(*), bool_and(s.stream = p_stream AND s.action = e ->> 'action'
                                  AND s.payload = e -> 'payload'), max(s.version)
          INTO v_stored, v_same, v_stored_version
          FROM jsonb_array_elements(p_events) AS e
          JOIN plstore.events AS s ON s.event_id = (e ->> 'event_id')::uuid;
        IF v_stored > 0 THEN
            IF v_stored = v_count AND v_same THEN
                RETURN v_stored_version;
            END IF;
            RAISE EXCEPTION 'the batch is partly stored already, or with other content'
                USING ERRCODE = 'AM002';
        END IF;
    END IF;
    IF p_expected_version IS NOT NULL AND p_expected_version <> v_version THEN
        RAISE EXCEPTION 'version conflict on stream "%": expected version %, actual version %',
            p_stream, p_expected_version, v_version USING ERRCODE = 'AM001';
    END IF;
    INSERT INTO plstore.events
        (position, event_id, stream, version, action, payload, metadata, recorded_at)
    SELECT nextval('plstore.events_position_seq'),
           coalesce((e ->> 'event_id')::uuid, amebo.new_event_id()),
           p_stream, v_version + n, e ->> 'action', e -> 'payload',
           coalesce(nullif(e -> 'metadata', 'null'::jsonb), '{}'), now()
      FROM jsonb_array_elements(p_events) WITH ORDINALITY AS t(e, n)
     ORDER BY n;
    UPDATE plstore.streams SET version = v_version + v_count WHERE stream = p_stream;
    RETURN v_version + v_count;
END
$$;

-- The same as append_events, written as a loop: one INSERT per event.
CREATE FUNCTION plstore.append_events_loop(p_stream text, p_events jsonb,
                                           p_expected_version bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_version bigint;
    v_event jsonb;
    v_stored plstore.events;
    v_stored_count integer := 0;
    v_same boolean := true;
    v_count integer := 0;
BEGIN
    IF p_stream IS NULL OR p_events IS NULL THEN
        RAISE EXCEPTION 'stream and events must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF jsonb_typeof(p_events) <> 'array' OR jsonb_array_length(p_events) = 0 THEN
        RAISE EXCEPTION 'events must be a non-empty JSON array' USING ERRCODE = '22023';
    END IF;
    FOR v_event IN SELECT e FROM jsonb_array_elements(p_events) AS e LOOP
        IF jsonb_typeof(v_event -> 'action') IS DISTINCT FROM 'string'
           OR jsonb_typeof(v_event -> 'payload') IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION 'every event needs a string action and an object payload'
                USING ERRCODE = '22023';
        END IF;
    END LOOP;
    v_version := plstore.lock_stream(p_stream);
    FOR v_event IN SELECT e FROM jsonb_array_elements(p_events) AS e LOOP
        IF jsonb_typeof(v_event -> 'event_id') = 'string' THEN
            SELECT * INTO v_stored FROM plstore.events
             WHERE event_id = (v_event ->> 'event_id')::uuid;
            IF FOUND THEN
                v_stored_count := v_stored_count + 1;
                v_same := v_same AND v_stored.stream = p_stream
                          AND v_stored.action = v_event ->> 'action'
                          AND v_stored.payload = v_event -> 'payload';
            END IF;
        END IF;
    END LOOP;
    IF v_stored_count > 0 THEN
        IF v_stored_count = jsonb_array_length(p_events) AND v_same THEN
            RETURN (SELECT max(version) FROM plstore.events e
                     WHERE event_id IN (SELECT (x ->> 'event_id')::uuid
                                          FROM jsonb_array_elements(p_events) AS x));
        END IF;
        RAISE EXCEPTION 'the batch is partly stored already, or with other content'
            USING ERRCODE = 'AM002';
    END IF;
    IF p_expected_version IS NOT NULL AND p_expected_version <> v_version THEN
        RAISE EXCEPTION 'version conflict on stream "%": expected version %, actual version %',
            p_stream, p_expected_version, v_version USING ERRCODE = 'AM001';
    END IF;
    FOR v_event IN SELECT e FROM jsonb_array_elements(p_events) AS e LOOP
        v_count := v_count + 1;
        INSERT INTO plstore.events
            (position, event_id, stream, version, action, payload, metadata, recorded_at)
        VALUES (nextval('plstore.events_position_seq'),
                coalesce((v_event ->> 'event_id')::uuid, amebo.new_event_id()),
                p_stream, v_version + v_count, v_event ->> 'action', v_event -> 'payload',
                coalesce(nullif(v_event -> 'metadata', 'null'::jsonb), '{}'), now());
    END LOOP;
    UPDATE plstore.streams SET version = v_version + v_count WHERE stream = p_stream;
    RETURN v_version + v_count;
END
$$;
