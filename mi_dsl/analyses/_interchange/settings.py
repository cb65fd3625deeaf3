"""The interchange analysis's parameters: their schema part, and the one place compute reads them.

`InterchangeParams` is the spec's parameters (typed, core/typed.py); `Settings.of(params)` adds
what the run knows (the spec's seed for training) and is all the engine reads.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Literal, Optional, Tuple

from ...core.params import Params
from ...core.typed import MISSING, AnalysisParams, SelectorValue, param

COMPONENTS = ("resid_pre", "resid_mid", "attn_out", "mlp_out", "z")
FEATURIZERS = ("full", "das", "pca", "random")

_SELECTOR = {"type": ["string", "integer"]}

TRAINING: Dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "description": "How a DAS featurizer is trained (and how PCA and random featurizers split the examples).",
    "properties": {
        "epochs": {"type": "integer", "minimum": 1, "default": 10, "description": "Most passes over the "
                   "training examples (default 10)."},
        "lr": {"type": "number", "exclusiveMinimum": 0, "default": 0.01, "description": "Adam's learning rate "
               "(default 0.01)."},
        "batch_size": {"type": "integer", "minimum": 1, "default": 32, "description": "Examples per step "
                       "(default 32)."},
        "patience": {"type": "integer", "minimum": 1, "default": 3, "description": "Stop after this many epochs "
                     "without the validation loss improving; the best epoch's rotation is kept (default 3)."},
        "seed": {"type": "integer", "minimum": 0, "description": "Seed of the split, the initial rotation and "
                 "the example order (default: the spec's seed)."},
        "split": {"type": "string", "enum": ["example", "slot"], "default": "example",
                  "description": "example: a seeded share of the examples is held out; slot: the examples "
                                 "whose base prompt holds a held-out value of `split_slot` are (a split by "
                                 "template when that slot picks the prompt's wording)."},
        "split_slot": {"type": "string", "description": "The slot whose values are split (split: slot)."},
        "test_fraction": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "default": 0.3,
                          "description": "Share of the examples (or of the slot's values) held out for the test "
                                         "IIA (default 0.3). A fifth of the rest validates for early stopping."},
    },
}

Component = Literal["resid_pre", "resid_mid", "attn_out", "mlp_out", "z"]
SOURCE = {"oneOf": [{"type": "string", "enum": ["corrupted", "clean"]},
                    {"type": "object", "additionalProperties": False, "required": ["where"],
                     "properties": {"where": {"type": "string", "description": "The condition a source "
                                              "prompt meets, e.g. source.io != base.io."},
                                    "seed": {"type": "integer", "minimum": 0,
                                             "description": "Seed of the draw (default: the spec's)."}}}]}


@dataclass(frozen=True, kw_only=True)
class InterchangeParams(AnalysisParams):
    variables: Tuple[str, ...] = param(MISSING, "The causal model's variables to interchange, each tested on its "
                                                "own.", minItems=1)
    source: Any = param("corrupted", "Where each example's source prompt comes from: `corrupted` (default: each "
                                     "pair's corrupted prompt is the source, its clean prompt the base), `clean` (the "
                                     "reverse, activation patching's denoising), or {where: EXPR, seed: N}: another "
                                     "final clean prompt drawn for each base where EXPR holds over base.NAME and "
                                     "source.NAME (slots and variables).", schema=SOURCE)
    components: Tuple[Component, ...] = param(
        ("resid_pre",), "What is interchanged at each site: resid_pre (the residual stream entering the layer), "
                        "resid_mid, attn_out, mlp_out, z (each head's output; one site per head). Default [resid_pre].",
        minItems=1)
    layers: Optional[Tuple[int, ...]] = param(None, "Layers of the sites (default: all).", minItems=1,
                                              items={"type": "integer", "minimum": 0})
    positions: SelectorValue = param(
        ("final",), "Position selectors, one site column each, named in each prompt (base and source alike, so "
                    "prompts may differ in length): final, a slot, slot#2, slot[-1]. A selector naming several "
                    "tokens interchanges them together; it must name as many tokens in the source as in the base. "
                    "Default [final].", schema={"type": "array", "items": _SELECTOR, "minItems": 1})
    heads: SelectorValue = param(None, "Head selector(s) for component z (default: every head).",
                                 schema={"type": ["string", "array"], "items": {"type": "string"}, "minItems": 1})
    featurizer: Literal["full", "das", "pca", "random"] = param(
        "full", "full (default): the whole vector is interchanged. das: a learned orthogonal rotation's first `dims` "
                "coordinates (distributed alignment search), trained per site and variable. pca: the examples' top "
                "`dims` principal components. random: a seeded random orthonormal `dims`-dimensional subspace (a "
                "baseline).")
    dims: int = param(1, "Dimensions of the interchanged subspace (das, pca, random; default 1).", minimum=1)
    subspace: Optional[str] = param(None, "A subspace saved by an earlier run (a .safetensors file relative to the "
                                          "spec, in its tree): interchange in it at every site instead of training "
                                          "one.")
    training: Optional[Params] = param(None, TRAINING["description"],
                                       schema={k: v for k, v in TRAINING.items() if k != "description"})
    iia_over: Literal["candidates", "vocabulary"] = param(
        "candidates", "IIA counts an example when the label is the intervened run's top token among the example's "
                      "candidates (default: every output the causal model gives on it) or over the whole vocabulary.")
    batch_size: Optional[int] = param(None, "Rows per forward pass when evaluating (default: what fits the memory "
                                            "budget).", minimum=1)

    def layer_indices(self) -> List[Tuple[Tuple[Any, ...], int]]:
        return [(("layers", i), layer) for i, layer in enumerate(self.layers or ())]


@dataclass(frozen=True)
class Training:
    epochs: int = 10
    lr: float = 0.01
    batch_size: int = 32
    patience: int = 3
    seed: int = 0
    split: str = "example"
    split_slot: Optional[str] = None
    test_fraction: float = 0.3


@dataclass(frozen=True)
class Settings:
    id: str
    variables: Tuple[str, ...]
    source: Any                    # "corrupted", "clean" or the {where, seed} mapping as written
    components: Tuple[str, ...]
    layers: Optional[Tuple[int, ...]]
    positions: Any                 # compiled Selection
    heads: Any                     # compiled Selection or None
    featurizer: str
    dims: int
    subspace: Optional[str]        # an absolute path (compile resolved it)
    training: Training
    iia_over: str
    batch_size: Optional[int]

    @classmethod
    def of(cls, params: InterchangeParams, spec_seed: int = 0) -> "Settings":
        raw = dict(params.training or {})
        raw.setdefault("seed", spec_seed)
        source = params.source
        return cls(params.name, tuple(params.variables), source if isinstance(source, str) else dict(source),
                   tuple(params.components), tuple(params.layers) if params.layers is not None else None,
                   params.positions, params.heads, params.featurizer, params.dims, params.subspace,
                   Training(**raw), params.iia_over, params.batch_size)

    @property
    def featurized(self) -> bool:
        """A subspace is interchanged (trained, computed or loaded), not the whole vector."""
        return self.featurizer != "full" or self.subspace is not None
