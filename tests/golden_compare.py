"""Compare a run's numbers with a recorded golden file (tests/golden/<spec>.json)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, List

GOLDEN = Path(__file__).resolve().parent / "golden"
REL, ABS = 1e-5, 1e-6  # thread counts reorder float sums: ~1e-7 relative; anything larger is a change


def differences(golden: Any, actual: Any, path: str = "") -> List[str]:
    """Every number, bool and list length of `golden` that `actual` does not reproduce.

    Keys `actual` adds are allowed (a new field is not a changed number); strings are not
    compared (summaries are prose; the numbers behind them are compared)."""
    if isinstance(golden, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected a mapping"]
        out = []
        for key, value in golden.items():
            if key not in actual:
                out.append(f"{path}.{key}: missing")
            else:
                out += differences(value, actual[key], f"{path}.{key}")
        return out
    if isinstance(golden, list):
        if not isinstance(actual, list) or len(actual) != len(golden):
            return [f"{path}: expected a list of {len(golden)}"]
        return [d for i, (g, a) in enumerate(zip(golden, actual)) for d in differences(g, a, f"{path}[{i}]")]
    if isinstance(golden, bool) or golden is None:
        return [] if actual == golden else [f"{path}: {actual!r} != golden {golden!r}"]
    if isinstance(golden, (int, float)):
        if not isinstance(actual, (int, float)) or not math.isclose(actual, golden, rel_tol=REL, abs_tol=ABS):
            return [f"{path}: {actual!r} != golden {golden!r}"]
    return []


def check_golden(name: str, results: dict) -> None:
    from tests.golden.record import golden_numbers

    golden = json.loads((GOLDEN / f"{name}.json").read_text())
    diffs = differences(golden, json.loads(json.dumps(golden_numbers(results))))
    assert not diffs, (f"{len(diffs)} numbers of specs/{name}.yaml moved from tests/golden/{name}.json "
                       "(re-record with `python tests/golden/record.py` only on purpose, with a line in "
                       "CHANGELOG.md):\n" + "\n".join(diffs[:20]))
