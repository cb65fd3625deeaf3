"""Cost before compute: what each analysis will run, and about how long, before anything loads.

Each analysis kind declares its cost once: a `cost(params, inputs) -> Cost` method on its
registered class (like `files`), from its compiled parameters and `CostInputs` (the pairs it
runs on, the widest row, the model's shape). This module turns the declarations into what
`mi-run plan` prints for every analysis: cells, patched rows, forward and backward rows,
tokens, peak memory per batch (the executor's own per-row formulas, compile/memory.py) and an
estimated time from a measured per-token rate (`<cache>/rates.json`, written after every
run from the forwards the executor ran; an assumed rate from the parameter count until then).

The pipeline's keep-conditions are counted as well (`pipeline_costs`).

A run whose estimate passes `MAX_MINUTES` (or the spec's `run.max_cost`, in minutes) stops
before the model loads unless the command line says `--yes`. Numbers are upper bounds where
the pipeline decides (keep-conditions): the plan says so. Torch-free.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from .prefix_work import shared_token_work
from .memory import CPU_BUDGET_GB, activation_bytes_per_row, rows_within, widest_forward

# A run estimated longer than this asks for --yes (or run.max_cost: MINUTES in the spec).
MAX_MINUTES = 60.0
# Until a run has measured it: seconds per token of one forward ~ 2 x parameters / FLOP/s. 4e10 is
# what one busy CPU core reaches on small models here (a guess on a GPU: it says "assumed").
ASSUMED_FLOPS = 4e10
RATES_FILE = "rates.json"
# The earlier runs' tokens a new run's rate is averaged with, at most (compile/cost.py `_merged`).
RATE_MEMORY = 100_000


@dataclass(frozen=True)
class Cost:
    """What one analysis runs. Rows are prompts fed to the model (a patched prompt is a row)."""

    cells: int                      # numbers it measures (patched cells, heads, layers ...); 0: not known yet
    forward_rows: int               # rows run forward, patched rows included
    tokens_per_row: int             # tokens of its widest row
    patched_rows: int = 0           # rows run with a patch or an ablation
    backward_rows: int = 0          # rows whose forward keeps a graph for a backward
    block_fraction: float = 1.0     # average share of a row's block-positions run (prefix and key/value
                                    # reuse), forwards and backwards alike
    note: str = ""
    own_rows: int = 0               # of forward_rows, those a shared pass does not serve (its own sweeps)


@dataclass(frozen=True)
class CostInputs:
    """What an analysis's cost may depend on, known at plan time."""

    pairs: int                      # pairs it runs on: its max_pairs, else the pipeline's upper bound
    width: int                      # tokens of the widest row of the dataset (prompt + continuation)
    prompt_tokens: int              # tokens of the longest clean prompt (every-position patching)
    layers: int                     # 0 when the model's shape is not known offline
    heads: int
    kv_heads: int
    continuation: bool = False
    model: Any = None               # the spec's ModelSpec (an analysis with its own estimate reads its shape)
    same: int = 0                   # positions before the first at which some pair's prompts differ
                                    # (0 for prompts of several lengths): a patch there changes nothing

    def layers_of(self, params) -> int:
        layers = getattr(params, "layers", None)
        return len(set(layers)) if layers else self.layers

    def heads_of(self, params, key: str = "heads") -> int:
        """How many heads a head selector names (top(x, n): n), or every head of the layers chosen."""
        from ..expr import Env
        from ..core.params import Selection

        selection = getattr(params, key, None)
        if not isinstance(selection, Selection) or not self.layers:
            return self.layers_of(params) * self.heads
        chosen: set = set()
        table = [[0.0] * self.heads for _ in range(self.layers)]
        for selector in selection:
            try:
                chosen.update(map(tuple, selector.compiled.evaluate(Env(n_layers=self.layers, n_heads=self.heads,
                                                                        result=lambda name: table))))
            except Exception:  # noqa: BLE001  (validate has checked them; an estimate falls back to all)
                return self.layers_of(params) * self.heads
        return len(chosen)

    def columns_of(self, params, key: str = "positions") -> int:
        """Position columns: one per distinct selector, or every position of the longest prompt."""
        from ..core.params import Selection

        selection = getattr(params, key, None)
        if isinstance(selection, Selection):
            return len({s.text for s in selection})
        return self.prompt_tokens


def plan_costs(prepared) -> Dict[str, Any]:
    """Every analysis's cost, the total and the estimate's source: what `mi-run plan` prints."""
    from ..core.registry import REGISTRY
    from ..models.sources import model_shape

    spec, plan, dataset = prepared.spec, prepared.plan, prepared.dataset
    shape = model_shape(spec.model)
    shape = shape.with_vocab(prepared.tokenizer.vocab_size if prepared.tokenizer else 1) if shape else None
    pairs = pipeline_bound(plan, len(dataset.pairs) if dataset is not None else 0)
    pairs_widths = dataset.pairs if dataset is not None else []
    width = widest_forward(pairs_widths) if pairs_widths else 1
    longest = max((len(p.clean.ids) for p in pairs_widths), default=1)
    rate, rate_source = per_token_seconds(spec.model, shape)
    budget_gb = plan.memory_gb or CPU_BUDGET_GB
    same = shared_start(pairs_widths)
    rows, passes_seen = [], set()
    patterns_from, patterns_pairs = "", 0  # what filled the run's pattern cache so far, on how many pairs
    for step in plan.analyses:
        kind = REGISTRY[step.kind]
        n = min(step.params.max_pairs or pairs, pairs)
        inputs = CostInputs(n, width, longest, shape.n_layers if shape else 0, shape.n_heads if shape else 0,
                            shape.n_kv_heads if shape else 0, any(p.continuation for p in pairs_widths[:1]),
                            spec.model, same)
        declared = getattr(kind.implementation(), "cost", None)
        if declared is None:
            rows.append({"id": step.id, "kind": step.kind, "note": "this analysis declares no cost estimate"})
            continue
        cost = declared(step.params, inputs)
        shared = plan.pass_of(step.id)
        if step.reads_patterns and patterns_from and n <= patterns_pairs:  # cached: no sweep of its own
            cost = Cost(cost.cells, 0, cost.tokens_per_row, own_rows=0,
                        note=f"patterns from the run's pattern cache (filled by {patterns_from})")
        if shared is not None:  # one sweep of a shared pass serves all its analyses: counted once
            if shared.id in passes_seen:
                note = f"reads shared pass {shared.id}" + (f"; {cost.note}" if cost.own_rows and cost.note else "")
                cost = Cost(cost.cells, cost.own_rows, cost.tokens_per_row, note=note)
            passes_seen.add(shared.id)
            if shared.patterns and not patterns_from:
                patterns_from, patterns_pairs = f"shared pass {shared.id}", n
        if step.reads_patterns and not patterns_from:
            patterns_from, patterns_pairs = step.id, n
        rows.append(_row(step, cost, shape, kind.graph_bytes_per_row, budget_gb, rate, plan))
    stages = pipeline_costs(plan, dataset, width, rate)
    seconds = sum(r.get("seconds", 0.0) for r in rows + stages)
    return {"analyses": rows, "pipeline": stages, "seconds": seconds, "rate": rate_source, "pairs_bound": pairs,
            "exact": all(s.kind != "keep" for s in plan.pipeline),
            "max_minutes": plan_max_minutes(spec)}


def shared_start(pairs) -> int:
    """How many first positions every pair's clean and corrupted prompts share (runtime/kv.py
    `first_difference` over the candidates: the pairs an analysis runs share at least as many); 0 when
    the prompts are not all of one length."""
    lengths = {len(q.clean.ids) for q in pairs} | {len(q.corrupted.ids) for q in pairs}
    if len(lengths) != 1:
        return 0
    width = lengths.pop()
    return min((next((i for i, (a, b) in enumerate(zip(q.clean.ids, q.corrupted.ids)) if a != b), width)
                for q in pairs), default=0)


def pipeline_costs(plan, dataset, width: int, seconds_per_token: Optional[float]) -> List[Dict[str, Any]]:
    """The keep-conditions' forwards: every distinct clean and corrupted prompt of the pairs that reach
    the step, a prefix they share run once (runtime/shared_prefix.py, when the model can continue a
    forward: else an underestimate); after a sample or symmetric step, 2 whole prompts a pair left."""
    pairs = list(dataset.pairs) if dataset is not None else []
    rows: List[Dict[str, Any]] = []
    bound, exact = len(pairs), True  # exact: the step sees the candidates themselves, not a bound
    for index, step in enumerate(plan.pipeline):
        if step.kind == "keep":
            if exact:
                sides = [tuple(p.clean.ids) for p in pairs] + [tuple(p.corrupted.ids) for p in pairs]
                distinct = list(dict.fromkeys(sides))
                prompts, tokens = len(distinct), shared_token_work(distinct)
                note = "distinct clean and corrupted prompts; each shared prefix counted once"
            else:
                prompts, note = 2 * bound, "clean and corrupted prompts of the pairs left"
                tokens = prompts * width
            row = {"id": f"pipeline[{index}]", "kind": "keep", "index": index, "forward_rows": prompts,
                   "patched_rows": 0, "backward_rows": 0, "tokens_per_row": width, "forward_tokens": tokens,
                   "note": note}
            if seconds_per_token is not None:
                row["seconds"] = seconds_per_token * tokens
            rows.append(row)
        elif step.kind == "sample":
            bound, exact = min(bound, step.params.n), exact and step.params.n >= bound
        elif step.kind == "symmetric" and step.params.enabled:
            bound, exact = 2 * bound, False
    return rows


def _row(step, cost: Cost, shape, graph_row, budget_gb: float, seconds_per_token: Optional[float],
         plan) -> Dict[str, Any]:
    """`graph_row`: the kind's declared size of a row kept for a backward (registry), or None."""
    forward_tokens = cost.forward_rows * cost.tokens_per_row
    backward_tokens = cost.backward_rows * cost.tokens_per_row
    row = {"id": step.id, "kind": step.kind, "cells": cost.cells, "forward_rows": cost.forward_rows,
           "patched_rows": cost.patched_rows, "backward_rows": cost.backward_rows,
           "tokens_per_row": cost.tokens_per_row, "forward_tokens": forward_tokens,
           "backward_tokens": backward_tokens, "block_fraction": cost.block_fraction, "note": cost.note}
    if shape is not None and cost.tokens_per_row and cost.forward_rows:
        per_row = activation_bytes_per_row(cost.tokens_per_row, shape.d_model, shape.d_mlp, shape.n_heads)
        if graph_row is not None:
            per_row += graph_row(shape, cost.tokens_per_row)
        batch = plan.batch_size if isinstance(plan.batch_size, int) else rows_within(budget_gb * 2 ** 30, per_row)
        batch = max(1, min(batch, cost.forward_rows))
        row.update({"row_gb": per_row / 2 ** 30, "batch_rows": batch, "batch_gb": per_row * batch / 2 ** 30,
                    "fits": plan.batch_size != "auto" or per_row <= budget_gb * 2 ** 30, "budget_gb": budget_gb})
    if seconds_per_token is not None:
        row["seconds"] = seconds_per_token * (forward_tokens + 2 * backward_tokens) * cost.block_fraction
    return row


def check_cost(prepared, yes: bool = False) -> Dict[str, Any]:
    """Before the model loads: refuse an analysis whose one row is over the batch budget (when the budget
    is known offline: run.memory_gb, or a CPU device), and a run estimated over run.max_cost minutes
    (default MAX_MINUTES) unless `yes` (the command line's --yes). Returns the costs."""
    from ..errors import SpecMeaningError

    spec = prepared.spec
    costs = plan_costs(prepared)
    budget_known = prepared.plan.memory_gb is not None or spec.model.device == "cpu"
    for index, row in enumerate(costs["analyses"]):
        if budget_known and row.get("fits") is False:
            raise SpecMeaningError(
                f"analysis {row['id']}: one row of {row['tokens_per_row']:,} tokens needs about {row['row_gb']:.2f} GB "
                f"of activations, more than the batch budget of {row['budget_gb']:g} GB", spec.loc("analyses", index),
                hint="use shorter inputs (e.g. a smaller seq_len), or raise run.memory_gb if the machine has it")
    limit = costs["max_minutes"]
    if not yes and costs["seconds"] > 60 * limit:
        top = largest(costs)
        assert top is not None  # the seconds over the limit are some timed analyses' seconds
        if "max_cost" in spec.run_options:
            where = spec.loc("run", "max_cost")
        elif top["kind"] == "keep":  # a pipeline step's row (pipeline_costs)
            where = spec.loc("pipeline", top["index"])
        else:
            where = spec.loc("analyses", [r["id"] for r in costs["analyses"]].index(top["id"]))
        raise SpecMeaningError(
            f"this run is estimated at ~{describe_seconds(costs['seconds'])} ({costs['rate']}), over the "
            f"{limit:g} minutes a run starts without asking; the largest part is {top['id']} ({top['kind']}: "
            f"{top['forward_rows']:,} forward rows, {top['patched_rows']:,} patched, "
            f"{top['backward_rows']:,} backward, "
            f"~{describe_seconds(top['seconds'])})", where,
            hint="`mi-run plan` shows every analysis's cost; pass --yes to start anyway, or set run.max_cost: "
                 "MINUTES in the spec, or use max_pairs to run fewer pairs")
    return costs


def pipeline_bound(plan, candidates: int) -> int:
    """The most pairs the pipeline can leave: sample caps, symmetric doubles, keep may drop any."""
    most = candidates
    for step in plan.pipeline:
        if step.kind == "sample":
            most = min(most, step.params.n)
        elif step.kind == "symmetric" and step.params.enabled:
            most = 2 * most
    return most


def plan_max_minutes(spec) -> float:
    return float(spec.run_options.get("max_cost", MAX_MINUTES))


# ----------------------------------------------------------------------------- the per-token rate


def _rates_path() -> Path:
    from ..models.cache import cache_root  # standard library only

    return cache_root() / RATES_FILE


def rate_key(model) -> str:
    return json.dumps(model.identity(), sort_keys=True, default=str)


def per_token_seconds(model, shape) -> tuple:
    """(seconds per forward token, where the number comes from): the last run's on this machine, else
    assumed from the parameter count; (None, why) when neither is known."""
    try:
        rates = json.loads(_rates_path().read_text())
    except (OSError, ValueError):
        rates = {}
    entry = rates.get(rate_key(model)) if isinstance(rates, dict) else None
    if isinstance(entry, dict) and isinstance(entry.get("seconds_per_token"), (int, float)):
        when = time.strftime("%Y-%m-%d", time.localtime(entry.get("when", 0)))
        return float(entry["seconds_per_token"]), (f"measured on this machine ({entry.get('device', '?')}, {when}, "
                                                   f"{entry.get('tokens', 0):,} tokens of the latest runs)")
    if shape is None:
        return None, "no estimate: the model's size is not known before it loads"
    params = shape.parameters()
    return 2 * params / ASSUMED_FLOPS, (f"assumed ({2 * params / 1e9:.2f} GFLOP a token at {ASSUMED_FLOPS / 1e9:g} "
                                        "GFLOP/s; a run measures it on this machine)")


def record_rate(model, device: str, tokens: int, seconds: float) -> None:
    """After a run: its forward tokens per second, merged with the earlier runs' (`_merged`), for the
    next plan's estimates (atomic, best effort)."""
    if tokens <= 0 or seconds <= 0:
        return
    path = _rates_path()
    try:
        rates = json.loads(path.read_text()) if path.is_file() else {}
        rates = rates if isinstance(rates, dict) else {}
        rates[rate_key(model)] = _merged(rates.get(rate_key(model)), device, tokens, seconds)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".rates-", suffix=".json")
        with os.fdopen(fd, "w") as out:
            json.dump(rates, out)
        os.replace(tmp, path)
    except (OSError, ValueError):
        pass  # an estimate is a courtesy: never fail a finished run over it


def _merged(entry, device: str, tokens: int, seconds: float) -> Dict[str, Any]:
    """The rate over this run and the earlier ones on the same device, weighted by tokens (the earlier
    ones at most RATE_MEMORY tokens): a small run, whose per-forward overhead inflates its per-token
    time, no longer replaces the rate a whole spec measured, and a machine that changes shows within
    a run or two."""
    earlier = 0.0
    if isinstance(entry, dict) and entry.get("device") == device and \
            isinstance(entry.get("seconds_per_token"), (int, float)) and isinstance(entry.get("tokens"), (int, float)):
        earlier = float(min(max(entry["tokens"], 0), RATE_MEMORY))
    before = float(entry["seconds_per_token"]) * earlier if earlier else 0.0
    total = earlier + tokens
    return {"seconds_per_token": (before + seconds) / total, "device": device, "tokens": int(total),
            "when": time.time()}


def describe_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def largest(costs: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    timed = [r for r in costs["analyses"] + costs.get("pipeline", []) if "seconds" in r]
    return max(timed, key=lambda r: r["seconds"]) if timed else None


def blocks_fraction(layers: List[int], n_layers: int) -> float:
    """Prefix reuse: a cell patched at layer l runs blocks l..L-1, so (L - l)/L of a forward."""
    if not n_layers or not layers:
        return 1.0
    return sum((n_layers - l) / n_layers for l in layers) / len(layers)


def ceil_div(a: int, b: int) -> int:
    return int(math.ceil(a / max(b, 1)))
