-- amebo 1.5 -> 1.6: scale-out helpers (shards behind amebo_router, a replicated settled
-- horizon for reads on standbys) and webhooks at internet scale (secret rotation, private
-- target allowlist, rate limits, circuit breaker). See sql/amebo.sql for every object as 1.6
-- defines it; each change here repeats it exactly.
\echo Use "ALTER EXTENSION amebo UPDATE TO '1.6'" to load this file. \quit

-- Webhook secret rotation with an overlap (issue 16, item 4): the replaced secret keeps
-- signing beside the new one until previous_secret_expires_at.
ALTER TABLE amebo.applications ADD COLUMN previous_secret text,
    ADD COLUMN previous_secret_expires_at timestamptz;

DROP FUNCTION amebo.rotate_application_secret(text, text);

-- Raises 22023 unless overlap (how long a replaced secret keeps signing) is 0 to 30 days.
CREATE FUNCTION amebo_internal.check_secret_overlap(overlap interval) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog AS $$
BEGIN
    IF overlap IS NULL THEN
        RAISE EXCEPTION 'overlap must not be NULL' USING ERRCODE = '22004',
            HINT = 'Pass interval ''0'' to stop signing with the replaced secret at once.';
    END IF;
    IF overlap < interval '0' OR overlap > interval '30 days' THEN
        RAISE EXCEPTION 'overlap % is out of range', overlap USING ERRCODE = '22023',
            DETAIL = 'The replaced secret may keep signing for 0 to 30 days.';
    END IF;
END
$$;

-- Replaces an application's secret (a new random one when none is given); returns it.
-- During overlap the worker signs with both the new and the replaced secret (two signatures
-- in webhook-signature), so that receivers can switch at their pace; after it, with the new
-- one only. A rotation during an overlap ends it: only the secret just replaced stays valid.
CREATE FUNCTION amebo.rotate_application_secret(name text, secret text DEFAULT NULL,
                                                overlap interval DEFAULT '24 hours')
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = panic AS $$
DECLARE
    stored text := coalesce(secret, amebo_internal.generate_secret());
BEGIN
    PERFORM amebo_internal.check_secret(stored);
    PERFORM amebo_internal.check_secret_overlap(overlap);
    UPDATE amebo.applications a
    SET previous_secret = CASE WHEN overlap > interval '0' THEN a.secret END,
        previous_secret_expires_at = CASE WHEN overlap > interval '0' THEN now() + overlap END,
        secret = stored, updated_at = now()
    WHERE a.name = rotate_application_secret.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'application "%" does not exist', name USING ERRCODE = '42704';
    END IF;
    RETURN stored;
END
$$;
-- PUBLIC gets nothing, as the fresh install's general REVOKE gives it nothing.
REVOKE EXECUTE ON FUNCTION amebo_internal.check_secret_overlap(interval),
    amebo.rotate_application_secret(text, text, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION amebo.rotate_application_secret(text, text, interval) TO amebo_admin;
