-- Secret rotation with an overlap, and the private-target allowlist (issue 16, items 4 and 5).

-- Rotation keeps the replaced secret signing for the overlap (24 hours by default).
SELECT amebo.create_application('rotor', NULL, 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw') IS NOT NULL AS created;
SELECT amebo.rotate_application_secret('rotor', 'whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2Vj') AS new_secret;
SELECT secret, previous_secret,
       previous_secret_expires_at - now() BETWEEN interval '23:59' AND interval '24:00' AS overlap_24h
FROM amebo.applications WHERE name = 'rotor';
-- A rotation during an overlap keeps only the secret it replaces.
SELECT amebo.rotate_application_secret('rotor', 'whsec_bG9nZ2VkbG9nZ2VkbG9nZ2VkbG9nZ2VkbG9nZ2VkbG9n', '1 hour') IS NOT NULL AS rotated;
SELECT previous_secret, previous_secret_expires_at - now() BETWEEN interval '0:59' AND interval '1:00' AS overlap_1h
FROM amebo.applications WHERE name = 'rotor';
-- No overlap: the replaced secret stops signing at once.
SELECT amebo.rotate_application_secret('rotor', overlap => '0') LIKE 'whsec_%' AS generated;
SELECT previous_secret IS NULL AS no_previous, previous_secret_expires_at IS NULL AS no_expiry
FROM amebo.applications WHERE name = 'rotor';
-- Bad input: negative, absurdly long or NULL overlaps, unknown applications, bad secrets.
SELECT q, regress.outcome(q) FROM (VALUES
    ($$SELECT amebo.rotate_application_secret('rotor', NULL, '-1 second')$$),
    ($$SELECT amebo.rotate_application_secret('rotor', NULL, '1 day -25 hours')$$),
    ($$SELECT amebo.rotate_application_secret('rotor', NULL, '30 days 1 second')$$),
    ($$SELECT amebo.rotate_application_secret('rotor', NULL, '1 year')$$),
    ($$SELECT amebo.rotate_application_secret('rotor', NULL, NULL)$$),
    ($$SELECT amebo.rotate_application_secret('nobody', NULL, '1 hour')$$),
    ($$SELECT amebo.rotate_application_secret('rotor', 'whsec_c2VjcmV0', '1 hour')$$),
    ($$SELECT amebo.rotate_application_secret('rotor', 'not a secret', '1 hour')$$),
    ($$SELECT amebo.rotate_application_secret('rotor', NULL, '30 days') IS NOT NULL$$)
) AS cases(q);
-- Readers never see either secret.
SELECT has_column_privilege('amebo_reader', 'amebo.applications', 'previous_secret', 'SELECT') AS reader_sees_previous,
       has_column_privilege('amebo_reader', 'amebo.applications', 'secret', 'SELECT') AS reader_sees_secret;
SELECT amebo.drop_application('rotor');

-- amebo.allowed_private_targets: malformed lists are refused with the entry and the reason.
SHOW amebo.allowed_private_targets;
SET amebo.allowed_private_targets = '10.1.2.3/16';
SET amebo.allowed_private_targets = '10.0.0.0/8,';
SET amebo.allowed_private_targets = '10.0.0.0/33';
SET amebo.allowed_private_targets = 'localhost';
SET amebo.allowed_private_targets = '::ffff:169.254.169.254';
SHOW amebo.allowed_private_targets;

-- Each address class with the switch off, on, and with a list (public ones always pass).
CREATE TABLE regress.target_cases (handler text);
INSERT INTO regress.target_cases VALUES
    ('http://93.184.215.14/'), ('http://127.0.0.1/'), ('http://127.0.0.2/'), ('http://[::1]/'),
    ('http://[::ffff:127.0.0.1]/'), ('http://10.1.9.9/'), ('http://10.2.0.1/'),
    ('http://192.168.1.20/'), ('http://[fd00::5]/'), ('http://[fe80::1]/'),
    ('http://169.254.1.1/'), ('http://169.254.169.254/'), ('http://[::ffff:169.254.169.254]/'),
    ('http://[64:ff9b::a9fe:a9fe]/'), ('http://169.254.170.2/'), ('http://100.100.100.200/'),
    ('http://[fd00:ec2::254]/'), ('http://localhost/');
CREATE FUNCTION regress.target_verdicts() RETURNS TABLE (handler text, verdict text)
LANGUAGE sql AS $$
    SELECT handler, left(regress.outcome(format('SELECT amebo_internal.check_handler(%L)', handler)), 5)
    FROM regress.target_cases
$$;
CREATE TABLE regress.verdicts AS SELECT handler, verdict AS switch_off FROM regress.target_verdicts();
SET amebo.allow_private_targets = on;
ALTER TABLE regress.verdicts ADD switch_on text;
UPDATE regress.verdicts v SET switch_on = t.verdict FROM regress.target_verdicts() t WHERE t.handler = v.handler;
RESET amebo.allow_private_targets;
SET amebo.allowed_private_targets = '10.1.0.0/16, 127.0.0.1/32, ::1, fd00::/8, 169.254.169.254';
ALTER TABLE regress.verdicts ADD listed text;
UPDATE regress.verdicts v SET listed = t.verdict FROM regress.target_verdicts() t WHERE t.handler = v.handler;
SET amebo.allowed_private_targets = '169.254.0.0/16, 0.0.0.0/0';
SET amebo.allow_private_targets = on;
ALTER TABLE regress.verdicts ADD wide_list_and_on text;
UPDATE regress.verdicts v SET wide_list_and_on = t.verdict FROM regress.target_verdicts() t WHERE t.handler = v.handler;
RESET amebo.allow_private_targets;
RESET amebo.allowed_private_targets;
SELECT * FROM regress.verdicts ORDER BY handler;
-- The messages say which setting lets an address through.
SELECT amebo_internal.check_handler('http://10.2.0.1/');
SET amebo.allow_private_targets = on;
SELECT amebo_internal.check_handler('http://[::ffff:169.254.169.254]/');
RESET amebo.allow_private_targets;
DROP FUNCTION regress.target_verdicts();
DROP TABLE regress.target_cases, regress.verdicts;

-- Only a superuser may set the list.
CREATE ROLE amebo_regress_lister;
GRANT USAGE ON SCHEMA regress TO amebo_regress_lister;
SET ROLE amebo_regress_lister;
SELECT regress.outcome($$SET amebo.allowed_private_targets = '0.0.0.0/0'$$);
RESET ROLE;
REVOKE USAGE ON SCHEMA regress FROM amebo_regress_lister;
DROP ROLE amebo_regress_lister;
