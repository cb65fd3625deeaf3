"""EAP-IG-inputs over 1,000 IOI pairs on a Gemma-3-270m-shaped model (issue 26's GPU goal: <= 60 s).

    python benchmarks/eap_ig_scale.py --tokenizer DIR [--size gemma-3-270m] [--pairs 1000]
                                      [--steps 5] [--device auto] [--out FILE]

The device machine cannot carry the embedded Gemma's GGUF (~245 MB), so the model is mi-dsl's
`random` gemma3 at the 270m size: the same shapes (18 layers, 4 query heads on 1 key/value head,
d_model 640, 262,144-token vocabulary), random weights, and the real Gemma tokenizer given as
DIR (a directory with the tokenizer.json and tokenizer_config.json the embedded package converts
to; timing depends on shapes and token counts, not on weights). specs/ioi_circuit.yaml is run
through `mi_dsl.run` with: a fourth place (10 names x 9 others x 4 places x 3 things = 1,080
candidate pairs, so 1,000 distinct ones exist), no keep step (a random model is right on about
half of them), EAP-IG-inputs alone, no faithfulness curve, no bootstrap.

Reported: the circuit analysis's own wall-clock (results.json `seconds`: scoring every edge,
clean and corrupted captures included), the whole run's wall-clock, and the bare Hugging Face
work the same scoring needs, timed in the same process on the same device: per pair two
forwards (clean, corrupted) and `steps` forward+backward passes, each over the pair's tokens,
batched. The ratio mi / bare is what the benchmark file reports beside the absolute time.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLACES = "  places: {items: [store, park, school]}"


def spec_text(size: str, tokenizer: str, pairs: int, steps: int, batch_size: int = 0) -> str:
    text = (ROOT / "specs" / "ioi_circuit.yaml").read_text()
    edits = [
        ("  source: embedded\n  name: gemma-3-270m\n",
         f"  source: random\n  architecture: gemma3\n  size: {size}\n  tokenizer: {tokenizer}\n"),
        (PLACES, "  places: {items: [store, park, school, garden]}"),
        ("  - sample: {n: 24, seed: 0}\n  - keep: 'clean.logit_diff > 0'      # pairs the model gets right\n",
         f"  - sample: {{n: {pairs}, seed: 0}}\n"),
        ("    max_pairs: 16\n", f"    max_pairs: {pairs}\n    curve: false\n"
                               + (f"    batch_size: {batch_size}\n" if batch_size else "")),
        ("    methods: [eap_ig_inputs, eap]\n", "    methods: [eap_ig_inputs]\n"),
        ("    steps: 5\n", f"    steps: {steps}\n"),
        ("    stability: {bootstrap: 3}\n", ""),
        ("../schemas/", str(ROOT / "schemas") + "/"),
    ]
    for old, new in edits:
        if old not in text:
            raise SystemExit(f"specs/ioi_circuit.yaml changed: {old!r} is no longer in it; update this script")
        text = text.replace(old, new)
    return text


def bare_seconds(size: str, vocab: int, pairs: int, tokens: int, steps: int, device: str, batch: int) -> dict:
    """Bare Hugging Face forwards (last position's logits) and forward+backward passes of the same shapes."""
    import torch

    from mi_dsl.models import random_weights

    model = random_weights.build(random_weights.shape_for("gemma3", size), vocab, 0).to(device)
    model.requires_grad_(False)  # gradients at the inputs only, as the scoring reads them
    ids = torch.randint(0, vocab, (pairs, tokens), device=device)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def forwards():
        with torch.no_grad():
            for i in range(0, pairs, batch):
                model(ids[i:i + batch], logits_to_keep=1)

    def forward_backwards():
        for i in range(0, pairs, batch):
            embeds = model.get_input_embeddings()(ids[i:i + batch]).detach().requires_grad_(True)
            model(inputs_embeds=embeds, logits_to_keep=1).logits[:, -1, :2].sum().backward()
            model.zero_grad(set_to_none=True)

    out = {}
    for name, work in (("forward", forwards), ("forward_backward", forward_backwards)):
        work()  # warm-up
        sync()
        start = time.perf_counter()
        work()
        sync()
        out[name] = time.perf_counter() - start
    out["equivalent"] = 2 * out["forward"] + steps * out["forward_backward"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", required=True, help="the converted Gemma tokenizer directory")
    parser.add_argument("--size", default="gemma-3-270m")
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=0, help="the analysis's batch_size (0: mi-dsl's choice)")
    parser.add_argument("--bare-batch", type=int, default=250)
    parser.add_argument("--out", help="write the JSON record here too")
    args = parser.parse_args()

    import torch

    import mi_dsl
    from mi_dsl.compile.prepare import prepare
    from mi_dsl.models import random_weights

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as out:
        path = Path(out) / "ioi_circuit_scale.yaml"
        path.write_text(spec_text(args.size, str(Path(args.tokenizer).resolve()), args.pairs, args.steps,
                                  args.batch_size))
        tokenizer = [str(Path(args.tokenizer).resolve())]
        prepared = prepare(path, [], tokenizer)
        start = time.perf_counter()
        results = mi_dsl.run(path, device=device, out_dir=out, progress=False, fresh=True, yes=True,
                             allow_paths=tokenizer).raw
        run_wall = time.perf_counter() - start
    data = results["analyses"]["ioi_circuit"]
    pairs = data["pairs"]["count"] if isinstance(data["pairs"], dict) else data["pairs"]
    tokens = len(prepared.dataset.pairs[0].clean.ids)
    vocab = random_weights.shape_for("gemma3", args.size).fixed_vocab or 262144  # Gemma's tokenizer
    bare = bare_seconds(args.size, vocab, pairs, tokens, args.steps, device, args.bare_batch)
    record = {
        "what": "EAP-IG-inputs edge scores, IOI, random gemma3 with the real Gemma tokenizer",
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
        "versions": {"torch": torch.__version__}, "size": args.size, "pairs": pairs, "tokens": tokens,
        "steps": args.steps, "edges": data.get("graph", {}).get("edges"),
        "batch_size": data.get("batch_size"),
        "analysis_seconds": data["seconds"], "run_wall_seconds": round(run_wall, 2),
        "bare_seconds": {k: round(v, 3) for k, v in bare.items()},
        "mi_over_bare": round(data["seconds"] / bare["equivalent"], 2),
        "goal_seconds": 60, "met": data["seconds"] <= 60,
        "bare_is": f"{pairs} pairs x {tokens} tokens: 2 forwards (last-position logits) + {args.steps} "
                   "forward+backward passes, batched by " + str(args.bare_batch),
    }
    text = json.dumps(record, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
