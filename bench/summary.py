"""Collects every measure that has a target from bench/RESULTS.md (the "against the targets"
tables and the verdict lines of each section) into one summary table, written at the top of
RESULTS.md and, between the markers <!-- bench-summary:begin --> and
<!-- bench-summary:end -->, into README.md. bench/run.sh runs it last.

Usage: python3 bench/summary.py RESULTS.md [README.md]
"""

import re
import sys

BEGIN, END = "<!-- bench-summary:begin -->", "<!-- bench-summary:end -->"
VERDICT_LINE = re.compile(r"^- (?P<measure>.+?): \*\*(?P<value>[^*]+)\*\*.*?target "
                          r"(?P<target>[^:]+): \*\*(?P<result>PASS|MISS)\*\*")


# The cells of a Markdown table row.
def cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


# (section, measure, value, target, result) for every measure with a target in text.
def measures(text):
    rows, section, header = [], "", None
    for line in text.splitlines():
        if line.startswith("## "):
            section, header = line[3:].strip(), None
        elif line.startswith("|"):
            row = cells(line)
            if header is None:
                header = [c.lower() for c in row]
            elif not set(line) <= set("|-: "):
                rows += table_row(section, header, row)
        else:
            header = None
            match = VERDICT_LINE.match(line)
            if match:
                rows.append((section, match["measure"], match["value"], match["target"],
                             match["result"]))
    return rows


# The measure in one row of a table whose header names a target and a result, if any.
def table_row(section, header, row):
    targets = [i for i, h in enumerate(header) if h == "target"]
    results = [i for i, h in enumerate(header) if h.startswith("result")]
    if not targets or not results or len(row) != len(header):
        return []
    result = row[results[0]]
    if result in ("–", "-", ""):
        return []
    return [(section, row[0], row[1], row[targets[0]], result)]


# "- NAME ran on DATE" for every section that gives its own date (a "- date:" line).
def section_dates(text):
    dates, section = [], None
    for line in text.splitlines():
        if line.startswith("## "):
            section = re.sub(r"\s*\(.*\)$", "", line[3:].strip())
        elif section and line.startswith("- date: "):
            dates.append(f"- {section} ran on {re.split(r',| [(]', line[8:])[0]}")
            section = None
    return dates


# The summary as Markdown lines: the append benchmark's date and machine, the date of every
# section that ran apart, then the table.
def summary(text):
    facts = [line for line in text.splitlines()[:12]
             if line.startswith(("- date:", "- machine:", "- server:", "- amebo:"))]
    lines = ["## Summary", "", "Every measure with a target in bench/RESULTS.md, each from the "
             "latest run of its benchmark by make bench (BENCH_SUITES runs some alone):",
             ""] + facts + section_dates(text)
    lines += ["", "| benchmark | measure | value | target | result |", "|---|---|---:|---|---|"]
    rows = measures(text)
    # A section's verdict lines repeat its table of targets: keep each value once, the last.
    last = {(r[0], r[2], r[3], r[4]): i for i, r in enumerate(rows)}
    for section, measure, value, target, result in (r for i, r in enumerate(rows)
                                                     if last[(r[0], r[2], r[3], r[4])] == i):
        name = re.sub(r"\s*\(.*\)$", "", section)
        lines.append(f"| {name} | {measure} | {value} | {target} | {result} |")
    return lines + [""]


# text without its summary section, if it has one.
def without_summary(text):
    return re.sub(r"^## Summary\n.*?(?=^## |\Z)", "", text, flags=re.M | re.S)


# Replaces (or inserts before the first section) the summary in RESULTS.md.
def write_results(path, lines):
    text = without_summary(open(path).read())
    first = re.search(r"^## ", text, re.M)
    block = "\n".join(lines) + "\n"
    text = text[:first.start()] + block + text[first.start():] if first else text + block
    with open(path, "w") as f:
        f.write(text)


# Replaces the text between the markers in the README, when it has them.
def write_readme(path, lines):
    text = open(path).read()
    if BEGIN not in text or END not in text:
        return False
    table = "\n".join(lines[2:]).rstrip("\n")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    with open(path, "w") as f:
        f.write(f"{head}{BEGIN}\n{table}\n{END}{tail}")
    return True


# Writes the summary into RESULTS.md and the README.
def main():
    results = sys.argv[1]
    lines = summary(without_summary(open(results).read()))
    write_results(results, lines)
    if len(sys.argv) > 2 and not write_readme(sys.argv[2], lines):
        print(f"{sys.argv[2]}: no {BEGIN} marker; not updated", file=sys.stderr)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
