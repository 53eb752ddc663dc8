"""Hostile argument values for amebo's SQL functions, as SQL expressions (built on the server,
so that a 1 MB string or a 10,000-deep document is not sent over the socket each time).

A value is (label, sql). Which values a parameter gets depends on its type and, for text and
jsonb, on its name (a handler gets URLs, a schema gets pathological schemas). The fixture
functions in schema hostile (FIXTURE_SQL in hostile_input.py) build the large ones.
"""

MEGABYTE = 1024 * 1024
DEEP = 10000  # nesting levels of the deep JSON documents
HUGE_ARRAY = 100000  # elements of the huge arrays

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


# Quotes a Python string as a SQL literal.
def literal(text):
    return "'" + text.replace("'", "''") + "'"


# Text that a cast turns (or fails to turn) into type: "wrong types" from a text argument.
def casts_from_text(sql_type, valid_text):
    values = [("text 'garbage'", "'garbage'::text::" + sql_type),
              ("text ''", "''::text::" + sql_type),
              ("text 1 MB", f"repeat('9', {MEGABYTE})::text::" + sql_type)]
    if valid_text is not None:
        values.append(("text valid", literal(valid_text) + "::text::" + sql_type))
    return values


# Values every text parameter gets.
def text_values():
    return [
        ("empty", "''"),
        ("1 MB", f"repeat('x', {MEGABYTE})"),
        ("1 MB multibyte", f"repeat('ü', {MEGABYTE // 2})"),
        ("300 chars", "repeat('a', 300)"),
        ("spaces and controls", "E'a b\\t\\n\\r\\x01\\x7f'"),
        ("NUL-like escapes", "'a\\u0000b%00c\\x00'"),
        ("quotes", "$q$'; SELECT 1; --\"\\$q$"),
        ("unicode", "'bücher-✓-\U0001f600'"),
        ("stars", "repeat('*a', 127)"),
        ("dots", "repeat('.', 255)"),
    ]


# Handler URLs with odd schemes, user info, IPv6 and IDN hosts, odd ports. Host names never
# resolve through DNS in the test (amebo.allow_private_targets = on skips resolution).
URLS = [
    "file:///etc/passwd", "gopher://127.0.0.1:70/_x", "javascript:alert(1)",
    "ftp://127.0.0.1/x", "data:text/plain,hi", "HTTP://127.0.0.1/upper",
    "http://user:pass@127.0.0.1/x", "http://user@127.0.0.1/x", "http://@127.0.0.1/x",
    "http://[::1]/x", "http://[fe80::1%25eth0]/x", "http://[::ffff:127.0.0.1]/x",
    "http://[::]/x", "http://[1:2:3:4:5:6:7:8:9]/x", "http://[zz::1]/x", "http://[::1/x",
    "http://::1/x", "http://bücher.example/x", "http://xn--bcher-kva.example/x",
    "http://xn--/x", "http://" + "a" * 64 + ".example/x", "http://" + "a." * 200 + "example/x",
    "http://exa mple.com/x", "http://127.0.0.1%00.example/x", "http://127.0.0.1/a b",
    "http://127.0.0.1:0/x", "http://127.0.0.1:65535/x", "http://127.0.0.1:65536/x",
    "http://127.0.0.1:99999999999999999999/x", "http://127.0.0.1:-1/x", "http://127.0.0.1:/x",
    "http://127.0.0.1:8o/x", "http://0x7f.1/x", "http://2130706433/x", "http://017700000001/x",
    "http://169.254.169.254/latest", "http:///x", "http://", "http:", "//127.0.0.1/x",
    "http://127.0.0.1\\@evil.example/x", "http://127.0.0.1#@evil.example/x",
    "https://127.0.0.1/" + "p" * 100000,
]


# Values of a text parameter that holds a URL.
def url_values():
    values = [(f"url {url[:40]}", literal(url)) for url in URLS]
    values.append(("url with newline", "E'http://127.0.0.1/x\\nHost: evil'"))
    values.append(("url 1 MB host", f"'http://' || repeat('a', {MEGABYTE}) || '/x'"))
    return values


# A jsonb object {"blob": "x..."} of exactly size bytes of jsonb.
def blob(size):
    return f"hostile.blob({size})"


# Documents (payloads, metadata, states, filters) every jsonb parameter gets.
def document_values(limit):
    return [
        ("{}", "'{}'::jsonb"),
        ("[]", "'[]'::jsonb"),
        ("null", "'null'::jsonb"),
        ("string", "'\"s\"'::jsonb"),
        ("number", "'-1e308'::jsonb"),
        ("array 10000 deep", f"hostile.deep_array({DEEP})"),
        ("object 10000 deep", f"hostile.deep_object({DEEP})"),
        ("object holding 10000 deep", f"jsonb_build_object('a', hostile.deep_array({DEEP}))"),
        ("1 MB string", f"jsonb_build_object('s', repeat('x', {MEGABYTE}))"),
        ("huge array", f"jsonb_build_object('a', to_jsonb(array_fill(1, ARRAY[{HUGE_ARRAY}])))"),
        ("100000 keys", f"hostile.wide_object({HUGE_ARRAY})"),
        ("limit - 1", blob(limit - 1)),
        ("limit", blob(limit)),
        ("limit + 1", blob(limit + 1)),
        ("key 1 MB", f"jsonb_build_object(repeat('k', {MEGABYTE}), 1)"),
        ("deliver_after odd", "'{\"deliver_after\": \"9999-99-99T99:99:99Z\"}'::jsonb"),
        ("deliver_after far", "'{\"deliver_after\": \"294276-01-01T00:00:00Z\"}'::jsonb"),
    ]


# A one-event array for append_events whose event has the given action and payload (SQL).
def event_array(action, payload):
    return f"jsonb_build_array(jsonb_build_object('action', {action}, 'payload', {payload}))"


# Event arrays for append_events-like parameters (named events).
def events_values(limit):
    return [
        ("10000 events", "(SELECT jsonb_agg(jsonb_build_object('action', 'hostile.regex', "
                         "'payload', jsonb_build_object('s', 'a'))) "
                         "FROM generate_series(1, 10000))"),
        ("event payload limit + 1", event_array("'hostile.regex'", blob(limit + 1))),
        ("event payload 10000 deep", event_array("'a.b'", f"hostile.deep_object({DEEP})")),
        ("event action 1 MB", event_array(f"repeat('a', {MEGABYTE})", "'{}'::jsonb")),
        ("event id not uuid", "'[{\"action\": \"a.b\", \"payload\": {}, \"event_id\": \"x\"}]'"),
    ]


# JSON Schemas that are hard on a validator: backtracking and huge patterns, $ref chains and
# cycles, exponential combinators, huge enums and keywords with absurd values.
def schema_values():
    pattern = "jsonb_build_object('type', 'string', 'pattern', {})"
    return [
        ("pattern ^(a+)+$", "hostile.pattern_schema('^(a+)+$')"),
        ("pattern (a|aa)*c", "hostile.pattern_schema('(a|aa)*c')"),
        ("pattern (x+x+)+y", "hostile.pattern_schema('(x+x+)+y')"),
        ("pattern 1 MB", f"hostile.pattern_schema(repeat('a', {MEGABYTE}))"),
        ("pattern (a|b) x 20000", "hostile.pattern_schema(repeat('(a|b)', 20000))"),
        ("pattern 20000 nested groups",
         "hostile.pattern_schema(repeat('(', 20000) || 'a' || repeat(')', 20000))"),
        ("pattern a{1,255} x 3", "hostile.pattern_schema('a{1,255}{1,255}{1,255}')"),
        ("pattern backreference", "hostile.pattern_schema('^(a*)*\\1$')"),
        ("pattern invalid", "hostile.pattern_schema('(')"),
        ("patternProperties evil",
         "'{\"patternProperties\": {\"^(a+)+$\": {\"type\": \"string\"}}}'::jsonb"),
        ("format regex", "'{\"format\": \"regex\"}'::jsonb"),
        ("pattern in format regex", pattern.format("'(((((a*)*)*)*)*b'")),
        ("$ref chain 20000", "hostile.ref_chain(20000)"),
        ("$ref chain 5000 via properties", "hostile.ref_chain(5000, true)"),
        ("$ref self #", "'{\"$ref\": \"#\"}'::jsonb"),
        ("$ref self definition",
         "'{\"definitions\": {\"a\": {\"$ref\": \"#/definitions/a\"}}, "
         "\"$ref\": \"#/definitions/a\"}'::jsonb"),
        ("$ref cycle a-b",
         "'{\"definitions\": {\"a\": {\"$ref\": \"#/definitions/b\"}, "
         "\"b\": {\"$ref\": \"#/definitions/a\"}}, \"$ref\": \"#/definitions/a\"}'::jsonb"),
        ("$ref recursive properties",
         "'{\"properties\": {\"a\": {\"$ref\": \"#\"}}, \"additionalProperties\": "
         "{\"$ref\": \"#\"}}'::jsonb"),
        ("$ref remote", "'{\"$ref\": \"http://127.0.0.1:9/schema.json\"}'::jsonb"),
        ("$ref file", "'{\"$ref\": \"file:///etc/passwd\"}'::jsonb"),
        ("$ref missing", "'{\"$ref\": \"#/definitions/nope\"}'::jsonb"),
        ("$ref pointer 1 MB", f"jsonb_build_object('$ref', '#/' || repeat('a/', {MEGABYTE // 2}))"),
        ("$id tricks", "'{\"$id\": \"file:///x\", \"items\": {\"$id\": \"#a\", "
                       "\"$ref\": \"#a\"}}'::jsonb"),
        ("anyOf doubling 60", "hostile.doubling(60, 'anyOf')"),
        ("oneOf doubling 60", "hostile.doubling(60, 'oneOf')"),
        ("allOf doubling 60", "hostile.doubling(60, 'allOf')"),
        ("enum 100000",
         f"jsonb_build_object('enum', to_jsonb(array_fill(1, ARRAY[{HUGE_ARRAY}])))"),
        ("uniqueItems", "'{\"uniqueItems\": true}'::jsonb"),
        ("multipleOf tiny", "'{\"multipleOf\": 1e-308}'::jsonb"),
        ("multipleOf 0", "'{\"multipleOf\": 0}'::jsonb"),
        ("minLength huge", "'{\"minLength\": 1e308}'::jsonb"),
        ("maxItems -1", "'{\"maxItems\": -1}'::jsonb"),
        ("type 5", "'{\"type\": 5}'::jsonb"),
        ("items 10000 deep", "hostile.deep_items(10000)"),
        ("dependencies odd", "'{\"dependencies\": {\"a\": 5, \"b\": [1, null]}}'::jsonb"),
    ]


# The documents paired with a pathological schema: all of schema_documents(), except for the
# schemas that are slow by design (each pair costs a full statement_timeout), which get the
# two documents that hurt them most.
def documents_for_schema(schema_label):
    documents = schema_documents()
    if "doubling" in schema_label:
        return [d for d in documents if d[0] in ("number", "xxxx...x")]
    if schema_label == "uniqueItems":
        return [d for d in documents if d[0] in ("array of 20000", "20000 equal items")]
    return documents


# Documents that exercise the pathological schemas above.
def schema_documents():
    return [
        ("aaaa...a!", "to_jsonb(repeat('a', 40) || '!')"),
        ("object aaaa...a!", "jsonb_build_object(repeat('a', 40) || '!', 'x')"),
        ("1 MB of a then !", f"to_jsonb(repeat('a', {MEGABYTE}) || '!')"),
        ("xxxx...x", "to_jsonb(repeat('x', 40))"),
        ("array of 20000", "to_jsonb(ARRAY(SELECT g FROM generate_series(1, 20000) g))"),
        ("20000 equal items", "to_jsonb(array_fill(7, ARRAY[20000]))"),
        ("number", "'1e308'::jsonb"),
        ("object 200 deep", "hostile.deep_object(200)"),
    ]


# Integers: zero, negative and extreme values (counts, versions, positions, retries, sizes).
def integer_values(bits):
    low, high = (INT32_MIN, INT32_MAX) if bits == 32 else (INT64_MIN, INT64_MAX)
    sql_type = "integer" if bits == 32 else "bigint"
    values = [(str(v), f"({v})::{sql_type}") for v in (-1, 0, 1000000, low, high)]
    return values + casts_from_text(sql_type, str(high))


# Values of a double precision parameter (timeouts).
def double_values():
    values = [(v, f"'{v}'::double precision") for v in ("-1", "0", "NaN", "Infinity",
                                                         "-Infinity", "1e308", "1e-308")]
    return values + casts_from_text("double precision", "0.5")


# Values of a text[] parameter.
def text_array_values():
    return [
        ("{}", "'{}'::text[]"),
        ("{NULL}", "'{NULL}'::text[]"),
        ("2-D", "'{{a.b,a.c},{a.d,a.e}}'::text[]"),
        ("lower bound 5", "'[5:6]={a.b,a.c}'::text[]"),
        ("100000 elements", f"array_fill('hostile.regex'::text, ARRAY[{HUGE_ARRAY}])"),
        ("1 MB elements", f"ARRAY[repeat('a', {MEGABYTE}), repeat('b', {MEGABYTE})]"),
        ("stars", "ARRAY[repeat('*', 255), '']"),
    ] + casts_from_text("text[]", "{a.b}")


# Values of a regtype[] parameter.
def regtype_array_values():
    return [
        ("{}", "'{}'::regtype[]"),
        ("{NULL}", "'{NULL}'::regtype[]"),
        ("100000 elements", f"array_fill('jsonb'::regtype, ARRAY[{HUGE_ARRAY}])"),
        ("oid 0", "ARRAY[0::oid::regtype]"),
    ] + casts_from_text("regtype[]", "{jsonb,amebo.events}")


# Functions of the wrong shape where a handler, reducer or reset function is expected.
def regprocedure_values():
    names = ["pg_sleep(double precision)", "array_length(anyarray,integer)", "int4in(cstring)",
             "amebo.append_event(text,text,jsonb,bigint,jsonb,uuid)", "now()",
             "hostile.project_slowly(amebo.events)"]
    values = [(name, literal(name) + "::regprocedure") for name in names]
    values += [("oid 0", "0::oid::regprocedure"),
               ("oid 4294967295", "4294967295::oid::regprocedure")]
    return values + casts_from_text("regprocedure", "hostile.reduce(jsonb,amebo.events)")


# Values of a regrole parameter.
def regrole_values():
    return [("pg_read_all_data", "'pg_read_all_data'::regrole"),
            ("hostile_nobody", "'hostile_nobody'::regrole"),
            ("oid 0", "0::oid::regrole"),
            ("oid 4294967295", "4294967295::oid::regrole")] + casts_from_text("regrole", "postgres")


# Values of a timestamptz parameter.
def timestamp_values():
    values = [(v, f"'{v}'::timestamptz") for v in ("infinity", "-infinity",
                                                   "294276-12-31 23:59:59+00",
                                                   "4713-01-01 00:00:00+00 BC")]
    return values + casts_from_text("timestamptz", "2024-01-01 00:00:00+00")


# Values of an interval parameter.
def interval_values():
    values = [(v, f"'{v}'::interval") for v in ("-178000000 years", "178000000 years", "0",
                                                "-1 microsecond")]
    return values + casts_from_text("interval", "1 day")


# Values of a uuid parameter.
def uuid_values():
    values = [(v, f"'{v}'::uuid") for v in ("00000000-0000-0000-0000-000000000000",
                                            "ffffffff-ffff-ffff-ffff-ffffffffffff")]
    return values + casts_from_text("uuid", "0190f3c4-0000-7000-8000-000000000001")


# Values of an amebo.events parameter (a row of the events table).
def event_row_values():
    return [("row of NULLs", "jsonb_populate_record(NULL::amebo.events, '{}')"),
            ("stored event", "(SELECT e FROM amebo.events e ORDER BY position LIMIT 1)"),
            ("deep payload", f"jsonb_populate_record(NULL::amebo.events, jsonb_build_object("
                             f"'position', 1, 'payload', hostile.deep_object({DEEP})))")]


# Values of a boolean parameter.
def boolean_values():
    return [("true", "true"), ("false", "false")] + casts_from_text("boolean", "yes")


# Values of the JSON paths of redact: deep, many, array indexes, odd keys.
def path_values():
    deep = "{" + ",".join(["a"] * 10000) + "}"
    return [
        ("10,000-deep path", f"ARRAY['{deep}']"),
        ("100,000 paths", "ARRAY(SELECT '{k' || g || '}' FROM generate_series(1, 100000) g)"),
        ("array index", "ARRAY['{0}']"),
        ("negative index", "ARRAY['{s,-1}']"),
        ("empty key", "ARRAY['{\"\"}']"),
        ("quoted key", "ARRAY['{\"a,b\",\"}\"}']"),
        ("unicode key", "ARRAY['{\u00e9,\u2603}']"),
        ("path of 1 MB", f"ARRAY['{{{'k' * 1_000_000}}}']"),
        ("unterminated", "ARRAY['{a']"),
        ("not a path", "ARRAY['a']"),
    ]


# Values of a bigint[] parameter (positions).
def bigint_array_values():
    return [
        ("{}", "'{}'::bigint[]"),
        ("{NULL}", "'{NULL}'::bigint[]"),
        ("negative", "ARRAY[-1, -9223372036854775808]::bigint[]"),
        ("1,000,000 positions", "ARRAY(SELECT generate_series(1, 1000000))::bigint[]"),
        ("2-D", "'{{1,2},{3,4}}'::bigint[]"),
    ] + casts_from_text("bigint[]", "{1}")


VALUES_BY_TYPE = {
    "integer": lambda: integer_values(32),
    "bigint": lambda: integer_values(64),
    "double precision": double_values,
    "text[]": text_array_values,
    "bigint[]": bigint_array_values,
    "regtype[]": regtype_array_values,
    "regprocedure": regprocedure_values,
    "regrole": regrole_values,
    "timestamp with time zone": timestamp_values,
    "interval": interval_values,
    "uuid": uuid_values,
    "amebo.events": event_row_values,
    "boolean": boolean_values,
}


# The hostile values of a parameter, from its type and name.
def values_for(sql_type, name, limit):
    if name == "paths":
        return path_values() + text_array_values()
    if sql_type == "text":
        values = text_values()
        if any(word in name for word in ("url", "handler", "address")):
            values += url_values()
        return values
    if sql_type == "jsonb":
        if "schema" in name:
            return schema_values() + document_values(limit)[:7]
        if name == "events":
            return events_values(limit) + document_values(limit)
        return document_values(limit) + casts_from_text("jsonb", '{"a": 1}')
    if sql_type in VALUES_BY_TYPE:
        return VALUES_BY_TYPE[sql_type]()
    return casts_from_text(sql_type, None)
