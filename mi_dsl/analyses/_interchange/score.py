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

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

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
    low, high = wilson(int(hit.sum()), int(len(examples)))
    return {"iia": _mean(hit), "iia_low": low, "iia_high": high, "iia_changed": _mean(hit[changed]),
            "iia_unchanged": _mean(hit[~changed]), "logit_diff": _mean(margin), "n": int(len(examples)),
            "n_changed": int(changed.sum())}


Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson(hits: int, n: int, z: float = Z95) -> Tuple[Optional[float], Optional[float]]:
    """The Wilson score interval (95%) of a share `hits / n`: how far the IIA of a few examples can be
    from the IIA of many. Unlike p +- z sqrt(p(1-p)/n) it stays inside [0, 1] and is not empty at 0 or n
    (5 test examples with 3 hits: [0.23, 0.88])."""
    if n <= 0:
        return None, None
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _mean(values: torch.Tensor) -> Optional[float]:
    return float(values.double().mean()) if len(values) else None
