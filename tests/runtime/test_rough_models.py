"""Decomposition identities on tiny models whose norms and biases are not identity and zero.

With identity norm weights and zero biases, folding the final norm into the unembedding,
the unembedding bias that LayerNorm's bias becomes, b_O and Gemma's (1 + w) weights are
only ever tested at values where a wrong reading passes. The `rough_models` fixture
(conftest.py) roughens them; every identity is checked with a relative tolerance against
numbers computed another way (the model's own forward logits, its own b_O).
"""
from __future__ import annotations

import pytest
import torch

from tests.runtime.test_runtime import TOKENIZER, write_spec

ANALYSES = """
analyses:
  - kind: logit_lens
  - kind: layer_attribution
  - {kind: head_attribution, id: heads}
"""


def rough_yaml(architecture: str, size: str) -> str:
    tokenizer = f"  tokenizer: {TOKENIZER}\n  bos_token: '<|endoftext|>'\n" if architecture == "gpt_neox" else ""
    return (f"model:\n  source: random\n  architecture: {architecture}\n  size: {size}\n  seed: 5\n"
            f"  prepend_bos: true\n{tokenizer}")


def session_of(tmp_path, architecture, size):
    """(the finished run's context, {"baselines", "analyses": {id: data}})."""
    from mi_dsl.compile import prepare
    from mi_dsl.runtime.run import run_context

    # keep one sign: the dataset holds each pair both ways round, which would cancel the unembedding
    # bias (and most of the logit difference) in the means
    keep = "pipeline:\n  - keep: 'clean.logit_diff > 0'\n"
    p = prepare(str(write_spec(tmp_path, rough_yaml(architecture, size), analyses=ANALYSES, extra=keep)), [], [])
    context = run_context(p)
    return context, {"baselines": dict(context.baselines),
                     "analyses": {name: r.data for name, r in context.results.items()}}


def test_rough_models_are_rough(rough_models):
    from mi_dsl.models import random_weights

    for architecture in ("gpt_neox", "gemma3"):
        model = random_weights.build(random_weights.SHAPES[architecture][rough_models], 300, 3)
        params = dict(model.named_parameters())
        final = next(p for n, p in params.items() if n.endswith("norm.weight") and ".layers." not in n)
        assert final.std() > 0.2, architecture
        biases = [p for n, p in params.items() if n.endswith("bias")]
        assert all(b.abs().max() > 0.05 for b in biases), architecture


@pytest.fixture(scope="module", params=["gpt_neox", "gemma3"])
def rough(request, rough_models, tmp_path_factory):
    return session_of(tmp_path_factory.mktemp(request.param), request.param, rough_models)


def own_forward_logit_diffs(run) -> torch.Tensor:
    """Per pair, the logit difference from the model's own full forward (bias and final norm included)."""
    out = []
    with torch.no_grad():
        for pair in run.pairs:
            logits = run.model(torch.tensor([pair.clean.ids]))[0, -1].double()
            out.append(logits[pair.answer] - logits[pair.foil])
    return torch.stack(out)


def test_measured_metric_is_the_models_own_forward(rough):
    run, results = rough
    expected = own_forward_logit_diffs(run)
    assert expected.abs().max() > 0.1  # the tiny rough model has real logit differences
    assert results["baselines"]["clean"] == pytest.approx(float(expected.mean()), rel=1e-4)


def test_logit_lens_and_layers_add_up_to_the_measured_logit_diff(rough):
    run, results = rough
    a = results["analyses"]
    measured = float(own_forward_logit_diffs(run).mean())
    assert measured > 0.1
    lens, layers = a["logit_lens"], a["layer_attribution"]
    assert lens["logit_diff"][-1] + lens["unembed_bias_diff"] == pytest.approx(measured, rel=1e-4)
    assert sum(layers["logit_diff"]) + layers["unembed_bias_diff"] == pytest.approx(measured, rel=1e-4)
    if run.cfg.normalization_type in ("LN", "LNPre"):
        # LayerNorm's random bias folds into an unembedding bias: it must be counted
        assert abs(lens["unembed_bias_diff"]) > 1e-3 * abs(measured)


def test_heads_add_up_to_each_attention_layer(rough):
    """Per layer: the heads' direct effects plus b_O's equal the layer's attention output's. b_O is
    read from the model and scaled here by hand (centred for LayerNorm, / final scale, on the direction)."""
    run, results = rough
    a = results["analyses"]
    labels = a["layer_attribution"]["labels"]
    with torch.no_grad():
        scale = run.capture_final(["ln_final.hook_scale"])["ln_final.hook_scale"].double()  # [N, 1]
        W_U = run.model.W_U.double()
        direction = (W_U[:, run.answers()] - W_U[:, run.foils()]).T  # [N, d]
        b_O = getattr(run.model, "b_O", None)
    attention = [a["layer_attribution"]["logit_diff"][labels.index(f"{l}_attn_out")] for l in range(run.cfg.n_layers)]
    size = max(abs(v) for v in attention)
    for layer, heads in enumerate(a["heads"]["per_head"]):
        bias = 0.0
        if b_O is not None and not run.has_post_attn_norm():
            b = b_O[layer].double()
            if run.cfg.normalization_type in ("LN", "LNPre"):
                b = b - b.mean()
            bias = float(((b / scale) * direction).sum(-1).mean())
        assert sum(heads) + bias == pytest.approx(attention[layer], rel=1e-4, abs=1e-5 * size), layer
