"""The circuit analysis's measured time against `mi-run plan`'s estimate (_circuit/sizes.py).

    python benchmarks/circuit_cost.py [--model gemma-3-270m] [--pairs 8] [--steps 5] [--methods eap_ig_inputs eap]
                                      [--sample 24] [--no-curve] [--bootstrap 0]

Runs specs/ioi_circuit.yaml with those overrides (one thread unless OMP_NUM_THREADS says
otherwise), reads the analysis's own wall-clock from results.json and the CPU time its
compute took (process time, which a shared machine's other work does not inflate), and
prints both beside the plan's estimate; the implied throughput (work / CPU seconds) is what
sizes.CPU_FLOPS should be on this machine. On a shared CPU the wall-clock moves with the
load: say so next to any number.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--sample", type=int, default=24, help="pipeline sample size (pairs before the keep)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--methods", nargs="+", default=["eap_ig_inputs", "eap"])
    parser.add_argument("--no-curve", action="store_true")
    parser.add_argument("--bootstrap", type=int, default=0)
    args = parser.parse_args()

    import mi_dsl
    from mi_dsl.analyses import circuit
    from mi_dsl.analyses._circuit import sizes
    from mi_dsl.compile.prepare import prepare
    from mi_dsl.models.sources import model_shape

    cpu = {}
    compute = circuit.Circuit.compute

    def timed(self, params, run):
        start = time.process_time()
        try:
            return compute(self, params, run)
        finally:
            cpu["seconds"] = time.process_time() - start
    circuit.Circuit.compute = timed

    overrides = [f"model.name={args.model}", f"pipeline.0.sample.n={args.sample}",
                 f"analyses.0.max_pairs={args.pairs}", f"analyses.0.steps={args.steps}",
                 f"analyses.0.curve={str(not args.no_curve).lower()}"]
    spec = ROOT / "specs" / "ioi_circuit.yaml"
    with tempfile.TemporaryDirectory() as out:
        text = spec.read_text().replace("methods: [eap_ig_inputs, eap]", f"methods: [{', '.join(args.methods)}]")
        if not args.bootstrap:
            text = text.replace("    stability: {bootstrap: 3}\n", "")
        else:
            text = text.replace("stability: {bootstrap: 3}", f"stability: {{bootstrap: {args.bootstrap}}}")
        path = Path(out) / "ioi_circuit.yaml"
        path.write_text(text.replace("../schemas/", str(ROOT / "schemas") + "/"))
        prepared = prepare(path, overrides)
        step = prepared.plan.analyses[0]
        results = mi_dsl.run(path, overrides, out_dir=out, progress=False, fresh=True).raw
    data = results["analyses"]["ioi_circuit"]
    tokens = len(prepared.dataset.pairs[0].clean.ids)
    pairs = data["pairs"]["count"] if isinstance(data["pairs"], dict) else data["pairs"]
    e = sizes.estimate(model_shape(prepared.spec.model).as_dims(), step.params, pairs, tokens)
    wall, used = data["seconds"], cpu["seconds"]
    print(json.dumps({"model": args.model, "pairs": pairs, "tokens": tokens, "steps": args.steps,
                      "methods": args.methods, "curve": not args.no_curve, "bootstrap": args.bootstrap,
                      "wall_seconds": wall, "cpu_seconds": round(used, 1), "estimated_seconds": round(e["seconds"], 1),
                      "estimate_over_cpu": round(e["seconds"] / used, 3),
                      "estimate_over_wall": round(e["seconds"] / wall, 3),
                      "implied_gflops": round(e["flops"] / used / 1e9, 2)}, indent=1))


if __name__ == "__main__":
    main()
