-- The design guide's user aggregate and its "users" read model, on amebo.
-- Load it into a database that has CREATE EXTENSION amebo (1.2 or later):
--   psql -f examples/users/users.sql
-- Streams are named user-<id>; actions: user.created sets email, name and status "pending";
-- user.email_verified sets status "active".

-- The aggregate's state, folded from its events (UserAggregate.apply_event).
CREATE FUNCTION user_reducer(state jsonb, event amebo.events) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE event.action
        WHEN 'user.created' THEN state || jsonb_build_object(
            'user_id', event.payload->>'user_id', 'email', event.payload->>'email',
            'name', event.payload->>'name', 'status', 'pending')
        WHEN 'user.email_verified' THEN state || jsonb_build_object(
            'status', 'active', 'verified_at', event.payload->>'verified_at')
        ELSE state
    END || jsonb_build_object('version', event.version)
$$;
SELECT amebo.create_reducer('user', 'user_reducer(jsonb, amebo.events)',
                            '{"status": "pending", "version": 0}');

-- The read model (UserProjection): one row per user.
CREATE TABLE users (
    user_id     text PRIMARY KEY,
    email       text NOT NULL,
    name        text NOT NULL,
    status      text NOT NULL,
    created_at  timestamptz NOT NULL,
    verified_at timestamptz,
    version     bigint NOT NULL
);

-- Applies one event to the read model.
CREATE FUNCTION users_projection(event amebo.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF event.action = 'user.created' THEN
        INSERT INTO users (user_id, email, name, status, created_at, version)
        VALUES (event.payload->>'user_id', event.payload->>'email', event.payload->>'name',
                'pending', event.recorded_at, event.version);
    ELSIF event.action = 'user.email_verified' THEN
        UPDATE users
        SET status = 'active', verified_at = (event.payload->>'verified_at')::timestamptz,
            version = event.version
        WHERE user_id = event.payload->>'user_id';
    END IF;
END
$$;

-- Empties the read model before a rebuild.
CREATE FUNCTION users_reset() RETURNS void LANGUAGE sql AS $$ TRUNCATE users $$;

SELECT amebo.create_projection('users', 'users_projection(amebo.events)',
                               ARRAY['user.created', 'user.email_verified'], 'inline',
                               'users_reset()');
