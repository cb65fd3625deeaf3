"""`mi-run plan SPEC [--json]`: the compiled dataset and plan."""
from __future__ import annotations

import json
from typing import Any, Dict

from ..compile import prepare
from ..compile.summary import plan_summary
from ._echo import echo


def show_plan(spec_path: str, overrides, allow_paths, as_json: bool = False, examples: int = 3) -> int:
    summary = plan_summary(prepare(spec_path, overrides, allow_paths), examples)
    if as_json:
        print(json.dumps(summary, indent=1))
        return 0
    _print_plan(summary)
    return 0


def _print_plan(s: Dict[str, Any]) -> None:
    echo(f"spec {s['spec']}  (name {s['name']}, hash {s['spec_hash']})")
    echo(f"model: {s['model']['source']} {s['model']['name'] or s['model']['path'] or ''}  "
          f"tokenizer: {s['tokenizer']}  prepend_bos: {s['model']['prepend_bos']}")
    echo("\nvocabularies (before -> after filter):")
    for name, v in s["vocab"].items():
        dropped = f"  dropped: {', '.join(v['dropped'][:8])}{' ...' if len(v['dropped']) > 8 else ''}" if v["dropped"] else ""
        echo(f"  {name:<16} {v['before']:>4} -> {v['after']:<4}{dropped}")
    d = s["dataset"]
    echo(f"\ndataset: {d['candidates']} candidate prompts; token lengths {d['token_lengths']} (BOS included)")
    echo("slot positions: " + ", ".join(f"{k} {v}" for k, v in d["slot_positions"].items()))
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
    if s["passes"]:
        echo("shared passes (one sweep of the prompts serves several analyses' final-position captures):")
        for p in s["passes"]:
            prompts = f"first {p['max_pairs']} " if p["max_pairs"] else ""
            echo(f"  - {p['id']}: {prompts}{p['prompts']} prompts -> {', '.join(p['analyses'])}; "
                 f"hooks {', '.join(p['hooks'])}")
    _print_memory(s["memory"])
    for analysis_id, t in s.get("training", {}).items():
        echo(f"training (estimate) {analysis_id}: ~{t['seconds']:.0f} s on this CPU, {_size(t['memory_gb'])} "
             f"({t['examples']} examples x {t['tokens']} tokens, layers {t['layers']}; {t['note']})")
    echo("examples:")
    for ex in d["examples"]:
        echo(f"  clean:     {ex['clean']}\n  corrupted: {ex['corrupted']}\n"
              f"  answer{_kind(ex)} {ex['answer'][0]} {ex['answer'][1]!r}  foil {ex['foil'][0]} {ex['foil'][1]!r}")
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


def _size(gb: float) -> str:
    """GB to two places, or MB where that would read 0.00 GB."""
    return f"{gb:.2f} GB" if gb >= 0.01 else f"{gb * 1024:.1f} MB"


def _kind(example) -> str:
    """Continuations are ordered tokens; a list without the word is a token set."""
    return " (continuation, in order)" if example.get("continuation") else ""
