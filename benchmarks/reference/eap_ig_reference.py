"""Score the tiny GPT-2 of tests/reference/tiny_gpt2.py with the public EAP-IG code and evaluate
its circuits with MIB's own evaluation, and write the numbers as a fixture for
tests/analyses/test_circuit_reference.py.

It runs in its own virtual environment, outside the repository, that CI never builds
(docs/circuits.md, "The reference test", says how to make it):

    python3 -m venv /work/ref-eapig
    /work/ref-eapig/bin/pip install torch==2.13.0
    /work/ref-eapig/bin/pip install transformer-lens==3.9.0 pandas
    # EAP-IG's src/ and MIB-circuit-track's MIB_circuit_track/ at the commits below, unpacked
    # into /work/ref-eapig/src and /work/ref-eapig/mib (nothing of them enters this repository)
    /work/ref-eapig/bin/python benchmarks/reference/eap_ig_reference.py \\
        --eap-ig /work/ref-eapig/src --eap-ig-commit 795f5607b25638935aec89aee3c1cb4bd9ed72f1 \\
        --mib /work/ref-eapig/mib --mib-commit b759df34433c9e31043ba9e02908ce0bf20e894f \\
        --out tests/reference/eap_ig_gpt2_tiny.json

The public code is used as published, with three changes of environment only: its
`torch.zeros(..., device='cuda')` is sent to the CPU when there is no GPU; the model is
built from a TransformerLens config (HookedTransformer with from_pretrained's default weight
processing) since from_pretrained only knows official model names; and MIB's evaluation.py,
written against the EAP-IG commit MIB pins as a submodule (7af394a), passes
`optimal_ablation_path=None` to evaluate_graph, an argument EAP-IG has since removed, so the
script drops that None. EAP-IG's latest commit is used because its prune() removes every
node left without incoming or outgoing edges (7af394a stopped after one round); under
patching the faithfulness values are the same either way, only the pruned edge lists differ.
Attribution uses MIB's logit difference as a loss (run_attribution.py: logit_diff with
loss=True), summed over the batch instead of averaged so that scores are means over pairs
whatever the batching (MIB's batch mean divides every score by the batch size and changes
no ranking); the CPR and CMD are MIB's evaluate_area_under_curve with the metric
run_evaluation.py passes (logit_diff, mean=False, loss=False), absolute=False for CPR and
absolute=True for CMD (print_results.py).
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "tests" / "reference" / "tiny_gpt2.py"
PERCENTAGES = (.001, .002, .005, .01, .02, .05, .1, .2, .5, 1)
METHODS = ("EAP", "EAP-IG-inputs", "EAP-IG-activations", "clean-corrupted", "exact")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--eap-ig", required=True, help="folder holding EAP-IG's `eap` package (its src/)")
    parser.add_argument("--eap-ig-commit", required=True)
    parser.add_argument("--mib", required=True, help="folder holding MIB-circuit-track's MIB_circuit_track/")
    parser.add_argument("--mib-commit", required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=6)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    sys.path[:0] = [args.eap_ig, args.mib]

    import torch

    _zeros_on_the_cpu(torch)
    shared = _load(SHARED)
    model, tokenizer, checksum = _model(shared)
    from eap.attribute import attribute
    from eap.graph import Graph
    _drop_optimal_ablation_path()
    from MIB_circuit_track.evaluation import evaluate_area_under_curve
    from MIB_circuit_track.metrics import logit_diff

    pairs = shared.pairs()
    ids = lambda word: tokenizer.convert_tokens_to_ids(word)  # noqa: E731
    data = [(c, k, [ids(a), ids(f)]) for c, k, a, f in pairs]
    batches = [([d[0] for d in data[i:i + args.batch]], [d[1] for d in data[i:i + args.batch]],
                [d[2] for d in data[i:i + args.batch]]) for i in range(0, len(data), args.batch)]
    loss_sum = lambda *a: logit_diff(*a, mean=False, loss=True).sum()  # noqa: E731
    loss_each = functools.partial(logit_diff, mean=False, loss=True)
    evaluation = functools.partial(logit_diff, mean=False, loss=False)

    out = {"reference": _versions(args, torch), "model": {"checksum": checksum, "shape": shared.SHAPE,
                                                          "seed": shared.SEED},
           "pairs": [list(p) for p in pairs], "steps": args.steps, "batch": args.batch,
           "sign": "scores are EAP-IG's for MIB's loss (-logit_diff): the negative of mi-dsl's",
           "percentages": list(PERCENTAGES), "methods": {}}
    for method in METHODS:
        graph = Graph.from_model(model)
        metric = loss_each if method == "exact" else loss_sum
        attribute(model, graph, batches, metric, method, "patching", ig_steps=args.steps, quiet=True)
        entry = {"scores": {name: float(edge.score) for name, edge in graph.edges.items()}}
        for ranking, absolute in (("signed", False), ("abs", True)):
            counts, area_under, area_from_1, _, faithfulness = evaluate_area_under_curve(
                model, graph, batches, evaluation, quiet=True, absolute=absolute)
            circuits = []
            for pct in PERCENTAGES:
                graph.apply_topn(int(pct * len(graph.edges)), absolute, prune=True)
                circuits.append(sorted(name for name, edge in graph.edges.items() if edge.in_graph))
            entry[ranking] = {"faithfulness": faithfulness, "area_under": area_under, "area_from_1": area_from_1,
                              "weighted_edge_counts": counts, "circuits": circuits}
        entry["cpr"], entry["cmd"] = entry["signed"]["area_under"], entry["abs"]["area_from_1"]
        out["methods"][method] = entry
        print(f"{method}: CPR {entry['cpr']:.6f}, CMD {entry['cmd']:.6f}", flush=True)
    Path(args.out).write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


def _zeros_on_the_cpu(torch) -> None:
    """EAP-IG allocates its score tensors with device='cuda'; without a GPU they go to the CPU."""
    if torch.cuda.is_available():
        return
    original = torch.zeros

    def zeros(*shape, **kwargs):
        if str(kwargs.get("device", "")) == "cuda":
            kwargs["device"] = "cpu"
        return original(*shape, **kwargs)
    torch.zeros = zeros


def _drop_optimal_ablation_path() -> None:
    """MIB's evaluation.py passes optimal_ablation_path=None, which EAP-IG's evaluate_graph no longer takes."""
    import eap.evaluate

    original = eap.evaluate.evaluate_graph

    def evaluate_graph(*args, optimal_ablation_path=None, **kwargs):
        assert optimal_ablation_path is None
        return original(*args, **kwargs)
    eap.evaluate.evaluate_graph = evaluate_graph


def _load(path: Path):
    spec = importlib.util.spec_from_file_location("tiny_gpt2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _model(shared):
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights
    from transformers import AutoTokenizer, GPT2LMHeadModel

    folder = Path(tempfile.mkdtemp())
    checksum = shared.write_model(folder)
    hf = GPT2LMHeadModel.from_pretrained(folder).eval()
    assert shared.checksum(hf) == checksum, "the saved model does not load back to the same weights"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    s = shared.SHAPE
    cfg = HookedTransformerConfig(n_layers=s["n_layer"], d_model=s["n_embd"], n_ctx=s["n_positions"],
                                  d_head=s["n_embd"] // s["n_head"], n_heads=s["n_head"], d_mlp=s["n_inner"],
                                  d_vocab=len(shared.VOCAB), act_fn="gelu_new", normalization_type="LN",
                                  eps=1e-5, original_architecture="GPT2LMHeadModel", default_prepend_bos=True,
                                  device="cpu", dtype=__import__("torch").float32)
    model = HookedTransformer(cfg, tokenizer=tokenizer)
    model.load_and_process_state_dict(convert_gpt2_weights(hf, cfg), fold_ln=True, center_writing_weights=True,
                                      center_unembed=True, fold_value_biases=True)
    model.eval()
    model.cfg.use_split_qkv_input = True
    model.cfg.use_attn_result = True
    model.cfg.use_hook_mlp_in = True
    return model, tokenizer, checksum


def _versions(args, torch) -> dict:
    from importlib.metadata import version

    return {"eap_ig": {"repository": "hannamw/EAP-IG", "commit": args.eap_ig_commit},
            "mib": {"repository": "hannamw/MIB-circuit-track", "commit": args.mib_commit},
            "transformer_lens": version("transformer-lens"), "torch": torch.__version__,
            "transformers": version("transformers"), "python": sys.version.split()[0], "device": "cpu"}


if __name__ == "__main__":
    main()
