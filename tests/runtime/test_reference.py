"""mi-dsl against an independent reference on the embedded Gemma (slow): baselines, the top
heads' direct logit attribution and their exact patching cells recomputed in plain
transformers with forward hooks (tests/hf_reference.py, a subprocess that never imports
TransformerLens), 1e-3 relative. Guards against bridge bugs that every TransformerLens-based
comparison would share."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.spec_parts import SYLLOGISM_PROMPTS

HERE = Path(__file__).resolve().parents[1]  # tests/, where hf_reference.py is

SPEC = """
version: 1
name: reference
seed: 42
model: {source: embedded, prepend_bos: true, dtype: float32}
vocabularies:
  categories: {items: [birds, fish, insects, mammals], filter: 'ntokens(" " + item) == 1'}
  descriptors:
    pairs: [[endothermic, ectothermic], [digitigrade, plantigrade], [toothed, toothless]]
    filter: 'ntokens(" " + item) == 2'
  nouns:
    items: [Dogs, Cows, Horses, Wolves, Bears]
    filter: 'ntokens(" " + item) == 1 and ntokens(" " + lower(item)) == 1'
""" + SYLLOGISM_PROMPTS + """\
  equal_lengths: true
metric: logit_diff
pipeline:
  - keep: 'clean.logit_diff > 2 and corrupted.logit_diff < -2'
  - sample: {n: 4, seed: 42}
analyses:
  - {kind: head_attribution, id: head_attr}
  - {kind: activation_patching, id: patch, target: z, heads: "top_abs(head_attr, 3)"}
"""


def run_and_compare(tmp_path, spec_text: str, model_dir=None):
    """Run the spec in mi-dsl, then tests/hf_reference.py on the same weights, pairs and heads; compare."""
    from mi_dsl.compile import prepare
    from mi_dsl.runtime.run import run_context

    path = tmp_path / "reference.yaml"
    path.write_text(textwrap.dedent(spec_text))
    run = run_context(prepare(str(path), [], []))
    results = {"baselines": dict(run.baselines)}
    a = {name: r.data for name, r in run.results.items()}
    from mi_dsl.compile.compiler import compile_analysis

    selector = compile_analysis(run.spec, {"kind": "attention", "heads": "top_abs(head_attr, 3)"}).params
    heads = run.select_heads(selector)
    request = {"model_dir": str(model_dir or run.executor.loaded.info["weights"]), "heads": [list(h) for h in heads],
               "pairs": [{"clean": list(x.clean.ids), "corrupted": list(x.corrupted.ids), "answer": x.answer,
                          "foil": x.foil} for x in run.pairs]}
    (tmp_path / "in.json").write_text(json.dumps(request))
    done = subprocess.run([sys.executable, str(HERE / "hf_reference.py"), str(tmp_path / "in.json"),
                           str(tmp_path / "out.json")], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    ref = json.loads((tmp_path / "out.json").read_text())

    for which in ("clean", "corrupted"):
        assert results["baselines"][which] == pytest.approx(ref["baselines"][which], rel=1e-3)
    per_head = a["head_attr"]["per_head"]
    size = max(abs(v) for row in per_head for v in row)
    for l, h in heads:
        assert per_head[l][h] == pytest.approx(ref["head_dla"][f"L{l}H{h}"], rel=1e-3, abs=1e-4 * size), (l, h)
    cells = {row["label"]: row["value"] for row in run.results["patch"].tables["cells"]}
    gap = abs(ref["baselines"]["clean"] - ref["baselines"]["corrupted"])
    assert gap > 1e-3
    for l, h in heads:
        label = f"L{l}H{h}"
        assert cells[label] == pytest.approx(ref["patched"][label], rel=1e-3, abs=1e-4 * gap), label
    return ref


def test_tiny_rough_gemma_matches_plain_transformers(tmp_path, rough_models):
    """The same comparison on a tiny Gemma-3 with random norm weights (Gemma's 1 + w), saved as a local
    Hugging Face model: checks the reference itself, with no real model."""
    from mi_dsl.models import random_weights
    from tests.analyses.test_patching import DATA
    from tests.runtime.test_runtime import TOKENIZER

    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(TOKENIZER)).get_vocab_size()
    model = random_weights.build(random_weights.SHAPES["gemma3"][rough_models], vocab, 11)
    model.save_pretrained(tmp_path / "model")
    spec = (f"version: 1\nname: tiny_reference\nseed: 1\nmodel:\n  source: local\n  path: {tmp_path / 'model'}\n"
            f"  tokenizer: {TOKENIZER}\n  bos_token: '<|endoftext|>'\n  prepend_bos: true\n  dtype: float32\n"
            + DATA.replace("[Cows, Horses]", "[Dogs, Horses]").replace("  - {kind: head_attribution, id: head_attr}\n",
                           "  - {kind: head_attribution, id: head_attr}\n"
                           "  - {kind: activation_patching, id: patch, target: z, heads: 'top_abs(head_attr, 3)'}\n"))
    run_and_compare(tmp_path, spec, tmp_path / "model")


@pytest.mark.slow
def test_embedded_gemma_matches_plain_transformers(tmp_path):
    run_and_compare(tmp_path, SPEC)
