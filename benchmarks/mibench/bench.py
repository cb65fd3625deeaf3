"""One model under test, driven through mi-dsl's own entry points.

`open_bench` calls `mi_dsl.compile.prepare` (as `mi-run` does) and opens a
`mi_dsl.runtime.run.Session` (thread policy, model load, tokenizer check, executor),
so the harness times the product's own code paths: `Session.run_pipeline` for the
filter, `Session.context_for` + `Session.compute_analysis` for the analyses.
The bare methods get a plain transformers copy of the same weights.
"""
from __future__ import annotations

import dataclasses
import math

from .measure import Meter
from .options import HERE, find_tokenizer, log


@dataclasses.dataclass
class Bench:
    """One model loaded once (a Session), and what the methods share."""

    key: str                 # "pythia" or "gemma"
    session: object          # mi_dsl.runtime.run.Session, opened
    meter: Meter
    _bare: object = None
    mi_results: dict = dataclasses.field(default_factory=dict)
    loop_layers: dict = dataclasses.field(default_factory=dict)   # item -> layers the per-cell loops run
    pending_scale: object = None
    filter_kept: object = None

    spec = property(lambda self: self.session.spec)
    plan = property(lambda self: self.session.plan)
    dataset = property(lambda self: self.session.dataset)
    loaded = property(lambda self: self.session.loaded)
    executor = property(lambda self: self.session.executor)
    model = property(lambda self: self.session.loaded.bridge)
    device = property(lambda self: self.session.loaded.device)

    @property
    def hf(self):
        """A plain transformers model with the same weights, not wrapped by the bridge (calling
        loaded.hf_model runs through the bridge's components and hooks)."""
        if self._bare is None:
            self._bare = bare_model(self)
        return self._bare

    def context(self, pairs):
        return self.session.context_for(list(pairs))

    def tokens(self, pairs, which: str):
        import torch

        return torch.tensor([getattr(p, which).ids for p in pairs], dtype=torch.long, device=self.device)

    def answers(self, pairs):
        import torch

        a = torch.tensor([p.answer for p in pairs], device=self.device)
        f = torch.tensor([p.foil for p in pairs], device=self.device)
        return a, f

    def rows_per_batch(self, seq_len: int, full_logits: bool = False) -> int:
        """mi-dsl's batch size; with full logits also <= 1 GiB of logits per batch."""
        rows = self.executor.rows_per_batch(seq_len)
        if full_logits:
            rows = min(rows, max(1, 2**30 // (seq_len * self.model.cfg.d_vocab * 4)))
        return rows


def bare_model(b: Bench):
    """The same weights as plain transformers: rebuilt from the seed (random) or read from
    mi-dsl's converted float32 copy (embedded/GGUF)."""
    import torch
    from transformers import AutoModelForCausalLM

    info, spec = b.loaded.info, b.plan.model
    if spec.source == "random":
        from mi_dsl.models import random_weights

        model = random_weights.build(random_weights.shape_for(spec.architecture, spec.size),
                                     b.loaded.hf_model.config.vocab_size, spec.seed)
    else:
        model = AutoModelForCausalLM.from_pretrained(info["weights"], dtype=torch.float32)
    return model.to(b.device).eval()


# The bench specs extend the shipped ones (../../specs/), outside their own folder: a spec reads only
# inside its directory tree unless the caller allows more, as `mi-run --allow-path` does.
BENCH_SPEC_READS = [str(HERE.parent / "specs")]


def open_bench(key: str, args, sizes, device_name: str, meter: Meter, threads) -> Bench:
    """prepare() the bench spec with the harness's overrides and open a Session on it."""
    from mi_dsl.compile import prepare
    from mi_dsl.runtime.run import Session

    overrides = [f"model.device={device_name}"]
    if key == "pythia":
        overrides += [f"model.size={sizes['size']}", f"model.tokenizer={find_tokenizer(args)}"]
        file = args.pythia_spec
    else:
        file = str(HERE / "specs" / "gemma.yaml")
    p = prepare(file, overrides, BENCH_SPEC_READS)
    session = Session(p.spec, p.plan, p.dataset, p.tokenizer, progress=False, say=lambda m: None, threads=threads)
    seconds, _ = meter.timed(session.open)
    log(f"{key}: model loaded in {seconds:.1f}s ({session.loaded.info.get('id')}); "
        f"threads {session.thread_choice}")
    return Bench(key, session, meter)


# --------------------------------------------------------------------------- shared arithmetic


def logit_diff(logits, a, f):
    last = logits[:, -1]
    return last.gather(1, a[:, None])[:, 0] - last.gather(1, f[:, None])[:, 0]


def batched(n_rows: int, size: int):
    for start in range(0, n_rows, size):
        yield slice(start, min(n_rows, start + size))


def bare_forwards(b: Bench, tokens, n_rows: int, last_only: bool):
    """n_rows bare HF forwards of rows of `tokens` (cycled), in batches of mi-dsl's size."""
    size = b.rows_per_batch(tokens.shape[1], full_logits=not last_only)
    reps = math.ceil(min(size, n_rows) / len(tokens))
    big = tokens.repeat(reps, 1)[: min(size, n_rows)]
    kw = {"logits_to_keep": 1} if last_only else {}
    out = None
    for part in batched(n_rows, size):
        out = b.hf(big[: part.stop - part.start], **kw).logits[:, -1]
    return out


def bare_metric(b: Bench, pairs, which: str, last_only: bool):
    """Bare HF logit differences of `pairs`' `which` prompts, batched."""
    import torch

    toks = b.tokens(pairs, which)
    a, f = b.answers(pairs)
    kw = {"logits_to_keep": 1} if last_only else {}
    size = b.rows_per_batch(toks.shape[1], full_logits=not last_only)
    return torch.cat([logit_diff(b.hf(toks[s], **kw).logits, a[s], f[s]) for s in batched(len(pairs), size)])
