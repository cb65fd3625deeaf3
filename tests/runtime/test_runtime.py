"""Invariants of the execution engine on tiny random models and (slow) the embedded Gemma.

The direct logit attribution of the final residual stream must add up to the measured
logit difference (the seed's 4.506847 vs 4.506846 check), the logit lens must end at it,
batching must not change a number, and metrics from unembedding columns must equal
those from full logits.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from mi_dsl.running import run_spec

from tests.spec_parts import syllogism
from tests.word_tokenizer import word_tokenizer_file

# Built in the run (tests/word_tokenizer.py): these invariants need no shared file.
TOKENIZER = word_tokenizer_file()

SYLLOGISM = "\n" + syllogism(equal_lengths=False)

ANALYSES = """
analyses:
  - kind: logit_lens
  - kind: layer_attribution
  - {kind: head_attribution, id: heads}
"""


def write_spec(tmp_path: Path, model: str, body: str = SYLLOGISM, analyses: str = ANALYSES,
               extra: str = "") -> Path:
    text = "version: 1\nname: t\n" + textwrap.dedent(model) + textwrap.dedent(body) + textwrap.dedent(extra) \
        + textwrap.dedent(analyses)
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def tiny(architecture: str) -> str:
    tokenizer = f"  tokenizer: {TOKENIZER}\n  bos_token: '<|endoftext|>'\n" if architecture == "gpt_neox" else ""
    return f"model:\n  source: random\n  architecture: {architecture}\n  size: tiny\n  seed: 3\n" \
           f"  prepend_bos: true\n{tokenizer}"


def check_attribution(results, tol=1e-3):
    """Relative tolerances: the tiny models' logit differences are ~1e-4, so an absolute 1e-4 passed
    anything. The floor (1e-7) only absorbs float32 rounding of a sum of ~30 parts."""
    a = results["analyses"]
    measured = results["baselines"]["clean"]
    assert abs(measured) > 1e-5, "too small to check anything"
    lens = a["logit_lens"]
    assert lens["logit_diff"][-1] + lens["unembed_bias_diff"] == pytest.approx(measured, rel=tol, abs=1e-7)
    layers = a["layer_attribution"]
    assert layers["sum"] == pytest.approx(measured, rel=tol, abs=1e-7)
    assert sum(layers["logit_diff"]) + layers["unembed_bias_diff"] == pytest.approx(measured, rel=tol, abs=1e-7)
    return a


def test_attribution_sums_to_measured_logit_diff_neox(tmp_path):
    results = run_spec(write_spec(tmp_path, tiny("gpt_neox")), progress=False).results
    check_attribution(results, tol=1e-4)


def test_head_attribution_splits_attention_exactly_gemma(tmp_path):
    """Gemma has a post-attention norm and no attention bias: heads must add up to attn_out."""
    results = run_spec(write_spec(tmp_path, tiny("gemma3")), progress=False).results
    a = check_attribution(results, tol=1e-4)
    labels = a["layer_attribution"]["labels"]
    for layer, heads in enumerate(a["heads"]["per_head"]):
        attn = a["layer_attribution"]["logit_diff"][labels.index(f"{layer}_attn_out")]
        assert sum(heads) == pytest.approx(attn, rel=1e-3, abs=1e-7)


def test_batch_size_does_not_change_numbers(tmp_path):
    one = run_spec(write_spec(tmp_path, tiny("gpt_neox"), extra="run: {batch_size: 1}\n"), progress=False).results
    many = run_spec(write_spec(tmp_path, tiny("gpt_neox"), extra="run: {batch_size: 64}\n"), progress=False).results
    for record in ("clean", "corrupted"):
        assert torch.allclose(torch.tensor(one["per_prompt"][record]["logit_diff"]),
                              torch.tensor(many["per_prompt"][record]["logit_diff"]), atol=1e-5)
    assert torch.allclose(torch.tensor(one["analyses"]["heads"]["per_head"]),
                          torch.tensor(many["analyses"]["heads"]["per_head"]), atol=1e-5)


def test_metrics_from_columns_equal_full_logits():
    from mi_dsl.spec.model import ModelSpec
    from mi_dsl.runtime.executor import Executor
    from mi_dsl.runtime.unembed import Unembed, final_metrics
    from mi_dsl.models import load_model

    loaded = load_model(ModelSpec(source="random", architecture="gpt_neox", size="tiny", tokenizer=str(TOKENIZER)))
    executor = Executor(loaded, batch_size=8, progress=False)
    unembed = Unembed.of(loaded.bridge)
    vocab = loaded.info["d_vocab"]
    tokens = torch.randint(1, vocab, (6, 9))
    answers, foils = torch.randint(1, vocab, (6,)), torch.randint(1, vocab, (6,))
    with torch.no_grad():
        fast = final_metrics(executor, tokens, answers, foils, ["logit_diff", "prob", "logprob", "rank"], unembed)
        logits = loaded.bridge(tokens, prepend_bos=False)[:, -1].float()
    rows = torch.arange(6)
    assert torch.allclose(fast["logit_diff"], logits[rows, answers] - logits[rows, foils], atol=1e-4)
    logprobs = logits.log_softmax(-1)
    assert torch.allclose(fast["logprob"], logprobs[rows, answers], atol=1e-4)
    assert torch.allclose(fast["prob"], logprobs[rows, answers].exp(), atol=1e-6)
    ranks = (logits > logits[rows, answers][:, None]).sum(-1).float()
    assert torch.equal(fast["rank"], ranks)


def test_pipeline_keep_sample_symmetric(tmp_path):
    extra = """
    pipeline:
      - keep: 'clean.logit_diff > 0'
      - sample: {n: 4, seed: 42}
      - symmetric: true
    """
    results = run_spec(write_spec(tmp_path, tiny("gpt_neox"), extra=extra), progress=False).results
    stages = results["dataset"]["stages"]
    assert [s["step"] for s in stages] == ["keep", "sample", "symmetric"]
    kept = sum(c > 0 for c in results["candidate_metrics"]["clean"]["logit_diff"])
    assert 0 < kept < stages[0]["before"], "the condition keeps some candidates, not all"
    assert stages[0]["after"] == kept
    assert stages[1]["after"] == min(4, kept)
    # Symmetric pairing: every corrupted prompt joins the clean set with answer and foil
    # swapped, so logit differences come in +/- pairs and the clean mean is minus the corrupted mean.
    assert results["baselines"]["clean"] == pytest.approx(-results["baselines"]["corrupted"], abs=1e-5)


@pytest.mark.slow
def test_embedded_gemma_attribution_and_prediction(tmp_path):
    analyses = ANALYSES + """
  - kind: predictions
    prompt: "All flowers are angiosperms. Daisies are flowers. Therefore, daisies are"
    answer: " angios"
"""
    model = "model:\n  source: embedded\n  prepend_bos: true\n"
    body = SYLLOGISM.replace("[[herbivorous, carnivorous], [bipedal, quadrupedal]]",
                             "[[endothermic, ectothermic], [toothed, toothless]]").replace(
        "equal_lengths: false", "equal_lengths: true")
    results = run_spec(write_spec(tmp_path, model, body=body, analyses=analyses), progress=False).results
    a = check_attribution(results, tol=1e-3)
    assert results["baselines"]["clean"] > 0 > results["baselines"]["corrupted"]
    assert a["predictions"]["top"][0]["token"] == " angios"
    assert a["predictions"]["answer"]["rank"] == 0
