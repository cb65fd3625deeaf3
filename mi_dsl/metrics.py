"""The metrics a spec can name: one registry for the schema, the compiler and the runtime.

A metric reads the final position's unembedding input of each prompt. Registering one
is a decorated function here (or in any module imported before the spec compiles):

    @metric("logit_diff", "answer logit minus foil logit", linear=True)
    def logit_diff(r: Readout): return r.answer_logit() - r.foil_logit()

`linear` says the metric is a linear function of the final residual (after the final
norm), so decompositions (logit lens, attributions, attribution patching) read it
exactly. `needs_full_logits` says it reads the whole vocabulary row (one per prompt,
never every position): Gemma's vocabulary has 262,144 tokens. Importing this module
does not import torch; `Readout` does so when a run computes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable


@dataclass(frozen=True)
class Metric:
    name: str
    description: str
    compute: Callable[["Readout"], Any]
    linear: bool = False
    needs_full_logits: bool = False


METRICS: Dict[str, Metric] = {}


def metric(name: str, description: str, *, linear: bool = False, needs_full_logits: bool = False):
    def register(compute):
        METRICS[name] = Metric(name, description, compute, linear, needs_full_logits)
        return compute
    return register


def needs_full_logits(names: Iterable[str]) -> bool:
    return any(METRICS[n].needs_full_logits for n in names)


class Readout:
    """One batch's final-position readout, computed once per need.

    x [B, d_model] is the unembedding input; answers and foils [B] token ids. Full logits
    are computed in the model's dtype and read in float32, so softmax and log-sum-exp
    are float32 whatever the model's dtype; single logits (logit_diff) are float32 dot
    products.
    """

    def __init__(self, x, answers, foils, unembed):
        self.x = x.to(unembed.W_U.dtype)
        self.answers, self.foils, self.unembed = answers, foils, unembed
        self._full = None

    def full_logits(self):
        if self._full is None:
            self._full = self.unembed.full(self.x).float()
        return self._full

    def answer_logit(self):
        # float32 models: the same matmul as the full row; half precision: the float32 dot
        # product (the full row was rounded to the model's dtype)
        if self._full is not None and self.x.dtype == self._full.dtype:
            return self._full.gather(1, self.answers[:, None])[:, 0]
        return self.unembed.logits_of(self.x, self.answers).float()

    def foil_logit(self):
        return self.unembed.logits_of(self.x, self.foils).float()

    def answer_logprob(self):
        import torch

        full = self.full_logits()
        return self.answer_logit() - torch.logsumexp(full, dim=-1)


@metric("logit_diff", "logit of the answer minus logit of the foil at the final position "
                      "(the seed's get_logit_diff)", linear=True)
def _logit_diff(r: Readout):
    return r.answer_logit() - r.foil_logit()


@metric("prob", "probability of the answer at the final position", needs_full_logits=True)
def _prob(r: Readout):
    return r.answer_logprob().exp()


@metric("logprob", "log-probability of the answer at the final position", needs_full_logits=True)
def _logprob(r: Readout):
    return r.answer_logprob()


@metric("rank", "rank of the answer among all tokens at the final position (0 = top)", needs_full_logits=True)
def _rank(r: Readout):
    full = r.full_logits()  # compared with its own entry, so ties are judged consistently
    return (full > full.gather(1, r.answers[:, None])).sum(-1).float()


def compute_metrics(x, answers, foils, names: Iterable[str], unembed) -> Dict[str, Any]:
    """Each named metric per prompt (float32 [B]) from the final position's unembedding input."""
    names = list(names)
    readout = Readout(x, answers, foils, unembed)
    if needs_full_logits(names):
        readout.full_logits()
    return {name: METRICS[name].compute(readout).float() for name in names}
