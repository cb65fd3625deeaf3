"""Activation patching (exact): the metric when one activation comes from the other run.

Each cell (a layer and position, a head, or a head at a position) is one patched run.
Cells are not run one forward each, as TransformerLens's patching functions do: the
base prompts are repeated once per cell in the batch dimension and every layer's hook
patches only the rows of its own cells, so a whole grid costs about as much as plain
forwards of cells x prompts rows (see _patching for the mechanics and directions).
"""
from __future__ import annotations

from typing import Optional
from dataclasses import dataclass, replace

from ..compile.alignment import position_map
from ..core.typed import param
from . import _patching as core
from .base import Result, prompt_hover
from .registry import analysis


@dataclass(frozen=True, kw_only=True)
class ActivationPatchingParams(core.PatchingParams):
    prefix_reuse: bool = param(True, "Start each layer-l cell's forward from the base run's residual entering layer "
                                     "l (blocks before a patch cannot change; default true). false recomputes every "
                                     "block (same numbers, for checking and benchmarks).")
    batch_size: Optional[int] = param(None, "Rows per forward pass (for exact patching a row is one patched prompt; "
                                            "default: the run's batch size, or what fits the memory budget).",
                                      minimum=1)


@analysis("activation_patching",
          "Exact activation patching of residual streams, layer outputs or attention heads (q, k, v, z, "
          "pattern) between clean and corrupted prompts, many patched runs per forward pass; scores "
          "normalised to 0 = corrupted, 1 = clean.", ActivationPatchingParams,
          needs_pairs=True, answers="any", alignment=position_map, per_head=True)
class ActivationPatching:
    def compile(self, params: ActivationPatchingParams, ctx):
        target = core.TARGETS[params.target]
        direction = params.direction
        source = "clean" if direction == "denoising" else "corrupted"
        compiled = core.compile_patching(params, ctx, f"{direction}: patch {source} {target.what} into the "
                                                  f"{core.base_and_source(direction)[0]} run, cells stacked "
                                                  "in the batch; metric " + core.read_at(ctx.metric) + "; "
                                                  + (core.predicted_saving(params)
                                                     if params.prefix_reuse else "every block recomputed"))
        # reusing keys and values before a patched position records them in a sweep of every block, read to
        # its end (the final norm's input)
        hooks = compiled.hooks + ("ln_final.hook_in",)
        if params.prefix_reuse:  # prefix reuse reads the base run's residual entering each patched layer
            hooks += ("blocks.{L}.hook_resid_pre",)
        return replace(compiled, hooks=tuple(dict.fromkeys(hooks)))

    def cost(self, params, inputs):
        """The source and base runs of its pairs, then every cell patched into every pair (a row each),
        each starting at its layer when prefix reuse applies."""
        from ._patching.targets import patching_cost

        return patching_cost(params, inputs, exact=True)

    def compute(self, params: ActivationPatchingParams, run) -> Result:
        grid = core.resolve(params, run)
        base = core.baselines(run)
        (per_prompt, passes), seconds = core.timed(
            lambda: core.exact_patching(run, grid, params.batch_size, params.prefix_reuse))
        data, rows = core.summarise(grid, per_prompt, base, params, run, {
            "method": "exact", "passes": passes, "seconds": round(seconds, 3)})
        summary = (f"{len(grid.cells)} cells x {len(run.pairs)} prompts in {passes['patched_forwards']} "
                   f"forwards ({seconds:.1f}s)") + core.ranking_summary(data, params)
        return Result(data, tables={"cells": rows, "per_prompt": core.per_prompt_rows(data, run)}, summary=summary,
                      convention=core.patching_convention(run, params, data["prompts"]),
                      key_numbers=core.key_numbers(data))

    def figures(self, result, run):
        d = result.data
        return core.grid_figures("activation_patching", d, f"Activation patching of {d['target']}",
                                 prompt_hover(result))
