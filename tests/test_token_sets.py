"""Token-set answers and the metrics over them (metrics.py), the linear-metric rule of
decompositions (compile/compiler.py) and the answer-expression functions that make sets.

Metrics are checked against full logits of the model itself (its own forward), on a tiny
random Gemma-3 whose unembedding is soft-capped and whose norms are not identity.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from mi_dsl.errors import MiError, SpecMeaningError

METRICS = ["logit_diff", "prob", "prob_diff", "logprob", "rank"]


@pytest.fixture(scope="module")
def gemma():
    from mi_dsl.runtime.executor import Executor
    from mi_dsl.models import load_model
    from mi_dsl.runtime.unembed import Unembed
    from mi_dsl.spec.model import ModelSpec

    loaded = load_model(ModelSpec(source="random", architecture="gemma3", size="tiny", seed=5))
    return loaded, Executor(loaded, batch_size=8, progress=False), Unembed.of(loaded.bridge)


def padded(sets):
    width = max(map(len, sets))
    return torch.tensor([list(s) + [-1] * (width - len(s)) for s in sets])


def test_set_metrics_equal_full_logits(gemma):
    from mi_dsl.runtime.unembed import final_metrics

    loaded, executor, unembed = gemma
    torch.manual_seed(0)
    tokens = torch.randint(100, 5000, (5, 7))
    answers = [(11, 12, 13), (20,), (30, 31), (40, 41, 42), (50,)]
    foils = [(60,), (61, 62), (63, 64, 65), (66,), (67, 68)]
    with torch.no_grad():
        got = final_metrics(executor, tokens, padded(answers), padded(foils), METRICS, unembed)
        logits = loaded.bridge(tokens, prepend_bos=False)[:, -1].float()
    probs = logits.softmax(-1)
    for i, (a, f) in enumerate(zip(answers, foils)):
        a, f = list(a), list(f)
        assert float(got["logit_diff"][i]) == pytest.approx(float(logits[i, a].mean() - logits[i, f].mean()),
                                                            rel=1e-4, abs=1e-5)
        assert float(got["prob"][i]) == pytest.approx(float(probs[i, a].sum()), rel=1e-4, abs=1e-9)
        assert float(got["prob_diff"][i]) == pytest.approx(float(probs[i, a].sum() - probs[i, f].sum()),
                                                           rel=1e-4, abs=1e-9)
        assert float(got["logprob"][i]) == pytest.approx(float(probs[i, a].sum().log()), rel=1e-4)
        assert float(got["rank"][i]) == float((logits[i] > logits[i, a].max()).sum())


def test_one_token_sets_give_the_single_token_numbers_exactly(gemma):
    """[B] ids and [B, 1] sets are the same arithmetic (golden numbers do not move)."""
    from mi_dsl.runtime.unembed import final_metrics

    _, executor, unembed = gemma
    tokens = torch.randint(100, 5000, (4, 6))
    answers, foils = torch.randint(100, 5000, (4,)), torch.randint(5000, 9000, (4,))
    with torch.no_grad():
        single = final_metrics(executor, tokens, answers, foils, METRICS, unembed)
        sets = final_metrics(executor, tokens, answers[:, None], foils[:, None], METRICS, unembed)
    for name in METRICS:
        assert torch.equal(single[name], sets[name]), name


def test_set_directions_read_the_set_logit_difference_linearly(gemma):
    """The decomposition direction of a set metric: x . (mean W_U[:, A] - mean W_U[:, F]) +
    bias difference = the metric, for an un-capped unembedding (logit_diff is linear)."""
    from mi_dsl.metrics import compute_metrics
    from mi_dsl.runtime.unembed import Unembed

    _, _, unembed = gemma
    torch.manual_seed(1)
    plain = Unembed(unembed.W_U, torch.randn(unembed.W_U.shape[1]), 0.0)
    x = torch.randn(3, plain.W_U.shape[0])
    a, f = padded([(5, 6), (7,), (8, 9, 10)]), padded([(11,), (12, 13), (14,)])
    direction = plain.set_directions(a) - plain.set_directions(f)
    bias = plain.set_bias(a) - plain.set_bias(f)
    measured = compute_metrics(x, a, f, ["logit_diff"], plain)["logit_diff"]
    assert torch.allclose((x * direction).sum(-1) + bias, measured, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- the language

SPEC = """
version: 1
name: sets
model: {{source: random, architecture: gemma3, size: tiny, seed: 5, prepend_bos: true}}
vocabularies:
  tens: {{items: ["1", "4", "8"]}}
prompts:
  template: "The war lasted from the year 17{{tens}}5 to the year 17"
  answer: 'number_tokens("", to_int(tens) + 1, 10)'
  foil: 'number_tokens("", 0, to_int(tens))'
  corrupt: {{template: "The war lasted from the year 1701 to the year 17"}}
metric: {metric}
analyses:
{analyses}
"""


def prepare_spec(tmp_path: Path, metric: str, analyses: str):
    from mi_dsl.compile import prepare

    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(metric=metric, analyses=textwrap.indent(textwrap.dedent(analyses).strip(), "  ")))
    return path, prepare(str(path), [], [])


def test_answers_are_token_sets(tmp_path):
    _, p = prepare_spec(tmp_path, "prob_diff", "- {kind: activation_patching, target: resid_pre}")
    tok = p.tokenizer
    by_tens = {dict(pair.values)["tens"]: pair for pair in p.dataset.pairs}
    digits = lambda ids: [tok.token_str(t) for t in ids]  # noqa: E731
    assert digits(by_tens["4"].answers) == ["5", "6", "7", "8", "9"]
    assert digits(by_tens["4"].foils) == ["0", "1", "2", "3"]
    assert digits(by_tens["8"].answers) == ["9"] and len(by_tens["1"].foils) == 1


def test_decompositions_refuse_a_non_linear_metric_unless_told_what_to_decompose(tmp_path):
    for kind in ("logit_lens", "layer_attribution", "head_attribution"):
        with pytest.raises(SpecMeaningError, match="linear in the final residual") as err:
            prepare_spec(tmp_path, "prob_diff", f"- {{kind: {kind}}}")
        text = (tmp_path / "spec.yaml").read_text().splitlines()
        assert f"kind: {kind}" in text[err.value.location.line - 1]
        assert "prob_diff" in err.value.message
    for kind in ("logit_lens", "layer_attribution", "head_attribution"):
        prepare_spec(tmp_path, "prob_diff", f"- {{kind: {kind}, direction: logit_diff}}")
    prepare_spec(tmp_path, "logit_diff", "- {kind: attribution_patching}")
    prepare_spec(tmp_path, "prob_diff", "- {kind: attribution_patching}")  # a gradient estimate, linearised
    with pytest.raises(MiError, match="rank is a count with no gradient"):
        prepare_spec(tmp_path, "rank", "- {kind: attribution_patching}")


def test_overlapping_sets_are_refused(tmp_path):
    path = tmp_path / "spec.yaml"
    text = SPEC.format(metric="prob_diff", analyses="  []").replace("0, to_int(tens))", "0, to_int(tens) + 2)")
    path.write_text(text)
    from mi_dsl.compile import prepare

    with pytest.raises(SpecMeaningError, match="share token") as err:
        prepare(str(path), [], [])
    assert err.value.location.line == next(i for i, l in enumerate(text.splitlines(), 1) if "foil:" in l)


# --------------------------------------------------------------------------- metric expressions

def test_metric_expressions_equal_the_named_metrics_and_full_logits(gemma):
    from mi_dsl.dataset.tokenizer import load_tokenizer
    from mi_dsl.metric_expr import compile_metric
    from mi_dsl.metrics import compute_metrics
    from mi_dsl.spec.model import ModelSpec

    loaded, executor, unembed = gemma
    tok = load_tokenizer(ModelSpec(source="random", architecture="gemma3", size="tiny"), None)
    where = lambda off: None  # noqa: E731
    exprs = ["prob(answer) - prob(foil)", "logit(answer) - logit(foil)",
             'logit(" 5") - 2 * logprob(first_tokens("1|2")) + prob(answer) / 4']
    compiled = [compile_metric(text, where).bound(tok) for text in exprs]
    torch.manual_seed(2)
    tokens = torch.randint(100, 5000, (4, 6))
    answers = padded([(11, 12), (20,), (30, 31, 32), (40,)])
    foils = padded([(60,), (61, 62), (63,), (64, 65)])
    from mi_dsl.runtime.unembed import UNEMBED_INPUT

    with torch.no_grad():
        _, kept = executor.capture(tokens, {UNEMBED_INPUT: lambda a: a[:, -1]})
        got = compute_metrics(kept[UNEMBED_INPUT], answers, foils, ["prob_diff", "logit_diff", *compiled], unembed)
        logits = loaded.bridge(tokens, prepend_bos=False)[:, -1].float()
    assert torch.allclose(got[exprs[0]], got["prob_diff"], rtol=1e-6, atol=1e-9)
    assert torch.equal(got[exprs[1]], got["logit_diff"])
    five, one, two = tok.encode(" 5")[0], tok.encode("1")[0], tok.encode("2")[0]
    probs = logits.softmax(-1)
    mass = (probs[:, one] + probs[:, two]).log()
    answer_prob = torch.stack([probs[i, [t for t in answers[i].tolist() if t >= 0]].sum() for i in range(4)])
    expected = logits[:, five] - 2 * mass + answer_prob / 4
    assert torch.allclose(got[exprs[2]], expected, rtol=1e-4, atol=1e-5)


def test_metric_expressions_are_checked_where_written(tmp_path):
    cases = [("'prob(answer) - rank(foil)'", "unknown function 'rank'", "rank"),
             ("'prob(answer, foil)'", "reads one token or token set", "prob"),
             ("'prob(descriptor)'", "a metric reads answer, foil", "descriptor"),
             ("'prob(answer) > 0.5'", "combines logit(...)", "prob"),
             ("logit_dif", "unknown value 'logit_dif' for 'metric'", "logit_dif")]
    for metric, message, at in cases:
        with pytest.raises(MiError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
            prepare_spec(tmp_path, metric, "[]")
        number, line = next((i, l) for i, l in enumerate((tmp_path / "spec.yaml").read_text().splitlines(), 1)
                            if l.startswith("metric:"))
        assert (err.value.location.line, err.value.location.column) == (number, line.index(at) + 1), metric


def test_every_analysis_runs_on_token_sets_and_the_decompositions_add_up(tmp_path):
    """Set answers through the whole run on a tiny Gemma: the logit lens ends at the measured
    set logit difference and the layer attribution sums to it (logit_diff is linear)."""
    from mi_dsl.running import run_prepared

    analyses = """
    - {kind: logit_lens}
    - {kind: layer_attribution}
    - {kind: head_attribution, id: heads}
    - {kind: attention_vs_contribution, heads: 'top(heads, 2)', to: tens}
    - {kind: ablation, heads: 'top(heads, 1)', positions: final}
    - {kind: activation_patching, target: resid_pre, positions: [tens, final]}
    - {kind: attribution_patching, target: z}
    - {kind: predictions}
    """
    _, p = prepare_spec(tmp_path, "logit_diff", analyses)
    assert any(len(pair.answers) > 1 for pair in p.dataset.pairs)
    results = run_prepared(p, out_dir=str(tmp_path / "runs"), progress=False, fresh=True).results
    lens, layers = results["analyses"]["logit_lens"], results["analyses"]["layer_attribution"]
    measured = results["baselines"]["clean"]
    assert lens["measured_logit_diff"] == pytest.approx(measured, rel=1e-5)
    assert lens["logit_diff"][-1] + lens["unembed_bias_diff"] == pytest.approx(measured, rel=1e-4, abs=1e-5)
    assert layers["sum"] == pytest.approx(measured, rel=1e-4, abs=1e-5)
    assert abs(measured) > 1e-3  # not a trivial zero
    assert results["analyses"]["predictions"]["answer"]["set_size"] > 1
