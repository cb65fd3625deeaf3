"""Metrics of the plain forwards a GraphModel ran (the model as it is: nothing ablated, replaced or
pinned), kept by their tokens and rows.

The full circuit (every edge kept) is exactly such a forward of the clean prompts, and the scoring
methods run one before it is measured (EAP's clean run, EAP-IG's clean endpoint, exact scoring's
base): faithfulness.py reads its metric back instead of running it again. A forward continued after
keys and values computes the whole forward's final position bit for bit (runtime/kv.py), so the
number is the one the full circuit's own forward gives.
"""
from __future__ import annotations

from typing import Optional

import torch


def _key(tokens: torch.Tensor, rows: torch.Tensor) -> tuple:
    return tuple(tokens.shape), tokens.cpu().numpy().tobytes(), rows.cpu().numpy().tobytes()


def remember(model, tokens: torch.Tensor, job) -> None:
    """Keep `job`'s metric when it was a plain forward of every position of `tokens`."""
    plain = (job.off is None and job.complement is None and job.embed is None and job.pin_inputs is None
             and not job.replace and job.ablated_dims is None and job.start == 0)
    if plain and job.metric is not None:
        model.__dict__.setdefault("plain_metrics", {})[_key(tokens, job.rows)] = job.metric.detach()


def recall(model, tokens: torch.Tensor, rows: torch.Tensor) -> Optional[torch.Tensor]:
    """[B] the metric of a plain forward of `tokens` on `rows` this model ran, or None."""
    return model.__dict__.get("plain_metrics", {}).get(_key(tokens, rows))
