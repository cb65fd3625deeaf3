"""Batched, hooked forward passes that capture only what a step needs.

The executor is the one place that runs the model. A step asks for named hooks at
chosen positions; the executor runs the prompts in batches sized to memory,
keeps only those slices, stops the forward early when nothing after the last
needed hook matters (no full-vocabulary unembedding of every position), and splits
and retries a batch that runs out of memory.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, TypeVar

import torch

from ..errors import Location, RunError, SpecWarning
from ..compile.memory import CPU_BUDGET_GB, activation_bytes_per_row, graph_bytes_per_row, rows_within
from . import last_mlp

# What to keep of an activation: a callable (act -> kept tensor). Common ones:
ALL = lambda act: act  # noqa: E731


class _StopForward(Exception):
    """Raised from the last needed hook to skip the rest of the forward pass."""


def is_oom(err: BaseException) -> bool:
    if isinstance(err, getattr(torch, "OutOfMemoryError", ())):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


T = TypeVar("T")


def in_batches(n_rows: int, size: int, fn: Callable[[slice], T], *, on_split: Callable[[int, int], None],
               one_row_fails: Callable[[], RunError], done: Optional[Callable[[int], object]] = None) -> List[T]:
    """fn(slice) for consecutive slices of `size` rows covering n_rows. A slice that runs out of memory
    is halved and tried again, down to one row: `on_split(rows, smaller)` hears it (to warn, free
    memory), and one row that does not fit raises `one_row_fails()`. `fn` must change nothing outside
    itself before it returns, so a failed slice leaves no trace; `done(rows)` hears each slice done."""
    results: List[T] = []
    start = 0
    while start < n_rows:
        stop = min(n_rows, start + size)
        try:
            results.append(fn(slice(start, stop)))
        except Exception as err:  # noqa: BLE001  (only OOM is handled; the rest re-raised)
            if not is_oom(err):
                raise
            if stop - start == 1:
                raise one_row_fails() from None
            size = max(1, (stop - start) // 2)
            on_split(stop - start, size)
            continue
        if done is not None:
            done(stop - start)
        start = stop
    return results


@dataclass
class Executor:
    loaded: "object"                      # models.LoadedModel
    batch_size: object = "auto"           # int or "auto"
    memory_gb: Optional[float] = None
    progress: bool = True
    warnings: List[SpecWarning] = field(default_factory=list)
    where: Location = Location()          # the spec step running now: where its warnings point
    on_warning: Optional[Callable[[SpecWarning], None]] = None
    forwards: int = 0                     # forward passes run, for the report
    forward_tokens: int = 0               # rows x tokens of those forwards, and the seconds they took:
    forward_seconds: float = 0.0          # the per-token rate the next plan's estimate reads (compile/cost.py)
    oom_cap: Optional[int] = None         # rows per batch that last fit after an out-of-memory split
    resumable: Optional[bool] = None      # blocks can be skipped (runtime/prefix.py); checked once
    kv_rest: Optional[int] = None     # positions a continued forward must run (runtime/kv.py); 0: cannot
    prefixes: List[Any] = field(default_factory=list)  # the latest shared_prefix.SharedPrefix plans (covering)
    last_mlp_verdicts: last_mlp.Verdicts = field(default_factory=dict)  # shapes checked (runtime/last_mlp.py)

    @property
    def model(self):
        return self.loaded.bridge

    @property
    def cfg(self):
        return self.loaded.bridge.cfg

    @property
    def device(self) -> torch.device:
        return self.loaded.device

    # ------------------------------------------------------------------ batching

    def rows_per_batch(self, seq_len: int, extra_bytes_per_row: int = 0, past: int = 0) -> int:
        """Prompts per forward: the spec's number, or what fits the memory budget. One row over the budget
        is refused before it runs (head_detection at seq_len 4096 passed 5 GB on a 1 GB budget). `past`:
        the forward runs seq_len positions after the keys and values of `past` earlier ones (runtime/kv.py)."""
        if isinstance(self.batch_size, int):
            return self.batch_size
        cfg = self.cfg
        # The same formula `mi-run plan` estimates memory with.
        per_row = activation_bytes_per_row(seq_len, cfg.d_model, self._d_mlp, cfg.n_heads, past) + extra_bytes_per_row
        budget = self._memory_budget_bytes()
        if per_row > budget:
            raise RunError(f"one row of {seq_len} tokens needs about {per_row / 2 ** 30:.2f} GB of activations, "
                           f"more than the batch budget of {budget / 2 ** 30:.2f} GB", self.where,
                           hint="use shorter inputs (e.g. a smaller seq_len), or raise run.memory_gb if the "
                                "machine has the memory")
        return rows_within(budget, per_row)

    def graph_bytes_per_row(self, seq_len: int, past: int = 0) -> int:
        """One prompt's share of a forward kept for a backward (every block's saved tensors); `past` as in
        rows_per_batch."""
        cfg = self.cfg
        return graph_bytes_per_row(seq_len, cfg.d_model, self._d_mlp, cfg.n_heads, cfg.d_head, cfg.n_layers, past)

    @property
    def _d_mlp(self) -> int:
        return getattr(self.cfg, "d_mlp", None) or 4 * self.cfg.d_model

    def _memory_budget_bytes(self) -> int:
        if self.memory_gb:
            return int(self.memory_gb * 2**30)
        if self.device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(self.device)
            return int(free * 0.5)
        return int(CPU_BUDGET_GB * 2**30)

    def map_batches(self, n_rows: int, seq_len: int, fn: Callable[[slice], object], what: str = "",
                    extra_bytes_per_row: int = 0, past: int = 0) -> List[object]:
        """fn(slice) for consecutive slices covering n_rows, each a forward of seq_len positions (after
        `past` earlier positions' keys and values, rows_per_batch); a batch that runs out of memory
        is split in half and retried (with a warning), down to one row."""
        size = self.rows_per_batch(seq_len, extra_bytes_per_row, past)
        if self.oom_cap is not None:  # an earlier step ran out of memory: start where it ended up
            size = min(size, self.oom_cap)
        bar = self._bar(n_rows, what)

        def split(rows: int, smaller: int) -> None:
            self.oom_cap = smaller
            self.warn(f"out of memory with {rows} prompts per batch while {what}; retrying with {smaller}")
            self._free()
        results = in_batches(n_rows, size, fn, on_split=split, done=None if bar is None else bar.update,
                             one_row_fails=lambda: RunError(f"out of memory on a single prompt while "
                                                            f"{what or 'running'}; use a smaller model or "
                                                            "run.memory_gb"))
        if bar is not None:
            bar.close()
        return results

    def _bar(self, total: int, what: str):
        if not self.progress or total < 2 * max(1, self.rows_per_batch(16)):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=what, unit="prompt", leave=False)

    def warn(self, message: str, where: Optional[Location] = None) -> None:
        """A located warning (at `where`, else at the step running now): kept for the run log and
        passed to `on_warning` (the progress line), never raised as a Python warning."""
        warning = SpecWarning(message, where or self.where)
        self.warnings.append(warning)
        if self.on_warning is not None:
            self.on_warning(warning)

    def _free(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ one forward

    def capture(self, tokens: torch.Tensor, keep: Dict[str, Callable], *,
                interventions: Sequence[Tuple[str, Callable]] = (),
                stop_after: Optional[str] = None,
                forward_kwargs: Optional[Dict[str, object]] = None,
                ) -> Tuple[Optional[torch.Tensor], Dict[str, torch.Tensor]]:
        """Run `tokens` once; return (logits or None, {hook name: kept slice}).

        `stop_after` names the last hook anything needs: the forward stops there, so a
        final-position metric never pays for the unembedding of every position. When nothing after
        the last block's attention is read but at the final positions (at_final), the last MLP runs
        there only (runtime/last_mlp.py).
        `forward_kwargs` go to the bridge's forward (position_ids of a continued forward, runtime/kv.py).
        """
        kept: Dict[str, torch.Tensor] = {}
        n_layers = self.cfg.n_layers
        truncate, final = (False, None) if stop_after is None or torch.is_grad_enabled() else \
            last_mlp.final_of(self.model, keep, interventions)
        guard = last_mlp.Guard(tuple(tokens.shape[:2])) if truncate else None
        hooks: List[Tuple[str, Callable]] = [(name, _guarded(name, fn, guard, n_layers)) for name, fn in interventions]
        for name, select in keep.items():
            hooks.append((name, _guarded(name, self._keeper(name, select, kept, stop_after), guard, n_layers)))
        if stop_after is not None and stop_after not in keep:
            hooks.append((stop_after, _stopper))
        tokens = tokens.to(self.device)
        self.forwards += 1
        started = time.perf_counter()
        truncated = last_mlp.final_positions_only(self.model, final, self.last_mlp_verdicts, guard) \
            if guard is not None else nullcontext()
        try:
            with self.model.hooks(fwd_hooks=hooks), truncated:
                logits = self.model(tokens, prepend_bos=False, **(forward_kwargs or {}))
            logits = logits.to(self.device)  # a device_map puts the unembedding on the last device
        except _StopForward:
            logits = None
        # every forward, early stops included: the same rows the plan's estimate counts (compile/cost.py)
        self.forward_tokens += tokens.numel()
        self.forward_seconds += time.perf_counter() - started
        missing = [n for n in keep if n not in kept]
        if missing:
            raise RunError(f"the model never reached hook(s) {', '.join(missing)}; this architecture "
                           "may not have them")
        return logits, kept

    def _keeper(self, name: str, select: Callable, kept: Dict[str, torch.Tensor], stop_after: Optional[str]):
        device = self.device

        def hook(act, hook=None):
            # Under a device_map each layer's activations live on its own device; every
            # capture is gathered on the one the executor declares (the embedding's).
            kept[name] = select(act.detach()).to(device)
            if name == stop_after:
                raise _StopForward()
            return act

        return hook


def _guarded(name: str, fn: Callable, guard: Optional[last_mlp.Guard], n_layers: int) -> Callable:
    """`fn`, which raises where it fires out of the place runtime/last_mlp.py gives it."""
    if guard is None:
        return fn
    before = last_mlp.before_last_mlp(name, n_layers)

    def hook(act, hook=None):
        guard.check(name, act, before)
        return fn(act, hook=hook)

    return hook


def _stopper(act, hook=None):
    raise _StopForward()


def pad_right(rows: Sequence[Sequence[int]]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Prompts of different lengths as one batch: (tokens [B, longest], final index [B]).

    Each row is padded on the right by repeating its own last token. In a causal model no
    position reads a later one, so every real position, the final one included, computes
    exactly what it computes unpadded, with its own position ids 0..n-1 and no attention
    mask; the padding is never read back (and is no pad id a model could treat specially)."""
    longest = max(len(r) for r in rows)
    tokens = torch.tensor([list(r) + [r[-1]] * (longest - len(r)) for r in rows], dtype=torch.long)
    return tokens, torch.tensor([len(r) - 1 for r in rows], dtype=torch.long)


class AtFinal:
    """What to keep of an activation [B, pos, ...]: each row's final real position (`final` [B]; None:
    the last column). Typed, so the executor sees which positions a forward reads (runtime/last_mlp.py)."""

    def __init__(self, final: Optional[torch.Tensor] = None) -> None:
        self.final = final

    def __call__(self, act: torch.Tensor) -> torch.Tensor:
        if self.final is None:
            return act[:, -1]
        return act[torch.arange(act.shape[0], device=act.device), self.final.to(act.device)]


FINAL = AtFinal()  # the last column


def at_final(final: Optional[torch.Tensor]) -> AtFinal:
    """What to keep of an activation [B, pos, ...]: each row's final real position (None: the last column)."""
    return AtFinal(final)


def by_length(prompts: Sequence[Sequence[int]]) -> List[int]:
    """Prompt indices sorted by length (stable: prompts of one length keep their order), so a
    batch pads little."""
    return sorted(range(len(prompts)), key=lambda i: len(prompts[i]))


def token_sets(sets) -> torch.Tensor:
    """[N] when every set has one token (the single-answer case, unchanged), else [N, K]
    padded with -1."""
    if all(len(s) == 1 for s in sets):
        return torch.tensor([s[0] for s in sets], dtype=torch.long)
    width = max(len(s) for s in sets)
    return torch.tensor([list(s) + [-1] * (width - len(s)) for s in sets], dtype=torch.long)


def stack(parts: Iterable[torch.Tensor]) -> torch.Tensor:
    return torch.cat(list(parts), dim=0)
