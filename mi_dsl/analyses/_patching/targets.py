"""Patching targets, directions and parameters; compiling a patching step (no torch)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Literal, Optional, Tuple

from ...core.typed import AnalysisParams, SelectorValue, param
from ...errors import SpecMeaningError
from ..base import step


@dataclass(frozen=True)
class Target:
    name: str
    hook: str            # hook name, "{layer}" for the layer
    layout: str          # "resid" [batch, pos, d] | "head" [batch, pos, head, d] | "pattern" [batch, head, dest, src]
    by_position: bool    # one cell per position; else one per (layer, head) over the selected positions
    what: str
    kv: bool = False     # the head axis counts key/value heads (grouped-query models)

    @property
    def has_heads(self) -> bool:
        return self.layout != "resid"

    def hook_name(self, layer: int) -> str:
        return self.hook.format(layer=layer)

    @property
    def axes(self) -> Tuple[str, ...]:
        if not self.has_heads:
            return ("layer", "position")
        return ("layer", "head", "position") if self.by_position else ("layer", "head")


def _targets() -> Dict[str, Target]:
    out = {
        "resid_pre": Target("resid_pre", "blocks.{layer}.hook_resid_pre", "resid", True,
                            "the residual stream entering each layer"),
        "resid_post": Target("resid_post", "blocks.{layer}.hook_resid_post", "resid", True,
                             "the residual stream leaving each layer (the last layer's is the final residual, "
                             "before the final norm)"),
        "resid_mid": Target("resid_mid", "blocks.{layer}.hook_resid_mid", "resid", True,
                            "the residual stream between attention and MLP (not in parallel-residual models)"),
        "attn_out": Target("attn_out", "blocks.{layer}.hook_attn_out", "resid", True,
                           "each layer's attention output"),
        "mlp_out": Target("mlp_out", "blocks.{layer}.hook_mlp_out", "resid", True, "each layer's MLP output"),
    }
    heads = {"z": ("attn.hook_z", "each head's output (hook_z)", False),
             "q": ("attn.hook_q", "each head's queries", False),
             "k": ("attn.hook_k", "each key/value head's keys", True),
             "v": ("attn.hook_v", "each key/value head's values", True),
             "pattern": ("attn.hook_pattern", "each head's attention pattern (by destination position)", False)}
    for name, (hook, what, kv) in heads.items():
        layout = "pattern" if name == "pattern" else "head"
        full = "blocks.{layer}." + hook
        out[name] = Target(name, full, layout, False, what + ", all selected positions at once", kv)
        out[f"{name}_by_position"] = Target(f"{name}_by_position", full, layout, True,
                                            what + ", one position at a time", kv)
    return out


TARGETS: Dict[str, Target] = _targets()


HEAD_TARGETS = sorted(n for n, t in TARGETS.items() if t.has_heads)


DIRECTIONS = ("denoising", "noising")


_SELECTOR = {"type": ["string", "integer"]}
_POSITIONS = {"type": ["string", "integer", "array"], "items": _SELECTOR, "minItems": 1}
_HEADS = {"type": ["string", "array"], "items": {"type": "string"}, "minItems": 1}
TargetName = Literal["resid_pre", "resid_post", "resid_mid", "attn_out", "mlp_out", "z", "z_by_position", "q",
                     "q_by_position", "k", "k_by_position", "v", "v_by_position", "pattern", "pattern_by_position"]


@dataclass(frozen=True, kw_only=True)
class PatchingParams(AnalysisParams):
    """What activation patching and attribution patching share."""

    target: TargetName = param(
        "z", "Which activation to patch: resid_pre, resid_post (leaving each layer: the last layer's is the final "
             "residual), resid_mid, attn_out, mlp_out (a layer x position grid); z, q, k, v, pattern (each head "
             "at all selected positions at once: a layer x head grid; k and v per key/value "
             "head); z_by_position, q_by_position, k_by_position, v_by_position, pattern_by_position (layer x head "
             "x position; for the pattern, the destination position). Default z.")
    direction: Literal["denoising", "noising"] = param(
        "denoising", "denoising (default, TransformerLens's convention): run the corrupted prompts and patch in "
                     "clean activations; noising: run the clean prompts and patch in corrupted activations. Scores "
                     "are normalised alike: 0 = corrupted baseline, 1 = clean baseline.")
    positions: SelectorValue = param(
        None, "Position selector(s), e.g. final, descriptor, noun#2[-1], 4 (default: every position). Each selector "
              "is one column; one naming several tokens (a slot) patches them together. All-position head targets "
              "(z, q, k, v, pattern) patch the union of the selected positions. Prompts of one length: named in the "
              "clean prompts, patched index for index (TransformerLens's convention). Prompts of several lengths: "
              "resolved in each prompt, and each named position of the source prompt is patched into the "
              "same-named position of the base prompt (indices, every position and patterns are refused there).",
        schema=_POSITIONS)
    layers: Optional[Tuple[int, ...]] = param(None, "Only these layers (default: all).", minItems=1,
                                              items={"type": "integer", "minimum": 0})
    heads: SelectorValue = param(
        None, "Head selector(s) for head targets, e.g. L8H2, L10H*, top(head_attr, 12) (default: all heads). For k "
              "and v on grouped-query models a query head selects the key/value head it reads.", schema=_HEADS)
    top_k: int = param(10, "How many of the largest effects to list (default 10).", minimum=1)

    def layer_indices(self) -> List[Tuple[Tuple[Any, ...], int]]:
        return [(("layers", i), layer) for i, layer in enumerate(self.layers or ())]


def compile_patching(params: PatchingParams, ctx, description: str):
    """The plan step of a patching analysis; every selector is compiled and checked here."""
    target = TARGETS[params.target]
    if params.heads is not None and not target.has_heads:
        raise SpecMeaningError(f"target '{target.name}' has no heads to select; `heads` applies to "
                               f"{', '.join(HEAD_TARGETS)}", ctx.where("heads"))
    ctx.heads(params)
    ctx.positions(params, "positions", ctx.slots())  # absent: every position
    refs = tuple(dict.fromkeys(ref for ref, _ in ctx.references))
    hooks = (target.hook.replace("{layer}", "{L}"), "unembed.hook_in")
    return step(ctx, params, description, hooks=hooks, positions="all", depends_on=refs)


def predicted_saving(params: PatchingParams) -> str:
    """The plan's prediction of what prefix reuse saves (the model's depth is not known yet)."""
    if params.layers is not None:
        chosen = sorted(set(params.layers))
        mean = sum(chosen) / len(chosen)
        return (f"prefix reuse: cells at layer l run blocks l..L-1 only, saving {mean:g}/L of the "
                f"block work (layers {chosen})")
    return ("prefix reuse: cells at layer l run blocks l..L-1 only, saving (L-1)/(2L) of the block work "
            "(every layer; about half on deep models)")


def patching_cost(params, inputs, exact: bool):
    """Cells of the grid (layers x heads x position columns, as grid.resolve makes them) and the rows
    that patch them: exact patching runs every cell on every pair, after the source and base runs
    (prefix reuse: a layer-l row runs blocks l..L-1); attribution patching runs both prompts forward
    and one backward per pair and side."""
    from ...compile.cost import Cost, blocks_fraction

    target = TARGETS[params.target]
    layers = sorted(set(params.layers)) if params.layers else list(range(inputs.layers))
    if not target.has_heads:
        units = len(layers)
    else:
        per_layer = inputs.kv_heads if target.kv else inputs.heads
        units = min(inputs.heads_of(params), len(layers) * per_layer) if params.heads is not None \
            else len(layers) * per_layer
    cells = units * (inputs.columns_of(params) if target.by_position else 1)
    pairs = inputs.pairs
    prefix_reuse = getattr(params, "prefix_reuse", True)
    # keys and values reused: a row runs the positions from the first that differs on (by position, a
    # cell's own position may come later: counted from the first, an upper bound), at least one
    first = min(inputs.same, inputs.width - 1) if prefix_reuse and not inputs.continuation else 0
    positions = (inputs.width - first) / inputs.width if inputs.width else 1.0
    if not exact:
        sides = 2 if inputs.continuation else 1
        return Cost(cells=cells, forward_rows=2 * pairs * sides, backward_rows=pairs * sides,
                    tokens_per_row=inputs.width, block_fraction=positions,
                    note=f"positions {first}.. only" if first else "")
    patched = cells * pairs
    reuse = (blocks_fraction(layers, inputs.layers) if prefix_reuse else 1.0) * positions
    rows = patched + 2 * pairs
    fraction = (2 * pairs + patched * reuse) / rows if rows else 1.0
    note = "prefix reuse counted" + (f", positions {first}.. only" if first else "")
    return Cost(cells=cells, forward_rows=rows, patched_rows=patched, tokens_per_row=inputs.width,
                block_fraction=fraction, note=note if reuse < 1 else "")
