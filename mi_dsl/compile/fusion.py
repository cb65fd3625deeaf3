"""Pass fusion: analyses that read the clean prompts at the final position share one pass.

Head attribution, logit lens and layer attribution each need a few hooks at the final
position of the same clean prompts. Run one after another, each would sweep the dataset;
fused, the first of them captures the union of their hooks in one sweep and the others
read it (runtime/context.py, `RunContext.capture_final`). Analyses over different
prompts (`max_pairs`) get separate passes. When an analysis of the plan reads the clean
prompts' attention patterns (an attention view and its prompt browser, attention vs
contribution), the pass also keeps every head's pattern at every position for the run's
pattern cache (runtime/patterns.py): they come with its forward, where a view of its own
would sweep the prompts again. When a member reruns the pass's prompts with an intervention at
late positions only (ablation at the final position), the pass keeps every layer's keys and
values so that rerun runs only the positions from the intervention on (runtime/pass_kv.py).
No torch here: the plan lists the passes.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from ..core.plan import Pass, Step


PATTERNS = "blocks.{L}.attn.hook_pattern"  # kept at every position, for the pattern cache


def fuse(steps: Tuple[Step, ...]) -> Tuple[Pass, ...]:
    """The fewest shared passes: one per distinct prompt set of the steps that can share."""
    groups: Dict[Optional[int], List[Step]] = {}
    for step in steps:
        if step.shares_final_pass:
            groups.setdefault(step.params.max_pairs, []).append(step)
    patterns = any(step.reads_patterns for step in steps)  # the pass keeps them for the pattern cache
    passes = []
    for n, (max_pairs, members) in enumerate(groups.items()):
        hooks = tuple(dict.fromkeys([h for s in members for h in s.hooks] + ([PATTERNS] if patterns else [])))
        passes.append(Pass(f"final_pass_{n}", tuple(s.id for s in members), hooks, "clean", max_pairs, patterns,
                           keys_values=any(s.continues_pass for s in members)))
    return tuple(passes)


def expand_hooks(patterns, n_layers: int, has_hook) -> List[str]:
    """Hook names of `patterns` for a model of n_layers ({L}, {last}, optional '?')."""
    names: List[str] = []
    for pattern in patterns:
        optional = pattern.endswith("?")
        pattern = pattern.rstrip("?")
        if "{L}" in pattern:
            expanded = [pattern.replace("{L}", str(l)) for l in range(n_layers)]
        else:
            expanded = [pattern.replace("{last}", str(n_layers - 1))]
        names += [n for n in expanded if not optional or has_hook(n)]
    return list(dict.fromkeys(names))
