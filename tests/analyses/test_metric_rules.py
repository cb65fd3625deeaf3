"""One rule for metrics (issue 24, item 2): which analyses read which metrics, and why, is a
field of each analysis's registration (registry.METRIC_RULES); the compiler's refusals, the
schema's `direction` parameter and the reference doc's table all read it.

Checked: every registered kind is refused exactly the metrics its rule refuses, with the
rule's reason; `direction: logit_diff` is in the schema of exactly the kinds whose rule offers
it; the reference doc's table is the rules; and attribution patching of a metric that is not
linear (prob_diff), now read as its rule says (a first-order estimate, the metric linearised
too), equals (source - base) . d prob_diff / d resid_pre written by hand with torch.autograd.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mi_dsl.core.registry import METRIC_RULES, load_all
from mi_dsl.errors import SpecMeaningError
from mi_dsl.metrics import METRICS

from tests.analyses.test_patching import DATA, compute, grid, model_yaml, run_context, sharp_models  # noqa: F401
from tests.test_token_sets import prepare_spec

ROOT = Path(__file__).resolve().parents[2]
PARAMS = {"attention": "heads: [L0H0]", "attention_vs_contribution": "heads: [L0H0], to: 1",
          "ablation": "heads: [L0H0]", "predictions": "", "circuit": "max_pairs: 2, steps: 1"}


# interchange reads no metric (rule "none") and needs a causal_model block this test's spec lacks
@pytest.mark.parametrize("kind", sorted(k for k in load_all() if k != "interchange"))
def test_each_kind_is_refused_exactly_what_its_rule_refuses(kind, tmp_path):
    registration = load_all()[kind]
    rule = registration.metric_rule
    extra = PARAMS.get(kind, "")
    for name in ("logit_diff", "prob_diff", "rank"):
        metric = METRICS[name]
        refused = (rule.needs_linear and not metric.linear) or (rule.needs_gradient and not metric.differentiable)
        analysis = f"- {{kind: {kind}{', ' + extra if extra else ''}}}"
        if refused:
            with pytest.raises(SpecMeaningError) as err:
                prepare_spec(tmp_path, name, analysis)
            assert rule.why in err.value.message and f"'{name}'" in err.value.message
        else:
            prepare_spec(tmp_path, name, analysis)
        if rule.readout:  # the linear read-out the rule offers is accepted
            prepare_spec(tmp_path, name, f"- {{kind: {kind}, direction: logit_diff{', ' + extra if extra else ''}}}")
    offers = "direction" in registration.schema()["properties"]
    assert offers == rule.readout or kind in ("attribution_patching", "activation_patching",
                                              "attention_vs_contribution")  # their own `direction`s


def test_the_reference_doc_states_every_rule():
    reference = (ROOT / "docs" / "spec-reference.md").read_text()
    for kind, registration in load_all().items():
        assert f"| `{kind}` | {registration.metric_rule.accepts} | {registration.metric_rule.why} |" in reference
    assert set(METRIC_RULES) == {"any", "none", "linear", "gradient"}


def test_attribution_patching_of_prob_diff_is_its_gradient_estimate(tmp_path):
    """(source - base) . d prob_diff / d resid_pre[layer] at the base (corrupted) run, per pair, averaged,
    written by hand on the bridge (one prompt at a time, a leaf swapped in for the residual)."""
    body = (DATA.replace("metric: logit_diff", "metric: prob_diff")
            .replace("id: head_attr}", "id: head_attr, direction: logit_diff}"))
    run = run_context(tmp_path, model_yaml("gpt_neox"), body)
    estimate = compute(run, "attribution_patching", target="resid_pre", layers=[1])
    assert "linearises it along with the model" in estimate.convention
    model = run.model
    total = None
    for pair in run.pairs:
        source = {}
        clean = torch.tensor([pair.clean.ids])
        model.run_with_hooks(clean, prepend_bos=False, fwd_hooks=[
            ("blocks.1.hook_resid_pre",
             lambda act, hook, source=source: source.setdefault("act", act.detach().clone()))])
        leaf = {}

        def swap(act, hook, leaf=leaf):
            leaf["x"] = act.detach().clone().requires_grad_(True)
            return leaf["x"]

        with torch.enable_grad():
            logits = model.run_with_hooks(torch.tensor([pair.corrupted.ids]), prepend_bos=False,
                                          fwd_hooks=[("blocks.1.hook_resid_pre", swap)])[0, -1].float()
            probs = logits.softmax(-1)
            (probs[pair.answer] - probs[pair.foil]).backward()
        effect = ((source["act"] - leaf["x"].detach()) * leaf["x"].grad).sum(-1)[0]  # [positions]
        total = effect if total is None else total + effect
    mean = (total / len(run.pairs)).double()
    values = grid(estimate, "values")[0]  # layer 1: the metric estimated after each patch
    theirs = values - run.baselines["corrupted"]
    # probabilities of a random model's 8192 tokens are small: compare relatively, at their own scale
    scale = float(mean.abs().max())
    assert scale > 1e-7 and torch.allclose(theirs, mean, rtol=1e-3, atol=1e-4 * scale), (theirs, mean)
    assert float((mean - mean.mean()).abs().max()) > 0.1 * scale  # cells differ


def test_under_extends_a_quoted_line_names_its_file(tmp_path):
    """The metric inherited from a base spec: the refusal, located at the child's analysis, quotes the
    base's line as base.yaml:N (issue 24 found '(line 3)' pointing into a file the message did not name)."""
    from mi_dsl.compile import prepare
    from tests.test_token_sets import SPEC

    (tmp_path / "base.yaml").write_text(SPEC.format(metric="prob_diff", analyses="  []"))
    child = tmp_path / "child.yaml"
    child.write_text("version: 1\nextends: base.yaml\nanalyses:\n  - {kind: logit_lens}\n")
    with pytest.raises(SpecMeaningError) as err:
        prepare(str(child), [], [])
    metric_line = SPEC.splitlines().index("metric: {metric}") + 1
    assert f"'prob_diff' (base.yaml:{metric_line})" in err.value.message
    assert err.value.location.file == str(child) and err.value.location.line == 4
    child.write_text("version: 1\nextends: base.yaml\nmetric: prob_diff\nanalyses:\n  - {kind: logit_lens}\n")
    with pytest.raises(SpecMeaningError, match="'prob_diff' \\(line 3\\)"):
        prepare(str(child), [], [])


def test_the_final_residual_site(tmp_path):
    """resid_post: the residual leaving each layer. Patching the last layer's (the final residual) at the
    final position makes the corrupted run's logits there the clean run's: 1 exactly, on every pair;
    resid_post of layer l is resid_pre of layer l + 1."""
    run = run_context(tmp_path, model_yaml("gpt_neox"))
    last = run.cfg.n_layers - 1
    post = compute(run, target="resid_post", positions="final", id="post")
    pre = compute(run, target="resid_pre", positions="final", id="pre")
    normalized = grid(post, "normalized")[:, 0]
    assert float(normalized[last]) == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(normalized[:last], grid(pre, "normalized")[1:, 0], atol=1e-5)
    assert post.data["hook"] == "blocks.{L}.hook_resid_post"
    estimate = compute(run, "attribution_patching", target="resid_post", positions="final", layers=[last])
    # the final norm lies between this site and the logits: not linear, so near 1 but not exactly
    assert grid(estimate, "normalized")[0, 0] == pytest.approx(1.0, abs=0.05)
