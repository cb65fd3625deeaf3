"""What activation patching and attribution patching share (torch imported lazily).

A patching analysis names a *target* activation, a *direction* and optional layer, head
and position selectors. Compiling checks them without torch; computing resolves them
into *cells*, each one patch: (layer, head or none, positions). Then

  exact (activation_patching)
      many cells per forward: the base prompts are repeated once per cell (rows = cells x
      prompts, as many as fit the memory budget) and the hook of each layer overwrites,
      in the rows of that layer's cells only, the cell's slice with the source run's
      activation. The forward stops at the unembedding's input; the metric reads the
      final position from unembedding columns.
  attribution (attribution_patching)
      one forward and one backward of the base prompts per batch:
      effect ~ (source - base activation) . d metric / d activation, summed over the
      cell's slice (d_head or d_model, and its positions). Before the first position where
      the prompts differ the delta is 0: where it can, the forward runs from there on only.
  continuation metrics (answers written continuation(...); continuation.py)
      both engines run the base prompts followed by each continuation the metric reads and
      patch prompt positions only; attribution adds the sides' gradients at each prompt
      position (linearising the summed teacher-forced log-probability).

Directions, in TransformerLens's terms:
  denoising (default)  run the corrupted prompts and patch in clean activations
                       (TransformerLens's patching functions and the IOI tutorial):
                       how much of the clean behaviour does this activation restore?
  noising              run the clean prompts and patch in corrupted activations:
                       how much of the clean behaviour does corrupting it destroy?
Both are normalised the same way, on the mean over prompts: 0 = the corrupted
baseline, 1 = the clean baseline, (m - corrupted) / (clean - corrupted). Denoising
cells start at 0 (no effect); noising cells start at 1.
"""
from .attribution import attribution_patching
from .engines import (Baselines, base_and_source, baselines, capture_all_positions,
                      direction_of, exact_patching)
from .figures import grid_figures
from .grid import Cell, Column, Grid, cell_head_label, head_axis_label, head_count, resolve
from .summary import (cell_key, key_numbers, patching_convention, per_prompt_rows, ranking_summary, read_at,
                      spearman, summarise, timed)
from .targets import DIRECTIONS, HEAD_TARGETS, TARGETS, PatchingParams, compile_patching, predicted_saving

__all__ = ['Baselines', 'Cell', 'Column', 'DIRECTIONS', 'Grid', 'HEAD_TARGETS', 'PatchingParams', 'TARGETS',
           'attribution_patching', 'base_and_source', 'baselines', 'capture_all_positions', 'cell_head_label',
           'cell_key', 'compile_patching', 'direction_of', 'exact_patching', 'grid_figures', 'head_axis_label',
           'head_count', 'key_numbers', 'patching_convention', 'per_prompt_rows', 'predicted_saving',
           'ranking_summary', 'read_at', 'resolve', 'spearman', 'summarise', 'timed']
