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

`reads="continuation"` marks a metric of multi-token continuations (answers written
continuation(...)): it reads a `ContinuationReadout`, the teacher-forced log-probability
of each prompt's answer and foil continuation, computed by runtime/continuation.py from a
forward of the prompt followed by the continuation. The compiler keeps the two kinds
apart: continuation answers take continuation metrics only, and the reverse.
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
    reads: str = "final"   # "final": a Readout at the final position; "continuation": a ContinuationReadout

    @property
    def reads_continuation(self) -> bool:
        return self.reads == "continuation"

    def bound(self, tokenizer: Any, where: Any = None) -> "Metric":
        """This metric for a run with `tokenizer` (a registered metric reads no strings: itself; an
        expression metric's strings become that tokenizer's ids, metric_expr.py)."""
        return self


# The registered metrics: code, declared once (never per-spec state: a spec's expression metric is
# compiled into its plan, bound to its tokenizer, and never enters this table).
METRICS: Dict[str, Metric] = {}


def metric(name: str, description: str, *, linear: bool = False, needs_full_logits: bool = False,
           reads: str = "final"):
    def register(compute):
        if name in METRICS:
            raise ValueError(f"metric '{name}' is registered twice")
        if "(" in name:
            raise ValueError(f"metric name '{name}' has a '(': it would read as an expression")
        METRICS[name] = Metric(name, description, compute, linear, needs_full_logits, reads)
        return compute
    return register


def reads_continuation(metrics: Iterable[Any]) -> bool:
    """True when the metrics read continuations (the compiler never mixes the two kinds)."""
    return any(checked(m).reads_continuation for m in metrics)


def needs_full_logits(metrics: Iterable[Any]) -> bool:
    return any(checked(m).needs_full_logits for m in metrics)


def as_id_sets(ids, device=None):
    """Token ids of each prompt's answer (or foil) as a padded [B, K] tensor (-1 pads) and its
    mask, from a [B] tensor (one token each) or a [B, K] one."""
    import torch

    ids = torch.as_tensor(ids)
    if ids.dim() == 1:
        ids = ids[:, None]
    if device is not None:
        ids = ids.to(device)
    return ids, ids >= 0


class Readout:
    """One batch's final-position readout, computed once per need.

    x [B, d_model] is the unembedding input; answers and foils are token ids, [B] (one
    token each) or [B, K] token sets padded with -1. Full logits are computed in the
    model's dtype and read in float32, so softmax and log-sum-exp are float32 whatever
    the model's dtype; single logits (logit_diff) are float32 dot products for half-precision
    models. A set's logit is the mean of its members' logits (so the logit
    difference stays linear in x); its probability is the sum of its members'.
    """

    def __init__(self, x, answers, foils, unembed):
        self.x = x.to(unembed.W_U.dtype)
        self.unembed = unembed
        self.answers, self.answer_mask = as_id_sets(answers, x.device)
        self.foils, self.foil_mask = as_id_sets(foils, x.device)
        self._full = None

    def full_logits(self):
        if self._full is None:
            self._full = self.unembed.full(self.x).float()
        return self._full

    def _single(self, ids, mask) -> bool:
        return ids.shape[1] == 1 and bool(mask.all())

    def _member_logits(self, ids, mask):
        """[B, K] logits of each set member (0 where padded)."""
        safe = ids.clamp(min=0)
        # float32 models: the same matmul as the full row (ties judged consistently); half
        # precision: float32 dot products (the full row was rounded to the model's dtype)
        if self._full is not None and self.x.dtype == self._full.dtype:
            got = self._full.gather(1, safe)
        elif self._single(ids, mask):  # one token each: exactly the single-token arithmetic of old
            got = self.unembed.logits_of(self.x, safe[:, 0]).float()[:, None]
        else:
            got = self.unembed.logits_of(self.x[:, None, :].expand(-1, ids.shape[1], -1), safe).float()
        return got * mask

    def set_logit(self, ids, mask):
        """Mean logit of each row's set [B] (a single token's own logit)."""
        logits = self._member_logits(ids, mask)
        if self._single(ids, mask):
            return logits[:, 0]
        return logits.sum(-1) / mask.sum(-1)

    def answer_logit(self):
        return self.set_logit(self.answers, self.answer_mask)

    def foil_logit(self):
        return self.set_logit(self.foils, self.foil_mask)

    def set_logprob(self, ids, mask):
        """log of the probability mass of each row's set [B]."""
        import torch

        full = self.full_logits()
        norm = torch.logsumexp(full, dim=-1)
        if self._single(ids, mask):
            return full.gather(1, ids)[:, 0] - norm
        member = full.gather(1, ids.clamp(min=0)).masked_fill(~mask, float("-inf"))
        return torch.logsumexp(member, dim=-1) - norm

    def answer_logprob(self):
        return self.set_logprob(self.answers, self.answer_mask)

    def foil_logprob(self):
        return self.set_logprob(self.foils, self.foil_mask)


@metric("logit_diff", "logit of the answer minus logit of the foil at the final position "
                      "(the seed's get_logit_diff); for token sets, the mean logit of the answer set "
                      "minus the mean logit of the foil set", linear=True)
def _logit_diff(r: Readout):
    return r.answer_logit() - r.foil_logit()


@metric("prob", "probability of the answer at the final position (for a token set: the probability "
                "mass of the set, the sum of its members' probabilities)", needs_full_logits=True)
def _prob(r: Readout):
    return r.answer_logprob().exp()


@metric("prob_diff", "probability mass of the answer (set) minus that of the foil (set) at the final "
                     "position (Hanna et al.'s greater-than probability difference)", needs_full_logits=True)
def _prob_diff(r: Readout):
    return r.answer_logprob().exp() - r.foil_logprob().exp()


@metric("logprob", "log-probability of the answer at the final position (for a token set: the log of "
                   "its probability mass)", needs_full_logits=True)
def _logprob(r: Readout):
    return r.answer_logprob()


@metric("rank", "rank of the answer among all tokens at the final position (0 = top; for a token set, "
                "the rank of its best member)", needs_full_logits=True)
def _rank(r: Readout):
    full = r.full_logits()  # the set's best member, read from the same row: ties judged consistently
    members = full.gather(1, r.answers.clamp(min=0)).masked_fill(~r.answer_mask, float("-inf"))
    return (full > members.max(-1).values[:, None]).sum(-1).float()


class ContinuationReadout:
    """One batch's teacher-forced continuation log-probabilities, each side computed on first use.

    `answer` and `foil` are callables giving [B] float32: the sum over a continuation's
    tokens c_0..c_{n-1} of log softmax(logits at position final + i)[c_i], from one forward
    of the prompt followed by c_0..c_{n-2} (runtime/continuation.py). A metric that reads the
    answer only never pays for the foil's forward."""

    def __init__(self, answer: Callable[[], Any], foil: Callable[[], Any]):
        self._sides = {"answer": answer, "foil": foil}
        self._values: Dict[str, Any] = {}

    def logprob(self, side: str):
        if side not in self._values:
            self._values[side] = self._sides[side]()
        return self._values[side]

    def answer_logprob(self):
        return self.logprob("answer")

    def foil_logprob(self):
        return self.logprob("foil")


@metric("continuation_logprob", "teacher-forced log-probability of the answer continuation (answer: "
                                "continuation(...)), summed over its tokens: the prompt followed by the "
                                "continuation's tokens but the last is one forward, and token i of the "
                                "continuation is read at position final + i", needs_full_logits=True,
        reads="continuation")
def _continuation_logprob(r: ContinuationReadout):
    return r.answer_logprob()


@metric("continuation_logprob_diff", "teacher-forced log-probability of the answer continuation minus that of "
                                     "the foil continuation (each summed over its own tokens, each from its own "
                                     "forward of the prompt followed by it)", needs_full_logits=True,
        reads="continuation")
def _continuation_logprob_diff(r: ContinuationReadout):
    return r.answer_logprob() - r.foil_logprob()


def compute_continuation_metrics(readout: ContinuationReadout, metrics: Iterable[Any]) -> Dict[str, Any]:
    """Each continuation metric per prompt (float32 [B]), by name."""
    return {m.name: m.compute(readout).float() for m in map(checked, metrics)}


def compute_metrics(x, answers, foils, metrics: Iterable[Any], unembed) -> Dict[str, Any]:
    """Each metric per prompt (float32 [B]) from the final position's unembedding input, by name.
    The metrics are the plan's compiled objects (Plan.metrics), never looked up by name here."""
    metrics = [checked(m) for m in metrics]
    if reads_continuation(metrics):  # the compiler refuses this; a caller that forgot must not get a number
        raise RuntimeError(f"{[m.name for m in metrics]} read continuations, not the final position: use "
                           "runtime/continuation.py")
    readout = Readout(x, answers, foils, unembed)
    if needs_full_logits(metrics):
        readout.full_logits()
    return {m.name: m.compute(readout).float() for m in metrics}


def checked(metric) -> Metric:
    """A compiled Metric; a registered metric may be named (it is code, the same for every spec). An
    expression metric has no name to look up: it exists only as its plan's object."""
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str) and metric in METRICS:
        return METRICS[metric]
    raise TypeError(f"expected a compiled Metric (Plan.metrics) or a registered metric's name, got {metric!r}")
