"""What an analysis sees while it computes: the model, the final dataset, earlier results.

`RunContext` also owns the shared arithmetic of attribution: logit-difference
directions, the final normalisation applied to a stack of residual components, and
each head's output at a position (post-attention norms such as Gemma's included).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

from ..errors import RunError
from .executor import Executor
from .metrics import UNEMBED_INPUT, Unembed, compute_metrics


@dataclass
class RunContext:
    executor: Executor
    unembed: Unembed
    spec: Any
    plan: Any
    tokenizer: Any                      # mi_dsl.tokenization.Tokenizer
    pairs: List[Any]                    # the final PromptPairs
    results: Dict[str, Any] = field(default_factory=dict)   # analysis id -> Result
    baselines: Dict[str, float] = field(default_factory=dict)
    analysis_index: int = 0

    # ------------------------------------------------------------------ data

    @property
    def model(self):
        return self.executor.model

    @property
    def cfg(self):
        return self.executor.cfg

    @property
    def device(self):
        return self.executor.device

    @property
    def metric(self) -> str:
        return self.plan.metric

    def where(self, *keys):
        return self.spec.loc("analyses", self.analysis_index, *keys)

    def tokens(self, which: str = "clean") -> torch.Tensor:
        rows = [getattr(p, which).ids for p in self.pairs]
        if len({len(r) for r in rows}) > 1:
            raise RunError("this analysis needs prompts of one token length; set prompts.equal_lengths: true "
                           "(or filter the vocabularies)", self.where())
        return torch.tensor(rows, dtype=torch.long)

    def answers(self) -> torch.Tensor:
        return torch.tensor([p.answer for p in self.pairs], dtype=torch.long)

    def foils(self) -> torch.Tensor:
        return torch.tensor([p.foil for p in self.pairs], dtype=torch.long)

    def result(self, analysis_id: str):
        return self.results[analysis_id]

    # ------------------------------------------------------------------ attribution arithmetic

    def require_processing(self, what: str) -> None:
        if not self.plan.model.processing.fold_ln:
            raise RunError(f"{what} reads components in HookedTransformer's processed coordinates; "
                           "set model.processing: true (fold_ln)", self.where())

    def logit_diff_directions(self) -> torch.Tensor:
        """[N, d_model]: W_U[:, answer] - W_U[:, foil] per prompt."""
        a, f = self.answers().to(self.device), self.foils().to(self.device)
        return self.unembed.directions(a) - self.unembed.directions(f)

    def bias_diff(self) -> torch.Tensor:
        a, f = self.answers().to(self.device), self.foils().to(self.device)
        return self.unembed.bias(a) - self.unembed.bias(f)

    def apply_final_ln(self, stack: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """The seed's apply_ln_to_stack: centre (LayerNorm only) and divide by the final scale.

        stack [..., N, d_model]; scale [N, 1] from ln_final.hook_scale at the final position.
        """
        if self.cfg.normalization_type in ("LN", "LNPre"):
            stack = stack - stack.mean(-1, keepdim=True)
        return stack / scale

    def attribute(self, stack: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Mean over prompts of each component's logit difference: [..., N, d] -> [...]."""
        scaled = self.apply_final_ln(stack, scale)
        return (scaled * self.logit_diff_directions()).sum(-1).mean(-1)

    def head_outputs(self, z: torch.Tensor, layer: int, post_scale: Optional[torch.Tensor]) -> torch.Tensor:
        """Each head's write into the residual stream: z [N, H, d_head] -> [N, H, d_model].

        Models with a post-attention norm (Gemma) scale the layer's summed output by one
        per-position factor and a per-dimension weight, so the split into heads stays exact.
        """
        W_O = self.W_O()[layer]  # [H, d_head, d_model]
        out = torch.einsum("nhd,hdm->nhm", z.to(W_O.dtype), W_O)
        if post_scale is not None:
            out = out * self.post_attn_weight(layer) / post_scale[:, None, :]
        return out

    def W_O(self) -> torch.Tensor:
        if not hasattr(self, "_W_O"):
            self._W_O = self.model.W_O.detach()
        return self._W_O

    def has_post_attn_norm(self) -> bool:
        return hasattr(self.model.blocks[0], "ln1_post")

    def post_attn_weight(self, layer: int) -> torch.Tensor:
        norm = self.model.blocks[layer].ln1_post
        weight = dict(norm.named_parameters())
        w = next(iter(weight.values())).detach()
        return (1.0 + w) if getattr(self.cfg, "rmsnorm_uses_offset", False) else w

    def measured(self, kept: Dict[str, torch.Tensor]) -> float:
        """The metric of the clean run, from a captured unembedding input."""
        m = compute_metrics(kept[UNEMBED_INPUT], self.answers().to(self.device), self.foils().to(self.device),
                            ["logit_diff"], self.unembed)
        return float(m["logit_diff"].mean())

    def capture_final(self, hooks: List[str], which: str = "clean", extra: Optional[Dict] = None,
                      interventions=()):
        """Capture hooks at the final position over the final dataset, batched; concatenated.

        `interventions` are (hook name, fn(act, hook, rows)) pairs; `rows` is the batch's slice."""
        tokens = self.tokens(which)
        keep = {name: (lambda a: a[:, -1]) for name in hooks}
        keep[UNEMBED_INPUT] = lambda a: a[:, -1]
        keep.update(extra or {})
        def one_batch(rows: slice):
            bound = [(name, _bind(fn, rows)) for name, fn in interventions]
            return self.executor.capture(tokens[rows], keep, stop_after=UNEMBED_INPUT, interventions=bound)[1]

        parts = self.executor.map_batches(len(tokens), tokens.shape[1], one_batch, "capturing activations")
        return {name: torch.cat([p[name] for p in parts]) for name in keep}


def _bind(fn, rows: slice):
    return lambda act, hook=None: fn(act, hook, rows)
