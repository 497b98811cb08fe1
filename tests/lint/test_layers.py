#!/usr/bin/env python3
"""The house rules, read off the sources (docs/architecture.md, "Rooms").

Every component is a room; a room may include headers of the rooms below
it and of itself, never of a room above. This test reads every #include of
every C file and fails (TAP) on:

  - a header of a room the including room may not use;
  - an include that names no known room (a typo, or a header outside them);
  - an import circle between modules (foo.c + foo.h), within or across rooms;
  - a source file over MAX_LINES lines;
  - a room whose README.md does not say, on a line "May use:", exactly
    the rooms this table lets it use (the map and the rule agree).
"""

import os
import re
import sys

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MAX_LINES = 800

# room -> rooms it may use (besides itself). The order is bottom-up.
MAY_USE = {
    "common": [],
    "policy": ["common"],
    "gateway/tls": ["common"],
    "gateway/http": ["common"],
    "gateway/state": ["common", "policy"],
    "gateway/core": ["common", "policy", "gateway/tls", "gateway/state"],
    "gateway/pg": ["common", "policy", "gateway/tls", "gateway/state", "gateway/core"],
    "gateway/admin": ["common", "policy", "gateway/tls", "gateway/http", "gateway/state",
                      "gateway/core"],
    "gateway/issuer": ["common", "policy", "gateway/tls", "gateway/http", "gateway/state",
                       "gateway/core"],
    "gateway/cmd": ["common", "policy", "gateway/tls", "gateway/http", "gateway/state",
                    "gateway/core", "gateway/pg", "gateway/admin", "gateway/issuer"],
}
GENERATED = {"certgate_config.h"}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def room_of_header(name):
    """The room a quoted include names, or None."""
    if name in GENERATED:
        return "generated"
    if "/" in name:
        room = "gateway/" + name.split("/")[0]
        return room if room in MAY_USE else None
    if name.startswith("cg_"):
        return "common"
    if name.startswith("pol_"):
        return "policy"
    return None


def sources():
    """(room, path relative to TOP) of every .c and .h of every room."""
    for room in MAY_USE:
        folder = os.path.join(TOP, room)
        for name in sorted(os.listdir(folder)):
            if name.endswith((".c", ".h")):
                yield room, os.path.join(room, name)


def module(path):
    """A module is a .c file and its .h: 'gateway/core/session'."""
    return os.path.splitext(path)[0]


def header_path(name, room):
    """The file a quoted include names, relative to TOP."""
    if "/" in name:
        return "gateway/" + name
    return os.path.join(room, name)


def read(path):
    with open(os.path.join(TOP, path), encoding="utf-8") as f:
        return f.read()


def check_includes():
    problems = []
    edges = {}
    for room, path in sources():
        mod = module(path)
        edges.setdefault(mod, set())
        for name in INCLUDE.findall(read(path)):
            target = room_of_header(name)
            if target is None:
                problems.append("%s: #include \"%s\" names no room" % (path, name))
                continue
            if target == "generated":
                continue
            if target != room and target not in MAY_USE[room]:
                problems.append("%s: #include \"%s\": %s may not use %s (may use: %s)" % (
                    path, name, room, target, ", ".join(MAY_USE[room]) or "nothing"))
            dep = module(header_path(name, target))
            if not os.path.exists(os.path.join(TOP, dep + ".h")):
                problems.append("%s: #include \"%s\": no such header" % (path, name))
            elif dep != mod:
                edges[mod].add(dep)
    return problems, edges


def find_cycle(edges):
    """One import circle as a list of modules, or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = {m: WHITE for m in edges}
    stack = []

    def visit(m):
        color[m] = GREY
        stack.append(m)
        for d in sorted(edges.get(m, ())):
            if color.get(d, WHITE) == GREY:
                return stack[stack.index(d):] + [d]
            if color.get(d, WHITE) == WHITE:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        color[m] = BLACK
        return None

    for m in sorted(edges):
        if color[m] == WHITE:
            found = visit(m)
            if found:
                return found
    return None


def test_rooms_import_downwards():
    problems, _ = check_includes()
    assert not problems, "\n".join(problems)


def test_no_import_circle():
    _, edges = check_includes()
    cycle = find_cycle(edges)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_files_are_small():
    big = []
    for _, path in sources():
        n = read(path).count("\n")
        if n > MAX_LINES:
            big.append("%s: %d lines (at most %d)" % (path, n, MAX_LINES))
    assert not big, "\n".join(big)


def test_rooms_say_what_they_may_use():
    problems = []
    for room, allowed in MAY_USE.items():
        readme = os.path.join(room, "README.md")
        if not os.path.exists(os.path.join(TOP, readme)):
            problems.append("%s: missing (what the room owns, what it may use)" % readme)
            continue
        line = [l for l in read(readme).splitlines() if l.startswith("May use:")]
        said = sorted(s.rstrip("/") for s in re.findall(r"`([a-z/]+)`", line[0])) if line else None
        if said != sorted(allowed):
            problems.append("%s: \"May use:\" says %s, the rule is %s" % (
                readme, said, sorted(allowed)))
    assert not problems, "\n".join(problems)


def test_the_check_catches_a_bad_include():
    """The checker itself: an upward include and a circle are found."""
    assert room_of_header("admin/admin.h") == "gateway/admin"
    assert "gateway/admin" not in MAY_USE["gateway/core"]
    assert room_of_header("nowhere.h") is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def main():
    tests = [v for k, v in sorted(globals().items()) if k.startswith("test_")]
    print("1..%d" % len(tests))
    failed = 0
    for i, t in enumerate(tests, 1):
        try:
            t()
            print("ok %d - %s" % (i, t.__name__))
        except AssertionError as e:
            failed += 1
            print("not ok %d - %s" % (i, t.__name__))
            for line in str(e).splitlines():
                print("# " + line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
