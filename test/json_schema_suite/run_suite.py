#!/usr/bin/env python3
"""Conformance of amebo's JSON Schema validation with the official JSON-Schema-Test-Suite.

Runs every test case of every draft-7 file directly in the suite's tests/draft7 folder (not
optional/) through amebo.schema_violations, one call per case: a case passes when the call
returns no rows exactly when the suite expects the document to be valid. A schema amebo
refuses to compile (SQLSTATE AM007) makes each of its cases a failure, unless its group is
in EXCLUSIONS below, each with its reason. Prints per-file counts, every failure and every
exclusion, and the line "N passed, M failed, K excluded (P% of non-excluded cases passed)";
exits 1 when fewer than 99% of the non-excluded cases pass (2 on a usage error).

Usage: run_suite.py [--suite DIR] [--threshold PCT] [--verbose] [CONNINFO]
  CONNINFO defaults to $AMEBO_SUITE_DSN, else libpq's environment (PGHOST, PGPORT, ...).
  DIR defaults to $AMEBO_SUITE_DIR, else /usr/share/json-schema-test-suite/tests/draft7
  (Debian package json-schema-test-suite).
"""

import argparse
import decimal
import json
import math
import os
import sys
from pathlib import Path

import psycopg

DEFAULT_SUITE = "/usr/share/json-schema-test-suite/tests/draft7"
INVALID_SCHEMA = "AM007"
META_SCHEMA = ("$ref to the draft-07 meta-schema, http://json-schema.org/draft-07/schema# "
               "(a remote reference, which amebo refuses by design: it bundles no meta-schema)")

# Groups not counted, as (file, group description) -> reason; a description of None stands for
# every group of the file. Only groups that need what amebo refuses by design belong here:
# amebo resolves no remote $ref (nothing is fetched from inside the database server), and the
# suite expects a server on http://localhost:1234 serving its remotes/ folder. An excluded
# group is still run: if its schema compiles after all, its cases are counted like any other
# and the exclusion is reported as stale.
EXCLUSIONS = {
    ("refRemote.json", None):
        "every group $refs a document the suite serves from http://localhost:1234 "
        "(remote references, which amebo refuses by design)",
    ("ref.json", "remote ref, containing refs itself"): META_SCHEMA,
    ("definitions.json", "valid definition"): META_SCHEMA,
    ("definitions.json", "invalid definition"): META_SCHEMA,
}


def exclusion_reason(file_name, group_description):
    return EXCLUSIONS.get((file_name, group_description)) or EXCLUSIONS.get((file_name, None))


def load(path):
    """A suite file, numbers kept exactly as written (1.0 stays 1.0, 1e308 stays exact)."""
    with open(path, encoding="utf-8") as f:
        return json.load(f, parse_float=decimal.Decimal)


def to_json(value):
    """JSON text for a value load() returned."""
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(json.dumps(k) + ": " + to_json(v) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(to_json(v) for v in value) + "]"
    return json.dumps(value)


class Runner:
    def __init__(self, conninfo):
        self.conninfo = conninfo
        self.conn = None
        self.connect()

    def connect(self):
        self.conn = psycopg.connect(self.conninfo, autocommit=True)

    def violations(self, schema_text, data_text):
        """('ok', rows) or ('error', sqlstate, message); reconnects after a lost connection."""
        try:
            with self.conn.cursor() as cur:
                cur.execute("SELECT path, rule FROM amebo.schema_violations(%s::jsonb, %s::jsonb)",
                            (schema_text, data_text))
                return ("ok", cur.fetchall())
        except psycopg.OperationalError as e:
            if not self.conn.closed:
                raise
            self.connect()  # the backend died: report the case, go on with a new session
            return ("error", "connection lost", str(e).strip())
        except psycopg.Error as e:
            return ("error", e.sqlstate or "?", (e.diag.message_primary or str(e)).strip())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("conninfo", nargs="?", default=os.environ.get("AMEBO_SUITE_DSN", ""))
    parser.add_argument("--suite", default=os.environ.get("AMEBO_SUITE_DIR", DEFAULT_SUITE))
    parser.add_argument("--threshold", type=float, default=99.0,
                        help="minimum percentage of non-excluded cases that must pass")
    parser.add_argument("--verbose", action="store_true", help="print every case")
    args = parser.parse_args()

    suite = Path(args.suite)
    files = sorted(p for p in suite.glob("*.json") if p.is_file())
    if not files:
        print(f"no test files in {suite} (install the Debian package json-schema-test-suite)",
              file=sys.stderr)
        return 2
    known_files = {p.name for p in files}
    for file_name in sorted({file_name for file_name, _ in EXCLUSIONS}):
        if file_name not in known_files:
            print(f"note: exclusion for {file_name}, which the suite does not have")

    runner = Runner(args.conninfo)
    with runner.conn.cursor() as cur:
        cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'amebo'")
        row = cur.fetchone()
    if row is None:
        print("the database has no amebo extension (CREATE EXTENSION amebo)", file=sys.stderr)
        return 2
    print(f"JSON-Schema-Test-Suite draft 7 ({suite}) against amebo {row[0]}")

    passed = failed = excluded = 0
    failures = []   # (file, group, case, schema, data, expected, outcome)
    exclusions = {}  # (file, group) -> (reason, cases, how the schema fared)
    stale = []       # (file, group, reason) whose schema compiled
    seen_groups = set()
    print(f"{'file':<28} {'pass':>5} {'fail':>5} {'excl':>5}")
    for path in files:
        f_pass = f_fail = f_excl = 0
        for group in load(path):
            gdesc = group["description"]
            seen_groups.add((path.name, gdesc))
            schema_text = to_json(group["schema"])
            reason = exclusion_reason(path.name, gdesc)
            outcomes = []
            for case in group["tests"]:
                data_text = to_json(case["data"])
                outcomes.append((case, data_text, runner.violations(schema_text, data_text)))
            refused = [o for _, _, o in outcomes if o[0] == "error" and o[1] == INVALID_SCHEMA]
            if reason is not None and refused:
                f_excl += len(outcomes)
                exclusions[(path.name, gdesc)] = (reason, len(outcomes), refused[0][2])
                continue
            if reason is not None:
                stale.append((path.name, gdesc, reason))
            for case, data_text, outcome in outcomes:
                expected = case["valid"]
                ok = outcome[0] == "ok" and (len(outcome[1]) == 0) == expected
                if args.verbose:
                    print(f"  {'ok  ' if ok else 'FAIL'} {path.name}: {gdesc}: {case['description']}")
                if ok:
                    f_pass += 1
                else:
                    f_fail += 1
                    failures.append((path.name, gdesc, case["description"], schema_text,
                                     data_text, expected, outcome))
        passed += f_pass
        failed += f_fail
        excluded += f_excl
        print(f"{path.name:<28} {f_pass:>5} {f_fail:>5} {f_excl:>5}")
    for (file_name, gdesc) in EXCLUSIONS:
        if gdesc is not None and (file_name, gdesc) not in seen_groups and file_name in known_files:
            print(f"note: exclusion for group {gdesc!r} of {file_name}, which the suite does not have")

    if exclusions:
        print(f"\nexcluded ({excluded} cases):")
        for (file_name, gdesc), (reason, count, message) in exclusions.items():
            print(f"  {file_name}: {gdesc} ({count} case{'' if count == 1 else 's'})\n      reason: {reason}\n"
                  f"      amebo: AM007 {message}")
    if stale:
        print("\nstale exclusions (the schema compiled, so the cases were counted):")
        for file_name, gdesc, reason in stale:
            print(f"  {file_name}: {gdesc} ({reason})")
    if failures:
        print(f"\nfailures ({failed}):")
        for file_name, gdesc, cdesc, schema_text, data_text, expected, outcome in failures:
            print(f"  {file_name}: {gdesc}: {cdesc}")
            print(f"      schema:   {schema_text}")
            print(f"      data:     {data_text}")
            print(f"      expected: {'valid' if expected else 'invalid'}")
            if outcome[0] == "ok":
                got = "valid (no violations)" if not outcome[1] else "invalid: " + "; ".join(
                    f"{p}: {r}" for p, r in outcome[1])
                print(f"      got:      {got}")
            else:
                print(f"      got:      error {outcome[1]}: {outcome[2]}")

    counted = passed + failed
    # Rounded down, so that a run below the threshold never prints as reaching it.
    percent = math.floor(1000.0 * passed / counted) / 10 if counted else 0.0
    print(f"\n{passed} passed, {failed} failed, {excluded} excluded "
          f"({percent:.1f}% of non-excluded cases passed)")
    if counted == 0 or percent < args.threshold:
        print(f"FAILED: fewer than {args.threshold:g}% of the non-excluded cases passed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
