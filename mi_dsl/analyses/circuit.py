"""Edge-level circuit discovery: score every edge of the model's graph, keep the best
edges (nodes, neurons), measure how faithful the circuit is as MIB does, compare methods,
resamples and templates, export MIB.

The engine lives in `_circuit/` (graph, units, scores, engine, circuits, faithfulness, ties,
stability, compare, mib, figures); this module reads the spec's parameters, feeds it the final
pairs and the spec's metric, and shapes the result.
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
from .registry import analysis, linearised_note

METHODS = ["eap", "eap_ig_inputs", "eap_ig_activations", "clean_corrupted", "eap_ig_pinned_inputs", "exact"]
CONVENTION = (
    "Edges u -> v between the input embedding, each attention head (per query head), each MLP and the "
    "logits; a head's query, key and value inputs are separate edges, and a key/value edge of a "
    "grouped-query model feeds the key/value head its query heads share. A score estimates the change "
    "in the mean metric when the edge alone carries u's ablated output instead of its clean one "
    "((ablated - clean output of u) . d metric / d input of v, summed over positions, averaged over "
    "pairs; the methods differ in where the gradient is taken); negative scores support the clean behaviour "
    "when the clean metric is larger. MIB's files hold the opposite sign (its metric is the loss -logit_diff). "
    "Faithfulness f = (m(C) - m(empty)) / (m(full) - m(empty)).")

# Read (node outputs) and changed (node inputs) by the engine; "?": only where the model has it.
HOOKS = ("blocks.0.hook_resid_pre", "blocks.{L}.attn.hook_q_input", "blocks.{L}.attn.hook_k_input",
         "blocks.{L}.attn.hook_v_input", "blocks.{L}.attn.hook_z", "blocks.{L}.ln1_post.hook_scale?",
         "blocks.{L}.hook_attn_out", "blocks.{L}.ln2.hook_in", "blocks.{L}.hook_mlp_out", "ln_final.hook_in",
         "unembed.hook_in")

Method = Literal["eap", "eap_ig_inputs", "eap_ig_activations", "clean_corrupted", "eap_ig_pinned_inputs", "exact"]


@dataclass(frozen=True, kw_only=True)
class CircuitParams(AnalysisParams):
    methods: Tuple[Method, ...] = param(
        ("eap_ig_inputs",), "Scoring methods, compared on the same pairs (docs/circuits.md): eap, eap_ig_inputs, "
                            "eap_ig_activations and clean_corrupted as EAP-IG publishes them (EAP, EAP-IG-inputs, "
                            "EAP-IG-activations, clean-corrupted), eap_ig_pinned_inputs (mi-dsl's own: every node "
                            "input interpolated at once), exact (one patched forward per edge; small graphs only). "
                            "Default [eap_ig_inputs].", minItems=1, uniqueItems=True)
    steps: int = param(8, "Interpolation steps of the EAP-IG methods (default 8).", minimum=1, maximum=256)
    ig_points: Literal["published", "midpoint"] = param(
        "published", "Where EAP-IG takes its gradients on the path from ablated (0) to clean (1): as published "
                     "(eap_ig_inputs a = k/steps, k = 0 .. steps-1; eap_ig_activations k = 1 .. steps; default) or "
                     "at the midpoints (k + 1/2)/steps.")
    ablation: Literal["patching", "mean", "zero"] = param(
        "patching", "What edges outside the circuit carry: the corrupted run's output of their source (patching, "
                    "default), its mean over the corrupted prompts per position (MIB's mean-positional), or zero.")
    level: Literal["edge", "node", "neuron"] = param(
        "edge", "What a circuit is made of (MIB's levels): edges (default), nodes (a node keeps all its outgoing "
                "edges), or neurons (each output dimension of each node).")
    merge_qkv: bool = param(False, "Edge circuits with a head's q, k and v inputs as one edge (u -> a3.h2; u -> a3.g0 "
                                   "for a grouped-query model's key/value group).")
    select: Literal["abs", "signed", "greedy"] = param(
        "abs", "How items are ranked for the circuit: by |score| (default), by signed score (items whose ablation "
               "moves the metric towards the ablated value first), or greedily from the logits up (edges only).")
    keep_percent: Optional[float] = param(None, "The circuit: this percentage of the items (edges, nodes or "
                                                "neurons), before pruning (default 5).",
                                          exclusiveMinimum=0, maximum=100)
    keep_edges: Optional[int] = param(None, "The circuit: this many items (edges, nodes or neurons; overrides "
                                            "keep_percent).", minimum=1)
    curve: bool = param(True, "Measure the faithfulness curves at the levels with CPR and CMD (default true).")
    levels: Tuple[float, ...] = param(sizes.LEVELS, "Percentages of items for the curve (default MIB's 0.1 ... 100).",
                                      minItems=2, items={"type": "number", "exclusiveMinimum": 0, "maximum": 100})
    area: Literal["requested", "kept"] = param(
        "requested", "CPR/CMD's x-axis: the requested fraction k/100 as MIB's evaluate_area_under_curve (default), "
                     "or the fraction of edges kept after pruning (mi-dsl's earlier convention).")
    rankings: Literal["mib", "select"] = param(
        "mib", "Which ranking each area comes from: CPR from the signed and CMD from the absolute ranking, as MIB "
               "reports them (mib, default), or both from `select`.")
    tie_tolerance: float = param(1e-5, "Near-ties at a cut: items within this fraction of the largest |score| of the "
                                       "threshold (default 1e-5), reported with each circuit and curve point.",
                                 minimum=0)
    random_baseline: bool = param(True, "Random circuits of the same sizes as a baseline (default true).")
    seed: int = param(0, "Seed of the random baseline and of bootstrap resamples (default 0).")
    stability: Optional[Params] = param(
        None, "Rescore the first method on resampled pairs, or on the pairs of each value of a slot, and report the "
              "overlap of the circuits and the spread of CPR and CMD.",
        schema={"type": "object", "additionalProperties": False, "minProperties": 1,
                "properties": {"bootstrap": {"type": "integer", "minimum": 2, "maximum": 200,
                                             "description": "Number of bootstrap resamples of the pairs."},
                               "by_slot": {"type": "string", "description": "A slot of the template: one circuit per "
                                                                            "value (a slot of sentence frames: per "
                                                                            "template)."}}})
    top_table: int = param(30, "Rows of the top-edges table per method (default 30).", minimum=1)
    batch_size: Optional[int] = param(None, "Prompts per pass (default: 16 on a CPU; on a GPU as many as fit half "
                                            "its free memory, at most 512).", minimum=1)
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


@analysis("circuit", "Edge-level circuit discovery: score every edge (EAP, EAP-IG-inputs, EAP-IG-activations, "
                     "clean-corrupted, exact), keep the top edges, nodes or neurons, prune, measure faithfulness "
                     "(curves, CPR and CMD as MIB computes them, random baseline), compare methods, resamples and "
                     "templates, export the MIB format.", CircuitParams, needs_pairs=True,
          metrics="gradient", alignment=one_length_only)
class Circuit:
    def compile(self, params: CircuitParams, ctx):
        if params.keep_edges is not None and params.keep_percent is not None:
            raise SpecMeaningError("give keep_edges or keep_percent, not both", ctx.where("keep_edges"))
        if params.keep_edges is None and params.keep_percent is None:
            params = params.replace(keep_percent=5.0)  # the circuit's size unless keep_edges gives it
        _check_options(params, ctx)
        return step(ctx, params, sizes.plan_line(ctx.spec.model, params), hooks=HOOKS, positions="all")

    def cost(self, params, inputs):
        """Each method's forwards and backwards per pair (_circuit/sizes.passes), one stacked row per edge
        for exact scores, the faithfulness curve's circuit-ablated forwards, bootstrap rescorings; the note
        is the circuit's own time and memory estimate (sizes.cost_line, calibrated on its measured FLOP rate)."""
        from ..compile.cost import Cost

        edges = sizes.counts(inputs.layers, inputs.heads, inputs.kv_heads, False)["edges"] if inputs.layers else 0
        forwards = backwards = patched = 0
        for method in params.methods:
            f, b = sizes.passes(method, params.steps, inputs.layers or None)
            forwards, backwards = forwards + f * inputs.pairs, backwards + b * inputs.pairs
            patched += edges * inputs.pairs if method == "exact" else 0
        if params.curve:
            per = 1 + len(params.levels) * (2 if params.random_baseline else 1)
            patched += len(params.methods) * (per * inputs.pairs + 4 * inputs.pairs)
        boot = (params.stability or {}).get("bootstrap") or 0
        f, b = sizes.passes(params.methods[0], params.steps, inputs.layers or None)
        forwards, backwards = forwards + boot * f * inputs.pairs, backwards + boot * b * inputs.pairs
        note = sizes.cost_line(inputs.model, params, inputs.pairs, inputs.width) if inputs.model is not None else None
        return Cost(cells=edges, forward_rows=forwards + patched, patched_rows=patched, backward_rows=backwards,
                    tokens_per_row=inputs.width, note=note or "")

    def compute(self, params: CircuitParams, run) -> Result:
        from ._circuit.run import compute

        started = time.perf_counter()
        data, tables = compute(params, run)
        data["seconds"] = round(time.perf_counter() - started, 3)
        return Result(data, tables, _summary(data), convention=CONVENTION + linearised_note(run.main_metric),
                      key_numbers=_key_numbers(data))

    def figures(self, result, run):
        from ._circuit.figures import figures

        return figures(result.data)

    def files(self, result, run):
        """{relative path: text} written into the run directory (the MIB export)."""
        if "mib" not in result.data:
            return {}
        from ._circuit.mib import export_files

        return export_files(result.data)


def _check_options(params, ctx) -> None:
    """Combinations the engine cannot run, refused where the spec says them."""
    level, methods = params.level, params.methods
    if params.select == "greedy" and (level != "edge" or params.merge_qkv):
        raise SpecMeaningError("select: greedy grows edge circuits from the logits; use abs or signed for "
                               f"{'merged q/k/v edges' if params.merge_qkv else level + ' circuits'}",
                               ctx.where("select"))
    if params.merge_qkv and level != "edge":
        raise SpecMeaningError("merge_qkv merges edges; it needs level: edge", ctx.where("merge_qkv"))
    if level == "neuron" and "exact" in methods:
        raise SpecMeaningError("neuron circuits need gradient scores per output dimension; exact scores edges only",
                               ctx.where("methods"))
    if "clean_corrupted" in methods and params.ablation != "patching":
        raise SpecMeaningError("clean_corrupted takes gradients at the corrupted run, so it needs ablation: patching",
                               ctx.where("ablation"))
    slot = (params.stability or {}).get("by_slot")
    if slot is not None and slot not in (ctx.spec.prompts.get("slots") or {}):
        raise SpecMeaningError(f"stability.by_slot names '{slot}', which is not a slot of the template "
                               f"(slots: {', '.join(sorted(ctx.spec.prompts.get('slots') or {}))})",
                               ctx.where("stability", "by_slot"))


def _summary(data) -> str:
    parts = []
    for name, m in data["methods"].items():
        text = f"{name}: circuit {m['circuit_edges']}/{data['graph']['edges']} edges, f = {_num(m['faithfulness'])}"
        if m.get("curve"):
            c = m["curve"]
            text += f", CPR {_num(c['cpr'])}, CMD {_num(c['cmd'])}"
        ties = len((m.get("curve") or {}).get("near_ties", []))
        if ties:
            text += f" ({ties} curve cut{'s' if ties > 1 else ''} on near-ties)"
        parts.append(text)
    first = next(iter(data["methods"].values()))
    if first.get("curve") and first["curve"].get("random_cpr") is not None:
        parts.append(f"random: CPR {_num(first['curve']['random_cpr'])}, CMD {_num(first['curve']['random_cmd'])}")
    if data.get("stability"):
        st = data["stability"]
        if "bootstrap" in st:
            spread = st.get("cpr_spread")
            parts.append(f"bootstrap Jaccard {_num(st['mean_jaccard_to_full'])}"
                         + (f", CPR {spread['min']:.3f}..{spread['max']:.3f}" if spread else ""))
        if "by_slot" in st:
            parts.append(f"per {st['by_slot']['slot']} Jaccard {_num(st['by_slot']['mean_jaccard_to_full'])}")
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
