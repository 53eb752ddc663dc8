-- Projections: the design guide's "users" read model kept inline, rebuilt, and bad input.
-- (examples/users/users.sql was loaded by state.sql; the users projection is inline.)

-- Inline: the read model is written in the appending transaction.
TRUNCATE users;
SELECT amebo.rebuild_projection('users') AS replayed;
SELECT user_id, email, status, version FROM users ORDER BY user_id;
BEGIN;
SELECT amebo.append_event('user-20', 'user.created',
    '{"user_id": "20", "email": "ann@example.com", "name": "Ann"}', 0);
SELECT user_id, status, version FROM users WHERE user_id = '20';
ROLLBACK;
SELECT count(*) AS after_rollback FROM users WHERE user_id = '20';
SELECT amebo.append_event('user-20', 'user.created',
    '{"user_id": "20", "email": "ann@example.com", "name": "Ann"}', 0);
SELECT amebo.append_event('user-20', 'user.email_verified',
    '{"user_id": "20", "verified_at": "2026-11-27T13:00:00Z"}', 1);
SELECT user_id, status, verified_at, version FROM users WHERE user_id = '20';

-- A handler error aborts the append: nothing is stored.
CREATE FUNCTION picky_projection(event amebo.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF event.payload ? 'forbidden' THEN
        RAISE EXCEPTION 'picky projection refuses %', event.stream USING ERRCODE = 'P0001';
    END IF;
END
$$;
SELECT amebo.create_projection('picky', 'picky_projection(amebo.events)', ARRAY['user.touched']);
SELECT amebo.append_event('user-20', 'user.touched', '{"forbidden": true}', 2);
SELECT amebo.stream_version('user-20');
SELECT amebo.append_event('user-20', 'user.touched', '{"fine": true}', 2);
SELECT amebo.drop_projection('picky');

-- Pausing an inline projection: appends stop calling it; resuming replays what it missed.
SELECT amebo.pause_projection('users');
SELECT name, state, position > 0 AS boundary_recorded FROM amebo.projection_status WHERE name = 'users';
SELECT amebo.append_event('user-21', 'user.created',
    '{"user_id": "21", "email": "bo@example.com", "name": "Bo"}', 0);
SELECT count(*) AS projected_while_paused FROM users WHERE user_id = '21';
SELECT amebo.resume_projection('users');
SELECT user_id, status, version FROM users WHERE user_id = '21';
SELECT name, state, lag_events FROM amebo.projection_status WHERE name = 'users';
SELECT amebo.append_event('user-21', 'user.email_verified',
    '{"user_id": "21", "verified_at": "2026-11-27T14:00:00Z"}', 1);
SELECT user_id, status, version FROM users WHERE user_id = '21';

-- Rebuild: the count, and a read model identical to the one kept live.
CREATE TEMP TABLE live_users AS SELECT * FROM users;
SELECT amebo.rebuild_projection('users') AS replayed,
       (SELECT count(*) FROM amebo.events WHERE action IN ('user.created', 'user.email_verified'))
           AS matching_events;
SELECT count(*) AS differences FROM (
    (SELECT user_id, email, name, status, verified_at, version FROM users
     EXCEPT SELECT user_id, email, name, status, verified_at, version FROM live_users)
    UNION ALL
    (SELECT user_id, email, name, status, verified_at, version FROM live_users
     EXCEPT SELECT user_id, email, name, status, verified_at, version FROM users)) d;
SELECT count(*) AS users_rows FROM users;
-- since: events recorded from then on only (the reset empties the read model first).
SELECT amebo.rebuild_projection('users', since => now() + interval '1 day') AS replayed_since_tomorrow;
SELECT count(*) AS users_rows FROM users;
SELECT amebo.rebuild_projection('users') AS replayed;

-- Async projections: registered, paused and resumed (the worker serves another database
-- here; test/scripts/projections.sh runs it).
CREATE TABLE seen_actions (event_id uuid PRIMARY KEY, action text);
CREATE FUNCTION remember_action(event amebo.events) RETURNS void LANGUAGE sql AS $$
    INSERT INTO seen_actions VALUES (event.event_id, event.action)
$$;
CREATE FUNCTION forget_actions() RETURNS void LANGUAGE sql AS $$ TRUNCATE seen_actions $$;
SELECT amebo.create_projection('seen', 'remember_action(amebo.events)', NULL, 'async',
                               reset => 'forget_actions()');
SELECT amebo.pause_projection('seen');
SELECT name, mode, state, position FROM amebo.projection_status ORDER BY name;
SELECT amebo.resume_projection('seen');
-- run_projection is what the worker calls: it applies a batch and moves the checkpoint.
SELECT amebo_internal.run_projection('seen', 5) AS applied;
SELECT count(*) AS seen FROM seen_actions;
SELECT position > 0 AS moved, lag_events > 0 AS behind FROM amebo.projection_status WHERE name = 'seen';
SELECT amebo.rebuild_projection('seen') = (SELECT count(*) FROM amebo.events) AS replayed_all;
SELECT name, state, lag_events, error FROM amebo.projection_status WHERE name = 'seen';
SELECT name, mode, actions, reset_handler FROM amebo.projection_list ORDER BY name;

-- Bad input.
SELECT q, regress.outcome(q) FROM (VALUES
    ($$SELECT amebo.rebuild_projection('nobody')$$),
    ($$SELECT amebo.rebuild_projection(NULL)$$),
    ($$SELECT amebo.drop_projection('nobody')$$),
    ($$SELECT amebo.pause_projection('nobody')$$),
    ($$SELECT amebo.resume_projection('nobody')$$),
    ($$SELECT amebo.create_projection('users', 'users_projection(amebo.events)')$$),
    ($$SELECT amebo.create_projection('Bad Name', 'users_projection(amebo.events)')$$),
    ($$SELECT amebo.create_projection('other', 'user_reducer(jsonb, amebo.events)')$$),
    ($$SELECT amebo.create_projection('other', 'users_projection(amebo.events)', '{}')$$),
    ($$SELECT amebo.create_projection('other', 'users_projection(amebo.events)', NULL, 'sometimes')$$),
    ($$SELECT amebo.create_projection('other', 'users_projection(amebo.events)', NULL, 'inline', 'users_projection(amebo.events)')$$),
    ($$SELECT amebo.create_projection('other', 'no_such_function(amebo.events)')$$),
    ($$SELECT amebo.create_projection('other', NULL)$$)
) AS cases(q);
SELECT amebo.drop_projection('seen');

-- Only a superuser (the worker) may run a handler as another role; a projection's owner is
-- its creator and only a superuser may change it.
CREATE ROLE amebo_regress_projector;
GRANT USAGE ON SCHEMA amebo TO amebo_regress_projector;
GRANT SELECT, UPDATE ON amebo.projections TO amebo_regress_projector;
SET ROLE amebo_regress_projector;
SELECT amebo_internal.call_as_owner('users_projection(amebo.events)', 'amebo_regress_projector', NULL);
UPDATE amebo.projections SET owner = 'amebo_regress_projector' WHERE name = 'users';
RESET ROLE;
SELECT name, owner = current_user::regrole AS owned_by_creator FROM amebo.projections ORDER BY name;
-- The handler must take one event: another function got the row as its argument (and read it
-- as jsonb), a missing one was an internal error (found by test/scripts/hostile_input.sh).
SELECT q, regress.outcome(q) FROM (VALUES
    ($$SELECT amebo_internal.call_as_owner('jsonb_typeof(jsonb)', 'amebo_regress_projector',
        (SELECT e FROM amebo.events e ORDER BY position LIMIT 1))$$),
    ($$SELECT amebo_internal.call_as_owner('now()', 'amebo_regress_projector',
        (SELECT e FROM amebo.events e ORDER BY position LIMIT 1))$$),
    ($$SELECT amebo_internal.call_as_owner(0::oid::regprocedure, 'amebo_regress_projector',
        (SELECT e FROM amebo.events e ORDER BY position LIMIT 1))$$)
) AS cases(q);
REVOKE ALL ON amebo.projections FROM amebo_regress_projector;
REVOKE ALL ON SCHEMA amebo FROM amebo_regress_projector;
DROP ROLE amebo_regress_projector;
