"""Resolving a patching analysis into its grid of cells: layers x heads x position columns."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ...errors import RunError
from .targets import TARGETS, Target


@dataclass(frozen=True)
class Column:
    """One position column: the positions patched together and how to show them."""

    label: str
    indices: Tuple[int, ...]
    tokens: Tuple[str, ...]
    slot: Optional[str]

    def to_json(self) -> Dict[str, Any]:
        return {"label": self.label, "indices": list(self.indices), "tokens": list(self.tokens), "slot": self.slot}


@dataclass(frozen=True)
class Cell:
    layer: int
    head: int                     # -1 for residual targets
    positions: Tuple[int, ...]
    grid_index: Tuple[int, ...]   # where its value sits in the result grid
    label: str


@dataclass
class Grid:
    """The resolved selection: the cells and the axes of the result grid."""

    target: Target
    layers: List[int]
    heads: List[int]             # the head axis: every query head, or key/value head for k/v
    head_labels: List[str]       # column labels of the head axis ("H2", or "KV0")
    columns: List[Column]        # position columns (by-position targets)
    patched_positions: Tuple[int, ...]  # all-position head targets: what each cell patches
    cells: List[Cell]
    # Prompts of several lengths: positions per prompt, aligned by name (None: one length, index
    # for index; cells' positions are then every prompt's).
    named: Optional["Named"] = None
    # denoising or noising: which run is patched is part of the grid (the named alignment maps
    # source positions to base ones), so the engines read it here and cannot be told otherwise
    direction: str = "denoising"

    @property
    def alignment(self) -> str:
        return "index" if self.named is None else "name"

    @property
    def shape(self) -> Tuple[int, ...]:
        if not self.target.has_heads:
            return (len(self.layers), len(self.columns))
        if self.target.by_position:
            return (len(self.layers), len(self.heads), len(self.columns))
        return (len(self.layers), len(self.heads))


def resolve(params, run) -> Grid:
    """The grid of cells the compiled parameters name on this model and these pairs."""
    target = TARGETS[params.target]
    cfg = run.cfg
    n_layers = cfg.n_layers
    layers = list(range(n_layers))
    if params.layers is not None:
        bad = [l for l in params.layers if l >= n_layers]
        if bad:
            raise RunError(f"layer {bad[0]} is out of range: the model has {n_layers} layers "
                           f"(0 to {n_layers - 1})", run.where("layers"))
        layers = sorted(set(params.layers))
    if target.name.startswith("resid_mid") and not _has_hook(run, target.hook_name(0)):
        raise RunError("this model has no resid_mid (attention and MLP read the same residual in parallel)",
                       run.where("target"), hint="patch resid_pre, attn_out or mlp_out instead")
    n_heads = head_count(cfg, target)
    chosen = _selected_heads(params, run, target, n_heads)
    named = _alignment(params, run)
    columns = _columns(params, run) if named is None else named.columns
    tokens_len = len(run.pairs[0].clean.ids)
    patched = tuple(sorted({i for c in columns for i in c.indices})) if params.positions is not None \
        else tuple(range(tokens_len))
    if named is not None:  # cells hold the first prompt's base positions; `named` has every prompt's
        patched = named.union[0]
    heads = list(range(n_heads))
    if chosen is not None:
        layers = [l for l in layers if any(cl == l for cl, _ in chosen)]
        if not layers:
            raise RunError("the head selector and `layers` select no head together", run.where("heads"))
    head_labels = [head_axis_label(target, cfg, h) for h in heads]
    at = (lambda ci: columns[ci].indices) if named is None else (lambda ci: named.positions[ci][0])
    cells: List[Cell] = []
    for li, layer in enumerate(layers):
        if not target.has_heads:
            cells += [Cell(layer, -1, at(ci), (li, ci), f"L{layer} {col.label}") for ci, col in enumerate(columns)]
            continue
        for hi, head in enumerate(heads):
            if chosen is not None and (layer, head) not in chosen:
                continue
            name = cell_head_label(target, cfg, layer, head)
            if target.by_position:
                cells += [Cell(layer, head, at(ci), (li, hi, ci), f"{name} {col.label}")
                          for ci, col in enumerate(columns)]
            else:
                cells.append(Cell(layer, head, patched, (li, hi), name))
    return Grid(target, layers, heads, head_labels, columns if target.by_position else [], patched, cells, named,
                params.direction)


@dataclass(frozen=True)
class Named:
    """Positions resolved in each prompt and aligned by name (prompts of several lengths).

    positions[column][prompt]: the base run's positions of a column in that prompt;
    union[prompt]: of all columns (what an all-position head target patches);
    source_of[prompt]: base position -> the source run's position of the same name;
    base_final[prompt]: the base prompt's final position (batches are right-padded)."""

    columns: List[Column]
    positions: List[List[Tuple[int, ...]]]
    union: List[Tuple[int, ...]]
    source_of: List[Dict[int, int]]
    base_final: List[int]
    source_lengths: List[int]


def _alignment(params, run) -> Optional[Named]:
    """None for prompts of one length (index for index, positions named in the clean prompts);
    otherwise each named position of the source prompt goes to the same-named position of the
    base prompt (compile/alignment.py checked at plan time that it can, and refuses here again
    if the final pairs cannot)."""
    from ...compile.alignment import position_map

    aligned = position_map(run.spec, run.analysis_index, params, run.pairs)
    if aligned is None:
        return None
    base, source = ("corrupted", "clean") if params.direction == "denoising" else ("clean", "corrupted")
    items = [s.text for s in params.positions]
    keep = [j for j, item in enumerate(items) if item not in items[:j]]  # the same selector twice: one column
    n = len(run.pairs)
    positions = [[tuple(aligned[base][j][p]) for p in range(n)] for j in keep]
    source_of: List[Dict[int, int]] = [{} for _ in range(n)]
    for j in keep:
        for p in range(n):
            source_of[p].update(zip(aligned[base][j][p], aligned[source][j][p]))
    union = [tuple(sorted(source_of[p])) for p in range(n)]
    first = run.pairs[0].clean
    tokens = run.tokenizer.token_strs(first.ids)
    slot_at = _slot_names(first.spans)
    columns = []
    for j in keep:
        shown_at = aligned["clean"][j][0]
        slot_names = {slot_at.get(q) for q in shown_at}
        slot = slot_names.pop() if len(slot_names) == 1 else None
        columns.append(Column(f"{items[j]} (by name; first prompt @{','.join(map(str, shown_at))} "
                              f"{' '.join(repr(tokens[q]) for q in shown_at)})", tuple(shown_at),
                              tuple(tokens[q] for q in shown_at), slot))
    return Named(columns, positions, union, source_of,
                 [len(getattr(pair, base).ids) - 1 for pair in run.pairs],
                 [len(getattr(pair, source).ids) for pair in run.pairs])


def head_count(cfg, target: Target) -> int:
    if target.kv:
        return getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    return cfg.n_heads


def _grouped(cfg, target: Target) -> bool:
    return target.kv and head_count(cfg, target) != cfg.n_heads


def head_axis_label(target: Target, cfg, head: int) -> str:
    return f"KV{head}" if _grouped(cfg, target) else f"H{head}"


def cell_head_label(target: Target, cfg, layer: int, head: int) -> str:
    return f"L{layer}{head_axis_label(target, cfg, head)}"


def _has_hook(run, name: str) -> bool:
    try:
        return name in run.model.hook_dict
    except AttributeError:
        return True


def _selected_heads(params, run, target: Target, n_heads: int) -> Optional[set]:
    """{(layer, head-axis index)} the head selectors name, or None for every head.

    For key/value targets of a grouped-query model a query head selects the key/value
    head it reads."""
    if params.heads is None:
        return None
    group = run.cfg.n_heads // n_heads
    return {(layer, head // group) for layer, head in run.select_heads(params)}


def _columns(params, run) -> List[Column]:
    first = run.pairs[0].clean
    tokens = run.tokenizer.token_strs(first.ids)
    slot_at = _slot_names(first.spans)
    if params.positions is None:
        return [Column(_position_label(i, tokens[i], slot_at.get(i)), (i,), (tokens[i],), slot_at.get(i))
                for i in range(len(first.ids))]
    from ...expr import Env

    columns: List[Column] = []
    seen = set()
    for selector in params.positions:  # compiled by the compiler
        item = selector.text
        if item in seen:
            continue  # the same selector twice is one column
        seen.add(item)
        compiled, path = selector.compiled, selector.path
        resolved = None
        for pair in run.pairs:  # slots are named in the clean prompts (a corrupted template may move them)
            prompt = pair.clean
            got = tuple(compiled.evaluate(Env(n_tokens=len(prompt.ids), slot_spans=prompt.spans)))
            if resolved is None:
                resolved = got
            elif got != resolved:
                raise RunError(f"position selector '{item}' names positions {list(resolved)} in one prompt "
                               f"and {list(got)} in another ('{prompt.text}'); patching needs the same "
                               "positions in every prompt", run.spec.source.value(path),
                               hint="filter the vocabularies so each slot has one token count")
        slot_names = {slot_at.get(p) for p in resolved}
        slot = slot_names.pop() if len(slot_names) == 1 else None
        shown = " ".join(repr(tokens[p]) for p in resolved)
        columns.append(Column(f"{item} @{','.join(map(str, resolved))} {shown}", resolved,
                              tuple(tokens[p] for p in resolved), slot))
    return columns


def _slot_names(spans) -> Dict[int, str]:
    out = {}
    for slot, occurrences in spans.items():
        for n, (start, end) in enumerate(occurrences, 1):
            for p in range(start, end):
                out[p] = slot if n == 1 else f"{slot}#{n}"
    return out


def _position_label(index: int, token: str, slot: Optional[str]) -> str:
    return f"{index} {token!r}" + (f" [{slot}]" if slot else "")
