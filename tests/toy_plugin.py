"""A plugin module outside the package: one of each extension point mi-dsl has, each added in one
place (tests/test_extension_points.py imports it in a fresh process and uses them as built-ins).

- a metric               @metric                      (mi_dsl/metrics.py)
- an expression function @function                    (mi_dsl/expr/functions.py)
- a vocabulary format    @record_format               (mi_dsl/spec/vocab.py)
- a model source         register_source(ModelSource) (mi_dsl/models/sources.py)
- an analysis, with every capability a registration can declare, and its report figure
                         @analysis + a params dataclass (mi_dsl/core/registry.py, core/typed.py)
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, List, Tuple

from mi_dsl.analyses._figures import layer_head_heatmap
from mi_dsl.analyses.base import Result, head_grid_rows, step
from mi_dsl.compile.alignment import one_length_only
from mi_dsl.compile.memory import graph_row_bytes
from mi_dsl.core.registry import analysis
from mi_dsl.core.typed import DecompositionParams, param
from mi_dsl.errors import Location
from mi_dsl.expr.functions import function
from mi_dsl.metrics import metric
from mi_dsl.models.sources import ModelSource, register_source
from mi_dsl.spec.vocab import record_format


@metric("toy_answer_logit", "the answer's logit alone at the final position (a toy)", linear=True)
def toy_answer_logit(r):
    return r.answer_logit()


@function("toy_double", ("num",), "num", "twice the number (a toy)", group="number")
def toy_double(x):
    return 2 * x


@record_format("tsv", (".tsv",), "tab-separated records with a header row (a toy)")
def read_tsv(text: str, file: str, context: str):
    lines = [(n, line.split("\t")) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    (_, header), rows = lines[0], lines[1:]
    entries = [dict(zip(header, (v.strip() for v in values))) for _, values in rows]
    locs = [Location(file, n, 1, context) for n, _ in rows]
    return entries, locs, lambda i, field: locs[i]


class ToySource(ModelSource):
    """A random tiny GPT-NeoX under a source name of its own: its shape and loader say so."""

    def shape(self, model):
        from mi_dsl.models.random_weights import SHAPES

        return SHAPES["gpt_neox"]["tiny"].dims

    def load(self, model, root, dtype, say, tokenizer):
        from mi_dsl.models.weights import load_random

        return load_random(replace(model, source="random", architecture="gpt_neox", size="tiny"), root, dtype,
                           say, tokenizer)


register_source(ToySource("toy", ("tokenizer",), "tokenizer", None, "a random tiny GPT-NeoX (a toy)"))


@dataclass(frozen=True, kw_only=True)
class ToyParams(DecompositionParams):
    layer: int = param(0, "A layer whose heads the toy reports (checked against the model's shape).", minimum=0)
    prompt: int = param(0, "A dataset prompt the toy names (checked against the prompts left).", minimum=0)

    def layer_indices(self) -> List[Tuple[Tuple[Any, ...], int]]:
        return [(("layer",), self.layer)]

    def prompt_indices(self) -> List[Tuple[Tuple[Any, ...], int]]:
        return [(("prompt",), self.prompt)]


@analysis("toy_dla", "each head's direct logit attribution (a toy)", ToyParams, needs_pairs=True,
          metrics="linear", answers="final", reads_final="the answer and foil logits (a toy)",
          alignment=one_length_only, graph_bytes_per_row=graph_row_bytes, per_head=True)
class ToyDla:
    def compile(self, params: ToyParams, ctx):
        return step(ctx, params, f"toy: heads of layer {params.layer}",
                    hooks=("blocks.{L}.attn.hook_z", "ln_final.hook_scale", "blocks.{L}.ln1_post.hook_scale?"))

    def cost(self, params: ToyParams, inputs):
        """One forward of its pairs' clean prompts (mi-run plan's cost; every kind declares one)."""
        from mi_dsl.compile.cost import Cost

        return Cost(cells=inputs.layers * inputs.heads, forward_rows=inputs.pairs, tokens_per_row=inputs.width)

    def compute(self, params: ToyParams, run) -> Result:
        from mi_dsl.analyses.head_attribution import per_head_logit_diffs

        table = per_head_logit_diffs(run).tolist()
        return Result({"per_head": table, "layer_heads": table[params.layer]},
                      tables={"toy": head_grid_rows(table, "logit_diff")}, summary="toy heads",
                      convention="direct logit attribution, as head_attribution (a toy)",
                      key_numbers={"layer_total": sum(table[params.layer])})

    def figures(self, result, run):
        return [("toy_heads", layer_head_heatmap(result.data["per_head"],
                                                 "Toy: each head's direct logit attribution"))]
