"""Hostile input at the SQL level (run by test/scripts/hostile_input.sh).

Enumerates every function of the installed extension amebo from the catalogs (pg_proc joined
with pg_depend on the extension, so that functions added later are covered), then calls each
one with: its defaults; valid arguments; NULL everywhere; NULL in each position; and in each
position the hostile values of test/hostile/values.py for its type and name (wrong types cast
from text, empty and 1 MB strings, payloads just under, at and over amebo.max_payload_size,
10,000-deep JSON, pathological JSON Schemas, odd handler URLs, extreme numbers, huge arrays),
plus every pathological schema against documents built to hurt it, both directly and through
a registered action. Then it commits hostile events for the background worker to deliver.

Every call runs in its own transaction (rolled back) with statement_timeout. The test fails on
a lost connection, an error without SQLSTATE, XX000 (internal error), a call that took longer
than statement_timeout + 1 s, a call cancelled by statement_timeout (57014) unless it was asked
to wait longer than that (a timeout argument above statement_timeout) or runs a pathological
JSON Schema (user-supplied computation: it must stay cancellable, it need not be fast), a
worker that died or did not get through the hostile events, and a crash in the server log.
"""
import argparse
import collections
import os
import re
import signal
import socket
import sys
import threading
import time

import psycopg

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import values  # noqa: E402
from checks import Checks  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--host", required=True, help="socket directory of the test cluster")
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--log", required=True, help="the server log, checked for crashes")
parser.add_argument("--timeout", type=float, default=5.0, help="statement_timeout, seconds")
parser.add_argument("--only", default="", help="regular expression: call only these functions")
parser.add_argument("--verbose", action="store_true", help="print every call")
args = parser.parse_args()

GRACE = 1.0  # seconds a call may take beyond statement_timeout
WATCHDOG = 20.0  # seconds beyond statement_timeout: then a cancel request, twice that: SIGKILL
SLOWEST_SHOWN = 15

checks = Checks()

# Helper objects the hostile values use, and the fixtures the valid arguments refer to.
FIXTURE_SQL = """
CREATE SCHEMA hostile;
CREATE ROLE hostile_nobody;
-- An array nested n levels deep.
CREATE FUNCTION hostile.deep_array(n integer) RETURNS jsonb LANGUAGE sql IMMUTABLE
AS $$ SELECT (repeat('[', n) || repeat(']', n))::jsonb $$;
-- An object nested n levels deep: {"a": {"a": ... 1}}.
CREATE FUNCTION hostile.deep_object(n integer) RETURNS jsonb LANGUAGE sql IMMUTABLE
AS $$ SELECT (repeat('{"a": ', n) || '1' || repeat('}', n))::jsonb $$;
-- A schema whose "items" are nested n levels deep.
CREATE FUNCTION hostile.deep_items(n integer) RETURNS jsonb LANGUAGE sql IMMUTABLE
AS $$ SELECT (repeat('{"items": ', n) || '{}' || repeat('}', n))::jsonb $$;
-- An object with n keys.
CREATE FUNCTION hostile.wide_object(n integer) RETURNS jsonb LANGUAGE sql IMMUTABLE
AS $$ SELECT jsonb_object_agg('k' || g, g) FROM generate_series(1, n) g $$;
-- {"blob": "xxx..."} of exactly size bytes of jsonb (what amebo.max_payload_size measures).
CREATE FUNCTION hostile.blob(size integer) RETURNS jsonb LANGUAGE sql IMMUTABLE
AS $$ SELECT jsonb_build_object('blob', repeat('x', size -
          (pg_column_size(jsonb_build_object('blob', '')) - 4))) $$;
-- A string schema with this pattern.
CREATE FUNCTION hostile.pattern_schema(pattern text) RETURNS jsonb LANGUAGE sql IMMUTABLE
AS $$ SELECT jsonb_build_object('type', 'string', 'pattern', pattern) $$;
-- n definitions, each a $ref to the next (or a property whose schema is a $ref to the next);
-- the schema refers to the first.
CREATE FUNCTION hostile.ref_chain(n integer, via_property boolean DEFAULT false) RETURNS jsonb
LANGUAGE sql IMMUTABLE
AS $$ SELECT jsonb_build_object('$ref', '#/definitions/d1', 'definitions',
          jsonb_object_agg('d' || g, CASE
              WHEN g = n THEN '{"type": "string"}'::jsonb
              WHEN via_property THEN jsonb_build_object('properties', jsonb_build_object('a',
                  jsonb_build_object('$ref', '#/definitions/d' || (g + 1))))
              ELSE jsonb_build_object('$ref', '#/definitions/d' || (g + 1)) END))
     FROM generate_series(1, n) g $$;
-- n definitions, each a combinator (anyOf, oneOf, allOf) of two $refs to the next: 2^n paths.
CREATE FUNCTION hostile.doubling(n integer, keyword text) RETURNS jsonb LANGUAGE sql IMMUTABLE
AS $$ SELECT jsonb_build_object('$ref', '#/definitions/d1', 'definitions',
          jsonb_object_agg('d' || g, CASE WHEN g < n
              THEN jsonb_build_object(keyword, jsonb_build_array(
                       jsonb_build_object('$ref', '#/definitions/d' || (g + 1)),
                       jsonb_build_object('$ref', '#/definitions/d' || (g + 1))))
              ELSE '{"type": "string", "minLength": 2}'::jsonb END))
     FROM generate_series(1, n) g $$;
-- An object schema whose property s has schema s (its definitions moved to the root, where
-- its "$ref"s look for them).
CREATE FUNCTION hostile.wrap_schema(s jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
AS $$ SELECT jsonb_build_object('type', 'object', 'properties', jsonb_build_object('s', s))
          || CASE WHEN s ? 'definitions'
                  THEN jsonb_build_object('definitions', s->'definitions') ELSE '{}' END $$;
-- A reducer and projection handlers for the fixtures.
CREATE FUNCTION hostile.reduce(state jsonb, event amebo.events) RETURNS jsonb LANGUAGE sql
AS $$ SELECT state || jsonb_build_object('n', coalesce((state->>'n')::int, 0) + 1) $$;
CREATE FUNCTION hostile.project(event amebo.events) RETURNS void LANGUAGE sql AS $$ $$;
CREATE FUNCTION hostile.project_slowly(event amebo.events) RETURNS void LANGUAGE sql
AS $$ SELECT pg_sleep(0.001) $$;
SELECT amebo.create_application('hostile_app');
SELECT amebo.create_action('hostile.regex', 'hostile_app', '{"type": "object",
    "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}}');
SELECT amebo.append_event('hostile-1', 'hostile.regex', jsonb_build_object('s', 'aaa'))
  FROM generate_series(1, 3);
SELECT amebo.save_snapshot('hostile-1', 1, '{}');
SELECT amebo.create_reducer('hostile', 'hostile.reduce(jsonb,amebo.events)');
SELECT amebo.create_projection('hostile_proj', 'hostile.project(amebo.events)');
"""

# Valid arguments by parameter name: objects that exist (EXISTING) or, for create_*
# functions, names that do not exist yet (FRESH).
EXISTING = {
    "application": "'hostile_app'", "subscription": "'hostile-sub'",
    "action": "'hostile.regex'", "stream": "'hostile-1'", "category": "'hostile'",
    "pattern": "'hostile.*'", "url": "'http://127.0.0.1:9/hook'",
    "address": "'http://127.0.0.1:9'", "timeout": "0.1", "version": "1",
    "payload": "'{\"s\": \"aaa\"}'", "document": "'{\"s\": \"aaa\"}'",
    "schema": "'{\"type\": \"object\"}'", "old_schema": "'{\"type\": \"object\"}'",
    "new_schema": "'{\"type\": \"object\"}'",
    "events": "'[{\"action\": \"hostile.regex\", \"payload\": {\"s\": \"a\"}}]'",
    "reducer": "'hostile.reduce(jsonb,amebo.events)'",
    "argtypes": "ARRAY['amebo.events']::regtype[]", "rettype": "'void'",
    "paths": "ARRAY['{s}']", "reason": "'hostile erasure'", "before_version": "1",
    "positions": "ARRAY(SELECT position FROM amebo.events ORDER BY position LIMIT 2)",
    "policy": "(SELECT p FROM amebo.retention_policies p LIMIT 1)", "max_events": "10",
}
FRESH = {"application": "'hostile_new'", "subscription": "'hostile-new'",
         "action": "'hostile.new'", "stream": "'hostile-new'", "category": "'hostilenew'",
         "name": "'hostile_new'"}
NAME_BY_SUFFIX = {"_application": "'hostile_app'", "_projection": "'hostile_proj'",
                  "_secret": "'hostile_app'", "_reducer": "'hostile'"}
BY_TYPE = {
    "text": "'hostile'", "jsonb": "'{}'", "integer": "1", "bigint": "0",
    "double precision": "0.1", "boolean": "false", "uuid": "gen_random_uuid()",
    "timestamp with time zone": "now()", "interval": "'1 day'", "text[]": "NULL",
    "regprocedure": "'hostile.project(amebo.events)'", "regrole": "'postgres'",
    "regtype": "'void'", "regtype[]": "ARRAY[]::regtype[]",
    "amebo.events": "(SELECT e FROM amebo.events e ORDER BY position LIMIT 1)",
}

# The extension's functions (in both its schemas, amebo and amebo_internal) with their
# argument names, types and defaults.
FUNCTIONS_SQL = """
SELECT p.oid, p.pronamespace::regnamespace::text, p.proname, p.oid::regprocedure::text,
       p.pronargs,
       coalesce(p.proargnames, ARRAY[]::text[]), p.proargtypes::oid[],
       ARRAY(SELECT coalesce(pg_get_function_arg_default(p.oid, i), '')
             FROM generate_series(1, p.pronargs) i),
       ARRAY(SELECT format_type(t, NULL) FROM unnest(p.proargtypes::oid[]) t),
       coalesce(p.proargmodes, ARRAY[]::"char"[])::text[]
FROM pg_proc p
JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension x ON x.oid = d.refobjid AND x.extname = 'amebo'
ORDER BY p.proname, p.oid
"""


class Function:
    """One function of the extension: its schema and name, input parameters (name, type) and
    defaults."""

    def __init__(self, row):
        (self.oid, self.schema, self.name, self.signature, nargs, argnames, _, defaults,
         types, modes) = row
        input_names = [n for n, m in zip(argnames, modes or ["i"] * len(argnames))
                       if m in ("i", "b", "v")] if argnames else []
        self.params = [(input_names[i] if i < len(input_names) else f"${i + 1}", types[i])
                       for i in range(nargs)]
        self.defaults = defaults

    # The valid argument (SQL) for parameter i.
    def baseline(self, i):
        name, sql_type = self.params[i]
        created = self.name[len("create_"):] if self.name.startswith("create_") else None
        if created and name in FRESH and name in (created, "name", "category"):
            return FRESH[name]
        if name == "handler":
            return EXISTING["url"] if sql_type == "text" else BY_TYPE["regprocedure"]
        if name == "name":
            suffix = next((s for s in NAME_BY_SUFFIX if self.name.endswith(s)), None)
            return NAME_BY_SUFFIX[suffix] if suffix else BY_TYPE["text"]
        if name in EXISTING:
            return EXISTING[name]
        if self.defaults[i]:
            return self.defaults[i]
        return BY_TYPE.get(sql_type, "NULL")

    # The SQL statement calling this function with the given argument expressions.
    def call_sql(self, arguments):
        typed = [f"({sql})::{self.params[i][1]}" for i, sql in enumerate(arguments)]
        return f"SELECT count(*) FROM {self.schema}.{self.name}({', '.join(typed)}) AS r"


class Call:
    """A statement to run, what it tests, and whether statement_timeout may cancel it: when it
    was asked to wait longer, or when it runs a pathological schema (user-supplied computation,
    like a regular expression or a query: it must stay cancellable, it need not be fast)."""

    def __init__(self, function, label, sql, may_time_out=False, setting=None):
        self.function = function  # the function's name
        self.label = label
        self.sql = sql
        self.may_time_out = may_time_out
        self.setting = setting


# Connects as the superuser (amebo's functions are all reachable from there).
def connect():
    return psycopg.connect(host=args.host, port=args.port, dbname="postgres", user="postgres",
                           autocommit=True)


# True when a value passed as a timeout asks to wait longer than statement_timeout.
def waits_longer(param_name, label):
    if "timeout" not in param_name:
        return False
    try:
        return float(label) > args.timeout
    except ValueError:
        return False


# True when a URL's host is an IP literal (checking it with private targets refused needs
# no DNS look-up).
def has_literal_host(url_sql):
    match = re.match(r"'https?://(?:[^@/]*@)?(\[[^\]/]*\]|[0-9.]+)(?::\d*)?(?:/|')", url_sql)
    return match is not None


# The calls for one function: defaults, valid, all NULL, NULL and hostile values per position.
def calls_for(function, limit):
    base = [function.baseline(i) for i in range(len(function.params))]
    required = len([d for d in function.defaults if not d])
    calls = [Call(function.name, "defaults", function.call_sql(base[:required])),
             Call(function.name, "valid", function.call_sql(base))]
    if not function.params:
        return calls
    calls.append(Call(function.name, "all NULL", function.call_sql(["NULL"] * len(base))))
    schemas = {sql for _, sql in values.schema_values()}
    for i, (name, sql_type) in enumerate(function.params):
        hostile = [("NULL", "NULL")] + values.values_for(sql_type, name, limit)
        for label, sql in hostile:
            arguments = base[:i] + [sql] + base[i + 1:]
            what = f"{name}={label}"
            statement = function.call_sql(arguments)
            may_time_out = waits_longer(name, label) or sql in schemas
            calls.append(Call(function.name, what, statement, may_time_out))
            if sql_type == "text" and sql.startswith("'http") and has_literal_host(sql):
                calls.append(Call(function.name, what + " (private refused)", statement,
                                  setting="amebo.allow_private_targets = off"))
    return calls


# Every pathological schema against every document meant to hurt it: through
# schema_violations, and through a registered action (create_action, then append_event).
def schema_pair_calls():
    calls = []
    for schema_label, schema in values.schema_values():
        for document_label, document in values.documents_for_schema(schema_label):
            what = f"{schema_label} / {document_label}"
            calls.append(Call("schema_violations", what,
                              f"SELECT count(*) FROM amebo.schema_violations({schema}, "
                              f"{document})", may_time_out=True))
            calls.append(Call("create_action+append_event", what,
                              f"SELECT amebo.create_action('hostile.pair', 'hostile_app', "
                              f"hostile.wrap_schema({schema})); "
                              f"SELECT amebo.append_event('hostile-pair', 'hostile.pair', "
                              f"jsonb_build_object('s', {document}))", may_time_out=True))
    return calls


class Outcome:
    """How one call ended: SQLSTATE ('00000' for success, 'lost' for no answer), seconds."""

    def __init__(self, call, sqlstate, seconds, message=""):
        self.call = call
        self.sqlstate = sqlstate
        self.seconds = seconds
        self.message = message


class Runner:
    """Runs calls one by one on one connection, each in its own rolled-back transaction."""

    def __init__(self):
        self.conn = connect()
        self.killed = False

    # Kills the backend of a call that even a cancel request did not stop (a loop without
    # interrupt checks): otherwise it would outlive the test's cluster.
    def kill_backend(self, pid):
        self.killed = True
        print(f"  backend {pid} ignored statement_timeout and a cancel request: SIGKILL",
              flush=True)
        os.kill(pid, signal.SIGKILL)

    # Runs one call; reconnects after a lost connection.
    def run(self, call):
        self.killed = False
        cancel = threading.Timer(args.timeout + WATCHDOG, self.conn.cancel)
        kill = threading.Timer(args.timeout + 2 * WATCHDOG, self.kill_backend,
                               (self.conn.info.backend_pid,))
        cancel.start()
        kill.start()
        started = time.monotonic()
        try:
            with self.conn.transaction(force_rollback=True):
                self.conn.execute(f"SET LOCAL statement_timeout = {int(args.timeout * 1000)}")
                if call.setting:
                    self.conn.execute(f"SET LOCAL {call.setting}")
                self.conn.execute(call.sql)
            return Outcome(call, "00000", time.monotonic() - started)
        except psycopg.Error as error:
            seconds = time.monotonic() - started
            if self.conn.closed or self.conn.broken:
                self.reconnect()
                return Outcome(call, "killed" if self.killed else "lost", seconds, str(error))
            return Outcome(call, error.sqlstate or "none", seconds, str(error).split("\n")[0])
        finally:
            cancel.cancel()
            kill.cancel()

    # Opens a new connection once the server accepts them again (after a crash restart).
    def reconnect(self):
        deadline = time.monotonic() + 60
        while True:
            try:
                self.conn = connect()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


# The failure a finished call shows, or None when it ended acceptably.
def failure_of(outcome):
    if outcome.sqlstate == "lost":
        return "connection lost"
    if outcome.sqlstate == "killed":
        return "not cancellable: killed"
    if outcome.sqlstate == "none":
        return "error without SQLSTATE"
    if outcome.sqlstate == "XX000":
        return "internal error XX000"
    if outcome.seconds > args.timeout + GRACE:
        return f"took {outcome.seconds:.1f} s"
    if outcome.sqlstate == "57014" and not outcome.call.may_time_out:
        return "cancelled by statement_timeout"
    return None


# Creates the fixtures, committed, so that every call finds them.
def create_fixtures(conn, handler):
    conn.execute(FIXTURE_SQL)
    conn.execute("SELECT amebo.create_subscription('hostile_app', 'hostile-sub', 'hostile.*', "
                 "%s, max_retries => 0)", (handler,))


# A 127.0.0.1 URL on which nothing listens (deliveries to it fail at once).
def closed_handler_url():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


# The worker's process id, or None.
def worker_pid(conn):
    row = conn.execute("SELECT pid FROM amebo.worker_status()").fetchone()
    return row[0] if row else None


# Commits hostile events for the worker (deep, at the size limit, odd deliver_after) under
# subscriptions with hostile filters and batches; true when the worker gets through them.
def feed_worker(conn, handler, limit):
    for name, filter_sql, extra in [
            ("hostile-deep-filter", f"hostile.deep_object({values.DEEP})", ""),
            ("hostile-wide-filter", "hostile.wide_object(1000)", ""),
            ("hostile-batch", "NULL", ", ordered => true, batch_size => 1000"),
            ("hostile-all", "NULL", "")]:
        conn.execute(f"SELECT amebo.create_subscription('hostile_app', '{name}', '*', %s, "
                     f"max_retries => 0, filter => {filter_sql}{extra})", (handler,))
    documents = [sql for label, sql in values.document_values(limit)
                 if label in ("object 10000 deep", "object holding 10000 deep", "limit")]
    documents += ["hostile.wide_object(20000)",
                  "jsonb_build_object('a', to_jsonb(array_fill(1, ARRAY[50000])))"]
    metadata = ["'{\"deliver_after\": \"9999-99-99T99:99:99Z\"}'",
                "'{\"deliver_after\": 1e308}'", f"hostile.deep_object({values.DEEP})",
                "'{\"deliver_after\": \"2000-01-01T00:00:00Z\"}'"]
    for payload in documents:
        conn.execute(f"SELECT amebo.append_event('hostile-feed', 'feed.deep', {payload})")
    for meta in metadata:
        conn.execute(f"SELECT amebo.append_event('hostile-feed', 'feed.meta', '{{}}', NULL, "
                     f"{meta})")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        behind = conn.execute("SELECT events_behind FROM amebo.delivery_queue").fetchone()
        if behind is not None and behind[0] == 0:
            return True
        time.sleep(0.5)
    return False


# Counts of outcomes per SQLSTATE and per function, the slowest calls and the failures.
def report(outcomes):
    by_state = collections.Counter(o.sqlstate for o in outcomes)
    print(f"--- {len(outcomes)} calls; outcomes per SQLSTATE:")
    for state, count in sorted(by_state.items(), key=lambda kv: -kv[1]):
        print(f"  {state}  {count}")
    print("--- per function (calls: SQLSTATE x count)")
    per_function = collections.defaultdict(collections.Counter)
    for o in outcomes:
        per_function[o.call.function][o.sqlstate] += 1
    for name in sorted(per_function):
        counts = per_function[name]
        detail = ", ".join(f"{s} x{n}" for s, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        print(f"  {name:28} {sum(counts.values()):5}: {detail}")
    print(f"--- slowest {SLOWEST_SHOWN} calls")
    for o in sorted(outcomes, key=lambda o: -o.seconds)[:SLOWEST_SHOWN]:
        print(f"  {o.seconds:6.2f} s  {o.sqlstate}  {o.call.function}({o.call.label})")
    waited = [o for o in outcomes if o.sqlstate == "57014"]
    print(f"--- cancelled by statement_timeout: {len(waited)} "
          f"({sum(o.call.may_time_out for o in waited)} allowed: waits asked for, or "
          f"pathological schemas)")
    for o in waited:
        print(f"  {o.call.function}({o.call.label}) {o.seconds:.2f} s "
              f"{'allowed' if o.call.may_time_out else 'NOT allowed'}")


# Lines of the server log that show a crashed backend or worker.
def crash_lines(log_path):
    pattern = re.compile(r"terminated by signal|server process .* was terminated|PANIC|"
                         r"amebo.*exited with exit code [1-9]")
    with open(log_path, errors="replace") as log:
        return [line.rstrip() for line in log if pattern.search(line)]


# Builds every call, runs them, prints the figures and checks the outcomes.
def main():
    started = time.monotonic()
    conn = connect()
    handler = closed_handler_url()
    create_fixtures(conn, handler)
    limit = int(conn.execute("SELECT setting FROM pg_settings "
                             "WHERE name = 'amebo.max_payload_size'").fetchone()[0])
    functions = [Function(row) for row in conn.execute(FUNCTIONS_SQL).fetchall()]
    functions = [f for f in functions if re.search(args.only, f.name)]
    calls = [c for f in functions for c in calls_for(f, limit)]
    if re.search(args.only, "schema_violations"):
        calls += schema_pair_calls()
    pid_before = worker_pid(conn)
    schemas = ", ".join(f"{sum(f.schema == s for f in functions)} in {s}"
                        for s in sorted({f.schema for f in functions}))
    print(f"{len(functions)} functions of amebo ({schemas}; max_payload_size {limit} bytes), "
          f"{len(calls)} calls, statement_timeout {args.timeout:g} s", flush=True)
    runner = Runner()
    outcomes = []
    for index, call in enumerate(calls, 1):
        outcome = runner.run(call)
        outcomes.append(outcome)
        problem = failure_of(outcome)
        if problem or args.verbose:
            print(f"  {'FAIL' if problem else 'call'} {call.function}({call.label}): "
                  f"{problem or outcome.sqlstate} {outcome.seconds:.2f} s {outcome.message[:200]}",
                  flush=True)
        if index % 500 == 0:
            print(f"  ... {index} calls, {time.monotonic() - started:.0f} s", flush=True)
    report(outcomes)
    failures = [o for o in outcomes if failure_of(o)]
    checks.check(not failures, f"every call ended acceptably ({len(failures)} did not)")
    checks.check(len(functions) > 0 and len(outcomes) == len(calls),
                 f"{len(functions)} functions enumerated, {len(outcomes)} calls made")
    fed = feed_worker(conn, handler, limit)
    checks.check(fed, "the worker got through the hostile events (events_behind = 0)")
    pid_after = worker_pid(conn)
    checks.eq(pid_after, pid_before, "the worker's pid before and after")
    crashes = crash_lines(args.log)
    checks.check(not crashes, f"no crash in the server log ({len(crashes)} lines)",
                 "\n         ".join(crashes[:10]))
    print(f"--- {checks.passed} checks passed, {len(checks.failed)} failed, "
          f"{time.monotonic() - started:.0f} s")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
