"""Teacher-forced log-probabilities of multi-token continuations (answers written continuation(...)).

For a prompt p (final position f = len(p) - 1) and a continuation c_0..c_{n-1}, one forward of
p + c_0..c_{n-2} gives log P(c_i | p, c_<i) at position f + i; the continuation's
log-probability is their sum. Prompts and continuations of different lengths share a batch:
each row is its own prompt followed directly by its own continuation, then right-padded
(executor.pad_right), and each row is read at its own positions f..f+n-1, so nothing padded
is read and position ids stay 0..len-1 (a causal model never reads a later position).
Patches at prompt positions keep their meaning: the continuation starts after the prompt.
Only the n positions of each row are unembedded (Gemma's vocabulary is 262,144 tokens).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Sequence

import torch

from ..metrics import ContinuationReadout, Metric, compute_continuation_metrics
from .executor import pad_right
from .unembed import UNEMBED_INPUT, Unembed


@dataclass(frozen=True)
class ContinuationBatch:
    tokens: torch.Tensor     # [B, W] prompt + continuation[:-1], right-padded
    positions: torch.Tensor  # [B, T] where token i of the continuation is read (clamped where padded)
    targets: torch.Tensor    # [B, T] the continuation's tokens, -1 past its end

    @classmethod
    def of(cls, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]) -> "ContinuationBatch":
        if any(len(c) == 0 for c in continuations):
            raise ValueError("an empty continuation has no log-probability")
        tokens, _ = pad_right([list(p) + list(c[:-1]) for p, c in zip(prompts, continuations)])
        longest = max(len(c) for c in continuations)
        targets = torch.tensor([list(c) + [-1] * (longest - len(c)) for c in continuations], dtype=torch.long)
        final = torch.tensor([len(p) - 1 for p in prompts], dtype=torch.long)
        positions = (final[:, None] + torch.arange(longest)[None, :]).clamp(max=tokens.shape[1] - 1)
        return cls(tokens, positions, targets)

    def rows(self, index: torch.Tensor) -> "ContinuationBatch":
        return ContinuationBatch(self.tokens[index], self.positions[index], self.targets[index])

    def keep(self):
        """What to keep of an activation [B, W, ...]: [B, T, ...] at each row's read positions."""
        positions = self.positions

        def select(act):
            rows = torch.arange(act.shape[0], device=act.device)[:, None]
            return act[rows, positions.to(act.device)]

        return select


def summed_logprob(x: torch.Tensor, targets: torch.Tensor, unembed: Unembed) -> torch.Tensor:
    """[B] sum over each row's real targets of log softmax(unembed(x[b, i]))[targets[b, i]], float32;
    x [B, T, d_model], targets [B, T] (-1 past a continuation's end). The full row is computed in the
    model's dtype and read in float32, as the final-position metrics are."""
    batch, width, d_model = x.shape
    targets = targets.to(x.device)
    logits = unembed.full(x.reshape(batch * width, d_model).to(unembed.W_U.dtype)).float()
    picked = logits.gather(1, targets.reshape(-1, 1).clamp(min=0))[:, 0] - torch.logsumexp(logits, dim=-1)
    picked = picked.view(batch, width)
    return torch.where(targets >= 0, picked, torch.zeros_like(picked)).sum(-1)


def unembed_inputs(executor, batch: ContinuationBatch, interventions=()) -> torch.Tensor:
    """[B, T, d_model] the unembedding's input at each row's read positions; the forward stops there."""
    _, kept = executor.capture(batch.tokens, {UNEMBED_INPUT: batch.keep()}, stop_after=UNEMBED_INPUT,
                               interventions=interventions)
    return kept[UNEMBED_INPUT]


def readout_of(batches: Dict[str, ContinuationBatch], forward: Callable[[str, ContinuationBatch], torch.Tensor],
               unembed: Unembed) -> ContinuationReadout:
    """Each side's log-probabilities from forward(side, batch) -> unembedding inputs, run on first use.
    When answer and foil feed the model the same tokens (they differ in their last token only, e.g.
    one token each), one forward serves both: the inputs, and so every activation, are the same."""
    answer, foil = batches["answer"], batches["foil"]
    same = answer.tokens.shape == foil.tokens.shape and bool(torch.equal(answer.tokens, foil.tokens))
    inputs: Dict[str, torch.Tensor] = {}

    def side(name: str) -> torch.Tensor:
        key = "answer" if same else name
        if key not in inputs:
            inputs[key] = forward(key, batches[key])
        return summed_logprob(inputs[key], batches[name].targets, unembed)

    return ContinuationReadout(lambda: side("answer"), lambda: side("foil"))


def continuation_metrics(executor, unembed: Unembed, prompts: Sequence[Sequence[int]],
                         answers: Sequence[Sequence[int]], foils: Sequence[Sequence[int]],
                         metrics: Iterable[Metric], interventions=()) -> Dict[str, torch.Tensor]:
    """The compiled continuation metrics of one batch of prompts (any lengths), by name: the answer's
    forward, and the foil's only when a metric reads it (and its inputs differ from the answer's)."""
    batches = {"answer": ContinuationBatch.of(prompts, answers), "foil": ContinuationBatch.of(prompts, foils)}
    readout = readout_of(batches, lambda _side, batch: unembed_inputs(executor, batch, interventions), unembed)
    return compute_continuation_metrics(readout, metrics)
