"""DAS at one site of the embedded Gemma-3-270m on 256 examples: wall-clock, and the plan's estimate.

    python benchmarks/das_gemma.py [--examples 256] [--epochs 4] [--over candidates|vocabulary] [--model NAME]

The IOI task of specs/ioi_causal.yaml (its causal model: `io`, the indirect object's name), sources
drawn from the other prompts (two other names), one DAS dimension for `io` at the residual stream
entering layer 9 at the final position. Every epoch runs (patience = epochs), so the plan's
estimate (causal/cost.py, which assumes all epochs) and the measurement describe the same work.
Timed: the interchange analysis's whole compute (source captures, training, scoring), after the
model is loaded and the dataset built, as wall-clock and as this process's CPU time (on the shared
2-core development machine other sessions take most of a core: the CPU time is what one unloaded
thread would take, and what the plan's estimate is calibrated against). Issue 23's goal: <= 60 s on
the 2-core development CPU (one thread). The site (L9, the final position) is mid-depth, chosen
for its cost, not its IIA: the name reaches the final position only from L14 (specs/ioi_causal.yaml).
Writes benchmarks/results/das-<device>-<date>.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

SPEC = """\
version: 1
name: das_benchmark
seed: 0
model: {{source: embedded, name: {model}, prepend_bos: true}}
vocabularies:
  names: {{items: [Mary, John, Alice, Bob, Tom, James, Sarah, Anna, David, Lisa], filter: 'ntokens(" " + item) == 1'}}
  places: {{items: [store, park, school]}}
  things: {{items: [drink, book, ball]}}
prompts:
  template: "When {{a}} and {{b}} went to the {{place}}, {{s}} gave a {{thing}} to"
  slots: {{a: names, b: names, s: names, place: places, thing: things}}
  where: 'a != b and (s == a or s == b)'
  answer: 'first_token(" " + (b if s == a else a))'
  foil: 'first_token(" " + s)'
metric: logit_diff
pipeline:
  - sample: {{n: {examples}, seed: 0}}
causal_model:
  variables:
    io_first: 's == b'
    io: 'a if io_first else b'
  output: 'first_token(" " + io)'
analyses:
  - kind: interchange
    id: das
    variables: [io]
    source: {{where: 'source.a != base.a and source.a != base.b and source.b != base.a and source.b != base.b'}}
    layers: [{layer}]
    positions: [final]
    featurizer: das
    dims: 1
    iia_over: {over}
    training: {{epochs: {epochs}, patience: {epochs}, batch_size: 32}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--layer", type=int, default=9)
    parser.add_argument("--over", default="candidates", choices=["candidates", "vocabulary"])
    parser.add_argument("--model", default="gemma-3-270m")
    args = parser.parse_args()

    import torch

    from mi_dsl.compile import prepare
    from mi_dsl.compile.summary import plan_summary
    from mi_dsl.runtime.run import Session
    from mi_dsl.runtime.threads import apply_threads

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "das.yaml"
        path.write_text(SPEC.format(model=args.model, examples=args.examples, layer=args.layer, over=args.over,
                                    epochs=args.epochs))
        prepared = prepare(str(path))
        threads = apply_threads(None, "cpu")
        estimate = plan_summary(prepared)["training"]["das"]
        session = Session.of(prepared, progress=False)
        session.open()
        with torch.no_grad():
            pairs = session.run_pipeline().pairs
        run = session.context_for(pairs, index=0)
        started, cpu_started = time.perf_counter(), time.process_time()
        with torch.no_grad():
            result = session.compute_analysis("das", run)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    data = result.data
    curve = data["training"][0]
    out = {"date": date.today().isoformat(), "machine": platform.machine(), "threads": threads,
           "model": args.model, "examples": data["examples"], "train": data["split"]["train"],
           "validation": data["split"]["validation"], "test": data["split"]["test"], "epochs": curve["epochs_run"],
           "steps": curve["steps"], "iia_over": args.over, "layer": args.layer,
           "seconds_total": round(seconds, 2), "cpu_seconds_total": round(cpu_seconds, 2),
           "seconds_training": curve["seconds"], "load_average": os.getloadavg()[0],
           "estimate_seconds": round(estimate["seconds"], 2), "estimate_memory_gb": round(estimate["memory_gb"], 3),
           "wall_over_estimate": round(seconds / estimate["seconds"], 3),
           "cpu_over_estimate": round(cpu_seconds / estimate["seconds"], 3),
           "test_iia": data["iia"]["io"]["resid_pre"][0][0], "goal_seconds": 60, "goal_met_wall": seconds <= 60,
           "goal_met_cpu": cpu_seconds <= 60}
    results = Path(__file__).resolve().parent / "results"
    stem = f"das-cpu-{args.model}-{out['date']}"
    (results / f"{stem}.json").write_text(json.dumps(out, indent=1) + "\n")
    lines = [f"# DAS at one site ({args.model}, {args.examples} prompt pairs, layer {args.layer}, final position)", "",
             "Shared 2-core CPU, one thread: other sessions ran at the same time; treat the seconds as noisy.", "",
             "| key | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in out.items()]
    (results / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
