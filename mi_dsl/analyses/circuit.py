"""Edge-level circuit discovery: score every edge of the model's graph, keep the best
edges, measure how faithful the circuit is, compare methods and resamples, export MIB.

The engine lives in `_circuit/` (graph, scores, engine, circuits, faithfulness, compare,
mib, figures); this module reads the spec's parameters, feeds it the final pairs and
the spec's metric, and shapes the result.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal, Optional, Tuple

from ..compile.alignment import one_length_only
from ..core.params import Params
from ..core.typed import AnalysisParams, param
from ..errors import RunError, SpecMeaningError
from ._circuit import sizes
from .base import Result, step
from .registry import analysis

METHODS = ["eap", "eap_ig_inputs", "eap_ig_activations", "exact"]
DIFFERENTIABLE = ("logit_diff", "logprob", "prob")
CONVENTION = (
    "Edges u -> v between the input embedding, each attention head (per query head), each MLP and the "
    "logits; a head's query, key and value inputs are separate edges, and a key/value edge of a "
    "grouped-query model feeds the key/value head its query heads share. A score estimates the change "
    "in the mean metric when the edge alone carries u's ablated output instead of its clean one "
    "(EAP: (ablated - clean output of u) . d metric / d input of v, summed over positions, averaged over "
    "pairs); negative scores support the clean behaviour when the clean metric is larger. Faithfulness "
    "f = (m(C) - m(empty)) / (m(full) - m(empty)); CPR = area under f, CMD = area under |1 - f|.")

# Read (node outputs) and changed (node inputs) by the engine; "?": only where the model has it.
HOOKS = ("blocks.0.hook_resid_pre", "blocks.{L}.attn.hook_q_input", "blocks.{L}.attn.hook_k_input",
         "blocks.{L}.attn.hook_v_input", "blocks.{L}.attn.hook_z", "blocks.{L}.ln1_post.hook_scale?",
         "blocks.{L}.hook_attn_out", "blocks.{L}.ln2.hook_in", "blocks.{L}.hook_mlp_out", "ln_final.hook_in",
         "unembed.hook_in")

Method = Literal["eap", "eap_ig_inputs", "eap_ig_activations", "exact"]


@dataclass(frozen=True, kw_only=True)
class CircuitParams(AnalysisParams):
    methods: Tuple[Method, ...] = param(
        ("eap_ig_inputs",), "Scoring methods, compared on the same pairs: eap (one forward and backward), "
                            "eap_ig_inputs / eap_ig_activations (gradients integrated over `steps` interpolations of "
                            "the input embeddings / of every node input), exact (one patched forward per edge; small "
                            "graphs only). Default [eap_ig_inputs].", minItems=1, uniqueItems=True)
    steps: int = param(8, "Interpolation steps of EAP-IG (default 8).", minimum=1, maximum=256)
    ablation: Literal["patching", "mean", "zero"] = param(
        "patching", "What edges outside the circuit carry: the corrupted run's output of their source (patching, "
                    "default), its mean over the corrupted prompts, or zero.")
    select: Literal["abs", "signed", "greedy"] = param(
        "abs", "How edges are ranked for a circuit: by |score| (default), by signed score (edges whose ablation "
               "moves the metric towards the ablated value first), or greedily from the logits up.")
    keep_percent: Optional[float] = param(None, "The circuit: this percentage of the graph's edges, before pruning "
                                                "(default 5).", exclusiveMinimum=0, maximum=100)
    keep_edges: Optional[int] = param(None, "The circuit: this many edges (overrides keep_percent).", minimum=1)
    curve: bool = param(True, "Measure the faithfulness curve at the MIB levels with CPR and CMD (default true).")
    levels: Tuple[float, ...] = param(sizes.LEVELS, "Percentages of edges for the curve (default MIB's 0.1 ... 100).",
                                      minItems=2, items={"type": "number", "exclusiveMinimum": 0, "maximum": 100})
    random_baseline: bool = param(True, "Random circuits of the same sizes as a baseline (default true).")
    seed: int = param(0, "Seed of the random baseline and of bootstrap resamples (default 0).")
    stability: Optional[Params] = param(
        None, "Rescore the first method on resampled pairs and report the overlap of the circuits.",
        schema={"type": "object", "additionalProperties": False,
                "properties": {"bootstrap": {"type": "integer", "minimum": 2, "maximum": 200,
                                             "description": "Number of bootstrap resamples of the pairs."}},
                "required": ["bootstrap"]})
    top_table: int = param(30, "Rows of the top-edges table per method (default 30).", minimum=1)
    batch_size: Optional[int] = param(None, "Prompts per pass (default: what fits, at most 16).", minimum=1)
    max_exact_edges: int = param(5000, "Refuse `exact` on graphs with more edges than this (default 5000).",
                                 minimum=1)
    mib: Optional[Params] = param(
        None, "Also write the MIB circuit-localization submission folder(s) into the run directory.",
        schema={"type": "object", "additionalProperties": False,
                "properties": {"task": {"type": "string", "pattern": "^[A-Za-z0-9-]+$",
                                        "description": "Task name of the folder (e.g. ioi)."},
                               "model": {"type": "string", "pattern": "^[A-Za-z0-9.-]+$",
                                         "description": "Model name of the folder (default: from the model)."}},
                "required": ["task"]})


@analysis("circuit", "Edge-level circuit discovery: score every edge (EAP, EAP-IG, exact), keep the top edges, "
                     "prune, measure faithfulness (curve, CPR, CMD, random baseline), compare methods and "
                     "bootstrap resamples, export the MIB format.", CircuitParams, needs_pairs=True,
          alignment=one_length_only)
class Circuit:
    def compile(self, params: CircuitParams, ctx):
        if ctx.spec.metric not in DIFFERENTIABLE:
            raise SpecMeaningError(f"circuit scores need a differentiable metric ({', '.join(DIFFERENTIABLE)}); "
                                   f"the spec's metric is {ctx.spec.metric}", ctx.where("kind"))
        if params.keep_edges is not None and params.keep_percent is not None:
            raise SpecMeaningError("give keep_edges or keep_percent, not both", ctx.where("keep_edges"))
        if params.keep_edges is None and params.keep_percent is None:
            params = params.replace(keep_percent=5.0)  # the circuit's size unless keep_edges gives it
        return step(ctx, params, sizes.plan_line(ctx.spec.model, params), hooks=HOOKS, positions="all")

    def compute(self, params: CircuitParams, run) -> Result:
        from ._circuit.run import compute

        started = time.perf_counter()
        data, tables = compute(params, run)
        data["seconds"] = round(time.perf_counter() - started, 3)
        return Result(data, tables, _summary(data), convention=CONVENTION, key_numbers=_key_numbers(data))

    def figures(self, result, run):
        from ._circuit.figures import figures

        return figures(result.data)

    def files(self, result, run):
        """{relative path: text} written into the run directory (the MIB export)."""
        if "mib" not in result.data:
            return {}
        from ._circuit.mib import export_files

        return export_files(result.data)


def _summary(data) -> str:
    parts = []
    for name, m in data["methods"].items():
        text = f"{name}: circuit {m['circuit_edges']}/{data['graph']['edges']} edges, f = {_num(m['faithfulness'])}"
        if m.get("curve"):
            c = m["curve"]
            text += f", CPR {_num(c['cpr'])}, CMD {_num(c['cmd'])}"
        parts.append(text)
    first = next(iter(data["methods"].values()))
    if first.get("curve") and first["curve"].get("random_cpr") is not None:
        parts.append(f"random: CPR {_num(first['curve']['random_cpr'])}, CMD {_num(first['curve']['random_cmd'])}")
    if data.get("stability"):
        parts.append(f"bootstrap Jaccard {_num(data['stability']['mean_jaccard_to_full'])}")
    return "; ".join(parts)


def _key_numbers(data):
    out = {"edges": data["graph"]["edges"]}
    for name, m in data["methods"].items():
        out[f"{name}_faithfulness"] = m["faithfulness"]
        if m.get("curve"):
            out[f"{name}_cpr"], out[f"{name}_cmd"] = m["curve"]["cpr"], m["curve"]["cmd"]
    return out


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def ensure(condition: bool, message: str, where) -> None:
    if not condition:
        raise RunError(message, where)
