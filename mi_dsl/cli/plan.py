"""`mi-run plan SPEC [--json]`: the compiled dataset and plan."""
from __future__ import annotations

import json
from typing import Any, Dict, Optional

from ..compile import prepare
from ..compile.summary import plan_summary
from ._echo import echo


def show_plan(spec_path: str, overrides, allow_paths, as_json: bool = False, examples: int = 3,
              metrics: bool = False, csv_path: Optional[str] = None, limits=None) -> int:
    from ..models.gguf_job import conversion_progress
    from ..runtime.run import progress_printer

    with conversion_progress(progress_printer(True)):  # a first use converts a GGUF's tokenizer (stderr)
        prepared = prepare(spec_path, overrides, allow_paths, limits=limits)
    summary = plan_summary(prepared, examples)
    explored = _explore(prepared, csv_path) if metrics else None
    if as_json:
        print(json.dumps({**summary, "candidate_metrics": explored} if explored else summary, indent=1))
        return 0
    _print_plan(summary)
    if explored:
        _print_metrics(explored, csv_path)
    return 0


def _explore(prepared, csv_path) -> Dict[str, Any]:
    """`--metrics`: load the model and measure every candidate (runtime/explore.py)."""
    from ..runtime.explore import candidate_metrics

    explored = candidate_metrics(prepared, progress=False)
    if csv_path:
        import csv

        with open(csv_path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(explored["rows"][0]))
            writer.writeheader()
            writer.writerows(explored["rows"])
    return {k: v for k, v in explored.items() if k != "columns"} | {"histograms": {
        k: v for k, v in explored["columns"].items()}}


def _print_metrics(explored: Dict[str, Any], csv_path) -> None:
    from ..runtime.explore import histogram

    echo(f"\ncandidates' metrics ({len(explored['rows'])} pairs, before any pipeline step):")
    for name, q in explored["metrics"].items():
        echo(f"  {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in q.items()))
        for line in histogram(explored["histograms"][name]):
            echo(line)
    for k in explored["keep"]:
        echo(f"keep step {k['step']} ({k['condition']}) alone keeps {k['kept']} of {k['of']} candidates")
    if csv_path:
        echo(f"every candidate's metrics: {csv_path}")


def _print_plan(s: Dict[str, Any]) -> None:
    echo(f"spec {s['spec']}  (name {s['name']}, hash {s['spec_hash']})")
    echo(f"model: {s['model']['source']} {s['model']['name'] or s['model']['path'] or ''}  "
          f"tokenizer: {s['tokenizer']}  prepend_bos: {s['model']['prepend_bos']}")
    if s["vocab"]:
        echo("\nvocabularies (before -> after filter):")
    for name, v in s["vocab"].items():
        dropped = (f"  dropped: {', '.join(v['dropped'][:8])}{' ...' if len(v['dropped']) > 8 else ''}"
                   if v["dropped"] else "")
        echo(f"  {name:<16} {v['before']:>4} -> {v['after']:<4}{dropped}")
    d = s["dataset"]
    echo(f"\ndataset: {d['candidates']} candidate prompts; token lengths {d['token_lengths']} (BOS included)")
    echo("slot positions (token indices, BOS = 0): " + ", ".join(
        f"{k} {_at(v)}" for k, v in d["slot_positions"].items()))
    echo("pipeline:")
    for row in s["pipeline"]:
        echo(f"  - {row['description']}  -> {row['prompts_after']}")
    echo(f"metric: {s['metric']}")
    if s["analyses"]:
        echo("analyses:")
        for a in s["analyses"]:
            deps = f" (after {', '.join(a['depends_on'])})" if a["depends_on"] else ""
            echo(f"  - {a['id']} [{a['kind']}]: {a['description']}{deps}; hooks {', '.join(a['hooks']) or '-'}")
            shown = {k: v for k, v in a["params"].items() if k not in ("kind", "id")}
            if shown:  # as compiled: defaults filled
                echo("      params: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in shown.items()))
    if any(h.endswith("?") for a in s["analyses"] for h in a["hooks"]):
        echo("  (a hook ending in '?' exists on some architectures only, e.g. Gemma's norm after attention; "
             "it is read where the model has it)")
    if s["passes"]:
        echo("shared passes (one sweep of the prompts serves several analyses' final-position captures):")
        for p in s["passes"]:
            prompts = f"first {p['max_pairs']} " if p["max_pairs"] else ""
            echo(f"  - {p['id']}: {prompts}{p['prompts']} prompts -> {', '.join(p['analyses'])}; "
                 f"hooks {', '.join(p['hooks'])}")
            if p.get("patterns"):
                echo("    it also keeps every head's attention pattern at every position: the attention analyses "
                     "read them from the run's pattern cache")
            if p.get("keys_values"):
                echo("    it also keeps every layer's keys and values: a rerun with a late intervention (ablation) "
                     "runs only the positions from it on")
    _print_memory(s["memory"])
    _print_cost(s["cost"])
    for analysis_id, t in s.get("training", {}).items():
        echo(f"training (estimate) {analysis_id}: ~{t['seconds']:.0f} s on this CPU, {_size(t['memory_gb'])} "
             f"({t['examples']} examples x {t['tokens']} tokens, layers {t['layers']}; {t['note']})")
    echo("examples (token by token, @i = token index, BOS = 0):")
    for ex, view in zip(d["examples"], d["pair_views"]):
        echo(f"  clean:     {ex['clean']}\n             {_tokens(view['clean_tokens'])}\n"
             f"  corrupted: {ex['corrupted']}\n             {_tokens(view['corrupted_tokens'])}\n"
             f"  answer{_kind(ex)} {ex['answer'][0]} {ex['answer'][1]!r}  foil {ex['foil'][0]} {ex['foil'][1]!r}")
        if view["spans"]:
            echo("  spans:     " + "; ".join(f"{name} {_at(s['clean'])} / {_at(s['corrupted'])}"
                                           for name, s in view["spans"].items()) + "  (clean / corrupted)")
        for step_id, rows in view["aligned"].items():
            echo(f"  {step_id} patches: " + "; ".join(f"{r['position']} clean @{','.join(map(str, r['clean']))} -> "
                                                     f"corrupted @{','.join(map(str, r['corrupted']))}" for r in rows))
    for w in s["warnings"]:
        echo(w)


def _print_memory(m: Dict[str, Any]) -> None:
    if "parameters" not in m:
        echo(f"memory: {m['note']}")
        return
    per_device = f" ({m['weights_gb_per_device']:.2f} GB on each of {m['devices']} devices)" if m["devices"] > 1 else ""
    echo(f"memory (estimate): weights {m['parameters'] / 1e6:.1f}M parameters in {m['dtype']} = "
         f"{_size(m['weights_gb'])}{per_device}; activations {_size(m['activations_gb_per_batch'])} per batch of "
         f"{m['batch_rows']} prompts x {m['max_tokens']} tokens (sizes from {m['sizes_from']})")
    if "backward" in m:
        b = m["backward"]
        echo(f"  with a backward ({', '.join(b['analyses'])}): every block's activations kept, "
             f"{_size(b['activations_gb_per_batch'])} per batch of {b['batch_rows']} prompts")


def _print_cost(c: Dict[str, Any]) -> None:
    """Per analysis: cells, rows (patched, backward), tokens, peak memory per batch and time."""
    from ..compile.cost import describe_seconds

    bound = "" if c["exact"] else f" (upper bounds: the pipeline keeps at most {c['pairs_bound']} pairs)"
    echo(f"cost before compute{bound}; time from {c['rate']}:")
    for r in c.get("pipeline", []):
        time = f", ~{describe_seconds(r['seconds'])}" if "seconds" in r else ""
        echo(f"  - {r['id']} [keep]: {r['forward_rows']:,} forward rows x {r['tokens_per_row']} tokens, "
             f"{r['forward_tokens']:,} tokens run{time} ({r['note']})")
    for r in c["analyses"]:
        if "forward_rows" not in r:
            echo(f"  - {r['id']} [{r['kind']}]: {r['note']}")
            continue
        parts = [f"{r['cells']:,} cells" if r["cells"] else "cells counted when the model loads",
                 f"{r['forward_rows']:,} forward rows x {r['tokens_per_row']} tokens"]
        if r["patched_rows"]:
            parts.append(f"{r['patched_rows']:,} patched")
        if r["backward_rows"]:
            parts.append(f"{r['backward_rows']:,} backward rows")
        if "batch_gb" in r:
            fits = "" if r["fits"] else f" -- ONE ROW IS OVER THE {r['budget_gb']:g} GB BATCH BUDGET: refused"
            parts.append(f"{_size(r['batch_gb'])} per batch of {r['batch_rows']} rows{fits}")
        if "seconds" in r:
            parts.append(f"~{describe_seconds(r['seconds'])}")
        note = f" ({r['note']})" if r["note"] else ""
        echo(f"  - {r['id']} [{r['kind']}]: {', '.join(parts)}{note}")
    if c["analyses"] or c.get("pipeline"):
        over = c["seconds"] > 60 * c["max_minutes"]
        echo(f"  total ~{describe_seconds(c['seconds'])}"
             + (f": over {c['max_minutes']:g} min, so `mi-run` asks for --yes (or run.max_cost: MINUTES)"
                if over else ""))


def _size(gb: float) -> str:
    """GB to two places, or MB where that would read 0.00 GB."""
    return f"{gb:.2f} GB" if gb >= 0.01 else f"{gb * 1024:.1f} MB"


def _at(spans) -> str:
    """Token indices [[4, 5], [10]] as '@4,5 @10' (the report's notation)."""
    if isinstance(spans, str):
        return spans
    return " ".join("@" + ",".join(map(str, s)) for s in spans) or "-"


def _tokens(tokens) -> str:
    return " ".join(f"{i}:{t!r}" for i, t in enumerate(tokens))


def _kind(example) -> str:
    """Continuations are ordered tokens; a list without the word is a token set."""
    return " (continuation, in order)" if example.get("continuation") else ""
