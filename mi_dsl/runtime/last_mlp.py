"""The last block's MLP run only at the positions a forward reads: each row's final one.

After the last block's attention nothing mixes positions: the MLP, the final norm and the
unembedding act on each position alone. So a forward that reads nothing after that attention
except at each row's final position (a final-position metric, a patched run, a logit lens's final
residual) needs the last MLP at the final positions only. The MLP is about 70% of a Gemma-3
block's arithmetic, and a patched run that starts at layer l spends 1/(L - l) of its work in the
last block.

The other positions' MLP output is zero, and nothing may read it. `Executor.capture` turns this on
only when every hook it keeps after the last attention is kept at the same final positions, none of
them is inside the MLP and none is intervened on (`final_of`), no gradient is recorded, and the
forward stops before the logits. A guard raises if a hook placed before the MLP fires after it, or a
hook after it sees fewer rows than the forward has, so a hook this module misplaces fails loudly
instead of reading zeros.

Bit for bit: on MKL one row of a matrix product does not depend on how many rows the product has,
except below a handful (on the AMD EPYC it was measured on: fewer than 12 rows, but 4 and 8). The MLP
runs on at least MIN_ROWS rows (other positions fill up), and each shape is checked once per
executor against the full MLP (`Verdicts`); a shape whose rows differ runs the full MLP from then on.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch

from .overrides import overriding

MIN_ROWS = 16     # rows the truncated MLP runs on at least (fewer take another kernel path)

# Hooks read at every position without the last MLP: outside the blocks, those before them...
_BEFORE_BLOCKS = ("hook_embed", "hook_pos_embed", "embed.", "pos_embed.", "rotary_emb.")
# ...and in the last block, those up to the MLP's input norm.
_LAST_BLOCK_BEFORE_MLP = ("attn.", "ln1.", "ln1_post.", "ln2.")
_LAST_BLOCK_HOOKS_BEFORE_MLP = {"hook_in", "hook_resid_pre", "hook_resid_mid", "hook_attn_in", "hook_attn_out",
                                "hook_q_input", "hook_k_input", "hook_v_input"}

Verdicts = Dict[Tuple, bool]  # (rows, rows run, dtype, device, threads) -> the truncated rows equal the full MLP's


def before_last_mlp(name: str, n_layers: int) -> bool:
    """Does hook `name` fire before the last block's MLP (so it sees every position's true value)?"""
    if not name.startswith("blocks."):
        return name.startswith(_BEFORE_BLOCKS)
    layer, _, rest = name[len("blocks."):].partition(".")
    if not layer.isdigit() or int(layer) != n_layers - 1:
        return layer.isdigit()
    return rest.startswith(_LAST_BLOCK_BEFORE_MLP) or rest in _LAST_BLOCK_HOOKS_BEFORE_MLP


def final_of(model, keep: Mapping[str, Callable], interventions: Sequence[Tuple[str, Callable]]
             ) -> Tuple[bool, Optional[torch.Tensor]]:
    """(True, the final positions: [B], or None for the last column) when every hook after the last
    attention is kept at the same final positions (executor.at_final), none is intervened on and none
    is inside the last MLP (whose hooks would see only the rows it runs); else (False, None)."""
    mlp = _last_mlp(model)
    if mlp is None:
        return False, None
    n_layers = len(model.blocks)
    named = list(keep) + [name for name, _ in interventions]
    if any(not before_last_mlp(name, n_layers) for name, _ in interventions) or _inside(model, mlp, named):
        return False, None
    selects = [select for name, select in keep.items() if not before_last_mlp(name, n_layers)]
    if not selects or any(not hasattr(s, "final") for s in selects):
        return False, None
    finals: List[Optional[torch.Tensor]] = [getattr(s, "final", None) for s in selects]
    first = finals[0]
    for other in finals[1:]:
        if other is not first and (other is None or first is None or not torch.equal(other, first)):
            return False, None
    return True, first


def _last_mlp(model):
    blocks = getattr(model, "blocks", None)
    return getattr(blocks[-1], "mlp", None) if blocks else None


def _inside(model, mlp, names: Sequence[str]) -> bool:
    """Is any of the hooks `names` (an alias resolved to its hook point) a module of the last MLP?"""
    points = getattr(model, "hook_dict", {})
    own = {id(module) for module in mlp.modules()}
    return any(id(points.get(name)) in own for name in names)


class Guard:
    """Set once the truncated MLP ran in this forward. A hook placed before it that fires after it, or a
    hook after it that sees fewer rows than the forward has, is a bug of this module's placement: raised
    rather than read."""

    def __init__(self, shape: Tuple[int, int]) -> None:
        self.ran = False
        self.shape = shape  # the forward's (batch, positions)

    def check(self, name: str, act: torch.Tensor, before: bool) -> None:
        if (self.ran and before) or (not before and tuple(act.shape[:2]) != self.shape):
            raise RuntimeError(f"hook {name} fired where runtime/last_mlp.py does not place it (the last MLP ran at "
                               f"the final positions only): it would read positions that were not computed")


@contextmanager
def final_positions_only(model, final: Optional[torch.Tensor], verdicts: Verdicts, guard: Guard) -> Iterator[None]:
    """Within the block, the last block's MLP computes each row's `final` position (None: the last
    column) and zeros elsewhere (`final_of` said the model has one)."""
    mlp = _last_mlp(model)
    original = mlp.forward  # bound method, or an instance's own (accelerate's device-map wrapper)

    def forward(x, *args, **kwargs):
        if args or kwargs or x.dim() != 3:
            return original(x, *args, **kwargs)
        out = _at_rows(original, x, final, verdicts)
        guard.ran = True
        return out

    with overriding([mlp], "forward", lambda index, module: forward):
        yield


def _at_rows(mlp: Callable, x: torch.Tensor, final: Optional[torch.Tensor], verdicts: Verdicts) -> torch.Tensor:
    batch, positions, width = x.shape
    rows = batch * positions
    if rows <= MIN_ROWS:
        return mlp(x)
    ends = torch.full((batch,), positions - 1, device=x.device) if final is None else final.to(x.device)
    wanted = torch.arange(batch, device=x.device) * positions + ends
    run = _filled(wanted, rows)
    key = (rows, len(run), x.dtype, str(x.device), torch.get_num_threads())
    verdict = verdicts.get(key)
    if verdict is False:
        return mlp(x)
    flat = x.reshape(rows, width)
    part = mlp(flat[run][None])[0]
    if verdict is None:  # first time this shape: the full MLP decides, and gives this forward's numbers
        full = mlp(x)
        verdicts[key] = bool(torch.equal(full.reshape(rows, -1)[run], part))
        return full
    out = part.new_zeros(rows, part.shape[-1])
    out[run] = part
    return out.reshape(batch, positions, -1)


def _filled(wanted: torch.Tensor, rows: int) -> torch.Tensor:
    """`wanted` flat rows, plus the first others up to MIN_ROWS, sorted."""
    if len(wanted) >= MIN_ROWS:
        return torch.sort(wanted).values
    taken = torch.zeros(rows, dtype=torch.bool, device=wanted.device)
    taken[wanted] = True
    extra = (~taken).nonzero().flatten()[:MIN_ROWS - len(wanted)]
    return torch.sort(torch.cat([wanted, extra])).values
