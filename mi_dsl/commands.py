"""The CLI's subcommands as functions (each returns an exit code)."""
from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List

from .errors import MiError


def _echo(text: str = "") -> None:
    print(text, flush=True)


def compile_spec(spec_path: str, overrides, allow_paths, need_tokenizer: bool = True):
    """Load, validate and compile a spec: (spec, plan, dataset or None, skipped reason or None)."""
    from .compiler import compile_plan
    from .dataset import build_dataset, check_without_tokenizer
    from .spec import load_spec
    from .tokenization import TokenizerUnavailable, load_tokenizer

    spec = load_spec(spec_path, overrides, [Path(p) for p in allow_paths])
    check_without_tokenizer(spec)  # prompts before analyses: faults reported in file order
    plan = compile_plan(spec)
    try:
        tokenizer = load_tokenizer(spec.model, spec.bos_token, tokenizer_location(spec))
    except TokenizerUnavailable as why:
        if need_tokenizer:
            from .errors import RunError

            raise RunError(f"{why}; pass one with --set model.tokenizer=PATH", spec.loc("model")) from None
        return spec, plan, None, str(why)
    _check_bos(spec, tokenizer)
    return spec, plan, build_dataset(spec, tokenizer), None


def tokenizer_location(spec):
    """Where tokenizer faults point: `model.tokenizer` when the spec names one, else `model`."""
    return spec.loc("model", "tokenizer") if "tokenizer" in spec.data["model"] else spec.loc("model")


def _check_bos(spec, tokenizer) -> None:
    from .errors import SpecMeaningError

    if spec.model.prepend_bos and tokenizer.bos_id is None:
        raise SpecMeaningError("prepend_bos is true but the tokenizer names no BOS token",
                               spec.loc("model", "prepend_bos"),
                               hint="set model.bos_token to the BOS token's text, e.g. <|endoftext|>")


def validate_specs(paths: List[str], overrides, allow_paths, debug: bool = False) -> int:
    failed = 0
    for path in paths:
        started = time.perf_counter()
        try:
            spec, plan, dataset, skipped = compile_spec(path, overrides, allow_paths, need_tokenizer=False)
        except MiError as err:
            if debug:
                raise
            print(err.format(), file=sys.stderr)
            failed += 1
            continue
        took = time.perf_counter() - started
        if dataset is None:
            _echo(f"{path}: valid (schema and meaning); tokenizer checks skipped: {skipped} [{took:.1f}s]")
        else:
            for warning in dataset.warnings:
                _echo(f"{path}: warning: {warning}")
            prompts = (f"{len(dataset.pairs)} candidate prompts of {'/'.join(map(str, dataset.token_lengths))} "
                       "tokens" if dataset.pairs else "no prompt set")
            _echo(f"{path}: valid; {prompts}, {len(plan.analyses)} analyses [{took:.1f}s]")
    return 2 if failed else 0


def plan_summary(spec, plan, dataset, examples: int = 3) -> Dict[str, Any]:
    from .tokenization import load_tokenizer

    tokenizer = load_tokenizer(spec.model, spec.bos_token, tokenizer_location(spec))
    return {
        "spec": spec.file,
        "name": spec.name,
        "spec_hash": plan.spec_hash,
        "model": {"source": spec.model.source, "name": spec.model.name, "path": spec.model.path,
                  "prepend_bos": spec.model.prepend_bos},
        "tokenizer": tokenizer.origin,
        "vocab": {name: {"before": r.before, "after": r.after, "kept": r.kept, "dropped": r.dropped,
                         "duplicates": r.duplicates} for name, r in dataset.vocab.items()},
        "dataset": {
            "candidates": len(dataset.pairs),
            "token_lengths": dataset.token_lengths,
            "slots": dataset.slots,
            "slot_positions": _slot_positions(dataset),
            "answer_pairs": _answer_pairs(dataset, tokenizer),
            "examples": [_example(p, tokenizer) for p in dataset.pairs[:examples]],
        },
        "pipeline": _pipeline_counts(plan, len(dataset.pairs)),
        "metric": plan.metric,
        "metrics_needed": list(plan.metrics_needed),
        "analyses": [{"id": s.id, "kind": s.kind, "description": s.description, "hooks": list(s.hooks),
                      "positions": s.positions, "depends_on": list(s.depends_on)} for s in plan.analyses],
        "batch_size": plan.batch_size,
        "warnings": dataset.warnings,
    }


def _slot_positions(dataset) -> Dict[str, Any]:
    out = {}
    for slot in dataset.slots:
        spans = Counter(p.clean.spans.get(slot) for p in dataset.pairs)
        out[slot] = [list(s) for s in next(iter(spans))] if len(spans) == 1 else "varies by prompt"
    return out


def _answer_pairs(dataset, tokenizer) -> List[Dict[str, Any]]:
    """Each (answer, foil) pair with its prompt count and the clean slot values its prompts share."""
    groups: Dict[Any, List[Dict[str, str]]] = {}
    for pair in dataset.pairs:
        groups.setdefault((pair.answer, pair.foil), []).append(dict(pair.values))
    return [{"answer": a, "answer_token": tokenizer.token_str(a), "foil": f, "foil_token": tokenizer.token_str(f),
             "prompts": len(values),
             "values": {slot: word for slot, word in values[0].items() if all(v[slot] == word for v in values)}}
            for (a, f), values in groups.items()]


def _example(pair, tokenizer) -> Dict[str, Any]:
    return {"clean": pair.clean.text, "corrupted": pair.corrupted.text,
            "answer": [pair.answer, tokenizer.token_str(pair.answer)],
            "foil": [pair.foil, tokenizer.token_str(pair.foil)],
            "clean_tokens": tokenizer.token_strs(pair.clean.ids), "values": dict(pair.values)}


def _pipeline_counts(plan, candidates: int) -> List[Dict[str, Any]]:
    """Prompt counts after each step: exact until a keep-condition, then upper bounds."""
    rows, count, exact = [], candidates, True
    for step in plan.pipeline:
        params = dict(step.params)
        if step.kind == "keep":
            exact = False
        elif step.kind == "sample":
            count = min(count, params["n"])
        elif step.kind == "symmetric" and params["enabled"]:
            count = 2 * count
        rows.append({"step": step.kind, "description": step.description,
                     "prompts_after": count if exact else f"<= {count} (the model decides)"})
    return rows


def show_plan(spec_path: str, overrides, allow_paths, as_json: bool = False, examples: int = 3) -> int:
    spec, plan, dataset, _ = compile_spec(spec_path, overrides, allow_paths)
    summary = plan_summary(spec, plan, dataset, examples)
    if as_json:
        print(json.dumps(summary, indent=1))
        return 0
    _print_plan(summary)
    return 0


def _print_plan(s: Dict[str, Any]) -> None:
    _echo(f"spec {s['spec']}  (name {s['name']}, hash {s['spec_hash']})")
    _echo(f"model: {s['model']['source']} {s['model']['name'] or s['model']['path'] or ''}  "
          f"tokenizer: {s['tokenizer']}  prepend_bos: {s['model']['prepend_bos']}")
    _echo("\nvocabularies (before -> after filter):")
    for name, v in s["vocab"].items():
        dropped = f"  dropped: {', '.join(v['dropped'][:8])}{' ...' if len(v['dropped']) > 8 else ''}" if v["dropped"] else ""
        _echo(f"  {name:<16} {v['before']:>4} -> {v['after']:<4}{dropped}")
    d = s["dataset"]
    _echo(f"\ndataset: {d['candidates']} candidate prompts; token lengths {d['token_lengths']} (BOS included)")
    _echo("slot positions: " + ", ".join(f"{k} {v}" for k, v in d["slot_positions"].items()))
    _echo("pipeline:")
    for row in s["pipeline"]:
        _echo(f"  - {row['description']}  -> {row['prompts_after']}")
    _echo(f"metric: {s['metric']}")
    if s["analyses"]:
        _echo("analyses:")
        for a in s["analyses"]:
            deps = f" (after {', '.join(a['depends_on'])})" if a["depends_on"] else ""
            _echo(f"  - {a['id']} [{a['kind']}]: {a['description']}{deps}; hooks {', '.join(a['hooks']) or '-'}")
    _echo("examples:")
    for ex in d["examples"]:
        _echo(f"  clean:     {ex['clean']}\n  corrupted: {ex['corrupted']}\n"
              f"  answer {ex['answer'][0]} {ex['answer'][1]!r}  foil {ex['foil'][0]} {ex['foil'][1]!r}")
    for w in s["warnings"]:
        _echo(f"warning: {w}")


def run_command(args) -> int:
    from .runner import run_spec

    outcome = run_spec(args.spec, overrides=args.overrides, allow_paths=args.allow_path, fresh=args.fresh,
                       out_dir=args.out, progress=not args.quiet)
    _echo(f"report: {outcome.report_path}")
    return 0
