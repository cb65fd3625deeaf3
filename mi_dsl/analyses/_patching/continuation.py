"""Exact and attribution patching measured by a continuation metric (answers written continuation(...)).

Each patched run is a forward of the base prompt followed by a continuation (the answer's,
and the foil's when the metric reads it: each side its own forward), right-padded, read at
the prompt's final position and the continuation's positions after it
(runtime/continuation.py). Cells patch prompt positions only: the patch index is built on
the prompt's positions, and the continuation starts after each prompt's own final token, so
a patch means what it means for a final-position metric. The source run is captured
without continuations (a causal model's prompt positions never read them). With prefix
reuse, each side resumes from the base run's residual over prompt + its continuation.

Attribution patching (attribution.py) runs the same forwards with gradients, on these Sides.
"""
from __future__ import annotations

from typing import Any, Dict, Optional


class Sides:
    """The base prompts with each side's continuation, and (lazily) each side's resume inputs."""

    def __init__(self, run, base_name: str, capture):
        from ...runtime.continuation import ContinuationBatch

        prompts = [getattr(p, base_name).ids for p in run.pairs]
        self.batches = {side: ContinuationBatch.of(prompts, [getattr(p, side + "s") for p in run.pairs])
                        for side in ("answer", "foil")}
        self.run, self.base_name = run, base_name
        self.capture = capture  # engines.capture_all_positions (passed in: engines imports this module)
        self._resume: Dict[str, Optional[Dict[int, Any]]] = {}

    @property
    def width(self) -> int:
        return max(b.tokens.shape[1] for b in self.batches.values())

    @property
    def read_positions(self) -> int:
        """The most positions a row's continuation is read at (each unembedded over the vocabulary)."""
        return max(b.targets.shape[1] for b in self.batches.values())

    def resume(self, side: str, layers, resumable: bool):
        """{layer: [prompts, W, d_model]} the base run (with the side's continuation) entering each
        layer > 0, captured on first use; None without prefix reuse."""
        if not resumable:
            return None
        if side not in self._resume:
            layers = [l for l in layers if l > 0]
            names = [f"blocks.{l}.hook_resid_pre" for l in layers]
            captured = self.capture(self.run, self.base_name, names, self.batches[side].tokens)
            self._resume[side] = {l: captured[n] for l, n in zip(layers, names)}
        return self._resume[side]


def patched_metric(run, sides: Sides, prompt, hooks, start: int, layers, resumable: bool):
    """The metric of rows `prompt` (indices into the pairs) with `hooks` patching them: one forward per
    side the metric reads, resumed at block `start` when it is > 0."""
    from ...metrics import compute_continuation_metrics
    from ...runtime.continuation import readout_of, unembed_inputs
    from ...runtime.prefix import resume_at

    def forward(which: str, rows):
        resume = sides.resume(which, layers, resumable) if start > 0 else None
        resid = resume[start][prompt.to(resume[start].device)] if resume is not None else None
        with resume_at(run.model, start, resid):
            return unembed_inputs(run.executor, rows, hooks)

    batches = {side: batch.rows(prompt) for side, batch in sides.batches.items()}
    readout = readout_of(batches, forward, run.unembed)
    return compute_continuation_metrics(readout, [run.main_metric])[run.metric]

