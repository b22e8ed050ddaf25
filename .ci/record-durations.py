"""Write tests/durations.json (seconds per test module) from a pytest JUnit XML report, for the order in which
tests/conftest.py hands modules to the xdist workers (the longest first).

    pytest -n auto --dist loadfile --no-loadscope-reorder --junitxml=/tmp/junit.xml
    python .ci/record-durations.py /tmp/junit.xml > tests/durations.json
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict


def module_seconds(junit: str) -> dict[str, float]:
    """Seconds per test file (``tests/e2e/test_x.py``), from each test case's ``classname`` (test classes stripped)."""
    out: dict[str, float] = defaultdict(float)
    for case in ET.parse(junit).iter("testcase"):
        parts = case.get("classname", "").split(".")
        while parts and parts[-1][:1].isupper():  # a test class: Class or Outer.Inner
            parts.pop()
        out["/".join(parts) + ".py"] += float(case.get("time") or 0)
    return {name: round(seconds, 1) for name, seconds in sorted(out.items(), key=lambda kv: -kv[1])}


if __name__ == "__main__":
    json.dump(module_seconds(sys.argv[1]), sys.stdout, indent=1)
    print()
