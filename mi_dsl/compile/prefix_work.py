"""The token-work of prompts that share their first tokens: runtime/shared_prefix.py runs one whole
prompt of each distinct prefix and every other prompt from the prefix's end on. The length is chosen
here, torch-free, so the plan's cost estimate (compile/cost.py) counts what the run will do."""
from __future__ import annotations

from typing import Sequence

MIN_SAVING = 0.15       # below this share of token-work saved, run prompts whole


def best_length(prompts: Sequence[Sequence[int]], rest: int = 1) -> int:
    """The prefix length p minimising (distinct prefixes x p) + (prompts x tokens after p), or 0
    when it saves less than MIN_SAVING of the tokens; every prompt keeps at least `rest` tokens
    after p (kv.exact_rest)."""
    if len(prompts) < 2:
        return 0
    total = sum(len(p) for p in prompts)
    shortest = min(len(p) for p in prompts)
    best, best_cost = 0, total
    for length in range(1, shortest - max(1, rest) + 1):
        distinct = len({tuple(p[:length]) for p in prompts})
        cost = distinct * length + total - len(prompts) * length
        if cost < best_cost:
            best, best_cost = length, cost
    return best if best_cost <= (1 - MIN_SAVING) * total else 0


def shared_token_work(prompts: Sequence[Sequence[int]], rest: int = 1) -> int:
    """Tokens run for `prompts` with their shared prefix: each distinct prefix's first prompt whole,
    every other prompt from the prefix's end on (all of them whole when sharing does not pay)."""
    p = best_length(prompts, rest)
    if p == 0:
        return sum(len(q) for q in prompts)
    seen: set = set()
    work = 0
    for q in prompts:
        prefix = tuple(q[:p])
        work += len(q) if prefix not in seen else len(q) - p
        seen.add(prefix)
    return work
