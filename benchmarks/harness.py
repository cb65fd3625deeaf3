"""mi-dsl performance harness: the same work done several ways, on one device, in one run.

Ways ("methods"), each a function returning (seconds, numbers):
  seed      the seed notebook's imperative style: one prompt at a time with a full activation
            cache (filter), a full cache + TransformerLens cache arithmetic (head attribution),
            one run_with_hooks forward per patched cell (patching)
  tl        TransformerLens itself: batched bridge forwards (filter) and
            transformer_lens.patching.get_act_patch_attn_head_out_all_pos / _by_pos (patching)
  mi        mi-dsl through its own entry points: compile.prepare, then a runtime Session
            (run_pipeline for the filter, context_for + compute_analysis for the analyses);
            the whole spec through `mi-run` in a fresh process
  mi_full   the residual patching analysis with prefix_reuse: false (every block recomputed)
  bare      bare batched Hugging Face forwards of the same tokens (the lower bound):
            bare_last with logits_to_keep=1, bare_full with every position's logits

Items: start, filter, head_attr, patch_z, patch_z_pos, patch_resid, attrib, threads, spec.
Models: a Pythia-shaped random GPT-NeoX with the real Pythia tokenizer ("pythia") and the
embedded Gemma-3-270m ("gemma"). The parts live in benchmarks/mibench/.

    python benchmarks/harness.py                     # CPU defaults (about 15 minutes on 2 cores)
    python benchmarks/harness.py --quick             # smoke sizes, a minute or two
    python benchmarks/harness.py --device cuda --models pythia \
        --items filter,head_attr,patch_z,patch_z_pos,patch_resid,attrib   # GPU (pythia-160m)

Writes benchmarks/results/<cpu|gpu>-<date>.json and .md (--out-dir moves them).
"""
from __future__ import annotations

import datetime
import gc
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))          # mibench
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))      # mi_dsl, when not installed

from mibench.items import bench_model  # noqa: E402
from mibench.measure import Meter, loadavg  # noqa: E402
from mibench.options import GOALS, ITEMS, log, parse_args, resolve_sizes  # noqa: E402
from mibench.processes import spec_item, start_item  # noqa: E402
from mibench.report import environment, goals, write  # noqa: E402


def main(argv=None) -> int:
    args = parse_args(argv, __doc__)
    started = time.perf_counter()
    os.environ.setdefault("TQDM_DISABLE", "1")  # TransformerLens's patching loops draw progress bars
    import torch

    from mi_dsl.runtime.threads import apply_threads

    device_name = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device_name)
    cuda = device.type == "cuda"
    threads = apply_threads(args.threads, device.type)  # mi-dsl's policy, as `mi-run` applies it
    sizes = resolve_sizes(args, cuda)
    items = [i.strip() for i in args.items.split(",") if i.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [i for i in items if i not in ITEMS]
    if unknown:
        sys.exit(f"unknown item {unknown[0]!r}; choose from {ITEMS}")
    out = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "threads": threads,
           "command": "python benchmarks/harness.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "sizes": sizes, "environment": environment(device), "goals_asked": GOALS, "models": {}}
    log(f"device {out['environment']['device']}; load average {out['environment']['loadavg_start']}; "
        f"threads {threads}")
    meter = Meter(device)
    out["peak_memory_method"] = ("torch.cuda.max_memory_allocated, reset per method" if cuda else
                                 "peak RSS (getrusage ru_maxrss), " + ("reset per method via /proc/self/clear_refs"
                                                                       if meter.can_reset_rss else
                                                                       "process high-water mark (could not reset)"))
    child_threads = threads["threads"] if threads["reason"] != "GPU run: torch's default CPU threads" else None
    if "start" in items:
        out["start"] = start_item(args, device_name, child_threads)
    model_items = [i for i in items if i not in ("start", "spec")]
    for key in models if model_items else []:
        out["models"][key] = bench_model(key, model_items, args, sizes, device_name, meter, args.threads)
        gc.collect()
    if "spec" in items:
        out["spec"] = spec_item(device_name, args.threads)
    out["environment"]["loadavg_end"] = loadavg()
    out["wall_seconds"] = round(time.perf_counter() - started, 1)
    out["goals"] = goals(out, cuda)
    write(out, args, cuda)
    return 0


if __name__ == "__main__":
    sys.exit(main())
