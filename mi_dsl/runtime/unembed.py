"""The unembedding, read only where a metric needs it.

A logit difference needs two columns of W_U per prompt, not a full-vocabulary
unembedding (Gemma's vocabulary is 262,144 tokens). Probability, log-probability and
rank need the final position's full logits (one row per prompt), never every position.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Optional

import torch

from ..metrics import Metric, compute_metrics

UNEMBED_INPUT = "unembed.hook_in"  # the residual entering the unembedding (after ln_final)


@dataclass
class Unembed:
    W_U: torch.Tensor          # [d_model, d_vocab]
    b_U: Optional[torch.Tensor]  # [d_vocab] or None
    softcap: float = 0.0

    @classmethod
    def of(cls, bridge) -> "Unembed":
        # On the capture device (cfg.device, the embedding's): under a device_map the
        # unembedding may sit on another one, and every captured residual is gathered here.
        device = bridge.cfg.device
        W_U = bridge.W_U.detach().to(device)
        try:
            b_U = bridge.b_U.detach().to(device)
            b_U = None if not torch.any(b_U) else b_U
        except AttributeError:  # bias-free unembedding
            b_U = None
        softcap = float(getattr(bridge.cfg, "output_logits_soft_cap", 0.0) or 0.0)
        return cls(W_U, b_U, softcap if softcap > 0 else 0.0)

    def directions(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Residual directions of tokens: W_U[:, ids].T, shape [..., d_model]."""
        return self.W_U[:, token_ids.reshape(-1)].T.reshape(*token_ids.shape, -1)

    def set_directions(self, token_ids: torch.Tensor) -> torch.Tensor:
        """[N, d_model]: each row's token direction, or its set's mean direction ([N, K] ids, -1 pads)."""
        if token_ids.dim() == 1:
            return self.directions(token_ids)
        mask = (token_ids >= 0).to(self.W_U.dtype)
        found = self.directions(token_ids.clamp(min=0)) * mask[..., None]
        return found.sum(1) / mask.sum(1, keepdim=True)

    def set_bias(self, token_ids: torch.Tensor) -> torch.Tensor:
        if token_ids.dim() == 1:
            return self.bias(token_ids)
        mask = (token_ids >= 0).to(self.W_U.dtype)
        return (self.bias(token_ids.clamp(min=0)) * mask).sum(1) / mask.sum(1)

    def bias(self, token_ids: torch.Tensor) -> torch.Tensor:
        if self.b_U is None:
            return torch.zeros(token_ids.shape, device=self.W_U.device, dtype=self.W_U.dtype)
        return self.b_U[token_ids]

    def logits_of(self, x: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """Logits of one token per row: x [B, d], ids [B] -> [B], in float32 whatever the model's
        dtype (a half-precision dot product over d_model would round a logit difference)."""
        raw = (x.float() * self.directions(token_ids).float()).sum(-1) + self.bias(token_ids).float()
        return self._cap(raw)

    def full(self, x: torch.Tensor) -> torch.Tensor:
        """All logits of the rows of x [B, d] -> [B, vocab]."""
        raw = x @ self.W_U
        if self.b_U is not None:
            raw = raw + self.b_U
        return self._cap(raw)

    def _cap(self, logits: torch.Tensor) -> torch.Tensor:
        return self.softcap * torch.tanh(logits / self.softcap) if self.softcap else logits


def final_metrics(executor, tokens: torch.Tensor, answers: torch.Tensor, foils: torch.Tensor,
                  metrics: Iterable[Metric], unembed: Unembed, interventions=(), final=None) -> Dict[str, torch.Tensor]:
    """The compiled metrics of one batch, by name: the forward stops at the unembedding's input.
    `final` [B]: each row's final real position in a right-padded batch (default: the last column)."""
    x = final_inputs(executor, tokens, interventions, final)
    return compute_metrics(x, answers.to(executor.device), foils.to(executor.device), metrics, unembed)


def final_inputs(executor, tokens: torch.Tensor, interventions=(), final=None) -> torch.Tensor:
    """[B, d_model]: the unembedding's input at each row's final position (`final` as above)."""
    from .executor import at_final

    _, kept = executor.capture(tokens, {UNEMBED_INPUT: at_final(final)}, stop_after=UNEMBED_INPUT,
                               interventions=interventions)
    return kept[UNEMBED_INPUT]
