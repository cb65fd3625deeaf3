"""Command-line options, per-device sizes and the goals the results are judged against."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]          # benchmarks/
ROOT = HERE.parent
TOKENIZER_CANDIDATES = [ROOT / "shared" / "tokenizers" / "pythia" / "20B_tokenizer.json",
                        Path("/work/shared/tokenizers/pythia/20B_tokenizer.json")]
ITEMS = ["start", "filter", "head_attr", "patch_z", "patch_z_pos", "patch_resid", "attrib", "threads", "spec"]
MODELS = ["pythia", "gemma"]

# Issue 13's goals (ratios measured in one run), and issue 9's that still hold.
GOALS = {"filter_vs_bare": 0.9, "patch_z_vs_bare": 0.7, "resid_reuse_vs_full": 0.5, "attrib_speedup": 20.0,
         "attrib_spearman": 0.9, "spec_cpu_seconds": 120.0, "spec_peak_rss_mb": 4096.0,
         "cached_start_seconds": 5.0, "gpu_seed_work_seconds": 3.0}

# Sizes: option -> (CPU default, GPU default, --quick), help. None = everything / all layers.
SIZES = {
    "size": (("small", "pythia-160m", "tiny"), "Pythia-shaped random model: tiny, small (4 layers x 8 heads), "
                                               "pythia-70m, pythia-160m"),
    "n": ((16, 124, 4), "prompt pairs for Pythia-shaped head attribution, all-heads patching, attribution"),
    "n_pos": ((4, 32, 1), "prompt pairs for Pythia-shaped by-position and residual patching"),
    "filter_n": ((720, None, 64), "candidate pairs in the Pythia-shaped filter item (None: all 1440)"),
    "seed_filter_n": ((128, 256, 4), "pairs the one-prompt-at-a-time seed filter is timed on (scaled)"),
    "pos_layers": ((1, 3, 1), "layers whose cells the per-cell by-position loops (seed, TL) are timed on, "
                              "scaled to all layers (mi-dsl and bare always do every layer)"),
    "gemma_n": ((8, 64, 2), "prompt pairs for Gemma head attribution, all-heads patching, attribution"),
    "gemma_n_pos": ((0, 8, 0), "prompt pairs for Gemma by-position and residual patching (0: leave them out)"),
    "gemma_filter_n": ((64, None, 8), "candidate pairs in the Gemma filter item (None: all 1134)"),
    "gemma_seed_filter_n": ((8, 128, 2), "pairs the seed filter is timed on for Gemma (scaled)"),
    "gemma_loop_layers": ((3, None, 2), "layers whose cells the per-cell loops (seed, TL) of Gemma's "
                                        "all-heads patching are timed on, scaled to all 18"),
}


def log(*parts):
    print("[bench]", *parts, file=sys.stderr, flush=True)


def parse_args(argv=None, doc: str = ""):
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    ap.add_argument("--pythia-spec", default=str(HERE / "specs" / "pythia_shaped.yaml"),
                    help="the Pythia-shaped bench spec (the smoke test passes a tiny one)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: mi-dsl's policy, mi_dsl/runtime/threads.py)")
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    ap.add_argument("--tag", default=None, help="file name stem (default <cpu|gpu>-<date>)")
    args = ap.parse_args(argv)
    if args.quick and args.items == ",".join(ITEMS):
        args.items = ",".join(i for i in ITEMS if i not in ("spec", "start"))
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


def find_tokenizer(args) -> str:
    if args.tokenizer:
        return args.tokenizer
    for path in TOKENIZER_CANDIDATES:
        if path.is_file():
            return str(path)
    sys.exit(f"Pythia's 20B_tokenizer.json not found; pass --tokenizer (looked in {TOKENIZER_CANDIDATES})")
