"""Compare a run's numbers with a recorded golden file (tests/golden/<spec>.json), within what float32
can reproduce on another CPU.

The goldens were recorded on AMD EPYC; an Intel Xeon's float32 kernels sum in other orders, which
moved 177 numbers by 1e-6 to 2.4e-5 relative (per-prompt logit differences, normalised patching
near 0, EAP scores) — past the old fixed REL 1e-5 / ABS 1e-6. So each number's tolerance is
derived from float32 error and scaled by what the number is measured against:

    |actual - golden| <= REL * |golden| + SLACK * scale

where `scale` is the largest magnitude among the numbers it is measured with (the list it is part
of: a grid of normalised patching scores, the per-prompt values; the table of numbers it is part of:
every edge's score by name; its column in a list of records: each top cell's `normalized`; the
operands of a difference: `max_abs_difference` of its `attribution` and `exact` lists) — a value
near 0 in a list of values near 3 carries the rounding of numbers near 3. REL = SLACK = 1e-4
(about 840 float32 epsilons, 4x the largest cross-CPU move seen): a kernel's reordering stays
inside it, a change of the science (1e-3 and up) does not.

Circuits are compared with their cut margin: where the edges at a cut of the ranking are a
near-tie (their scores within the noise of each other), either edge may be kept, so the numbers
that depend on which one was (that level's curve point and the areas through it, the circuit
itself and what compares circuits) are accepted, and the near-tie is reported.

A DAS result is the end of an optimisation, and its path is chaotic at the test sizes: a second
torch thread (a sum in another order, ~1e-7) moved ravel_causal's trained test IIA from 0.6 to 0.4
and a training loss by 2x, while every untrained number of the same run stayed within 1e-6. So
an interchange analysis with `featurizer: das` has its trained numbers (`TRAINED`) checked for
what must hold on any CPU (IIA a share in [0, 1], finite losses, one loss per epoch run, training
that lowered its loss), and every other number (the unintervened runs, the counts, the split, the
sites) as any number. The trained numbers' science is guarded elsewhere: DAS finds a planted
subspace and is bit-for-bit reproducible with a seed (tests/analyses/test_interchange.py) and equals
pyvene's within the stated tolerance on the fixture (tests/analyses/test_pyvene_fixture.py).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, List, Set

GOLDEN = Path(__file__).resolve().parent / "golden"
REL = 1e-4    # of the number itself
SLACK = 1e-4  # of the largest magnitude it is measured with
TIE = 2e-4    # edges whose |score| differ by less than this fraction of the largest score are a near-tie


# A number measured against sibling lists: a largest difference carries the rounding of its operands.
OPERANDS = {"max_abs_difference": ("attribution", "exact")}


def _magnitude(value: Any) -> float:
    if isinstance(value, bool) or value is None:
        return 0.0
    if isinstance(value, (int, float)):
        return abs(value) if math.isfinite(value) else 0.0
    if isinstance(value, list):
        return max((_magnitude(v) for v in value), default=0.0)
    return 0.0


def _child_scales(golden: dict, scale: Any) -> dict:
    """Each key's scale inside a mapping: its column's (when the mapping is a record of a list), the
    whole table's (a mapping of names to numbers, as edge scores), or its operands'."""
    columns = scale if isinstance(scale, dict) else {}
    table = (max(_magnitude(v) for v in golden.values())   # floats only: a count is not measured with them
             if golden and all(isinstance(v, float) for v in golden.values()) else 0.0)
    out = {}
    for key in golden:
        operands = max((_magnitude(golden.get(k)) for k in OPERANDS.get(key, ())), default=0.0)
        out[key] = max(columns.get(key, 0.0), table, operands) or None
    return out


def differences(golden: Any, actual: Any, path: str = "", scale: Any = None,
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
        scales = _child_scales(golden, scale)
        for key, value in golden.items():
            if key not in actual:
                out.append(f"{path}.{key}: missing")
            else:
                out += differences(value, actual[key], f"{path}.{key}", scales[key], exempt)
        return out
    if isinstance(golden, list):
        if not isinstance(actual, list) or len(actual) != len(golden):
            return [f"{path}: expected a list of {len(golden)}"]
        if golden and all(isinstance(g, dict) for g in golden):  # records: each key measured with its column
            keys = {k for g in golden for k in g}
            columns = {k: max(_magnitude(g.get(k)) for g in golden) for k in keys}
            return [d for i, (g, a) in enumerate(zip(golden, actual))
                    for d in differences(g, a, f"{path}[{i}]", columns, exempt)]
        inner = max(_magnitude(golden), scale if isinstance(scale, float) else 0.0)  # with the rest of the list
        return [d for i, (g, a) in enumerate(zip(golden, actual))
                for d in differences(g, a, f"{path}[{i}]", inner, exempt)]
    if isinstance(golden, bool) or golden is None:
        return [] if actual == golden else [f"{path}: {actual!r} != golden {golden!r}"]
    if isinstance(golden, (int, float)):
        if not isinstance(actual, (int, float)) or isinstance(actual, bool):
            return [f"{path}: {actual!r} != golden {golden!r}"]
        allowed = REL * abs(golden) + SLACK * max(scale if isinstance(scale, (int, float)) else 0.0, abs(golden))
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


# ------------------------------------------------------------------ DAS: trained numbers

TRAINED = ("training", "subspaces", "best", "iia", "logit_diff", "by_featurizer")


def trained_paths(path: str, golden: dict) -> Set[str]:
    """The trained numbers of a DAS interchange result (compared by `trained_problems` instead)."""
    if golden.get("kind") == "interchange" and golden.get("featurizer") == "das":
        return {f"{path}.{key}" for key in TRAINED}
    return set()


def trained_problems(path: str, actual: dict) -> List[str]:
    """What a DAS result's trained numbers must satisfy on any CPU."""
    out: List[str] = []

    def numbers(value: Any):
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            for inner in value:
                yield from numbers(inner)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield value

    def shares(value: Any, where: str) -> None:
        """Every number under a key `iia...` (a value, a grid) is a share in [0, 1]."""
        if isinstance(value, dict):
            for key, inner in value.items():
                if key.startswith("iia"):
                    out.extend(f"{where}.{key}: IIA {v} is not a share in [0, 1]"
                               for v in numbers(inner) if not 0 <= v <= 1)
                shares(inner, f"{where}.{key}")
        elif isinstance(value, list):
            for i, inner in enumerate(value):
                shares(inner, f"{where}[{i}]")

    shares({key: actual.get(key) for key in ("best", "by_featurizer", "subspaces", "iia")}, path)
    for i, run in enumerate(actual.get("training") or []):
        where = f"{path}.training[{i}]"
        losses = [*run.get("train_loss", []), *run.get("val_loss", [])]
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in losses):
            out.append(f"{where}: a loss is not finite: {losses}")
        elif len(run.get("train_loss", [])) != run.get("epochs_run"):
            out.append(f"{where}: {len(run.get('train_loss', []))} training losses for {run.get('epochs_run')} epochs")
        elif run["train_loss"] and min(run["train_loss"]) >= run["train_loss"][0] and len(run["train_loss"]) > 1:
            out.append(f"{where}: training never lowered its loss: {run['train_loss']}")
    return out


def check_golden(name: str, results: dict) -> List[str]:
    """Assert the run reproduces its golden numbers; returns the near-ties accepted (reported)."""
    from tests.golden.record import golden_numbers

    golden = json.loads((GOLDEN / f"{name}.json").read_text())
    actual = json.loads(json.dumps(golden_numbers(results)))
    exempt: Set[str] = set()      # near-tied circuit cuts: reported
    trained: Set[str] = set()     # DAS's trained numbers: checked by trained_problems instead
    problems: List[str] = []
    for analysis_id, record in golden.get("analyses", {}).items():
        path, mine = f".analyses.{analysis_id}", actual.get("analyses", {}).get(analysis_id, {})
        if record.get("kind") == "circuit":  # a test helper may know its kinds
            exempt |= circuit_exemptions(path, record, mine)
        das = trained_paths(path, record)
        if das:
            trained |= das
            problems += trained_problems(path, mine)
    diffs = problems + differences(golden, actual, exempt=sorted(exempt | trained))
    assert not diffs, (f"{len(diffs)} numbers of specs/{name}.yaml moved from tests/golden/{name}.json "
                       "(re-record with `python tests/golden/record.py` only on purpose, with a line in "
                       "CHANGELOG.md):\n" + "\n".join(diffs[:20]))
    if exempt:
        print(f"specs/{name}.yaml: near-ties at a circuit cut, either edge accepted: {sorted(exempt)}")
    return sorted(exempt)
