"""Items that run in a fresh process: the start (launch -> first forward) and the whole spec."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .options import ROOT, log

PROBE = r"""
import json, sys, time
import torch
from mi_dsl.spec.model import ModelSpec
from mi_dsl.models import load_model
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
    """specs/syllogism.yaml end to end through `mi-run --fresh` in a fresh process; its peak RSS
    is measured alone (a wrapper process reports its own child's ru_maxrss)."""
    with tempfile.TemporaryDirectory(prefix="mi-dsl-bench-runs-") as runs:
        argv = ["run", "specs/syllogism.yaml", "--fresh", "--quiet", "--out", runs,
                "--set", f"model.device={device_name}"] + (["--threads", str(threads)] if threads else [])
        wrapper = ("import json, resource, subprocess, sys; "
                   "rc = subprocess.call([sys.executable, '-m', 'mi_dsl.cli'] + sys.argv[1:]); "
                   "print(json.dumps({'rc': rc, 'peak_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss "
                   "/ 1024}), file=sys.stderr)")
        log("spec: mi-run " + " ".join(argv))
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", wrapper] + argv, capture_output=True, text=True,
                              cwd=str(ROOT), env=child_env(threads))
        wall = time.perf_counter() - started
        tail = proc.stderr.strip().splitlines()
        peak = json.loads(tail[-1])["peak_mb"] if tail and tail[-1].startswith("{") else None
        found = sorted(Path(runs).glob("*/*/results.json"))
        if proc.returncode != 0 or not found:
            return {"error": (proc.stderr or proc.stdout).strip()[-2000:], "wall_seconds": round(wall, 1)}
        results = json.loads(found[-1].read_text())
    t = results["timings"]
    return {"command": "mi-run " + " ".join(argv[:3]), "wall_seconds": round(wall, 1),
            "timings": {k: round(v, 2) for k, v in t.items()},
            "peak_rss_mb": round(peak, 1) if peak is not None else None,
            "threads": results.get("threads"), "shared_passes": results.get("shared_passes"),
            "dataset": {"candidates": results["dataset"]["candidates"],
                        "stages": [(s["step"], s["before"], s["after"]) for s in results["dataset"]["stages"]]},
            "forward_passes": results.get("forward_passes"), "baselines": results.get("baselines"),
            "head_attr_top": [h["head"] for h in results["analyses"]["head_attr"]["top"][:5]],
            "prefix_reuse": {n: a["passes"] for n, a in results["analyses"].items() if "prefix_reuse" in
                             a.get("passes", {})},
            "attribution_vs_exact": spec_comparisons(results["analyses"]),
            "agreement": {"agree": bool(results["analyses"]),
                          "checked": "run finished, all analyses present: " + ", ".join(results["analyses"])}}


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
