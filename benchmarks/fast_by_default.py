"""Issue 26 ("fast by default"): every goal as a ratio to bare Hugging Face forwards measured in
the same run, plus the absolute times, each marked met / not met.

    python benchmarks/fast_by_default.py                 # everything (about 30 minutes on 2 shared cores)
    python benchmarks/fast_by_default.py --items threads,start
    python benchmarks/fast_by_default.py --quick         # smoke: threads and the bare unit only

Items (each in fresh processes where it says so, so nothing is warm that a user's run would not be):
  bare     the unit: bare batched HF forwards (logits_to_keep=1, no hooks, a plain transformers copy of
           the converted weights) of specs/syllogism.yaml's distinct candidate prompts, at the thread
           count mi-dsl's policy picks now
  threads  the thread policy: two short runs back to back (each records its choice and why), then one
           beside a process that keeps one core busy; the same forwards timed with 1 and 2 threads there
  cold     the README's first command with an empty MI_DSL_CACHE (conversion included): wall, peak RSS of
           the process tree; then two such runs at once on another empty cache: conversions and peak RSS
  start    launch -> first forward, twice with a warm cache (the second is the goal's)
  spec     `mi-run specs/syllogism.yaml --fresh` (the policy's threads): wall, CPU, peak RSS, each step,
           and the keep-condition stage against the bare forwards of its prompts
  resid    the spec's residual patching with prefix and key/value reuse vs every block and position
           recomputed, in one process (issue 13's 0.5x goal), and the largest difference
The machine is shared: the load average is recorded next to every number (1-minute), and every
absolute time says under which load it was taken.

Writes benchmarks/results/issue26-<cpu>-<date>.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.sampling import load, run_sampled  # noqa: E402  (measuring a command)
from benchmarks.fast_by_default_goals import SPEC, goals, markdown  # noqa: E402  (the verdicts and the table)
ITEMS = ["bare", "threads", "cold", "start", "spec", "resid"]


def log(message: str) -> None:
    print(f"[issue26 {time.strftime('%H:%M:%S')} load {load()}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- processes


def mi_run(args, cache=None, threads=None) -> list:
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)  # the policy decides, as for a user who sets nothing
    if cache:
        env["MI_DSL_CACHE"] = cache
    return [sys.executable, "-m", "mi_dsl.cli", "run"] + args + (["--threads", str(threads)] if threads else []), env


def results_of(folder: Path) -> dict:
    found = sorted(folder.glob("*/*/results.json"))
    return json.loads(found[-1].read_text()) if found else {}


# --------------------------------------------------------------------------- the bare unit


def candidate_prompts():
    from mi_dsl.compile import prepare

    prepared = prepare(str(ROOT / SPEC), [], [])
    unique = list(dict.fromkeys(tuple(ids) for p in prepared.dataset.pairs for ids in (p.clean.ids, p.corrupted.ids)))
    return prepared, unique


def bare_seconds(prompts, threads: int, batch: int = 64) -> dict:
    """Bare HF forwards of `prompts` (one length) at `threads`, logits of the last position only."""
    import torch
    from transformers import AutoModelForCausalLM

    from mi_dsl.models import cache
    from mi_dsl.models.embedded import embedded_package

    folder = cache.entry(None, "models", cache.digest("embedded", embedded_package().EXPECTED_SHA256))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    tokens = torch.tensor(prompts)
    try:
        with torch.no_grad():
            model(tokens[:2], logits_to_keep=1)  # warm-up
            start, cpu = time.perf_counter(), time.process_time()
            for i in range(0, len(tokens), batch):
                model(tokens[i:i + batch], logits_to_keep=1)
            return {"prompts": len(prompts), "threads": threads, "wall_s": round(time.perf_counter() - start, 2),
                    "cpu_s": round(time.process_time() - cpu, 2), "load": load()}
    finally:
        torch.set_num_threads(before)


def item_bare(out: dict, quick: bool) -> None:
    from mi_dsl.runtime.threads import choose_threads

    _, prompts = candidate_prompts()
    prompts = prompts[:128] if quick else prompts
    choice = choose_threads(None, "cpu")
    log(f"bare: {len(prompts)} forwards at the policy's {choice['threads']} threads ({choice['reason']})")
    out["bare"] = dict(bare_seconds(prompts, int(choice["threads"])), policy=choice)


# --------------------------------------------------------------------------- threads


SHORT = ["specs/tutorial.yaml", "--fresh", "--quiet"]


def item_threads(out: dict, quick: bool) -> None:
    from mi_dsl.runtime.threads import CpuSample, cores_available

    rows = []
    with tempfile.TemporaryDirectory(prefix="issue26-threads-") as runs:
        for label in ("first", "back to back"):
            argv, env = mi_run(SHORT + ["--out", runs])
            log(f"threads: {label} run")
            r = run_sampled(argv, env)
            rows.append({"run": label, "threads": results_of(Path(runs)).get("threads"), "wall_s": r["wall_s"],
                         "load_before": r["load_before"]})
            for child in Path(runs).glob("*/*"):
                subprocess.run(["rm", "-rf", str(child)])
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(1.0)
            sample = CpuSample.now()
            time.sleep(1.0)
            busy = sample.others()
            argv, env = mi_run(SHORT + ["--out", runs])
            log("threads: beside one busy process")
            r = run_sampled(argv, env)
            rows.append({"run": "beside one busy process", "threads": results_of(Path(runs)).get("threads"),
                         "wall_s": r["wall_s"], "load_before": r["load_before"],
                         "others_measured_before_s": round(busy, 2) if busy is not None else None})
            if not quick and cores_available() > 1:
                _, prompts = candidate_prompts()
                rows.append({"run": "bare forwards beside the busy process, by threads",
                             "by_threads": {n: bare_seconds(prompts[:256], n) for n in (1, cores_available())}})
        finally:
            spinner.kill()
            spinner.wait()
    out["threads"] = {"cores": cores_available(), "runs": rows}


# --------------------------------------------------------------------------- cold start and start


def item_cold(out: dict, quick: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="issue26-cold-", dir=str(Path.home())) as scratch:
        argv, env = mi_run([SPEC, "--out", f"{scratch}/runs"], cache=f"{scratch}/cache")
        log("cold: the README's first command on an empty cache")
        alone = run_sampled(argv, env)
        res = results_of(Path(scratch) / "runs")
        out["cold"] = {"alone": {k: alone[k] for k in ("rc", "wall_s", "cpu_s", "peak_rss_gb", "load_before",
                                                         "load_after")},
                       "converted": sum("converting" in line for line in alone["output"]),
                       "timings": {k: round(v, 1) for k, v in (res.get("timings") or {}).items()},
                       "threads": res.get("threads")}
        if quick:
            return
        runs = []
        log("cold: two runs at once on another empty cache")
        shared = f"{scratch}/cache2"
        threads_out = [None, None]

        def one(i):
            argv, env = mi_run(["specs/tutorial.yaml", "--fresh", "--out", f"{scratch}/runs{i}"], cache=shared)
            threads_out[i] = run_sampled(argv, env)
        workers = [threading.Thread(target=one, args=(i,)) for i in range(2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        for r in threads_out:
            runs.append({"rc": r["rc"], "wall_s": r["wall_s"], "peak_rss_gb": r["peak_rss_gb"],
                         "converted": sum("converting" in line for line in r["output"]),
                         "processed": sum("processing weights" in line for line in r["output"]),
                         "waited": sum("waiting for another" in line for line in r["output"])})
        out["cold"]["concurrent"] = runs


# As a run (runtime/run.py execute) does it: the front end, then the model's load with the collector
# paused until it is ready, then the first forward.
START = r"""
import json, sys, time
from mi_dsl.compile import prepare
from mi_dsl.models.environment import collector_paused
from mi_dsl.runtime.run import Session
p = prepare("specs/tutorial.yaml", [], [])
s = Session.of(p, progress=False)
with collector_paused() as loaded:
    s.open()
    loaded()
    import torch
    with torch.no_grad():
        s.executor.capture(torch.tensor([p.dataset.pairs[0].clean.ids]), {}, stop_after="unembed.hook_in")
    at = time.time()
print(json.dumps({"at": at, "model_load": s.timings["model_load"], "threads": s.thread_choice}))
"""


def item_start(out: dict, quick: bool) -> None:
    runs = []
    for label in ("first", "second"):
        env = dict(os.environ)
        env.pop("OMP_NUM_THREADS", None)
        before, launched = load(), time.time()
        proc = subprocess.run([sys.executable, "-c", START], cwd=str(ROOT), env=env, capture_output=True, text=True)
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        runs.append({"run": label, "launch_to_first_forward_s": round(info["at"] - launched, 2),
                     "model_load_s": round(info["model_load"], 2), "threads": info["threads"].get("in_effect"),
                     "load_before": before})
        log(f"start: {runs[-1]}")
    out["start"] = runs


# --------------------------------------------------------------------------- the whole spec


def item_spec(out: dict, quick: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="issue26-spec-") as runs:
        argv, env = mi_run([SPEC, "--fresh", "--quiet", "--out", runs])
        log("spec: " + " ".join(argv[2:]))
        r = run_sampled(argv, env)
        res = results_of(Path(runs))
        # the same spec again: every step stored, as for a user who regenerates a report
        argv, env = mi_run([SPEC, "--quiet", "--out", runs])
        before, started = load(), time.perf_counter()
        again = subprocess.run(argv, env=env, cwd=str(ROOT), capture_output=True, text=True)
        wall = time.perf_counter() - started
        stored = results_of(Path(runs))
    out["stored_rerun"] = {"rc": again.returncode, "wall_s": round(wall, 2), "load_before": before,
                           "store": stored.get("store"),
                           "model_loaded": ((stored.get("provenance") or {}).get("model") or {}).get("loaded", True)}
    log(f"stored rerun: {out['stored_rerun']}")
    analyses = res.get("analyses", {})
    out["spec"] = {k: r[k] for k in ("rc", "wall_s", "cpu_s", "peak_rss_gb", "load_before", "load_after")}
    out["spec"].update(timings={k: round(v, 1) for k, v in (res.get("timings") or {}).items()},
                       threads=res.get("threads"), summary={k: a.get("summary") for k, a in analyses.items()},
                       patch_resid=(analyses.get("patch_resid") or {}).get("passes"),
                       patch_heads=(analyses.get("patch_heads") or {}).get("passes"))


def item_resid(out: dict, quick: bool) -> None:
    """specs/syllogism.yaml's patch_resid (layer x position: descriptor, noun#2, final) with prefix and
    key/value reuse, then with every block and position recomputed, in one process."""
    import torch

    from mi_dsl.compile import prepare
    from mi_dsl.runtime.run import Session
    from mi_dsl.runtime.store import StepStore

    pairs = 2 if quick else 8
    prepared = prepare(str(ROOT / SPEC), [f"analyses.7.max_pairs={pairs}"], [])
    session = Session.of(prepared, progress=False, say=lambda m: None)
    session.open()
    with tempfile.TemporaryDirectory() as scratch:
        session.dataset_step(StepStore(Path(scratch), enabled=False))
    index = next(i for i, s in enumerate(prepared.plan.analyses) if s.id == "patch_resid")
    step = prepared.plan.analyses[index]
    times, grids = {}, {}
    for reuse in (True, False):
        params = step.params.replace(prefix_reuse=reuse)
        context = session.context_for(session.pairs[:pairs], session._baselines(pairs), index, {})
        from mi_dsl.analyses.registry import REGISTRY

        started = time.perf_counter()
        with torch.no_grad():
            result = REGISTRY["activation_patching"].implementation().compute(params, context)
        times[reuse] = time.perf_counter() - started
        grids[reuse] = (torch.tensor(_flat(result.data["normalized"]), dtype=torch.float64), result.data["passes"])
        log(f"resid: prefix and key/value reuse {reuse}: {times[reuse]:.1f} s")
    diff = float((grids[True][0] - grids[False][0]).nan_to_num().abs().max())
    out["resid"] = {"pairs": pairs, "reuse_s": round(times[True], 2), "full_s": round(times[False], 2),
                    "ratio": round(times[True] / times[False], 3), "max_abs_diff": diff, "passes": grids[True][1],
                    "load": load()}


def _flat(value) -> list:
    if isinstance(value, list):
        return [x for v in value for x in _flat(v)]
    return [float("nan") if value is None else float(value)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", default=",".join(ITEMS))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    items = ["bare", "threads"] if args.quick else [i for i in args.items.split(",") if i]
    import platform

    out = {"date": time.strftime("%Y-%m-%dT%H:%M:%S"),
           "command": "python benchmarks/fast_by_default.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores",
           "load_start": [round(x, 2) for x in os.getloadavg()]}
    for item in items:
        globals()[f"item_{item}"](out, args.quick)
    out["load_end"] = [round(x, 2) for x in os.getloadavg()]
    out["goals"] = goals(out)
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    stem = Path(args.out_dir) / f"issue26-cpu-{date.today()}{'-quick' if args.quick else ''}"
    stem.with_suffix(".json").write_text(json.dumps(out, indent=1, default=str))
    stem.with_suffix(".md").write_text(markdown(out))
    print(markdown(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
