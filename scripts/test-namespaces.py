#!/usr/bin/env python3
"""Every test file's code in a namespace of its own, so that the unity build of ssmlab_tests (batches of test files
compiled as one translation unit, docs/ARCHITECTURE.md "Build") sees no clash between two files' helpers, anonymous
namespaces and using-directives. The namespace is the file's path under tests/ with '/' as '_' (tests/ops/test_wkv.cpp:
`ops_test_wkv`), opened after the file's includes and closed at its end.

    scripts/test-namespaces.py          # wrap the files that are not wrapped yet
    scripts/test-namespaces.py --check  # list them and exit 1 if any (no change)
Files whose code is in `namespace ssmlab...` blocks are left alone (their names are real namespaces already).
"""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent / "tests"
check = "--check" in sys.argv[1:]
missing = []
for path in sorted(root.rglob("test_*.cpp")):
    text = path.read_text(encoding="utf-8")
    rel = path.relative_to(root).with_suffix("")
    ns = "_".join(rel.parts)
    if re.search(r"^namespace ssmlab", text, re.M) or re.search(r"^namespace %s \{" % re.escape(ns), text, re.M):
        continue
    missing.append(str(path.relative_to(root.parent)))
    if check:
        continue
    lines = text.splitlines()
    insert = 0
    for i, line in enumerate(lines):
        s = line.strip()
        if s.startswith("#include") or s.startswith("#pragma"):
            insert = i + 1
        elif s == "" or s.startswith("//"):
            continue
        else:
            break
    out = lines[:insert] + ["", f"namespace {ns} {{"] + lines[insert:]
    while out and out[-1].strip() == "":
        out.pop()
    out += ["", f"}}  // namespace {ns}", ""]
    path.write_text("\n".join(out), encoding="utf-8")
if missing:
    print(("not wrapped (run scripts/test-namespaces.py to wrap): " if check else "wrapped: ") + " ".join(missing))
sys.exit(1 if check and missing else 0)
