-- The registry: applications and actions with versioned schemas.

-- Applications: a generated Standard Webhooks secret, or a given one.
SELECT amebo.create_application('users', 'https://users.example.com/hooks') ~ '^whsec_[A-Za-z0-9+/]{43}=$' AS generated_secret;
SELECT length(decode(substr(amebo.application_secret('users'), 7), 'base64')) AS secret_bytes;
SELECT amebo.create_application('billing', NULL, 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw');
SELECT name, address, actions FROM amebo.application_list ORDER BY name;
SELECT amebo.update_application('billing', 'http://billing.internal:8080');
SELECT amebo.rotate_application_secret('billing') <> 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw' AS rotated;
SELECT name, address FROM amebo.application_list ORDER BY name;

-- Bad applications.
SELECT q, regress.outcome(q) FROM (VALUES
    ($$SELECT amebo.create_application('users')$$),
    ($$SELECT amebo.create_application(NULL)$$),
    ($$SELECT amebo.create_application('Users')$$),
    ($$SELECT amebo.create_application('9lives')$$),
    ($$SELECT amebo.create_application('has space')$$),
    ($$SELECT amebo.create_application(repeat('a', 64))$$),
    ($$SELECT amebo.create_application('app', 'ftp://example.com')$$),
    ($$SELECT amebo.create_application('app', 'https://user:pw@example.com')$$),
    ($$SELECT amebo.create_application('app', NULL, 'not-a-secret')$$),
    ($$SELECT amebo.create_application('app', NULL, 'whsec_c2hvcnQ=')$$),
    ($$SELECT amebo.update_application('nobody', NULL)$$),
    ($$SELECT amebo.rotate_application_secret('nobody')$$),
    ($$SELECT amebo.drop_application('nobody')$$)
) AS cases(q);

-- Secrets are not in the list, and roles other than amebo_admin cannot read them.
SELECT count(*) AS secret_columns FROM information_schema.columns
WHERE table_schema = 'amebo' AND table_name = 'application_list' AND column_name = 'secret';
CREATE ROLE amebo_regress_nosecret;
GRANT USAGE ON SCHEMA amebo TO amebo_regress_nosecret;
SET ROLE amebo_regress_nosecret;
SELECT amebo.application_secret('users');
SELECT secret FROM amebo.applications;
RESET ROLE;
REVOKE ALL ON SCHEMA amebo FROM amebo_regress_nosecret;
DROP ROLE amebo_regress_nosecret;

-- Actions: with and without a schema.
SELECT amebo.create_action('user.created', 'users', '{
    "type": "object",
    "required": ["user_id", "email", "name"],
    "properties": {
        "user_id": {"type": "string"},
        "email": {"type": "string", "format": "email"},
        "name": {"type": "string", "minLength": 1}
    }
}');
SELECT amebo.create_action('user.email_verified', 'users');
SELECT amebo.create_action('invoice.sent', 'billing', '{"type": "object"}');
SELECT action, application, compatibility, schema_version, schema IS NOT NULL AS has_schema
FROM amebo.action_list ORDER BY action;
SELECT name, actions FROM amebo.application_list ORDER BY name;

-- Bad actions: names, owners, duplicates, broken schemas (with the parser's reason).
SELECT q, regress.outcome(q) FROM (VALUES
    ($$SELECT amebo.create_action('user.created', 'users')$$),
    ($$SELECT amebo.create_action('usercreated', 'users')$$),
    ($$SELECT amebo.create_action('User.Created', 'users')$$),
    ($$SELECT amebo.create_action('user..created', 'users')$$),
    ($$SELECT amebo.create_action('user.created.', 'users')$$),
    ($$SELECT amebo.create_action(NULL, 'users')$$),
    ($$SELECT amebo.create_action('user.deleted', 'nobody')$$),
    ($$SELECT amebo.create_action('user.deleted', 'users', NULL, 'forward')$$),
    ($$SELECT amebo.create_action('user.deleted', 'users', '{"type": 5}')$$),
    ($$SELECT amebo.create_action('user.deleted', 'users', '{"properties": []}')$$),
    ($$SELECT amebo.create_action('user.deleted', 'users', '{"pattern": "(unclosed"}')$$),
    ($$SELECT amebo.create_action('user.deleted', 'users', '{"pattern": "(a)\\2222222222222222222"}')$$),
    ($$SELECT amebo.create_action('user.deleted', 'users', '{"$ref": "http://example.com/s.json"}')$$),
    ($$SELECT amebo.create_action('user.deleted', 'users', '"just a string"')$$),
    ($$SELECT amebo.create_action('user.deleted', 'users', '{"$ref": "#"}')$$),
    ($$SELECT amebo.create_action('user.deleted', 'users', '{"allOf": [{"$ref": "#"}]}')$$),
    ($$SELECT amebo.create_action('user.deleted', 'users', '{"definitions": {"a": {"not": {"$ref": "#/definitions/b"}}, "b": {"anyOf": [{"$ref": "#/definitions/a"}]}}, "$ref": "#/definitions/a"}')$$),
    ($$SELECT amebo.create_action('user.deleted', 'users', '{"$ref": "x"}')$$),
    ($$SELECT amebo.create_action('user.deleted', 'users', '{"$ref": "#/"}')$$),
    ($$SELECT amebo.update_action('user.deleted', 'users')$$),
    ($$SELECT amebo.update_action('user.created', 'nobody')$$),
    ($$SELECT amebo.drop_action('user.deleted')$$)
) AS cases(q);
SELECT count(*) AS user_deleted_registered FROM amebo.actions WHERE action = 'user.deleted';

-- Schema versions: a new schema is version n+1; every version is kept.
SELECT amebo.update_action('user.created', schema => '{
    "type": "object",
    "required": ["user_id", "email", "name"],
    "properties": {
        "user_id": {"type": "string"},
        "email": {"type": "string", "format": "email"},
        "name": {"type": "string", "minLength": 1},
        "locale": {"type": "string", "enum": ["en", "fr", "de"]}
    }
}');
SELECT action, version FROM amebo.action_schemas ORDER BY action, version;

-- Backward compatibility: what is refused, and why.
SELECT amebo.update_action('invoice.sent', schema => '{
    "type": "object", "required": ["invoice_id"], "additionalProperties": false,
    "properties": {"invoice_id": {"type": "string"}, "amount": {"type": "integer", "minimum": 0},
                   "currency": {"enum": ["EUR", "USD"]}}}');
SELECT amebo.update_action('invoice.sent', compatibility => 'backward');
SELECT q, regress.outcome(q) FROM (VALUES
    -- a new required property
    ($$SELECT amebo.update_action('invoice.sent', schema => '{"type": "object", "required": ["invoice_id", "amount"], "additionalProperties": false, "properties": {"invoice_id": {"type": "string"}, "amount": {"type": "integer", "minimum": 0}, "currency": {"enum": ["EUR", "USD"]}}}')$$),
    -- a narrowed type
    ($$SELECT amebo.update_action('invoice.sent', schema => '{"type": "object", "required": ["invoice_id"], "additionalProperties": false, "properties": {"invoice_id": {"type": "string"}, "amount": {"type": "integer", "minimum": 0}, "currency": {"type": "string", "enum": ["EUR", "USD"]}}}')$$),
    -- an enum value removed
    ($$SELECT amebo.update_action('invoice.sent', schema => '{"type": "object", "required": ["invoice_id"], "additionalProperties": false, "properties": {"invoice_id": {"type": "string"}, "amount": {"type": "integer", "minimum": 0}, "currency": {"enum": ["EUR"]}}}')$$),
    -- a raised minimum
    ($$SELECT amebo.update_action('invoice.sent', schema => '{"type": "object", "required": ["invoice_id"], "additionalProperties": false, "properties": {"invoice_id": {"type": "string"}, "amount": {"type": "integer", "minimum": 1}, "currency": {"enum": ["EUR", "USD"]}}}')$$),
    -- a property removed from a closed schema
    ($$SELECT amebo.update_action('invoice.sent', schema => '{"type": "object", "required": ["invoice_id"], "additionalProperties": false, "properties": {"invoice_id": {"type": "string"}, "amount": {"type": "integer", "minimum": 0}}}')$$),
    -- a pattern added
    ($$SELECT amebo.update_action('invoice.sent', schema => '{"type": "object", "required": ["invoice_id"], "additionalProperties": false, "properties": {"invoice_id": {"type": "string", "pattern": "^INV-"}, "amount": {"type": "integer", "minimum": 0}, "currency": {"enum": ["EUR", "USD"]}}}')$$)
) AS cases(q);
SELECT amebo.update_action('invoice.sent', schema => '{"type": "object", "required": ["invoice_id"], "additionalProperties": false, "properties": {"invoice_id": {"type": "string"}, "amount": {"type": "number"}, "currency": {"enum": ["EUR", "USD", "GBP"]}, "note": {"type": "string"}}}') AS widened_version;
SELECT amebo.update_action('invoice.sent', schema => '{"type": "object", "required": ["invoice_id", "amount"]}');
SELECT amebo.schema_incompatibilities('{"type": "object"}', '{"type": "object", "properties": {"nickname": {"type": "string"}}}') AS open_schema_new_property;
SELECT amebo.schema_incompatibilities('{"type": "integer", "maximum": 5}', '{"type": ["number", "null"], "maximum": 10}') AS widened;

-- Dropping: an application that owns actions needs cascade.
SELECT amebo.drop_application('billing');
SELECT amebo.drop_application('billing', cascade => true);
SELECT count(*) AS invoice_schemas_left FROM amebo.action_schemas WHERE action = 'invoice.sent';
SELECT amebo.create_action('tmp.thing', 'users', '{"type": "object"}');
SELECT amebo.drop_action('tmp.thing');
SELECT action FROM amebo.action_list ORDER BY action;
