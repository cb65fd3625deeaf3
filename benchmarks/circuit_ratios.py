"""Circuit-engine costs as ratios to a bare forward of the same pairs (issue 17's goals).

    python benchmarks/circuit_ratios.py [--model gemma-3-270m|smollm2-135m] [--pairs 16] [--device cpu]

Bare forward: the Hugging Face model on the clean prompts, logits of the final position only
(`logits_to_keep=1`), no hooks. Timed (median of --repeat runs, after a warm-up):
  eap          EAP scores for every edge (corrupted forward, clean forward + backward)
  capture      the corrupted run's node outputs (once per batch, shared by every circuit)
  ablated      one circuit-ablated forward (a 5% circuit), given those outputs
  curve        the faithfulness curves as MIB reports them: 10 MIB levels of the signed and of the
               absolute ranking (20 circuits), no random baseline
Goals: eap <= 4 bare forwards, ablated <= 2, curve <= 45 (25 when it was one ranking of 10 levels).
Writes benchmarks/results/circuit-*.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import torch

NAMES = ["Mary", "John", "Alice", "Bob", "Tom", "James", "Sarah", "Anna"]


def pairs(tokenizer, n: int):
    clean, corrupted, answers, foils = [], [], [], []
    for i in range(n):
        io, s = NAMES[i % len(NAMES)], NAMES[(i + 3) % len(NAMES)]
        clean.append(f"When {io} and {s} went to the store, {s} gave a drink to")
        corrupted.append(f"When {io} and {s} went to the store, {io} gave a drink to")
        answers.append(tokenizer(" " + io, add_special_tokens=False).input_ids[0])
        foils.append(tokenizer(" " + s, add_special_tokens=False).input_ids[0])
    enc = lambda texts: torch.tensor([tokenizer(t).input_ids for t in texts])  # noqa: E731
    return enc(clean), enc(corrupted), torch.tensor(answers), torch.tensor(foils)


def timed(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="gemma-3-270m",
                        help="an embedded name, or random:ARCH/SIZE (e.g. random:gpt_neox/pythia-70m) with --tokenizer")
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from mi_dsl.analyses._circuit.circuits import prune, top_edges
    from mi_dsl.analyses._circuit.engine import GraphModel, Pass
    from mi_dsl.analyses._circuit.faithfulness import baselines, curve, edge_builder
    from mi_dsl.analyses._circuit.graph import graph_of
    from mi_dsl.analyses._circuit.scores import score_edges
    from mi_dsl.runtime.models import load_model
    from mi_dsl.runtime.unembed import Unembed
    from mi_dsl.spec.model import ModelSpec

    if args.model.startswith("random:"):
        architecture, size = args.model.split(":", 1)[1].split("/")
        spec = ModelSpec(source="random", architecture=architecture, size=size, device=args.device,
                         tokenizer=args.tokenizer)
    else:
        spec = ModelSpec(source="embedded", name=args.model, device=args.device)
    loaded = load_model(spec)
    bridge, hf = loaded.bridge, loaded.hf_model
    clean, corrupted, answers, foils = pairs(loaded.tokenizer, args.pairs)
    dev = loaded.device
    clean, corrupted, answers, foils = clean.to(dev), corrupted.to(dev), answers.to(dev), foils.to(dev)
    unembed = Unembed.of(bridge)
    metric = lambda x, rows: unembed.logits_of(x, answers[rows.to(dev)]) - unembed.logits_of(x, foils[rows.to(dev)])  # noqa: E731
    graph = graph_of(bridge)
    model = GraphModel(bridge, graph, metric)
    n = len(clean)

    def bare():
        with torch.no_grad():
            hf(clean, logits_to_keep=1)

    scores = score_edges(model, clean, corrupted, "eap", batch_size=n).scores
    kept = prune(graph, top_edges(graph, scores, int(graph.n_edges * 0.05)))
    mask = graph.edge_mask()

    rows = torch.arange(n)
    with model.split_inputs(), torch.no_grad():
        off = model.run(corrupted, Pass(rows)).outputs  # captured once per batch, shared by every circuit

    def capture():
        with model.split_inputs(), torch.no_grad():
            model.run(corrupted, Pass(rows))

    def ablated():
        with model.split_inputs(), torch.no_grad():
            model.run(clean, Pass(rows, capture_outputs=False, off=off, complement=(mask & ~kept).float()))

    base = baselines(model, clean, corrupted, batch_size=n)
    t = {"bare_forward": timed(bare, args.repeat),
         "eap": timed(lambda: score_edges(model, clean, corrupted, "eap", batch_size=n), args.repeat),
         "capture": timed(capture, args.repeat),
         "ablated": timed(ablated, args.repeat),
         "curve": timed(lambda: curve(model, clean, corrupted, edge_builder(graph, scores, top_edges), graph.n_edges,
                                      batch_size=n, base=base), 1)}
    ratios = {k: v / t["bare_forward"] for k, v in t.items() if k != "bare_forward"}
    goals = {"eap": 4.0, "ablated": 2.0, "curve": 45.0}
    out = {"model": args.model, "pairs": n, "tokens": clean.shape[1], "device": str(dev), "edges": graph.n_edges,
           "seconds": t, "ratios": ratios, "goals": goals, "torch_threads": torch.get_num_threads(),
           "machine": platform.processor() or platform.machine(), "date": str(date.today())}
    folder = Path(__file__).parent / "results"
    folder.mkdir(exist_ok=True)
    stem = folder / f"circuit-{dev.type}-{args.model.replace(':', '-').replace('/', '-')}-{date.today()}"
    stem.with_suffix(".json").write_text(json.dumps(out, indent=1))
    lines = [f"# Circuit engine vs bare forwards: {args.model}, {n} pairs x {clean.shape[1]} tokens, {dev}",
             "", f"{graph.n_edges} edges; bare forward {t['bare_forward']:.3f} s; torch threads "
             f"{torch.get_num_threads()}", "", "| work | seconds | / bare forward | goal |", "|---|---|---|---|"]
    for k in ("eap", "capture", "ablated", "curve"):
        goal = f"<= {goals[k]:.0f}x {'met' if ratios[k] <= goals[k] else 'NOT met'}" if k in goals else "-"
        lines.append(f"| {k} | {t[k]:.3f} | {ratios[k]:.2f}x | {goal} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
