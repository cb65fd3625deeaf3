"""The compiled plan: plain frozen data, no torch.

`mi-run plan` prints it; the runtime executes it. Everything a run does is decided
here, so two runs of the same plan do the same work.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Dict, Optional, Tuple

from ..metrics import Metric
from ..models.model_spec import ModelSpec
from .typed import StepParams


@dataclass(frozen=True)
class Step:
    id: str
    kind: str
    description: str
    # Every hook the step captures or intervenes on (tests/compile/test_plan_is_what_runs.py checks it):
    # {L} stands for every layer, {last} for the last; a trailing "?" marks a hook only some
    # architectures have (Gemma's post-attention norm scale); unembed.hook_in is implied. Where a
    # selector picks the layers at run time (top(x, n), L1H*), {L} is the bound, not every layer.
    hooks: Tuple[str, ...] = ()
    positions: str = "final"             # which positions the captures keep
    depends_on: Tuple[str, ...] = ()
    params: StepParams = field(default_factory=StepParams)  # typed, compiled: defaults filled, selectors compiled
    shares_final_pass: bool = False      # its clean final-position captures can come from a shared pass
    reads_patterns: bool = False         # it reads the clean prompts' attention patterns (runtime/patterns.py)
    # it reruns its shared pass's prompts with an intervention at late positions: the positions before
    # continue from the pass's keys and values (runtime/pass_kv.py)
    continues_pass: bool = False


@dataclass(frozen=True)
class Pass:
    """One forward sweep over the clean prompts whose final-position captures serve several
    analyses (pass fusion). Hooks: the union of theirs ({L} every layer, {last} the last
    layer, a trailing '?' only when the model has the hook)."""

    id: str
    analyses: Tuple[str, ...]
    hooks: Tuple[str, ...]
    prompts: str = "clean"
    max_pairs: Optional[int] = None      # the analyses' max_pairs (the same prompts)
    # the sweep also keeps every head's attention pattern of its prompts in the run's pattern cache
    # (runtime/patterns.py): an analysis of the plan reads them, and they come with the forward
    patterns: bool = False
    # the sweep also keeps every layer's keys and values: a member continues it (Step.continues_pass)
    keys_values: bool = False


@dataclass(frozen=True)
class Plan:
    spec: str
    spec_hash: str
    name: str
    model: ModelSpec
    metric: str
    metrics_needed: Tuple[str, ...]
    pipeline: Tuple[Step, ...]
    analyses: Tuple[Step, ...]
    batch_size: Any = "auto"
    memory_gb: Optional[float] = None
    passes: Tuple[Pass, ...] = ()        # shared final-position passes (compile/fusion.py)
    # every metric of metrics_needed, compiled (an expression metric is this plan's own object, bound
    # to the spec's tokenizer by compile.prepare; never looked up by name in a global table)
    metrics: Tuple[Metric, ...] = ()

    def metric_named(self, name: str) -> Metric:
        found = next((m for m in self.metrics if m.name == name), None)
        if found is None:
            raise KeyError(f"the plan computes no metric '{name}' (it has {[m.name for m in self.metrics]})")
        return found

    @property
    def main_metric(self) -> Metric:
        """The spec's `metric`, compiled."""
        return self.metric_named(self.metric)

    def bound(self, tokenizer: Any, where: Any = None) -> "Plan":
        """This plan with its metrics bound to `tokenizer` (an expression's strings become its ids)."""
        return replace(self, metrics=tuple(m.bound(tokenizer, where) for m in self.metrics))

    def pass_of(self, analysis_id: str) -> Optional[Pass]:
        return next((p for p in self.passes if analysis_id in p.analyses), None)

    def pass_log(self, forwards: Dict[str, int]):
        """Each shared pass with the forwards it ran (for the run log)."""
        return [{"id": p.id, "analyses": list(p.analyses), "forwards": forwards.get(p.id, 0)} for p in self.passes]

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(replace(self, metrics=()))
        out["metrics"] = [{"name": m.name, "description": m.description, "linear": m.linear} for m in self.metrics]
        return out
