"""IIA and the logit difference toward the label, from the intervened runs' readouts.

Per example: the candidates are every output the causal model gives on it (the base's, the
source's, each variable's label); its margin toward variable V's label is the label's logit minus
the largest logit of the other candidates, so IIA over the candidates is the share of examples
with a positive margin (the label is the top candidate). `changed` examples are those whose label
differs from the base prompt's own output (an interchange must move the prediction: the "cause"
part); `unchanged` those where it must not (the "isolate" part, e.g. another attribute's subspace
interchanged). With `iia_over: vocabulary` an example counts when the label is the top token of
the whole vocabulary; the margin stays the candidates'.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import torch


@dataclass
class Targets:
    candidates: torch.Tensor            # [n, K] token ids, -1 pads
    labels: Dict[str, torch.Tensor]     # variable -> [n] label token
    label_index: Dict[str, torch.Tensor]  # variable -> [n] the label's column in candidates
    base_label: torch.Tensor            # [n]

    @classmethod
    def of(cls, examples, variables: Sequence[str]) -> "Targets":
        width = max(len(e.candidates) for e in examples)
        candidates = torch.tensor([list(e.candidates) + [-1] * (width - len(e.candidates)) for e in examples])
        labels = {v: torch.tensor([e.label(v) for e in examples]) for v in variables}
        index = {v: torch.tensor([e.candidates.index(e.label(v)) for e in examples]) for v in variables}
        return cls(candidates, labels, index, torch.tensor([e.base_label for e in examples]))


def margins(logits: torch.Tensor, label_index: torch.Tensor) -> torch.Tensor:
    """[m] the label's logit minus the largest other candidate's (logits [m, K], -inf pads)."""
    rows = torch.arange(len(label_index))
    label = logits[rows, label_index]
    others = logits.clone()
    others[rows, label_index] = float("-inf")
    return label - others.max(-1).values


def score(logits: torch.Tensor, tops: Optional[torch.Tensor], targets: Targets, examples: torch.Tensor,
          variable: str) -> Dict[str, float]:
    """IIA (all, changed, unchanged), mean margin and counts of `variable` on `examples` ([m] indices
    whose readouts are the rows of logits [m, K] and tops [m])."""
    margin = margins(logits.float(), targets.label_index[variable][examples]).double()
    if tops is None:
        hit = margin > 0
    else:
        hit = tops.to(targets.labels[variable].device) == targets.labels[variable][examples]
    changed = targets.labels[variable][examples] != targets.base_label[examples]
    return {"iia": _mean(hit), "iia_changed": _mean(hit[changed]), "iia_unchanged": _mean(hit[~changed]),
            "logit_diff": _mean(margin), "n": int(len(examples)), "n_changed": int(changed.sum())}


def _mean(values: torch.Tensor) -> Optional[float]:
    return float(values.double().mean()) if len(values) else None
