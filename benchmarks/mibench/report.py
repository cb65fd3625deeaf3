"""The environment, the issue's goals (each with its measured value and met / not met), and
the markdown written beside the JSON."""
from __future__ import annotations

import datetime
import json
import os
import platform
import re
import subprocess
from pathlib import Path

from .measure import loadavg
from .options import GOALS, ROOT, log

# The GPU figure this session measured before prefix reuse (benchmarks/results/gpu-h200-2026-11-28.*).
H200_BEFORE = "6.37 s on an H200 (gpu-h200-2026-11-28-prefix; 9.6 s before prefix reuse)"
SEED_WORK = ("filter", "head_attr", "patch_z", "patch_z_pos", "attrib")


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
    env["loadavg_start"] = loadavg()
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                           text=True, cwd=str(ROOT)).stdout.strip()
    except OSError:
        pass
    return env


def _version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001
        return "?"


def goals(out: dict, cuda: bool) -> list:
    """Issue 13's goals: value and met (True, False, or None where this run cannot judge it)."""
    rows = []

    def add(goal, value, met, where):
        rows.append({"goal": goal, "value": value, "met": met, "where": where})

    for key, m in out["models"].items():
        items = m.get("items", {})
        f = items.get("filter", {}).get("ratios", {})
        if "mi/bare_last" in f:
            add(f"filter stage <= {GOALS['filter_vs_bare']}x bare batched forward (hold)",
                f"{f['mi/bare_last']:.2f}x", f["mi/bare_last"] <= GOALS["filter_vs_bare"], key)
        p = items.get("patch_z", {}).get("ratios", {})
        if "mi/bare_last" in p:
            add(f"all-heads z patching <= {GOALS['patch_z_vs_bare']}x the bare-equivalent forwards",
                f"{p['mi/bare_last']:.2f}x", p["mi/bare_last"] <= GOALS["patch_z_vs_bare"], key)
        r = items.get("patch_resid", {})
        if "mi/mi_full" in r.get("ratios", {}):
            ratio = r["ratios"]["mi/mi_full"]
            agree = r.get("agreement", {})
            add(f"layer x position residual patching <= {GOALS['resid_reuse_vs_full']}x the same cells "
                "recomputed in full", f"{ratio:.2f}x (same numbers: {'yes' if agree.get('agree') else 'NO'}, "
                f"max diff {max(agree.get('max_abs_diff', {}).values() or [float('nan')]):.1e})",
                ratio <= GOALS["resid_reuse_vs_full"], key)
        a = items.get("attrib")
        if a:
            add(f"attribution vs exact Spearman >= {GOALS['attrib_spearman']} (for reference)",
                f"{a['agreement']['spearman']:.3f}", a["agreement"]["spearman"] >= GOALS["attrib_spearman"], key)
        t = items.get("threads")
        if t and len(t["runs"]) > 1:
            one, many = t["runs"]["1"]["seconds"], t["runs"][str(t["cores"])]["seconds"]
            add("thread policy measured (filter: 1 thread vs every core; the policy chose "
                f"{t['policy'].get('in_effect')})", f"{one:.2f} s vs {many:.2f} s ({many / one:.2f}x)", None, key)
        if cuda and key == "pythia":
            seconds = [items[i]["methods"]["mi"]["seconds"] for i in SEED_WORK if i in items]
            if len(seconds) == len(SEED_WORK):
                add("GPU: the seed's whole work (mi-dsl, Pythia-shaped items) "
                    f"<= {GOALS['gpu_seed_work_seconds']:.0f} s",
                    f"{sum(seconds):.2f} s on {out['environment']['device']}",
                    sum(seconds) <= GOALS["gpu_seed_work_seconds"], key)
    if not cuda:
        add(f"GPU (H200): the seed's whole work <= {GOALS['gpu_seed_work_seconds']:.0f} s",
            "not measured in this CPU run; last measured " + H200_BEFORE, False, "pythia")
    _spec_goals(out.get("spec"), cuda, add)
    st = (out.get("start") or {}).get("second_run")
    if st and "launch_to_first_forward_s" in st:
        add(f"second run's first forward <= {GOALS['cached_start_seconds']:.0f} s after launch",
            f"{st['launch_to_first_forward_s']:.1f} s (imports {st.get('launch_to_imports_done_s')} s, "
            f"load_model {st.get('load_model_s')} s)",
            st["launch_to_first_forward_s"] <= GOALS["cached_start_seconds"], "gemma")
    return rows


def _spec_goals(s, cuda: bool, add) -> None:
    if not s:
        return
    if "wall_seconds" in s and "error" not in s and not cuda:
        add(f"CPU whole syllogism spec <= {GOALS['spec_cpu_seconds']:.0f} s (same numbers: the golden test)",
            f"{s['wall_seconds']:.0f} s", s["wall_seconds"] <= GOALS["spec_cpu_seconds"], "gemma")
    if s.get("peak_rss_mb"):
        add(f"peak RSS of the syllogism run <= {GOALS['spec_peak_rss_mb'] / 1024:.0f} GB",
            f"{s['peak_rss_mb'] / 1024:.2f} GB", s["peak_rss_mb"] <= GOALS["spec_peak_rss_mb"], "gemma")
    for p in s.get("shared_passes") or []:
        add("pass fusion: one sweep for the analyses sharing final-position captures",
            f"{p['id']}: {', '.join(p['analyses'])} in {p['forwards']} forwards", None, "gemma")
    for name, passes in (s.get("prefix_reuse") or {}).items():
        add(f"prefix reuse in the spec's {name} (block work saved)", f"{passes['block_work_saved']:.0%}", None,
            "gemma")
    for name, c in (s.get("attribution_vs_exact") or {}).items():
        if c.get("spearman") is not None:
            add(f"attribution vs exact Spearman >= {GOALS['attrib_spearman']} (the spec's {name} vs {c['with']})",
                f"{c['spearman']:.3f}", c["spearman"] >= GOALS["attrib_spearman"], "gemma")


def _verdict(met) -> str:
    return "n/a (measured)" if met is None else ("yes" if met else "NO")


def markdown(out: dict) -> str:
    env = out["environment"]
    lines = [f"# mi-dsl benchmark, {out['date']}", "",
             f"- device: {env['device']}; threads: {out['threads']}",
             f"- load average (1/5/15 min): start {env['loadavg_start']}, end {env.get('loadavg_end')}",
             f"- versions: torch {env['torch']}, transformers {env['transformers']}, transformer-lens "
             f"{env['transformer_lens']}, python {env['python']}; commit {env.get('git_commit')}",
             f"- command: `{out['command'].strip()}`", f"- sizes: {json.dumps(out['sizes'])}",
             f"- harness wall time: {out.get('wall_seconds', 0):.0f} s", ""]
    if out["models"]:
        lines += ["Seconds per method (one timed run after a warm-up; `*` = timed on a subset and scaled). "
                  "bare_last = bare HF forwards with logits_to_keep=1, bare_full = with all logits; mi_full = "
                  "mi-dsl with prefix_reuse: false. Peak memory = CUDA max_memory_allocated, or on CPU the "
                  "process's peak RSS during the method (model weights included).", "",
                  "| model | item | pairs | seed | TL | mi-dsl | mi_full | bare_last | bare_full | mi/bare_last "
                  "| mi/mi_full | seed/mi | TL/mi | mi peak MB | agree |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, m in out["models"].items():
        for item, r in m.get("items", {}).items():
            if item != "threads":
                lines.append(_item_row(key, item, r))
    lines += _spec_lines(out)
    lines += ["", "| goal | model | value | met |", "|---|---|---|---|"]
    lines += [f"| {g['goal']} | {g['where']} | {g['value']} | {_verdict(g['met'])} |" for g in out["goals"]]
    return "\n".join(lines) + "\n"


def _item_row(key: str, item: str, r: dict) -> str:
    meth, ra, ag = r["methods"], r.get("ratios", {}), r.get("agreement", {})

    def cell(k):
        if k not in meth or "seconds" not in meth[k]:
            return "-"
        return f"{meth[k]['seconds']:.2f}{'*' if meth[k].get('scaled') else ''}"

    def g(k):
        return f"{ra[k]:.2f}" if k in ra else "-"

    peak = meth.get("mi", {}).get("peak_mb", "-")
    if item == "attrib":
        verdict = f"Spearman {ag['spearman']:.3f}, Pearson {ag['pearson']:.3f}"
        return (f"| {key} | attrib vs exact | {r['n_pairs']} | - | {cell('exact_tl')} (exact TL) | {cell('mi')} "
                f"(exact {cell('exact_mi')}) | - | - | - | exact/attrib {ra['exact_mi/attrib']:.1f}x | - | - | - | "
                f"{peak} | {verdict} |")
    if ag.get("checked") is False:  # every method skipped (--skip) or no mi-dsl numbers
        return f"| {key} | {item} | {r['n_pairs']} | (skipped) |" + " - |" * 11
    verdict = ("yes" if ag.get("agree") else "NO") + (
        f" (max diff {max(ag['max_abs_diff'].values()):.1e} <= {ag['tolerance']:.1e})"
        if ag.get("max_abs_diff") else "")
    return (f"| {key} | {item} | {r['n_pairs']} | {cell('seed')} | {cell('tl')} | {cell('mi')} | "
            f"{cell('mi_full')} | {cell('bare_last')} | {cell('bare_full')} | "
            f"{g('mi/bare_last')} | {g('mi/mi_full')} | {g('seed/mi')} | "
            f"{g('tl/mi')} | {peak} | {verdict} |")


def _spec_lines(out: dict) -> list:
    lines = []
    s = out.get("spec")
    if s and "timings" in s:
        parts = ", ".join(f"{k} {v:.1f}" for k, v in s["timings"].items() if k != "total")
        lines += ["", f"Whole spec (`{s['command']}`, a fresh process): **{s['wall_seconds']:.0f} s** wall; "
                  f"peak RSS {s['peak_rss_mb']} MB; threads {s.get('threads')}; stages {s['dataset']['stages']}; "
                  f"timings (s): {parts}."]
    elif s:
        lines += ["", f"Whole spec failed: {s.get('error')}"]
    st = out.get("start")
    if st:
        lines += ["", "Model start (python launch -> first forward of the embedded Gemma-3-270m): "
                  + "; ".join(f"{k}: {v.get('launch_to_first_forward_s', v.get('error'))} s (imports "
                              f"{v.get('launch_to_imports_done_s')} s, load_model {v.get('load_model_s')} s)"
                              for k, v in st.items())]
    for key, m in out["models"].items():
        t = m.get("items", {}).get("threads")
        if t:
            lines += ["", f"Threads ({key}, filter of {t['n_pairs']} pairs): "
                      + "; ".join(f"{n} thread(s) {r['seconds']} s (load {r['loadavg']})" for n, r in t["runs"].items())
                      + f"; the policy chose {t['policy']}"]
    return lines


def write(out: dict, args, cuda: bool) -> None:
    folder = Path(args.out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stem = args.tag or f"{'gpu' if cuda else 'cpu'}-{datetime.date.today().isoformat()}"
    (folder / f"{stem}.json").write_text(json.dumps(out, indent=1, default=str) + "\n")
    text = markdown(out)
    (folder / f"{stem}.md").write_text(text)
    print(text)
    log(f"wrote {folder / stem}.json and .md")
