"""mi-dsl performance harness: the same work done several ways, on one device, in one run.

Ways ("methods"), each a function returning (seconds, numbers):
  seed   the seed notebook's imperative style: one prompt at a time with a full activation
         cache (filter), a full cache + TransformerLens cache arithmetic (head attribution),
         one run_with_hooks forward per patched cell (patching)
  tl     TransformerLens itself: batched bridge forwards (filter) and
         transformer_lens.patching.get_act_patch_attn_head_out_all_pos / _by_pos (patching)
  mi     mi-dsl's compiled plan: runtime.pipeline.run_pipeline (filter) and the registered
         analyses' compute() on a RunContext (head_attribution, activation_patching,
         attribution_patching); the whole spec through `mi-run` in a subprocess
  bare   bare batched Hugging Face forwards of the same tokens (the lower bound):
         bare_last with logits_to_keep=1 (the strict bound: mi-dsl never unembeds more than
         the final position) and bare_full with every position's logits (what the seed and
         TransformerLens compute)

Items: start (python launch -> first forward of the embedded model), filter, head_attr,
patch_z, patch_z_pos, attrib, spec. Models: a Pythia-shaped random GPT-NeoX with the real
Pythia tokenizer ("pythia") and the embedded Gemma-3-270m ("gemma").

    python benchmarks/harness.py                     # CPU defaults (about 12 minutes on 2 cores)
    python benchmarks/harness.py --quick             # smoke test, about 2 minutes
    python benchmarks/harness.py --device cuda --models pythia \
        --items filter,head_attr,patch_z,patch_z_pos,attrib   # GPU (pythia-160m, n=124)

Writes benchmarks/results/<cpu|gpu>-<date>.json and .md (--out-dir moves them).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
TOKENIZER_CANDIDATES = [ROOT / "shared" / "tokenizers" / "pythia" / "20B_tokenizer.json",
                        Path("/work/shared/tokenizers/pythia/20B_tokenizer.json")]
ITEMS = ["start", "filter", "head_attr", "patch_z", "patch_z_pos", "attrib", "spec"]
MODELS = ["pythia", "gemma"]
METHODS = ["seed", "tl", "mi", "bare_last", "bare_full"]
# Extra Pythia-shaped sizes (registered in this process only, as the tests do): peer_patching's
# CPU size. mi-dsl ships tiny, pythia-70m and pythia-160m.
EXTRA_SIZES = {"small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, intermediate_size=1024)}
GOALS = {"filter_vs_bare": 1.3, "patch_z_vs_bare": 1.3, "attrib_speedup": 20.0, "attrib_spearman": 0.9,
         "spec_cpu_seconds": 300.0, "cached_start_seconds": 5.0}


def log(*parts):
    print("[bench]", *parts, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- options


# Sizes: option -> (CPU default, GPU default, --quick), help. None = everything / all layers.
SIZES = {
    "size": (("small", "pythia-160m", "tiny"), "Pythia-shaped random model: tiny, small (peer_patching's "
                                               "CPU size), pythia-70m, pythia-160m"),
    "n": ((16, 124, 4), "prompt pairs for Pythia-shaped head attribution, all-heads patching, attribution"),
    "n_pos": ((4, 32, 1), "prompt pairs for Pythia-shaped by-position patching"),
    "filter_n": ((720, None, 64), "candidate pairs in the Pythia-shaped filter item (None: all 1440)"),
    "seed_filter_n": ((128, 256, 4), "pairs the one-prompt-at-a-time seed filter is timed on (scaled)"),
    "pos_layers": ((1, 3, 1), "layers whose cells the per-cell by-position loops (seed, TL) are timed on, "
                              "scaled to all layers (mi-dsl and bare always do every layer)"),
    "gemma_n": ((8, 64, 2), "prompt pairs for Gemma head attribution, all-heads patching, attribution"),
    "gemma_n_pos": ((0, 8, 0), "prompt pairs for Gemma by-position patching (0: leave it out)"),
    "gemma_filter_n": ((64, None, 8), "candidate pairs in the Gemma filter item (None: all 1134)"),
    "gemma_seed_filter_n": ((8, 128, 2), "pairs the seed filter is timed on for Gemma (scaled)"),
    "gemma_loop_layers": ((3, None, 2), "layers whose cells the per-cell loops (seed, TL) of Gemma's "
                                        "all-heads patching are timed on, scaled to all 18"),
}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda")
    for name, ((cpu, gpu, quick), text) in SIZES.items():
        kind = str if name == "size" else int
        ap.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                        help=f"{text} (default: CPU {cpu}, GPU {gpu}, --quick {quick})")
    ap.add_argument("--items", default=",".join(ITEMS), help=f"comma list from {ITEMS}")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma list from {MODELS}")
    ap.add_argument("--skip", default="", help="comma list of item.model.method to skip, e.g. "
                                               "patch_z.gemma.seed (* matches any part)")
    ap.add_argument("--quick", action="store_true", help="smoke-test sizes (tiny model, a few prompts); "
                                                         "leaves out the spec item unless --items names it")
    ap.add_argument("--cold-start", action="store_true", help="also time a first start with an empty "
                                                              "MI_DSL_CACHE (GGUF conversion, ~90 s on a CPU)")
    ap.add_argument("--tokenizer", default=None, help="path to Pythia's 20B_tokenizer.json")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    ap.add_argument("--tag", default=None, help="file name stem (default <cpu|gpu>-<date>)")
    args = ap.parse_args(argv)
    if args.quick and args.items == ",".join(ITEMS):
        args.items = ",".join(i for i in ITEMS if i != "spec")
    return args


def resolve_sizes(args, cuda: bool) -> dict:
    column = 2 if args.quick else (1 if cuda else 0)
    return {name: getattr(args, name) if getattr(args, name) is not None else defaults[column]
            for name, (defaults, _text) in SIZES.items()}


def skipped(args, item: str, model: str, method: str) -> bool:
    for rule in filter(None, args.skip.split(",")):
        parts = rule.strip().split(".")
        if len(parts) == 3 and all(p in ("*", v) for p, v in zip(parts, (item, model, method))):
            return True
    return False


# --------------------------------------------------------------------------- measuring


def _cpu_seconds() -> float:
    """User + system CPU time of this process (all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Meter:
    """Wall time (synchronised) and peak memory of one piece of work."""

    def __init__(self, device):
        import torch

        self.torch, self.device = torch, device
        self.cuda = device.type == "cuda"
        self.can_reset_rss = self._reset_rss()
        self.last_peak_mb = None

    def _reset_rss(self) -> bool:
        try:  # Linux: "5" resets the peak RSS (VmHWM, ru_maxrss) to the current RSS
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            return True
        except OSError:
            return False

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def timed(self, fn):
        """(seconds, fn()) with the peak memory of the call in self.last_peak_mb."""
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.can_reset_rss = self._reset_rss()
        self.sync()
        cpu = _cpu_seconds()
        started = time.perf_counter()
        with self.torch.no_grad():
            out = fn()
        self.sync()
        seconds = time.perf_counter() - started
        self.last_cpu_seconds = _cpu_seconds() - cpu
        if self.cuda:
            self.last_peak_mb = self.torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self.last_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return seconds, out

    def resident_mb(self) -> float:
        if self.cuda:
            return self.torch.cuda.memory_allocated(self.device) / 2**20
        with open("/proc/self/status") as fh:
            found = re.search(r"VmRSS:\s+(\d+)", fh.read())
        return int(found.group(1)) / 1024 if found else float("nan")


# --------------------------------------------------------------------------- a model under test


@dataclasses.dataclass
class Bench:
    """One model loaded once, with mi-dsl's pieces and the final prompt pairs."""

    key: str                 # "pythia" or "gemma"
    spec: object
    plan: object
    dataset: object
    tokenizer: object
    loaded: object
    executor: object
    unembed: object
    meter: Meter
    _bare: object = None
    mi_results: dict = dataclasses.field(default_factory=dict)
    loop_layers: dict = dataclasses.field(default_factory=dict)   # item -> layers the per-cell loops run
    pending_scale: object = None
    filter_kept: object = None

    @property
    def model(self):
        return self.loaded.bridge

    @property
    def hf(self):
        """A plain transformers model with the same weights, not wrapped by the bridge (calling
        loaded.hf_model runs through the bridge's components and hooks)."""
        if self._bare is None:
            self._bare = bare_model(self)
        return self._bare

    @property
    def device(self):
        return self.loaded.device

    def analysis(self, analysis_id: str):
        """(index, params) of an analysis of the bench spec."""
        for index, params in enumerate(self.spec.analyses):
            if params.get("id") == analysis_id:
                return index, dict(params)
        raise KeyError(analysis_id)

    def context(self, pairs, analysis_id: str = None):
        """A RunContext over `pairs` (baselines computed), as runner.Session builds it."""
        from mi_dsl.runtime.context import RunContext
        from mi_dsl.runtime.pipeline import pair_metrics

        m = pair_metrics(self.executor, self.unembed, pairs, [self.plan.metric])
        baselines = {r: float(m[r][self.plan.metric].mean()) for r in ("clean", "corrupted")}
        ctx = RunContext(self.executor, self.unembed, self.spec, self.plan, self.tokenizer, list(pairs),
                         baselines=baselines)
        if analysis_id:
            ctx.analysis_index = self.analysis(analysis_id)[0]
        return ctx

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
        from mi_dsl.runtime.models import random_weights as random_models

        model = random_models.build(random_models.shape_for(spec.architecture, spec.size),
                                    len(b.loaded.tokenizer), spec.seed)
    else:
        model = AutoModelForCausalLM.from_pretrained(info["weights"], dtype=torch.float32)
    return model.to(b.device).eval()


def find_tokenizer(args) -> str:
    if args.tokenizer:
        return args.tokenizer
    for path in TOKENIZER_CANDIDATES:
        if path.is_file():
            return str(path)
    sys.exit(f"Pythia's 20B_tokenizer.json not found; pass --tokenizer (looked in {TOKENIZER_CANDIDATES})")


def register_sizes():
    from mi_dsl.runtime.models import random_weights as random_models

    base = random_models.SHAPES["gpt_neox"]["pythia-160m"]
    for name, fields in EXTRA_SIZES.items():
        def make(vocab, fields=fields):
            config = base.make_config(vocab)
            for k, v in fields.items():
                setattr(config, k, v)
            return config
        random_models.SHAPES["gpt_neox"].setdefault(name, random_models.Shape(base.hub_name, make, base.fixed_vocab))


def open_bench(key: str, args, sizes, device_name: str, meter: Meter) -> Bench:
    from mi_dsl.compile import prepare
    from mi_dsl.runtime.executor import Executor
    from mi_dsl.runtime.unembed import Unembed
    from mi_dsl.runtime.models import load_model

    overrides = [f"model.device={device_name}"]
    if key == "pythia":
        register_sizes()
        overrides += [f"model.size={sizes['size']}", f"model.tokenizer={find_tokenizer(args)}"]
        file = HERE / "specs" / "pythia_shaped.yaml"
    else:
        file = HERE / "specs" / "gemma.yaml"
    prepared = prepare(str(file), overrides, [])
    spec, plan, dataset, tokenizer = prepared.spec, prepared.plan, prepared.dataset, prepared.tokenizer
    seconds, loaded = meter.timed(lambda: load_model(plan.model))
    log(f"{key}: model loaded in {seconds:.1f}s ({loaded.info.get('id')})")
    executor = Executor(loaded, plan.batch_size, plan.memory_gb, progress=False)
    return Bench(key, spec, plan, dataset, tokenizer, loaded, executor, Unembed.of(loaded.bridge), meter)


# --------------------------------------------------------------------------- shared arithmetic


def logit_diff(logits, a, f):
    last = logits[:, -1]
    return last.gather(1, a[:, None])[:, 0] - last.gather(1, f[:, None])[:, 0]


def batched(n_rows: int, size: int):
    for start in range(0, n_rows, size):
        yield slice(start, min(n_rows, start + size))


def bare_forwards(b: Bench, tokens, n_rows: int, last_only: bool):
    """n_rows bare HF forwards of rows of `tokens` (cycled), in batches of mi-dsl's size."""
    import torch

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


def quiet_tl():
    import transformer_lens.patching as tlp

    original = tlp.tqdm
    tlp.tqdm = lambda it, *a, **k: original(it, *a, **{**k, "disable": True})
    return tlp


# --------------------------------------------------------------------------- item: filter


def filter_seed(b: Bench, pairs):
    """One prompt at a time, full activation cache, clean then corrupted (seed_baseline.py)."""
    import torch

    def work():
        out = torch.empty(2, len(pairs))
        for i, p in enumerate(pairs):
            a, f = b.answers([p])
            for r, which in enumerate(("clean", "corrupted")):
                logits, _cache = b.model.run_with_cache(b.tokens([p], which))
                out[r, i] = logit_diff(logits, a, f)[0].cpu()
        return out
    return b.meter.timed(work)


def filter_tl(b: Bench, pairs):
    """Batched TransformerBridge forwards, no cache, full logits."""
    import torch

    def work():
        a, f = b.answers(pairs)
        out = []
        for which in ("clean", "corrupted"):
            toks = b.tokens(pairs, which)
            size = b.rows_per_batch(toks.shape[1], full_logits=True)
            out.append(torch.cat([logit_diff(b.model(toks[s]), a[s], f[s]) for s in batched(len(pairs), size)]))
        return torch.stack(out).cpu()
    return b.meter.timed(work)


def filter_mi(b: Bench, pairs):
    """mi-dsl's pipeline stage (runtime.pipeline.run_pipeline) with the spec's keep-condition."""
    import torch
    from mi_dsl.errors import MiError
    from mi_dsl.runtime.pipeline import run_pipeline

    dataset = dataclasses.replace(b.dataset, pairs=list(pairs))

    def work():
        try:
            outcome = run_pipeline(b.plan, b.spec, dataset, b.executor, b.unembed)
        except MiError:  # "no prompts are left": only a one-pair warm-up should see it
            return None, 0
        m = outcome.candidate_metrics
        return torch.tensor([m["clean"][b.plan.metric], m["corrupted"][b.plan.metric]]), len(outcome.pairs)

    seconds, (numbers, kept) = b.meter.timed(work)
    b.filter_kept = kept
    return seconds, numbers


def filter_bare(last_only: bool):
    def method(b: Bench, pairs):
        import torch

        return b.meter.timed(lambda: torch.stack([bare_metric(b, pairs, w, last_only)
                                                  for w in ("clean", "corrupted")]).cpu())
    return method


# --------------------------------------------------------------------------- item: head attribution


def head_attr_seed(b: Bench, pairs):
    """A full activation cache of the clean batch, then TransformerLens's cache arithmetic
    (stack_head_results, apply_ln_to_stack) on the logit-difference directions, as the seed.
    Gemma's post-attention norm is applied to each head's result (stack_head_results leaves it out)."""
    model = b.model
    cfg = model.cfg

    def work():
        toks = b.tokens(pairs, "clean")
        a, f = b.answers(pairs)
        _, cache = model.run_with_cache(toks)
        stack = cache.stack_head_results(layer=-1, pos_slice=-1)  # [L*H, N, d]
        if hasattr(model.blocks[0], "ln1_post"):
            stack = stack.view(cfg.n_layers, cfg.n_heads, *stack.shape[1:]).clone()
            for l in range(cfg.n_layers):
                w = next(iter(model.blocks[l].ln1_post.parameters())).detach()
                w = (1.0 + w) if getattr(cfg, "rmsnorm_uses_offset", False) else w
                stack[l] = stack[l] * w / cache[f"blocks.{l}.ln1_post.hook_scale"][:, -1][None]
            stack = stack.flatten(0, 1)
        scaled = cache.apply_ln_to_stack(stack, layer=-1, pos_slice=-1)
        dirs = model.tokens_to_residual_directions(a) - model.tokens_to_residual_directions(f)
        return (scaled * dirs).sum(-1).mean(-1).view(cfg.n_layers, cfg.n_heads).cpu()
    return b.meter.timed(work)


def head_attr_mi(b: Bench, pairs):
    import torch
    from mi_dsl.analyses.registry import REGISTRY

    ctx = b.context(pairs, "head_attr")
    _, params = b.analysis("head_attr")
    impl = REGISTRY["head_attribution"].implementation()
    seconds, result = b.meter.timed(lambda: impl.compute(params, ctx))
    return seconds, torch.tensor(result.data["per_head"])


def head_attr_bare(last_only: bool):
    def method(b: Bench, pairs):
        toks = b.tokens(pairs, "clean")
        return b.meter.timed(lambda: (bare_forwards(b, toks, len(pairs), last_only), None)[1])
    return method


# --------------------------------------------------------------------------- items: patching


def _z(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def patch_seed(by_position: bool):
    """A full clean cache; one run_with_hooks forward of the corrupted batch per patched cell.
    Only the first k layers' cells may be timed (see loop_layers)."""
    def method(b: Bench, pairs):
        import torch

        model, cfg = b.model, b.model.cfg
        H = cfg.n_heads
        L = loop_layers(b, by_position)

        def work():
            clean, corr = b.tokens(pairs, "clean"), b.tokens(pairs, "corrupted")
            a, f = b.answers(pairs)
            _, cache = model.run_with_cache(clean)
            P = clean.shape[1]
            out = torch.empty(L, H, P) if by_position else torch.empty(L, H)
            for l in range(L):
                source = cache[_z(l)]
                for h in range(H):
                    for p in (range(P) if by_position else [None]):
                        def hook(z, hook, h=h, p=p):
                            if p is None:
                                z[:, :, h] = source[:, :, h]
                            else:
                                z[:, p, h] = source[:, p, h]
                            return z
                        value = logit_diff(model.run_with_hooks(corr, fwd_hooks=[(_z(l), hook)]), a, f).mean()
                        out[(l, h) if p is None else (l, h, p)] = value.item()
            return out
        return b.meter.timed(work)
    return method


def loop_layers(b: Bench, by_position: bool) -> int:
    """Layers a per-cell loop (seed, TL) is timed on; sets the scale (n_layers / k) and its note."""
    n_layers = b.model.cfg.n_layers
    k = min(b.loop_layers.get("patch_z_pos" if by_position else "patch_z") or n_layers, n_layers)
    if k < n_layers:
        b.pending_scale = (n_layers / k, f"timed on the first {k} of {n_layers} layers' cells, "
                                         f"scaled x{n_layers / k:.2f}")
    return k


def patch_tl(by_position: bool):
    """transformer_lens.patching.get_act_patch_attn_head_out_all_pos / _by_pos (as peer_patching.py).
    On fewer layers (loop_layers): the same function given an index_df of those layers' cells."""
    def method(b: Bench, pairs):
        tlp = quiet_tl()
        fn = tlp.get_act_patch_attn_head_out_by_pos if by_position else tlp.get_act_patch_attn_head_out_all_pos
        k, H = loop_layers(b, by_position), b.model.cfg.n_heads
        P = len(pairs[0].clean.ids)
        kw = {}
        if k < b.model.cfg.n_layers:
            import itertools
            import pandas as pd

            axes = (range(k), range(P), range(H)) if by_position else (range(k), range(H))
            kw = {"index_axis_names": None, "index_df": pd.DataFrame(
                list(itertools.product(*axes)), columns=["layer", "pos", "head"][:len(axes)] if by_position
                else ["layer", "head"])}

        def work():
            clean, corr = b.tokens(pairs, "clean"), b.tokens(pairs, "corrupted")
            a, f = b.answers(pairs)
            _, cache = b.model.run_with_cache(clean, names_filter=lambda n: n.endswith("attn.hook_z"))
            out = fn(b.model, corr, cache, lambda logits: logit_diff(logits, a, f).mean(), **kw)
            if by_position:  # [L, pos, H] -> [L, H, pos]
                out = out.view(k, P, H).permute(0, 2, 1)
            else:
                out = out.view(k, H)
            return out.float().cpu()
        return b.meter.timed(work)
    return method


def patch_mi(analysis_id: str):
    def method(b: Bench, pairs):
        import torch
        from mi_dsl.analyses.registry import REGISTRY

        ctx = b.context(pairs, analysis_id)
        _, params = b.analysis(analysis_id)
        params.pop("compare_with", None)  # the harness compares attribution with exact itself
        impl = REGISTRY[params["kind"]].implementation()
        seconds, result = b.meter.timed(lambda: impl.compute(params, ctx))
        b.mi_results[analysis_id] = result.data
        return seconds, torch.tensor(result.data["values"], dtype=torch.float32)
    return method


def patch_bare(by_position: bool, last_only: bool):
    """(cells + 1) x n bare HF forward rows: every patched run plus the clean source run."""
    def method(b: Bench, pairs):
        cfg = b.model.cfg
        toks = b.tokens(pairs, "corrupted")
        cells = cfg.n_layers * cfg.n_heads * (toks.shape[1] if by_position else 1)
        return b.meter.timed(lambda: (bare_forwards(b, toks, (cells + 1) * len(pairs), last_only), None)[1])
    return method


def attrib_mi(b: Bench, pairs):
    import torch

    seconds, _ = patch_mi("attrib_z")(b, pairs)
    return seconds, torch.tensor(b.mi_results["attrib_z"]["normalized"], dtype=torch.float32)


# --------------------------------------------------------------------------- running an item


METHOD_TABLE = {
    "filter": {"seed": filter_seed, "tl": filter_tl, "mi": filter_mi, "bare_last": filter_bare(True),
               "bare_full": filter_bare(False)},
    "head_attr": {"seed": head_attr_seed, "mi": head_attr_mi, "bare_last": head_attr_bare(True),
                  "bare_full": head_attr_bare(False)},
    "patch_z": {"seed": patch_seed(False), "tl": patch_tl(False), "mi": patch_mi("patch_z"),
                "bare_last": patch_bare(False, True), "bare_full": patch_bare(False, False)},
    "patch_z_pos": {"seed": patch_seed(True), "tl": patch_tl(True), "mi": patch_mi("patch_z_pos"),
                    "bare_last": patch_bare(True, True), "bare_full": patch_bare(True, False)},
    "attrib": {"mi": attrib_mi},
}


# Per-cell loops run tens to hundreds of forwards of shapes earlier items already ran: no warm-up.
NO_WARMUP = {("patch_z", "seed"), ("patch_z", "tl"), ("patch_z_pos", "seed"), ("patch_z_pos", "tl")}


def run_item(item: str, b: Bench, pairs, args, subsets=None) -> dict:
    """Every method of `item` on `pairs`: a warm-up on one pair, then one timed run.

    `subsets[method] = k` times that method on the first k pairs and scales the time by n/k
    (each pair is independent work of the same shape)."""
    subsets = subsets or {}
    out = {"n_pairs": len(pairs), "prompt_len": len(pairs[0].clean.ids), "methods": {}}
    numbers = {}
    for name, method in METHOD_TABLE[item].items():
        if skipped(args, item, b.key, name):
            out["methods"][name] = {"skipped": "--skip"}
            continue
        k = min(subsets.get(name, len(pairs)), len(pairs))
        if (item, name) not in NO_WARMUP:
            log(f"{b.key} {item} {name}: warm-up ...")
            method(b, pairs[:1])
        rss_before = b.meter.resident_mb()
        b.pending_scale = None
        seconds, value = method(b, pairs[:k])
        scale, notes = len(pairs) / k, []
        if k < len(pairs):
            notes.append(f"timed on {k} of {len(pairs)} pairs, scaled x{scale:.2f}")
        if b.pending_scale:
            scale *= b.pending_scale[0]
            notes.append(b.pending_scale[1])
        record = {"seconds": round(seconds * scale, 4), "cpu_seconds": round(b.meter.last_cpu_seconds * scale, 3),
                  "peak_mb": round(b.meter.last_peak_mb, 1), "resident_before_mb": round(rss_before, 1)}
        if notes:
            record["scaled"] = True
            record["note"] = "; ".join(notes)
        if (item, name) in NO_WARMUP:
            record["warm_up"] = "none (a per-cell loop of many forwards; the bridge ran these shapes before)"
        log(f"{b.key} {item} {name}: {record['seconds']:.3f}s" + (f" ({record['note']})" if notes else ""))
        out["methods"][name] = record
        if value is not None:
            numbers[name] = value
    out["ratios"] = ratios(out["methods"])
    out["ratios_cpu_time"] = ratios(out["methods"], "cpu_seconds")
    out["loadavg_after"] = _loadavg()
    return out, numbers


def ratios(methods: dict, field: str = "seconds") -> dict:
    t = {k: v[field] for k, v in methods.items() if field in v}
    r = {}
    if "mi" in t:
        for bound in ("bare_last", "bare_full"):
            if bound in t:
                r[f"mi/{bound}"] = round(t["mi"] / t[bound], 3)
        if "seed" in t:
            r["seed/mi"] = round(t["seed"] / t["mi"], 2)
        if "tl" in t:
            r["tl/mi"] = round(t["tl"] / t["mi"], 2)
    return r


def agreement(numbers: dict, reference: str = "mi", rel: float = 1e-3, scale_from=None) -> dict:
    """Largest |difference| of each method's numbers from the reference's, on the rows both have."""
    if reference not in numbers:
        return {"checked": False, "why": f"no {reference} numbers"}
    ref = numbers[reference]
    scale = float(scale_from if scale_from is not None else ref.abs().max())
    tol = rel * max(scale, 1.0) if scale_from is None else rel * scale
    out = {"reference": reference, "tolerance": tol, "max_abs_diff": {}}
    for name, value in numbers.items():
        if name == reference:
            continue
        other = ref[tuple(slice(0, s) for s in value.shape)]  # a method timed on a subset
        out["max_abs_diff"][name] = float((value - other).abs().max())
    out["agree"] = all(v <= tol for v in out["max_abs_diff"].values())
    return out


# --------------------------------------------------------------------------- items on one model


def pick_pairs(pairs, n: int, seed: int = 0):
    return pairs if n is None or n >= len(pairs) else random.Random(seed).sample(list(pairs), n)


def bench_model(key: str, items, args, sizes, device_name, meter) -> dict:
    b = open_bench(key, args, sizes, device_name, meter)
    b.loop_layers = {"patch_z": sizes["gemma_loop_layers"] if key == "gemma" else None,
                     "patch_z_pos": sizes["pos_layers"]}
    cfg = b.model.cfg
    res = {"model": b.loaded.info, "load_seconds": b.loaded.info.get("load_seconds"),
           "resident_mb": round(meter.resident_mb(), 1), "items": {}}
    log(f"{key}: {len(b.dataset.pairs)} candidates; L={cfg.n_layers} H={cfg.n_heads} d={cfg.d_model}")
    gemma = key == "gemma"
    candidates = pick_pairs(b.dataset.pairs, sizes["gemma_filter_n"] if gemma else sizes["filter_n"])
    if "filter" in items:
        r, numbers = run_item("filter", b, candidates, args,
                              {"seed": sizes["gemma_seed_filter_n" if gemma else "seed_filter_n"]})
        r["kept"] = getattr(b, "filter_kept", None)
        r["agreement"] = agreement(numbers)
        res["items"]["filter"] = r
    # Final pairs: ones the keep-condition passes (for Gemma: pairs the model solves), sampled.
    kept = filter_kept_pairs(b, candidates)
    n = sizes["gemma_n"] if gemma else sizes["n"]
    pairs = pick_pairs(kept, n)
    res["final_pairs"] = {"from": len(kept), "n": len(pairs)}
    if "head_attr" in items:
        r, numbers = run_item("head_attr", b, pairs, args)
        r["agreement"] = agreement(numbers)
        res["items"]["head_attr"] = r
    if "patch_z" in items:
        r, numbers = run_item("patch_z", b, pairs, args)
        r["agreement"] = patch_agreement(numbers, b, "patch_z")
        res["items"]["patch_z"] = r
    n_pos = sizes["gemma_n_pos"] if gemma else sizes["n_pos"]
    if "patch_z_pos" in items and n_pos:
        pos_pairs = pick_pairs(pairs, n_pos)
        r, numbers = run_item("patch_z_pos", b, pos_pairs, args)
        r["agreement"] = patch_agreement(numbers, b, "patch_z_pos")
        res["items"]["patch_z_pos"] = r
    if "attrib" in items:
        res["items"]["attrib"] = attrib_item(b, pairs, args, res["items"].get("patch_z"))
    res["mi_forward_passes"] = b.executor.forwards
    del b
    return res


def filter_kept_pairs(b: Bench, candidates):
    """The candidates the spec's keep-condition passes (run once more if the filter item did not run)."""
    from mi_dsl.errors import MiError
    from mi_dsl.runtime.pipeline import run_pipeline

    try:
        outcome = run_pipeline(b.plan, b.spec, dataclasses.replace(b.dataset, pairs=list(candidates)),
                               b.executor, b.unembed)
    except MiError:
        return list(candidates)
    return outcome.pairs if len(outcome.pairs) >= 2 else list(candidates)


def patch_agreement(numbers: dict, b: Bench, analysis_id: str) -> dict:
    """Exact methods must agree to 1% of the largest patch effect (the metric moves little on
    random weights, so a tolerance relative to the metric itself would be vacuous)."""
    if "mi" not in numbers:
        return {"checked": False}
    base = b.mi_results[analysis_id]["baselines"]["corrupted"]
    effect = float((numbers["mi"] - base).abs().max())
    out = agreement(numbers, rel=0.01, scale_from=max(effect, 1e-6))
    out["max_patch_effect"] = effect
    return out


def attrib_item(b: Bench, pairs, args, patch_item) -> dict:
    """Attribution patching vs exact patching of z (mi-dsl both); Spearman over the cells."""
    from mi_dsl.analyses import patching_core as core
    import torch

    if patch_item is None or "seconds" not in patch_item["methods"].get("mi", {}):
        patch_mi("patch_z")(b, pairs[:2])  # warm-up
        seconds, _ = patch_mi("patch_z")(b, pairs)
        patch_item = {"methods": {"mi": {"seconds": round(seconds, 4), "peak_mb": round(b.meter.last_peak_mb, 1)}}}
    r, numbers = run_item("attrib", b, pairs, args)
    exact = torch.tensor(b.mi_results["patch_z"]["normalized"], dtype=torch.float32).flatten()
    approx = numbers["mi"].flatten()
    t_exact = patch_item["methods"]["mi"]["seconds"]
    t_attr = r["methods"]["mi"]["seconds"]
    r["methods"]["exact_mi"] = dict(patch_item["methods"]["mi"], note="activation_patching z (patch_z item)")
    if "tl" in patch_item["methods"] and "seconds" in patch_item["methods"]["tl"]:
        r["methods"]["exact_tl"] = dict(patch_item["methods"]["tl"], note="TL all_pos (patch_z item)")
    r["ratios"] = {"exact_mi/attrib": round(t_exact / t_attr, 2)}
    if "exact_tl" in r["methods"]:
        r["ratios"]["exact_tl/attrib"] = round(r["methods"]["exact_tl"]["seconds"] / t_attr, 2)
    r["agreement"] = {"spearman": core.spearman(approx, exact),
                      "pearson": float(torch.corrcoef(torch.stack([approx, exact]))[0, 1]),
                      "max_abs_diff_normalized": float((approx - exact).abs().max()),
                      "cells": int(exact.numel())}
    r["agreement"]["agree"] = r["agreement"]["spearman"] >= GOALS["attrib_spearman"]
    return r


# --------------------------------------------------------------------------- subprocess items


PROBE = r"""
import json, sys, time
import torch
from mi_dsl.spec.model import ModelSpec
from mi_dsl.runtime.models import load_model
imported = time.time()
loaded = load_model(ModelSpec(source="embedded", device=sys.argv[1]))
tokens = loaded.bridge.to_tokens("All birds are endothermic. Cows are birds. Therefore, cows are")
with torch.no_grad():
    logits = loaded.bridge(tokens)
if loaded.device.type == "cuda":
    torch.cuda.synchronize()
print(json.dumps({"first_forward_at": time.time(), "imported_at": imported, "load_seconds": loaded.info["load_seconds"],
                  "cached": loaded.info["cached"], "processed_cached": loaded.info["processed_cached"]}))
"""


def child_env(threads=None) -> dict:
    """The environment of a subprocess: the harness's thread count, when it set one."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def start_probe(device_name: str, cache_dir: str = None, threads=None) -> dict:
    env = child_env(threads)
    if cache_dir:
        env["MI_DSL_CACHE"] = cache_dir
    launched = time.time()
    proc = subprocess.run([sys.executable, "-c", PROBE, device_name], capture_output=True, text=True, env=env,
                          cwd=str(ROOT))
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"launch_to_first_forward_s": round(info["first_forward_at"] - launched, 2),
            "launch_to_imports_done_s": round(info["imported_at"] - launched, 2),
            "load_model_s": info["load_seconds"], "weights_cached": info["cached"],
            "processed_cached": info["processed_cached"]}


def start_item(args, device_name: str, threads=None) -> dict:
    out = {}
    if args.cold_start:
        with tempfile.TemporaryDirectory(prefix="mi-dsl-cold-") as empty:
            log("start: cold (empty MI_DSL_CACHE) ...")
            out["cold"] = start_probe(device_name, empty, threads)
    for run in ("first_run", "second_run"):
        log(f"start: cached, {run} ...")
        out[run] = start_probe(device_name, threads=threads)
    return out


def spec_item(device_name: str, threads=None) -> dict:
    """specs/syllogism.yaml end to end through `mi-run --fresh` in a fresh process."""
    with tempfile.TemporaryDirectory(prefix="mi-dsl-bench-runs-") as runs:
        cmd = [sys.executable, "-c", "import sys; from mi_dsl.cli import main; sys.exit(main())",
               "run", "specs/syllogism.yaml", "--fresh", "--quiet", "--out", runs, "--set", f"model.device={device_name}"]
        log("spec: " + " ".join(cmd[3:]))
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT), env=child_env(threads))
        wall = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if proc.returncode != 0:
            return {"error": (proc.stderr or proc.stdout).strip()[-2000:], "wall_seconds": round(wall, 1)}
        found = sorted(Path(runs).glob("*/*/results.json"))
        results = json.loads(found[-1].read_text())
    t = results["timings"]
    return {"command": "mi-run specs/syllogism.yaml --fresh", "wall_seconds": round(wall, 1),
            "timings": {k: round(v, 2) for k, v in t.items()}, "peak_rss_children_mb": round(peak, 1),
            "dataset": {"candidates": results["dataset"]["candidates"],
                        "stages": [(s["step"], s["before"], s["after"]) for s in results["dataset"]["stages"]]},
            "forward_passes": results.get("forward_passes"), "baselines": results.get("baselines"),
            "head_attr_top": [h["head"] for h in results["analyses"]["head_attr"]["top"][:5]],
            "attribution_vs_exact": spec_comparisons(results["analyses"]),
            "agreement": {"agree": bool(results["analyses"]) and not proc.returncode,
                          "checked": "run finished, all analyses present: "
                                     + ", ".join(results["analyses"])}}


def spec_comparisons(analyses: dict) -> dict:
    """The spec's own attribution-vs-exact comparisons (attribution_patching with compare_with)."""
    out = {}
    for name, a in analyses.items():
        c = a.get("comparison") if a.get("kind") == "attribution_patching" else None
        if not c:
            continue
        exact = analyses.get(c["with"], {})
        out[name] = {"with": c["with"], "spearman": c.get("spearman"), "pearson": c.get("pearson"),
                     "cells": c.get("cells"), "attribution_seconds": a.get("seconds"),
                     "attribution_prompts": a.get("prompts"), "exact_seconds": exact.get("seconds"),
                     "exact_prompts": exact.get("prompts")}
    return out


# --------------------------------------------------------------------------- environment, goals, report


def environment(device) -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__,
           "transformers": _version("transformers"), "transformer_lens": _version("transformer-lens"),
           "mi_dsl": _version("mi-dsl"), "platform": platform.platform()}
    if device.type == "cuda":
        env["device"] = torch.cuda.get_device_name(device)
    else:
        cpu = "unknown CPU"
        try:
            cpu = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text()).group(1).strip()
        except (OSError, AttributeError):
            pass
        env["device"] = f"CPU: {cpu}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}"
    env["loadavg_start"] = _loadavg()
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                           text=True, cwd=str(ROOT)).stdout.strip()
    except OSError:
        pass
    return env


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001
        return "?"


def goals(out: dict, cuda: bool) -> list:
    rows = []

    def add(goal, value, ok, where):
        rows.append({"goal": goal, "value": value, "met": ok, "where": where})

    for key, m in out["models"].items():
        items = m.get("items", {})
        f = items.get("filter", {}).get("ratios", {})
        if "mi/bare_last" in f:
            add(f"filter <= {GOALS['filter_vs_bare']}x bare batched forward", f"{f['mi/bare_last']:.2f}x "
                f"(vs full logits {f.get('mi/bare_full', float('nan')):.2f}x)",
                f["mi/bare_last"] <= GOALS["filter_vs_bare"], key)
        p = items.get("patch_z", {}).get("ratios", {})
        if "mi/bare_last" in p:
            add(f"all-heads z patching <= {GOALS['patch_z_vs_bare']}x bare-equivalent forwards",
                f"{p['mi/bare_last']:.2f}x (vs full logits {p.get('mi/bare_full', float('nan')):.2f}x)",
                p["mi/bare_last"] <= GOALS["patch_z_vs_bare"], key)
        a = items.get("attrib")
        if a:
            sp = a["agreement"]["spearman"]
            speed = a["ratios"]["exact_mi/attrib"]
            add(f"attribution >= {GOALS['attrib_speedup']:.0f}x faster than exact all-heads patching "
                f"({'goal on Gemma' if key == 'gemma' else 'for reference'})",
                f"{speed:.1f}x", speed >= GOALS["attrib_speedup"], key)
            add(f"attribution vs exact Spearman >= {GOALS['attrib_spearman']}"
                f" ({'goal on Gemma' if key == 'gemma' else 'for reference'})", f"{sp:.3f}",
                sp >= GOALS["attrib_spearman"], key)
    s = out.get("spec")
    for name, c in ((s or {}).get("attribution_vs_exact") or {}).items():
        if c.get("spearman") is not None:
            add(f"attribution vs exact Spearman >= {GOALS['attrib_spearman']} (the spec's {name} vs {c['with']}, "
                f"{c['cells']} cells; exact on {c['exact_prompts']} pairs, attribution on {c['attribution_prompts']})",
                f"{c['spearman']:.3f}", c["spearman"] >= GOALS["attrib_spearman"], "gemma")
    if s and "wall_seconds" in s and not cuda:
        add(f"CPU whole syllogism spec <= {GOALS['spec_cpu_seconds']:.0f} s", f"{s['wall_seconds']:.0f} s",
            s["wall_seconds"] <= GOALS["spec_cpu_seconds"], "gemma")
    st = (out.get("start") or {}).get("second_run")
    if st and "launch_to_first_forward_s" in st:
        add(f"second run's first forward <= {GOALS['cached_start_seconds']:.0f} s after launch",
            f"{st['launch_to_first_forward_s']:.1f} s", st["launch_to_first_forward_s"] <= GOALS["cached_start_seconds"],
            "gemma")
    return rows


def markdown(out: dict) -> str:
    env = out["environment"]
    lines = [f"# mi-dsl benchmark, {out['date']}", "",
             f"- device: {env['device']}; threads: {out['threads']['torch']} ({out['threads']['why']})",
             f"- load average (1/5/15 min): start {env['loadavg_start']}, end {env.get('loadavg_end')}",
             f"- versions: torch {env['torch']}, transformers {env['transformers']}, transformer-lens "
             f"{env['transformer_lens']}, python {env['python']}",
             f"- command: `{out['command'].strip()}`", f"- sizes: {json.dumps(out['sizes'])}",
             f"- harness wall time: {out.get('wall_seconds', 0):.0f} s", ""]
    if out["models"]:
        lines += ["Seconds per method (one timed run after a warm-up; `*` = timed on a subset and scaled). "
                  "bare_last = bare HF forwards with logits_to_keep=1, bare_full = with all logits. "
                  "Peak memory = CUDA max_memory_allocated, or on CPU the process's peak RSS during the method "
                  "(model weights included).", "",
                  "| model | item | pairs | seed | TL | mi-dsl | bare_last | bare_full | mi/bare_last | mi/bare_full "
                  "| seed/mi | TL/mi | mi peak MB | agree |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, m in out["models"].items():
        for item, r in m.get("items", {}).items():
            meth = r["methods"]
            cell = lambda k: ("-" if k not in meth or "seconds" not in meth[k]  # noqa: E731
                              else f"{meth[k]['seconds']:.2f}{'*' if meth[k].get('scaled') else ''}")
            ra = r.get("ratios", {})
            g = lambda k: f"{ra[k]:.2f}" if k in ra else "-"  # noqa: E731
            ag = r.get("agreement", {})
            if item == "attrib":
                verdict = f"Spearman {ag['spearman']:.3f}, Pearson {ag['pearson']:.3f}"
                lines.append(f"| {key} | attrib vs exact | {r['n_pairs']} | - | {cell('exact_tl')} (exact TL) | "
                             f"{cell('mi')} (exact {cell('exact_mi')}) | - | - | exact/attrib "
                             f"{ra['exact_mi/attrib']:.1f}x | - | - | - | {meth['mi'].get('peak_mb', '-')} | {verdict} |")
                continue
            verdict = ("yes" if ag.get("agree") else "NO") + (
                f" (max diff {max(ag['max_abs_diff'].values()):.1e} <= {ag['tolerance']:.1e})"
                if ag.get("max_abs_diff") else "")
            lines.append(f"| {key} | {item} | {r['n_pairs']} | {cell('seed')} | {cell('tl')} | {cell('mi')} | "
                         f"{cell('bare_last')} | {cell('bare_full')} | {g('mi/bare_last')} | {g('mi/bare_full')} | "
                         f"{g('seed/mi')} | {g('tl/mi')} | {meth.get('mi', {}).get('peak_mb', '-')} | {verdict} |")
    s = out.get("spec")
    if s:
        if "timings" in s:
            t = s["timings"]
            parts = ", ".join(f"{k} {v:.1f}" for k, v in t.items() if k not in ("total",))
            lines += ["", f"Whole spec (`{s['command']}`, a fresh process): **{s['wall_seconds']:.0f} s** wall; "
                      f"peak RSS {s['peak_rss_children_mb']:.0f} MB; stages {s['dataset']['stages']}; timings (s): "
                      f"{parts}."]
            for name, c in (s.get("attribution_vs_exact") or {}).items():
                lines.append(f"The spec's {name} vs {c['with']}: Spearman {c['spearman']:.3f}, Pearson "
                             f"{c['pearson']:.3f} over {c['cells']} cells; attribution {c['attribution_seconds']} s on "
                             f"{c['attribution_prompts']} pairs, exact {c['exact_seconds']} s on {c['exact_prompts']} pairs.")
        else:
            lines += ["", f"Whole spec failed: {s.get('error')}"]
    st = out.get("start")
    if st:
        lines += ["", "Model start (python launch -> first forward of the embedded Gemma-3-270m): "
                  + "; ".join(f"{k}: {v.get('launch_to_first_forward_s', v.get('error'))} s (load_model "
                              f"{v.get('load_model_s')} s, weights cached {v.get('weights_cached')})"
                              for k, v in st.items())]
    lines += ["", "| goal | model | value | met |", "|---|---|---|---|"]
    lines += [f"| {g['goal']} | {g['where']} | {g['value']} | {'yes' if g['met'] else 'NO'} |" for g in out["goals"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    import torch

    device_name = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device_name)
    cuda = device.type == "cuda"
    threads, why = choose_threads(args, cuda)
    if threads:
        torch.set_num_threads(threads)
    sizes = resolve_sizes(args, cuda)
    items = [i.strip() for i in args.items.split(",") if i.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for i in items:
        if i not in ITEMS:
            sys.exit(f"unknown item {i!r}; choose from {ITEMS}")
    out = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
           "threads": {"torch": torch.get_num_threads(), "why": why},
           "command": "python benchmarks/harness.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "sizes": sizes, "environment": environment(device), "goals_asked": GOALS, "models": {}}
    log(f"device {out['environment']['device']}; load average {out['environment']['loadavg_start']}")
    meter = Meter(device)
    out["peak_memory_method"] = ("torch.cuda.max_memory_allocated, reset per method" if cuda else
                                 "peak RSS (getrusage ru_maxrss), " + ("reset per method via /proc/self/clear_refs"
                                                                       if meter.can_reset_rss else
                                                                       "process high-water mark (could not reset)"))
    if "start" in items:
        out["start"] = start_item(args, device_name, threads)
    model_items = [i for i in items if i not in ("start", "spec")]
    if model_items:
        for key in models:
            out["models"][key] = bench_model(key, model_items, args, sizes, device_name, meter)
            import gc
            gc.collect()
    if "spec" in items:
        out["spec"] = spec_item(device_name, threads)
    out["environment"]["loadavg_end"] = _loadavg()
    out["wall_seconds"] = round(time.perf_counter() - started, 1)
    out["goals"] = goals(out, cuda)
    write(out, args, cuda)
    return 0


def choose_threads(args, cuda: bool):
    """(torch threads or None, why). On a CPU that other jobs are using (1-minute load average
    >= 1), two OpenMP threads on two cores stall each other at every barrier; one thread was
    5-15x faster on the development machine. Subprocesses get the same via OMP_NUM_THREADS."""
    if args.threads:
        return args.threads, "--threads"
    if cuda:
        return None, "torch default (GPU run)"
    load = (_loadavg() or [0.0])[0]
    if load >= 1.0:
        return 1, f"load average {load:.2f} >= 1 at start: other jobs share the CPU, one thread avoids " \
                  "OpenMP oversubscription (set --threads to override)"
    return None, f"torch default (load average {load:.2f} < 1 at start)"


def write(out: dict, args, cuda: bool) -> None:
    folder = Path(args.out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stem = args.tag or f"{'gpu' if cuda else 'cpu'}-{datetime.date.today().isoformat()}"
    (folder / f"{stem}.json").write_text(json.dumps(out, indent=1, default=str) + "\n")
    text = markdown(out)
    (folder / f"{stem}.md").write_text(text)
    print(text)
    log(f"wrote {folder / stem}.json and .md")


if __name__ == "__main__":
    sys.exit(main())
