"""Checks that docs/reference.md documents everything amebo installs: every function, view,
table and sequence of the extension (from the catalogs, through pg_depend), every amebo.*
setting (pg_settings), every amebo_* role, and every SQLSTATE the sources raise, the
functions of schema amebo_internal in a section of their own; that it documents nothing that
no longer exists; and that its introduction states how many functions each schema has. Then proves it can fail: an entry removed from
a copy of the reference must be reported missing.

The anchor convention (also stated at the top of docs/reference.md): each object has a
level-3 heading under the level-2 section of its kind, whose text, without backticks,
starts with the object's name:
    ## Functions   ### amebo.append_event(...)     (overloads share one entry)
    ## Internal functions (amebo_internal)   ### amebo_internal.record_deliveries
    ## Views       ### amebo.subscription_status
    ## Tables      ### amebo.events                (sequences too)
    ## Settings    ### amebo.max_payload_size
    ## Roles       ### amebo_reader
    ## SQLSTATEs   ### AM001 ... / ### 22023 ...
A function entry must also name each of its arguments, a table or view entry each of its
columns, and a setting entry its type and context (as pg_settings spells them, in
backticks, e.g. `integer`, `sighup`).

Usage: check_reference.py --host DIR --port N --reference docs/reference.md --src src
       --sql sql --errcodes /path/to/utils/errcodes.h
"""

import argparse
import re
import sys
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from checks import Checks  # noqa: E402

# The section of docs/reference.md that holds each kind of entry.
SECTIONS = {
    "function": "Functions",
    "internal function": "Internal functions (amebo_internal)",
    "view": "Views",
    "table": "Tables",
    "setting": "Settings",
    "role": "Roles",
    "sqlstate": "SQLSTATEs",
}

# The extension's member objects, by kind, from pg_depend (deptype 'e').
MEMBERS_SQL = """
SELECT CASE WHEN d.classid = 'pg_proc'::regclass
                 AND p.pronamespace = 'amebo_internal'::regnamespace THEN 'internal function'
            WHEN d.classid = 'pg_proc'::regclass THEN 'function'
            WHEN c.relkind = 'v' THEN 'view'
            WHEN c.relkind IN ('r', 'p', 'S') THEN 'table'
            WHEN d.classid = 'pg_namespace'::regclass THEN 'schema'
            ELSE 'other' END AS kind,
       CASE WHEN d.classid = 'pg_proc'::regclass THEN p.pronamespace::regnamespace::text
                                                      || '.' || p.proname
            WHEN d.classid = 'pg_class'::regclass THEN c.relnamespace::regnamespace::text
                                                       || '.' || c.relname
            WHEN d.classid = 'pg_namespace'::regclass THEN d.objid::regnamespace::text
            ELSE pg_describe_object(d.classid, d.objid, d.objsubid) END AS name,
       CASE WHEN d.classid = 'pg_proc'::regclass THEN
                (SELECT array_agg(n ORDER BY i) FROM unnest(p.proargnames, p.proargmodes)
                     WITH ORDINALITY AS a(n, m, i)
                 WHERE coalesce(m, 'i') IN ('i', 'b', 'v') AND n <> '')
            WHEN d.classid = 'pg_class'::regclass AND c.relkind <> 'S' THEN
                (SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute
                 WHERE attrelid = c.oid AND attnum > 0 AND NOT attisdropped) END AS parts,
       c.relkind::text AS relkind
FROM pg_depend d
LEFT JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid
LEFT JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid
WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
  AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'amebo')
"""

SETTINGS_SQL = "SELECT name, vartype, context FROM pg_settings WHERE name LIKE 'amebo.%'"
ROLES_SQL = r"SELECT rolname FROM pg_roles WHERE rolname LIKE 'amebo\_%'"


# Reads the catalogs: {kind: {name: set of parts (arguments, columns, type and context)}},
# and under "counts" how many members of each kind there are (overloads and sequences apart).
def catalog_objects(conn):
    objects = {kind: {} for kind in SECTIONS}
    objects["other"] = {}
    objects["schema"] = {}
    objects["counts"] = {}
    for kind, name, parts, relkind in conn.execute(MEMBERS_SQL):
        objects[kind].setdefault(name, set()).update(parts or [])
        counted = "sequence" if relkind == "S" else kind
        objects["counts"][counted] = objects["counts"].get(counted, 0) + 1
    for name, vartype, context in conn.execute(SETTINGS_SQL):
        objects["setting"][name] = {f"`{vartype}`", f"`{context}`"}
    for (name,) in conn.execute(ROLES_SQL):
        objects["role"][name] = set()
    return objects


# The SQLSTATE codes of PostgreSQL's ERRCODE_* macros, from utils/errcodes.h.
def errcode_macros(errcodes_h):
    pattern = re.compile(r"#define (ERRCODE_\w+) MAKE_SQLSTATE\('(.)','(.)','(.)','(.)','(.)'\)")
    return {m[1]: "".join(m.groups()[1:]) for m in pattern.finditer(errcodes_h.read_text())}


# Every SQLSTATE the sources raise or define: amebo's sqlstate constants, literal codes
# given to Error(...) and ERRCODE = '...' in the extension scripts, and ERRCODE_* macros.
def source_sqlstates(src, sql, errcodes_h):
    codes = set()
    macros = errcode_macros(errcodes_h)
    for path in sorted(src.rglob("*.[ch]pp")):
        text = path.read_text()
        codes.update(re.findall(r'constexpr char k\w+\[\] = "([0-9A-Z]{5})"', text))
        codes.update(re.findall(r'Error\("([0-9A-Z]{5})"', text))
        for macro in re.findall(r"\b(ERRCODE_[A-Z_]+)\b", text):
            if macro in macros:
                codes.add(macros[macro])
    for path in sorted(sql.glob("amebo--*.sql")):
        codes.update(re.findall(r"ERRCODE\s*=\s*'([0-9A-Z]{5})'", path.read_text()))
    return {code: set() for code in codes}


# Splits the reference into {section title: {entry name: entry text}}.
def reference_entries(text):
    entries = {title: {} for title in SECTIONS.values()}
    section, name = None, None
    for line in text.splitlines():
        if line.startswith("## "):
            section, name = line[3:].strip(), None
        elif line.startswith("### ") and section in entries:
            heading = line[4:].replace("`", "").strip()
            name = re.match(r"[^\s(,]+", heading).group(0) if heading else ""
            entries[section][name] = ""
        elif name is not None and section in entries:
            entries[section][name] += line + "\n"
    return entries


# The parts (argument or column names, type, context) an entry's text does not mention.
def unmentioned(parts, entry):
    return sorted(p for p in parts
                  if not re.search(r"(?<![\w.])" + re.escape(p) + r"(?![\w])", entry))


# Compares catalog and sources with the reference; returns {check: list of problems}.
def compare(objects, entries):
    problems = {}
    for kind, title in SECTIONS.items():
        documented = entries[title]
        missing = sorted(set(objects[kind]) - set(documented))
        problems[f"every {kind} has an entry under '## {title}'"] = missing
        partial = [f"{name}: {', '.join(unmentioned(parts, documented[name]))}"
                   for name, parts in sorted(objects[kind].items())
                   if name in documented and unmentioned(parts, documented[name])]
        problems[f"every {kind} entry names its arguments/columns/type/context"] = partial
        stale = sorted(set(documented) - set(objects[kind]))
        if kind == "sqlstate":  # standard codes PostgreSQL raises may be documented too
            stale = [code for code in stale if code.startswith("AM")]
        problems[f"no '## {title}' entry names something that does not exist"] = stale
    problems["no extension member of an undocumented kind"] = sorted(objects["other"])
    return problems


# File names that look like amebo.<name> in the documents but are not database objects.
FILE_SUFFIXES = {"cpp", "hpp", "control", "so", "conf", "md", "sql"}


# Every amebo.<name> or amebo_internal.<name> the documents mention that names no function,
# view, table or setting (of amebo, or a function of amebo_router's schema amebo).
def unknown_mentions(objects, documents):
    known = {name for kind in ("function", "internal function", "view", "table", "setting",
                               "router function")
             for name in objects[kind]}
    unknown = []
    for path, text in documents:
        for name in sorted(set(re.findall(r"(?<![\w/])amebo(?:_internal)?\.[a-z_0-9]+", text))):
            if name not in known and name.split(".")[1] not in FILE_SUFFIXES:
                unknown.append(f"{path}: {name}")
    return unknown


# The counts the reference's introduction must state: functions in amebo and in
# amebo_internal, views, tables and sequences.
def stated_counts(objects):
    count = objects["counts"]
    internal = count.get("internal function", 0)
    return [f"`amebo`: {count.get('function', 0)} functions", f"{count.get('view', 0)} views",
            f"{count.get('table', 0)} tables and {count.get('sequence', 0)} sequences",
            f"The {internal} functions only amebo itself calls",
            f"The {internal} functions of schema `amebo_internal`"]


# Removes the first entry of a section from the reference text (the negative control).
def without_first_entry(text, title):
    lines = text.splitlines()
    start = lines.index(f"## {title}")
    first = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("### "))
    end = next((i for i in range(first + 1, len(lines)) if lines[i].startswith("##")),
               len(lines))
    name = re.match(r"[^\s(,]+", lines[first][4:].replace("`", "").strip()).group(0)
    return "\n".join(lines[:first] + lines[end:]), name


# Parses the command line.
def arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--dbname", default="postgres")
    parser.add_argument("--reference", required=True, type=Path)
    parser.add_argument("--src", required=True, type=Path)
    parser.add_argument("--sql", required=True, type=Path)
    parser.add_argument("--errcodes", required=True, type=Path)
    parser.add_argument("--documents", nargs="*", type=Path, default=[],
                        help="more documents whose amebo.<name> mentions must exist")
    return parser.parse_args()


# Runs the comparison, prints the figures and every problem; exits 1 on any problem.
def main():
    args = arguments()
    with psycopg.connect(host=args.host, port=args.port, dbname=args.dbname,
                         user="postgres", connect_timeout=10) as conn:
        objects = catalog_objects(conn)
    objects["sqlstate"] = source_sqlstates(args.src, args.sql, args.errcodes)
    objects["router function"] = set(re.findall(r"CREATE FUNCTION (amebo\.\w+)",
                                                (args.sql / "amebo_router.sql").read_text()))
    text = args.reference.read_text()
    entries = reference_entries(text)
    print("found: " + ", ".join(f"{len(objects[k])} {k}s" for k in SECTIONS)
          + "; documented: " + ", ".join(f"{len(entries[t])} {t}" for t in SECTIONS.values()))
    checks = Checks()
    problems = compare(objects, entries)
    for what, found in problems.items():
        checks.check(not found, what, "\n         ".join(found))
    paths = dict.fromkeys(path.resolve() for path in [args.reference, *args.documents])
    documents = [(path, path.read_text()) for path in paths]
    unknown = unknown_mentions(objects, documents)
    checks.check(not unknown, f"every amebo.<name> in {len(documents)} documents exists",
                 "\n         ".join(unknown))
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    unnamed = [name for name in sorted(objects["schema"])
               if not any(f"({name})" in heading for heading in headings)]
    checks.check(not unnamed, "every schema of the extension has a section: '## ... (schema)'",
                 ", ".join(unnamed))
    flowing = " ".join(text.split())
    for stated in stated_counts(objects):
        checks.check(stated in flowing, f"the reference states how many there are: '{stated}'")
    planted = unknown_mentions(objects, [("planted", "SELECT amebo.no_such_function();")])
    checks.check("amebo.setup_shards" in objects["router function"],
                 "amebo_router's functions are read from sql/amebo_router.sql")
    checks.check(planted == ["planted: amebo.no_such_function"],
                 f"negative control: a mention of a missing object is reported ({planted})")
    for kind in ("function", "internal function", "setting", "sqlstate"):
        cut, name = without_first_entry(text, SECTIONS[kind])
        check = f"every {kind} has an entry under '## {SECTIONS[kind]}'"
        missing = compare(objects, reference_entries(cut))[check]
        newly = sorted(set(missing) - set(problems[check]))
        checks.check(newly == [name] and name in objects[kind],
                     f"negative control: removing the entry of {name} is reported ({newly})")
    print(f"{checks.passed} checks passed, {len(checks.failed)} failed")
    if checks.failed:
        print("docs/reference.md is out of date; add or fix the entries listed above "
              "(see the anchor convention at its top)")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
