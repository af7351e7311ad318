#!/usr/bin/env python3
"""Checks the layering of src/: no module imports from a module that (directly or through
others) imports it back, and no file in src/ nor in the lobby's matchbox-server/src/ is over
600 lines.

A module is a top-level file of src/ (with its directory); `crate::x::…` in it is a dependency
on module `x`. Root re-exports (`crate::Channel`) count as a dependency on the crate root, which
is allowed only in lib.rs, plugin.rs (the top) and fuzzing.rs (a test harness)."""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
LOBBY_SRC = ROOT / "matchbox-server" / "src"
TOP = {"lib", "plugin", "fuzzing"}
MAX_LINES = 600
# Each module may use modules of a lower level only (level 0: shared vocabulary, which may use
# each other as long as there is no cycle). Messages and replication share a level: neither
# uses the other.
LEVELS = {
    "channel": 0, "peer": 0, "error": 0, "wire": 0, "rng": 0, "protocol": 0, "platform": 0, "identity": 0,
    "transport": 1,
    "session": 2,
    "endpoint": 3, "membership": 3,
    "net": 4,
    "messages": 5, "replication": 5,
    "plugin": 6,
    "fuzzing": 7, "lib": 7,
}

modules = {p.stem for p in SRC.glob("*.rs")}
deps = {m: set() for m in modules}
errors = []

for path in SRC.rglob("*.rs"):
    rel = path.relative_to(SRC)
    module = rel.parts[0].removesuffix(".rs")
    text = path.read_text()
    # Doc comments and strings do not import anything.
    code = "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("//")
    )
    for match in re.finditer(r"crate::(\w+)", code):
        name = match.group(1)
        if name in modules:
            if name != module:
                deps[module].add(name)
        elif module not in TOP:
            errors.append(f"{rel}: uses the crate root (crate::{name}); import it from its module")

for path in [*SRC.rglob("*.rs"), *LOBBY_SRC.rglob("*.rs")]:
    lines = len(path.read_text().splitlines())
    if lines > MAX_LINES:
        errors.append(f"{path.relative_to(ROOT)}: {lines} lines (at most {MAX_LINES})")


for module, used in sorted(deps.items()):
    if module not in LEVELS:
        errors.append(f"src/{module}.rs: not placed in a layer (add it to .ci/layers.py)")
        continue
    for dep in sorted(used):
        level, dep_level = LEVELS[module], LEVELS.get(dep, 0)
        if dep_level > level or (dep_level == level and level > 0):
            errors.append(f"src/{module}.rs uses {dep}, which is not in a layer below it")


def cycle_from(start):
    stack = [(start, [start])]
    seen = set()
    while stack:
        node, trail = stack.pop()
        for nxt in sorted(deps.get(node, ())):
            if nxt == start:
                return trail + [start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, trail + [nxt]))
    return None


for module in sorted(modules):
    cycle = cycle_from(module)
    if cycle:
        errors.append("import cycle: " + " -> ".join(cycle))

if errors:
    print("\n".join(sorted(set(errors))))
    sys.exit(1)
print(f"layers: {len(modules)} modules, no cycles, no file over {MAX_LINES} lines")
