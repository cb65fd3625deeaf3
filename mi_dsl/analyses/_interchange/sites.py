"""Sites of an interchange analysis: component x layer x named position (x head for z).

Positions are named (final, a slot, slot#2, slot[-1]) and resolved in each example's base and
source prompt on its own, so base and source may differ in length: the k-th token a selector
names in the source goes to the k-th it names in the base. A selector that names a different
number of tokens in the two prompts of an example is refused (one token cannot stand for two).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

from ...errors import RunError
from .._patching.targets import TARGETS

# component -> the activation patching target of the same hook (one position at a time)
TARGET_OF = {"resid_pre": "resid_pre", "resid_mid": "resid_mid", "attn_out": "attn_out", "mlp_out": "mlp_out",
             "z": "z_by_position"}
# within a layer, the order the hooks fire in (source captures stop after the last one)
_FIRING = {"resid_pre": 0, "z": 1, "attn_out": 2, "resid_mid": 3, "mlp_out": 4}


@dataclass(frozen=True)
class Column:
    label: str
    base: Tuple[Tuple[int, ...], ...]      # per example: the base prompt's positions
    source: Tuple[Tuple[int, ...], ...]    # per example: the source prompt's, in the same order


@dataclass(frozen=True)
class Site:
    component: str
    layer: int
    column: int
    head: int = -1                          # z only

    @property
    def hook(self) -> str:
        return TARGETS[TARGET_OF[self.component]].hook_name(self.layer)

    @property
    def layout(self) -> str:
        return TARGETS[TARGET_OF[self.component]].layout  # "resid" [B, pos, d] or "head" [B, pos, H, d_head]

    def label(self, columns: Sequence[Column]) -> str:
        head = f" H{self.head}" if self.head >= 0 else ""
        return f"L{self.layer} {self.component}{head} @ {columns[self.column].label}"

    def to_json(self, columns: Sequence[Column]) -> dict:
        return {"label": self.label(columns), "component": self.component, "layer": self.layer,
                "position": columns[self.column].label, "head": self.head if self.head >= 0 else None}


def firing_order(site_or_hook: Tuple[int, str]) -> Tuple[int, int]:
    layer, component = site_or_hook
    return layer, _FIRING[component]


def columns(settings, examples, run) -> List[Column]:
    """Each position selector resolved in every example's base and source prompt."""
    from ...expr import Env

    out, seen = [], set()
    for selector in settings.positions:
        if selector.text in seen:
            continue
        seen.add(selector.text)
        base, source = [], []
        for example in examples:
            got = []
            for prompt in (example.base, example.source):
                got.append(tuple(selector.compiled.evaluate(Env(n_tokens=len(prompt.ids), slot_spans=prompt.spans))))
            if len(got[0]) != len(got[1]):
                raise RunError(f"position selector '{selector.text}' names {len(got[0])} token(s) in the base prompt "
                               f"'{example.base.text}' but {len(got[1])} in its source '{example.source.text}'; an "
                               "interchange moves one token's activation to one token",
                               run.spec.source.value(selector.path),
                               hint="name one token (e.g. slot[-1]) or filter the vocabularies to one token count")
            base.append(got[0])
            source.append(got[1])
        out.append(Column(selector.text, tuple(base), tuple(source)))
    return out


def sites(settings, params, run, n_columns: int) -> List[Site]:
    cfg = run.cfg
    layers = list(range(cfg.n_layers))
    if settings.layers is not None:
        bad = [l for l in settings.layers if l >= cfg.n_layers]
        if bad:
            raise RunError(f"layer {bad[0]} is out of range: the model has {cfg.n_layers} layers", run.where("layers"))
        layers = sorted(set(settings.layers))
    chosen = set(run.select_heads(params)) if settings.heads is not None else None
    out: List[Site] = []
    for component in settings.components:
        if component == "resid_mid" and not _has_hook(run, f"blocks.{layers[0]}.hook_resid_mid"):
            raise RunError("this model has no resid_mid (attention and MLP read the same residual in parallel)",
                           run.where("components"), hint="use resid_pre, attn_out or mlp_out")
        for layer in layers:
            for column in range(n_columns):
                if component != "z":
                    out.append(Site(component, layer, column))
                    continue
                out += [Site(component, layer, column, h) for h in range(cfg.n_heads)
                        if chosen is None or (layer, h) in chosen]
    if not out:
        raise RunError("the head selector and `layers` select no head together", run.where("heads"))
    return out


def _has_hook(run, name: str) -> bool:
    try:
        return name in run.model.hook_dict
    except AttributeError:
        return True
