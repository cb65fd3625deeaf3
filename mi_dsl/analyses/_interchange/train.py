"""Training a DAS rotation at one site for one variable (seeded, deterministic on the CPU).

Loss: cross-entropy of the counterfactual label after the interchange in the rotation's first k
coordinates, over what IIA reads: the example's candidates, or the whole vocabulary (iia_over).
Adam on the rotation only (its gradient by torch.autograd.grad, so the model's weights are never
touched); minibatches in a seeded order; after each epoch the validation loss decides early stopping (`patience` epochs
without improving by 1e-6), and the best epoch's rotation is kept. The model runs from the site's
layer on (prefix reuse), its weights frozen, the graph kept for the rotation only.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import List

import torch

from .engine import Inputs, Segment, candidate_logits, forward
from .featurizers import Rotation
from .score import Targets
from .sites import Site

IMPROVEMENT = 1e-6


@dataclass
class Curve:
    train_loss: List[float] = field(default_factory=list)
    val_loss: List[float] = field(default_factory=list)
    best_epoch: int = 0
    stopped: str = "epochs"          # "epochs" (all ran) or "early"
    steps: int = 0
    seconds: float = 0.0             # wall-clock of the training (not a golden number)

    def to_json(self) -> dict:
        return {"train_loss": self.train_loss, "val_loss": self.val_loss, "best_epoch": self.best_epoch,
                "epochs_run": len(self.train_loss), "stopped": self.stopped, "steps": self.steps,
                "seconds": round(self.seconds, 3)}


def train_das(run, inputs: Inputs, site: Site, targets: Targets, variable: str, train: torch.Tensor,
              val: torch.Tensor, d: int, k: int, training, vocabulary: bool = False) -> "tuple[torch.Tensor, Curve]":
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(training.seed)  # the example order
    rotation = Rotation(d, k, training.seed)
    optimizer = torch.optim.Adam(rotation.parameters(), lr=training.lr)
    params = list(rotation.parameters())
    curve = Curve()
    best, best_loss, waited = rotation.W.detach().clone(), float("inf"), 0
    for epoch in range(training.epochs):
        order = train[torch.randperm(len(train), generator=generator)]
        total = 0.0
        for start in range(0, len(order), training.batch_size):
            batch = order[start:start + training.batch_size]
            with torch.enable_grad():
                loss = _loss(run, inputs, site, targets, variable, batch, rotation.W, True, vocabulary)
                grads = torch.autograd.grad(loss, params)
            for p, g in zip(params, grads):
                p.grad = g
            optimizer.step()
            total += float(loss) * len(batch)
            curve.steps += 1
        curve.train_loss.append(total / len(order))
        with torch.no_grad():
            W = rotation.W.detach().contiguous().clone()
            held = val if len(val) else train
            val_loss = float(_loss(run, inputs, site, targets, variable, held, W, False, vocabulary))
        curve.val_loss.append(val_loss)
        if val_loss < best_loss - IMPROVEMENT:
            best, best_loss, waited, curve.best_epoch = W, val_loss, 0, epoch
        else:
            waited += 1
            if waited >= training.patience:
                curve.stopped = "early"
                break
    curve.seconds = time.perf_counter() - started
    return best, curve


def _loss(run, inputs: Inputs, site: Site, targets: Targets, variable: str, examples: torch.Tensor,
          W: torch.Tensor, grad: bool, vocabulary: bool) -> torch.Tensor:
    """Mean cross-entropy of the label over the candidates, in batches of the executor's size when
    no graph is kept."""
    if grad:
        return _batch_loss(run, inputs, site, targets, variable, examples, W, True, vocabulary).mean()
    losses = []
    size = max(1, run.executor.rows_per_batch(inputs.width()))
    for start in range(0, len(examples), size):
        losses.append(_batch_loss(run, inputs, site, targets, variable, examples[start:start + size], W, False,
                                  vocabulary))
    return torch.cat(losses).mean()


def _batch_loss(run, inputs, site, targets, variable, examples, W, grad: bool, vocabulary: bool) -> torch.Tensor:
    x = forward(run, inputs, site.layer, [Segment(site, examples, 0, W)], grad=grad)
    if vocabulary:
        logits = run.unembed.full(x).float()
        index = targets.labels[variable][examples].to(logits.device)
    else:
        logits = candidate_logits(run, x, targets.candidates[examples])
        index = targets.label_index[variable][examples].to(logits.device)
    return torch.nn.functional.cross_entropy(logits, index, reduction="none").cpu()
