"""Running an item's methods (warm-up, timing, scaling), checking they agree, and the items
of one model."""
from __future__ import annotations

import random

from .bench import Bench, open_bench
from .measure import loadavg
from .methods import METHOD_TABLE, NO_WARMUP, analysis_mi, filter_mi
from .options import GOALS, log, skipped


def run_item(item: str, b: Bench, pairs, args, subsets=None):
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
            record.update(scaled=True, note="; ".join(notes))
        if (item, name) in NO_WARMUP:
            record["warm_up"] = "none (a per-cell loop of many forwards; the bridge ran these shapes before)"
        log(f"{b.key} {item} {name}: {record['seconds']:.3f}s" + (f" ({record['note']})" if notes else ""))
        out["methods"][name] = record
        if value is not None:
            numbers[name] = value
    out["ratios"] = ratios(out["methods"])
    out["ratios_cpu_time"] = ratios(out["methods"], "cpu_seconds")
    out["loadavg_after"] = loadavg()
    return out, numbers


def ratios(methods: dict, field: str = "seconds") -> dict:
    t = {k: v[field] for k, v in methods.items() if field in v}
    r = {}
    if "mi" in t:
        for other in ("bare_last", "bare_full", "mi_full"):
            if other in t:
                r[f"mi/{other}"] = round(t["mi"] / t[other], 3)
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


def patch_agreement(numbers: dict, b: Bench, analysis_id: str, rel: float = 0.01) -> dict:
    """Exact methods must agree to `rel` of the largest patch effect (the metric moves little on
    random weights, so a tolerance relative to the metric itself would be vacuous)."""
    if "mi" not in numbers:
        return {"checked": False}
    base = b.mi_results[analysis_id]["baselines"]["corrupted"]
    effect = float((numbers["mi"] - base).abs().max())
    out = agreement(numbers, rel=rel, scale_from=max(effect, 1e-6))
    out["max_patch_effect"] = effect
    return out


def pick_pairs(pairs, n: int, seed: int = 0):
    return pairs if n is None or n >= len(pairs) else random.Random(seed).sample(list(pairs), n)


def filter_kept_pairs(b: Bench, candidates):
    """The candidates the spec's keep-condition passes (Session.run_pipeline)."""
    from mi_dsl.errors import MiError

    try:
        outcome = b.session.run_pipeline(candidates)
    except MiError:
        return list(candidates)
    return outcome.pairs if len(outcome.pairs) >= 2 else list(candidates)


def attrib_item(b: Bench, pairs, args, patch_item) -> dict:
    """Attribution patching vs exact patching of z (mi-dsl both); Spearman over the cells."""
    import torch

    from mi_dsl.analyses._patching import spearman

    if patch_item is None or "seconds" not in patch_item["methods"].get("mi", {}):
        analysis_mi("patch_z", "values")(b, pairs[:2])  # warm-up
        seconds, _ = analysis_mi("patch_z", "values")(b, pairs)
        patch_item = {"methods": {"mi": {"seconds": round(seconds, 4), "peak_mb": round(b.meter.last_peak_mb, 1)}}}
    r, numbers = run_item("attrib", b, pairs, args)
    exact = torch.tensor(b.mi_results["patch_z"]["normalized"], dtype=torch.float32).flatten()
    approx = numbers["mi"].flatten()
    t_exact, t_attr = patch_item["methods"]["mi"]["seconds"], r["methods"]["mi"]["seconds"]
    r["methods"]["exact_mi"] = dict(patch_item["methods"]["mi"], note="activation_patching z (patch_z item)")
    if "seconds" in patch_item["methods"].get("tl", {}):
        r["methods"]["exact_tl"] = dict(patch_item["methods"]["tl"], note="TL all_pos (patch_z item)")
    r["ratios"] = {"exact_mi/attrib": round(t_exact / t_attr, 2)}
    if "exact_tl" in r["methods"]:
        r["ratios"]["exact_tl/attrib"] = round(r["methods"]["exact_tl"]["seconds"] / t_attr, 2)
    r["agreement"] = {"spearman": spearman(approx, exact),
                      "pearson": float(torch.corrcoef(torch.stack([approx, exact]))[0, 1]),
                      "max_abs_diff_normalized": float((approx - exact).abs().max()),
                      "cells": int(exact.numel())}
    r["agreement"]["agree"] = r["agreement"]["spearman"] >= GOALS["attrib_spearman"]
    return r


def threads_item(b: Bench, candidates) -> dict:
    """mi-dsl's filter with one thread and with every core (mi_dsl.runtime.threads), in turn."""
    import torch

    from mi_dsl.runtime.threads import apply_threads, cores_available

    before, out = torch.get_num_threads(), {"cores": cores_available(), "policy": b.session.thread_choice,
                                            "runs": {}}
    try:
        for n in sorted({1, cores_available()}):
            apply_threads(n, "cpu")
            filter_mi(b, candidates[:1])  # warm-up
            seconds, _ = filter_mi(b, candidates)
            out["runs"][str(n)] = {"seconds": round(seconds, 3), "cpu_seconds": round(b.meter.last_cpu_seconds, 3),
                                   "loadavg": loadavg()}
            log(f"{b.key} threads {n}: filter {seconds:.2f}s")
    finally:
        torch.set_num_threads(before)
    out["n_pairs"] = len(candidates)
    return out


def bench_model(key: str, items, args, sizes, device_name, meter, threads) -> dict:
    b = open_bench(key, args, sizes, device_name, meter, threads)
    b.loop_layers = {"patch_z": sizes["gemma_loop_layers"] if key == "gemma" else None,
                     "patch_z_pos": sizes["pos_layers"]}
    cfg = b.model.cfg
    res = {"model": b.loaded.info, "load_seconds": b.loaded.info.get("load_seconds"),
           "resident_mb": round(meter.resident_mb(), 1), "threads": b.session.thread_choice, "items": {}}
    log(f"{key}: {len(b.dataset.pairs)} candidates; L={cfg.n_layers} H={cfg.n_heads} d={cfg.d_model}")
    gemma = key == "gemma"
    candidates = pick_pairs(b.dataset.pairs, sizes["gemma_filter_n"] if gemma else sizes["filter_n"])
    if "filter" in items:
        r, numbers = run_item("filter", b, candidates, args,
                              {"seed": sizes["gemma_seed_filter_n" if gemma else "seed_filter_n"]})
        r["kept"] = b.filter_kept
        r["agreement"] = agreement(numbers)
        res["items"]["filter"] = r
    if "threads" in items and device_name == "cpu":
        res["items"]["threads"] = threads_item(b, candidates)
    # Final pairs: ones the keep-condition passes (for Gemma: pairs the model solves), sampled.
    kept = filter_kept_pairs(b, candidates)
    pairs = pick_pairs(kept, sizes["gemma_n"] if gemma else sizes["n"])
    res["final_pairs"] = {"from": len(kept), "n": len(pairs)}
    for item in ("head_attr", "patch_z"):
        if item in items:
            r, numbers = run_item(item, b, pairs, args)
            r["agreement"] = agreement(numbers) if item == "head_attr" else patch_agreement(numbers, b, item)
            res["items"][item] = r
    n_pos = sizes["gemma_n_pos"] if gemma else sizes["n_pos"]
    for item in ("patch_z_pos", "patch_resid"):
        if item in items and n_pos:
            r, numbers = run_item(item, b, pick_pairs(pairs, n_pos), args)
            # prefix reuse vs full recomputation: the same numbers, to 1e-5 of the largest effect
            r["agreement"] = patch_agreement(numbers, b, item, rel=1e-5 if item == "patch_resid" else 0.01)
            res["items"][item] = r
    if "attrib" in items:
        res["items"]["attrib"] = attrib_item(b, pairs, args, res["items"].get("patch_z"))
    res["mi_forward_passes"] = b.executor.forwards
    res["prefix_reuse"] = {a: b.mi_results[a]["passes"] for a in ("patch_z", "patch_z_pos", "patch_resid")
                           if a in b.mi_results and "passes" in b.mi_results[a]}
    return res
