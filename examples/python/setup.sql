-- The Python example's read model and its registered actions. Load it once into a database
-- that has CREATE EXTENSION amebo (1.2 or later), after examples/users/users.sql:
--   psql -v ON_ERROR_STOP=1 -f examples/users/users.sql -f examples/python/setup.sql
-- The actions get JSON Schemas, so amebo refuses a bad payload (SQLSTATE AM004) before it
-- is stored; the Python client turns that into SchemaRejected (HTTP 422 in app.py).

CREATE SCHEMA readmodel;

-- UserProjection's read model: one row per user, shaped like the server-side projection's
-- table of examples/users/users.sql (loaded first), so that the two can be compared.
CREATE TABLE readmodel.users (LIKE public.users INCLUDING ALL);

-- The last amebo.events position each client-side projection applied.
CREATE TABLE readmodel.checkpoints (
    projection text PRIMARY KEY,
    position   bigint NOT NULL
);
INSERT INTO readmodel.checkpoints VALUES ('users', 0);

DO $$
BEGIN
    PERFORM amebo.create_application('users-service');
    PERFORM amebo.create_action('user.created', 'users-service', '{
        "type": "object",
        "required": ["user_id", "email", "name"],
        "properties": {
            "user_id": {"type": "string", "format": "uuid"},
            "email": {"type": "string", "format": "email"},
            "name": {"type": "string", "minLength": 1}
        }
    }');
    PERFORM amebo.create_action('user.email_verified', 'users-service', '{
        "type": "object",
        "required": ["user_id", "verified_at"],
        "properties": {
            "user_id": {"type": "string", "format": "uuid"},
            "verified_at": {"type": "string", "format": "date-time"}
        }
    }');
END
$$;

-- The pull consumer of examples/python/worker.py and its read model: who owns an email
-- address. One member; create it with members => 4 to run four workers side by side.
CREATE TABLE readmodel.user_directory (
    email    text PRIMARY KEY,
    user_id  uuid NOT NULL,
    verified boolean NOT NULL,
    version  bigint NOT NULL
);
SELECT amebo.create_consumer('user-directory', ARRAY['user.created', 'user.email_verified']);
