#!/usr/bin/env python3
"""Checks that every #include in a source tree follows a table of allowed module edges.

Usage: check_includes.py TABLE SRC_DIR

TABLE is test/include_boundaries.txt's format: "module: modules it may include" per line, and
"pure: modules" for modules that may include nothing but amebo's headers and <system> ones.
An include is amebo's when it resolves to a file under SRC_DIR (first next to the including
file for "...", then from SRC_DIR, as the build's -I does), or when its first path component
names a module. Prints every include that crosses a boundary the wrong way, as
"file:line: from -> to (#include ...)", and exits 1 if there is one. Standard library only.
"""
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')
SOURCE_SUFFIXES = (".cpp", ".hpp", ".h", ".c")


def read_table(path):
    """Returns ({module: set of modules it may include}, set of pure modules)."""
    allowed, pure = {}, set()
    with open(path, encoding="utf-8") as table:
        for number, line in enumerate(table, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            name, colon, targets = line.partition(":")
            if not colon:
                sys.exit(f"{path}:{number}: expected 'module: modules', got {line!r}")
            if name.strip() == "pure":
                pure.update(targets.split())
            else:
                allowed[name.strip()] = set(targets.split())
    unknown = pure.union(*allowed.values()) - set(allowed)
    if unknown:
        sys.exit(f"{path}: modules used but not listed: {' '.join(sorted(unknown))}")
    return allowed, pure


def find_cycle(allowed):
    """Returns a cycle of the table's edges as a list of modules, or None."""
    state = {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(allowed[module] - {module}):
            if state.get(target) == "open":
                return path + [module, target]
            if target not in state:
                cycle = visit(target, path + [module])
                if cycle:
                    return cycle
        state[module] = "done"
        return None

    for module in sorted(allowed):
        if module not in state:
            cycle = visit(module, [])
            if cycle:
                return cycle[cycle.index(cycle[-1]):]
    return None


def module_of(src, path):
    """The module a file under src belongs to: its first folder, or a top file's stem."""
    relative = os.path.relpath(path, src)
    first, _, rest = relative.partition(os.sep)
    return first if rest else os.path.splitext(first)[0]


def include_target(src, including_file, bracket, name, modules):
    """The module an include names, or None when it is not amebo's (PostgreSQL's, system)."""
    bases = [os.path.dirname(including_file), src] if bracket == '"' else [src]
    for base in bases:
        candidate = os.path.normpath(os.path.join(base, name))
        inside = os.path.commonpath([os.path.abspath(candidate), os.path.abspath(src)])
        if os.path.isfile(candidate) and inside == os.path.abspath(src):
            return module_of(src, candidate)
    first = name.split("/", 1)[0]
    return first if "/" in name and first in modules else None


def source_files(src):
    """Every C and C++ source and header under src, in a stable order."""
    for directory, folders, files in os.walk(src):
        folders.sort()
        for file in sorted(files):
            if file.endswith(SOURCE_SUFFIXES):
                yield os.path.join(directory, file)


def violations(src, allowed, pure):
    """Yields (file, line number, from, to, include text) for every forbidden include."""
    for path in source_files(src):
        source = module_of(src, path)
        with open(path, encoding="utf-8", errors="replace") as text:
            for number, line in enumerate(text, 1):
                match = INCLUDE.match(line)
                if not match:
                    continue
                bracket, name = match.groups()
                target = include_target(src, path, bracket, name, allowed)
                closing = ">" if bracket == "<" else '"'
                written = f"#include {bracket}{name}{closing}"
                if target is None:
                    if source in pure and bracket == '"':
                        yield path, number, source, "PostgreSQL or another library", written
                    continue
                if target != source and target not in allowed.get(source, set()):
                    yield path, number, source, target, written


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    table, src = sys.argv[1], sys.argv[2]
    allowed, pure = read_table(table)
    cycle = find_cycle(allowed)
    if cycle:
        sys.exit(f"{table}: the allowed edges form a cycle: {' -> '.join(cycle)}")
    found = list(violations(src, allowed, pure))
    for path, number, source, target, written in found:
        print(f"{path}:{number}: {source} -> {target} is not allowed ({written})")
    unlisted = sorted({module_of(src, p) for p in source_files(src)} - set(allowed))
    for module in unlisted:
        print(f"{src}: module {module} is not in {table}")
    if found or unlisted:
        print(f"{len(found)} forbidden include(s), {len(unlisted)} unlisted module(s)")
        return 1
    print(f"every #include under {src} follows {table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
