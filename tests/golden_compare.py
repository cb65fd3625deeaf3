"""Compare a run's numbers with a recorded golden file (tests/golden/<spec>.json), within what float32
can reproduce on another CPU.

The goldens were recorded on AMD EPYC; an Intel Xeon's float32 kernels sum in other orders, which
moved 177 numbers by 1e-6 to 2.4e-5 relative (per-prompt logit differences, normalised patching
near 0, EAP scores) — past the old fixed REL 1e-5 / ABS 1e-6. So each number's tolerance is
derived from float32 error and scaled by what the number is measured against:

    |actual - golden| <= REL * |golden| + SLACK * scale

where `scale` is the largest magnitude among the numbers it is measured with (the list it is part
of: a grid of normalised patching scores, the per-prompt values, every edge's score) — a value
near 0 in a list of values near 3 carries the rounding of numbers near 3. REL = SLACK = 1e-4
(about 840 float32 epsilons, 4x the largest cross-CPU move seen): a kernel's reordering stays
inside it, a change of the science (1e-3 and up) does not.

Circuits are compared with their cut margin: where the edges at a cut of the ranking are a
near-tie (their scores within the noise of each other), either edge may be kept, so the numbers
that depend on which one was (that level's curve point and the areas through it, the circuit
itself and what compares circuits) are accepted, and the near-tie is reported.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, List, Optional, Set

GOLDEN = Path(__file__).resolve().parent / "golden"
REL = 1e-4    # of the number itself
SLACK = 1e-4  # of the largest magnitude it is measured with
TIE = 2e-4    # edges whose |score| differ by less than this fraction of the largest score are a near-tie


def _magnitude(value: Any) -> float:
    if isinstance(value, bool) or value is None:
        return 0.0
    if isinstance(value, (int, float)):
        return abs(value) if math.isfinite(value) else 0.0
    if isinstance(value, list):
        return max((_magnitude(v) for v in value), default=0.0)
    return 0.0


def differences(golden: Any, actual: Any, path: str = "", scale: Optional[float] = None,
                exempt: Iterable[str] = ()) -> List[str]:
    """Every number, bool and list length of `golden` that `actual` does not reproduce.

    Keys `actual` adds are allowed (a new field is not a changed number); strings are not
    compared (summaries are prose; the numbers behind them are compared). `exempt`: path
    prefixes not compared (a circuit's near-tied cuts)."""
    exempt = tuple(exempt)
    if any(path == e or path.startswith(e + ".") or path.startswith(e + "[") for e in exempt):
        return []
    if isinstance(golden, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected a mapping"]
        out = []
        for key, value in golden.items():
            if key not in actual:
                out.append(f"{path}.{key}: missing")
            else:
                out += differences(value, actual[key], f"{path}.{key}", None, exempt)
        return out
    if isinstance(golden, list):
        if not isinstance(actual, list) or len(actual) != len(golden):
            return [f"{path}: expected a list of {len(golden)}"]
        inner = max(_magnitude(golden), scale or 0.0)  # measured with the rest of the list
        return [d for i, (g, a) in enumerate(zip(golden, actual))
                for d in differences(g, a, f"{path}[{i}]", inner, exempt)]
    if isinstance(golden, bool) or golden is None:
        return [] if actual == golden else [f"{path}: {actual!r} != golden {golden!r}"]
    if isinstance(golden, (int, float)):
        if not isinstance(actual, (int, float)) or isinstance(actual, bool):
            return [f"{path}: {actual!r} != golden {golden!r}"]
        allowed = REL * abs(golden) + SLACK * max(scale or 0.0, abs(golden))
        if not abs(actual - golden) <= allowed:
            return [f"{path}: {actual!r} != golden {golden!r} (allowed {allowed:.2g})"]
    return []


# ------------------------------------------------------------------ circuits: near-ties at the cuts


def near_tie(scores, kept: int, ranking: str = "abs") -> bool:
    """Whether the kept-th and (kept+1)-th items of a ranking ("abs": by |score|; "signed": by score,
    either sign, as MIB's signed ranking may run either way) are within the noise of each other (so
    which one a cut keeps is decided by float rounding)."""
    values = list(scores.values()) if isinstance(scores, dict) else list(scores)
    if not values or kept <= 0 or kept >= len(values):
        return False
    noise = TIE * max(abs(v) for v in values)
    orders = [[abs(v) for v in values]] if ranking == "abs" else [values, [-v for v in values]]
    for order in orders:
        ranked = sorted(order, reverse=True)
        if abs(ranked[kept - 1] - ranked[kept]) <= noise:
            return True
    return False


def circuit_exemptions(path: str, golden: dict, actual: dict) -> Set[str]:
    """The paths of a circuit result that depend on a near-tied cut (in the golden or the actual
    ranking), to be accepted either way: that level's curve point in each ranking's series and the
    areas through it; at the circuit's own cut, the circuit and what compares circuits."""
    out: Set[str] = set()
    select = golden.get("select", "abs")
    main_cut_tied = False
    for name, m in golden.get("methods", {}).items():
        mine = actual.get("methods", {}).get(name, {})
        scores = [m.get("scores") or {}, mine.get("scores") or {}]
        curve = m.get("curve") or {}
        for ranking in (r for r in (curve.get("series") or {}) if r not in ("random", "greedy")):
            for i, kept in enumerate(curve.get("requested") or []):
                if any(near_tie(s, kept, ranking) for s in scores):
                    base = f"{path}.methods.{name}.curve"
                    out.update(f"{base}.series.{ranking}.{key}[{i}]" for key in ("faithfulness", "metric",
                                                                                "kept_edges", "x"))
                    out.update(f"{base}.series.{ranking}.{key}" for key in ("cpr", "cmd"))
                    out.update({f"{base}.cpr", f"{base}.cmd", f"{base}.near_ties"})
        keep = golden.get("keep_requested") or golden.get("keep_edges_requested")
        if keep and any(near_tie(s, keep, "abs" if select != "signed" else "signed") for s in scores):
            main_cut_tied = True
            out.update(f"{path}.methods.{name}.{key}" for key in ("circuit", "circuit_edges", "circuit_nodes",
                                                                  "faithfulness", "metric", "near_ties"))
    if main_cut_tied:  # what compares circuits compares a near-tied choice
        out.update({f"{path}.comparison", f"{path}.stability"})
    return out


def check_golden(name: str, results: dict) -> List[str]:
    """Assert the run reproduces its golden numbers; returns the near-ties accepted (reported)."""
    from tests.golden.record import golden_numbers

    golden = json.loads((GOLDEN / f"{name}.json").read_text())
    actual = json.loads(json.dumps(golden_numbers(results)))
    exempt: Set[str] = set()
    for analysis_id, record in golden.get("analyses", {}).items():
        if record.get("kind") == "circuit":  # a test helper may know its kinds
            exempt |= circuit_exemptions(f".analyses.{analysis_id}", record,
                                         actual.get("analyses", {}).get(analysis_id, {}))
    diffs = differences(golden, actual, exempt=sorted(exempt))
    assert not diffs, (f"{len(diffs)} numbers of specs/{name}.yaml moved from tests/golden/{name}.json "
                       "(re-record with `python tests/golden/record.py` only on purpose, with a line in "
                       "CHANGELOG.md):\n" + "\n".join(diffs[:20]))
    if exempt:
        print(f"specs/{name}.yaml: near-ties at a circuit cut, either edge accepted: {sorted(exempt)}")
    return sorted(exempt)
