"""Numbers you can trust (issue 11): comparisons on the same pairs, stated conventions,
selectors and summaries that agree, refusals of decompositions that would mislead.

Each test here failed before its fix. Tiny random Gemma-3 models (grouped-query, post-attention
norms) with sharpened weights; the slow reference against plain transformers lives in
test_reference.py.
"""
from __future__ import annotations

import pytest
import torch

from mi_dsl.errors import MiError
from tests.analyses.test_patching import DATA, compiled, compute, model_yaml, run_context, sharp_models, with_analyses  # noqa: F401

GEMMA = model_yaml("gemma3")


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """Exact patching on 2 pairs, attribution on all of them, compared."""
    body = with_analyses("""
        - {kind: activation_patching, id: exact, target: z, max_pairs: 2}
        - {kind: attribution_patching, id: attrib, target: z, compare_with: exact}
        - {kind: attribution_patching, id: attrib_two, target: z, max_pairs: 2}
    """)
    return run_context(tmp_path_factory.mktemp("compared"), GEMMA, body)


def test_every_result_records_its_pairs(compared):
    n = len(compared.pairs)
    assert n > 2
    assert compared.results["exact"].pairs == {"count": 2, "indices": [0, 1]}
    assert compared.results["attrib"].pairs == {"count": n, "indices": list(range(n))}
    assert compared.results["head_attr"].pairs["count"] == n


def test_attribution_is_compared_on_the_exact_runs_pairs(compared):
    c = compared.results["attrib"].data["comparison"]
    assert c["pairs"] == {"count": 2, "indices": [0, 1]}
    # the estimate compared is the one an attribution on those 2 pairs gives
    alone = {r["label"]: r["normalized"] for r in compared.results["attrib_two"].tables["cells"]}
    assert len(c["labels"]) == len(alone)
    for label, value in zip(c["labels"], c["attribution"]):
        assert value == pytest.approx(alone[label], rel=1e-4, abs=1e-6)
    exact = {r["label"]: r["normalized"] for r in compared.results["exact"].tables["cells"]}
    assert c["exact"] == [exact[label] for label in c["labels"]]
    assert "same 2 pairs" in compared.results["attrib"].summary


def test_attribution_on_fewer_pairs_than_the_exact_run_is_refused(tmp_path):
    body = with_analyses("""
        - {kind: activation_patching, id: exact, target: z, max_pairs: 2}
        - {kind: attribution_patching, target: z, compare_with: exact, max_pairs: 1}
    """)
    with pytest.raises(MiError) as info:
        run_context(tmp_path, GEMMA, body)
    assert "cannot be compared on the same prompts" in str(info.value)
    assert info.value.location.path == "analyses[2].compare_with"


def test_an_exact_result_without_its_pairs_on_other_pairs_is_refused(compared):
    """A result computed by hand (no pair envelope) on fewer pairs: the refusal once raised a
    TypeError (len(None)) instead of saying why."""
    import dataclasses

    from tests.analyses.test_patching import compute as compute_on

    small = dataclasses.replace(compared, pairs=compared.pairs[:2], results={})
    exact = compute_on(small, target="z", id="exact")
    assert exact.pairs is None and exact.data["prompts"] == 2
    whole = dataclasses.replace(compared, results={"exact": exact})
    with pytest.raises(MiError) as info:
        compute_on(whole, "attribution_patching", target="z", compare_with="exact")
    assert "does not record which pairs" in str(info.value) and "cannot be compared" in str(info.value)


def test_compare_with_checks_the_direction(tmp_path):
    from mi_dsl.compile import prepare
    from tests.analyses.test_patching import write_spec

    body = with_analyses("""
        - {kind: activation_patching, id: exact, target: z, direction: noising}
        - {kind: attribution_patching, target: z, compare_with: exact}
    """)
    with pytest.raises(MiError) as info:
        prepare(str(write_spec(tmp_path, GEMMA, body)), [], [])
    assert "runs noising, not denoising" in str(info.value)
    assert info.value.location.path == "analyses[2].compare_with"


# --------------------------------------------------------------------------- top / top_abs


def test_patching_summary_names_the_heads_the_selectors_pick(compared):
    summary = compared.results["exact"].summary
    for rule in ("top", "top_abs"):
        (layer, head), = compared.select_heads(compiled(compared, "attention", heads=f"{rule}(exact, 1)"))
        assert f"{rule}(exact, 1): L{layer}H{head} " in summary, (rule, summary)


def test_top_and_top_abs_differ_on_a_negative_score_and_summaries_say_which():
    from mi_dsl.analyses._patching import ranking_summary
    from mi_dsl.analyses.base import ranked_heads

    table = [[0.5, -0.9], [0.1, 0.2]]
    assert ranked_heads(table, "top", 1) == [(0, 0)]
    assert ranked_heads(table, "top_abs", 1) == [(0, 1)]
    assert ranked_heads(table, "bottom", 1) == [(0, 1)]
    data = {"per_head": table, "top": []}
    from mi_dsl.analyses.activation_patching import ActivationPatchingParams

    text = ranking_summary(data, ActivationPatchingParams(kind="activation_patching", id="p"))
    assert "top(p, 1): L0H0 0.500" in text and "top_abs(p, 1): L0H1 -0.900" in text


def test_head_attribution_top_list_is_what_top_selects(compared):
    data = compared.results["head_attr"].data
    picked = compared.select_heads(compiled(compared, "attention", heads="top(head_attr, 5)"))
    assert [t["head"] for t in data["top"][:5]] == [f"L{l}H{h}" for l, h in picked]


# --------------------------------------------------------------------------- conventions


@pytest.mark.parametrize("kind", ["logit_lens", "layer_attribution", "head_attribution"])
def test_decomposing_a_nonlinear_metric_is_refused_unless_a_direction_is_named(tmp_path, kind):
    from mi_dsl.compile import prepare
    from tests.analyses.test_patching import write_spec

    body = DATA.replace("metric: logit_diff", "metric: prob").replace(
        "  - {kind: head_attribution, id: head_attr}\n", f"  - {{kind: {kind}}}\n")
    with pytest.raises(MiError) as info:
        prepare(str(write_spec(tmp_path, GEMMA, body)), [], [])
    assert "not linear" in str(info.value) and "direction: logit_diff" in info.value.hint
    assert info.value.location.path == "analyses[0].kind"
    named = body.replace(f"{{kind: {kind}}}", f"{{kind: {kind}, direction: logit_diff}}")
    prepare(str(write_spec(tmp_path, GEMMA, named)), [], [])


def test_every_result_states_its_convention(compared):
    for name, result in compared.results.items():
        assert len(result.convention) > 40, name
    assert "first-order" in compared.results["attrib"].convention
    assert "post-attention norm" in compared.results["head_attr"].convention  # Gemma


@pytest.fixture(scope="module")
def lens(tmp_path_factory):
    body = with_analyses("""
        - {kind: logit_lens, id: final}
        - {kind: logit_lens, id: per_layer, normalize: per_layer}
    """)
    return run_context(tmp_path_factory.mktemp("lens"), GEMMA, body)


def test_logit_lens_per_layer_applies_the_final_norm_at_each_layer(lens):
    """Independent: the model's own ln_final module on each captured residual, then the
    unembedding columns (the bridge folds the norm's weights into W_U)."""
    run = lens
    n_layers = run.cfg.n_layers
    names = [f"blocks.{l}.hook_resid_pre" for l in range(n_layers)] + [f"blocks.{n_layers - 1}.hook_resid_post"]
    with torch.no_grad():
        kept = run.capture_final(names)
        W_U = run.model.W_U
        direction = W_U[:, run.answers()] - W_U[:, run.foils()]  # [d, N]
        expected = [float((run.model.ln_final(kept[n]) * direction.T).sum(-1).mean()) for n in names]
    per_layer = run.results["per_layer"].data
    convention = run.results["per_layer"].convention
    assert per_layer["normalize"] == "per_layer"
    assert per_layer["logit_diff"] == pytest.approx(expected, rel=1e-4, abs=1e-6)
    final = run.results["final"].data["logit_diff"]
    assert final[-1] == pytest.approx(per_layer["logit_diff"][-1], rel=1e-5)  # the same scale at the end
    assert final[0] != pytest.approx(per_layer["logit_diff"][0], rel=1e-2)    # not elsewhere
    assert "per_layer" in convention and "own scale" in convention


# --------------------------------------------------------------------------- head detection


def tl_detect(run, tokens, exclude_bos=False, exclude_current_token=False):
    """transformer_lens.head_detector.detect_head on each sequence (its own forward and cache), averaged:
    [3, L, H]. detect_head tokenizes a string; it is handed the same token ids instead."""
    from transformer_lens.head_detector import detect_head

    model = run.model
    out = []
    for row in tokens:
        sequence = row[None]
        with torch.no_grad():
            _, cache = model.run_with_cache(sequence, remove_batch_dim=True)
        original = model.to_tokens
        model.to_tokens = lambda seq, *a, **k: sequence  # noqa: B023  (restored in the finally, this iteration)
        try:
            out.append(torch.stack([detect_head(model, "ids", name, cache=cache, exclude_bos=exclude_bos,
                                                exclude_current_token=exclude_current_token)
                                    for name in ("previous_token_head", "duplicate_token_head", "induction_head")]))
        finally:
            model.to_tokens = original
    return torch.stack(out).mean(0).double()


@pytest.mark.parametrize("flags", [{}, {"exclude_bos": True}, {"exclude_bos": True, "exclude_current_token": True}])
def test_transformer_lens_definition_equals_detect_head(compared, flags):
    from mi_dsl.analyses.head_detection import random_repeated_tokens

    # few token ids, so the first copy repeats tokens too ("any earlier copy" matters)
    params = dict(seq_len=8, batch=3, low=100, high=107, definition="transformer_lens", **flags)
    result = compute(compared, "head_detection", "detect_tl", **params)
    tokens = random_repeated_tokens(compared, compiled(compared, "head_detection", **params))
    assert len(set(tokens[0, 1:9].tolist())) < 8
    expected = tl_detect(compared, tokens, **flags)
    for i, kind in enumerate(("previous_token", "duplicate_token", "induction")):
        got = torch.tensor(result.data[kind], dtype=torch.float64)
        assert torch.allclose(got, expected[i], atol=1e-6, rtol=0), kind
    assert result.data["definition"] == "transformer_lens" and "detect_head" in result.convention


def test_diagonal_and_transformer_lens_definitions_differ_as_documented(compared):
    """On two-copy sequences of distinct tokens, TL's duplicate score counts only the second copy's queries
    (and divides by all queries): about half the diagonal mean."""
    params = dict(seq_len=12, batch=2, low=100, high=20000)
    diagonal = compute(compared, "head_detection", "detect_diag", **params).data
    tl = compute(compared, "head_detection", "detect_tl2", definition="transformer_lens", **params).data
    assert diagonal["definition"] == "diagonal"
    d, t = torch.tensor(diagonal["duplicate_token"]), torch.tensor(tl["duplicate_token"])
    assert not torch.allclose(d, t, atol=1e-3)
    assert t.sum() < d.sum()


def test_exclude_flags_need_the_transformer_lens_definition(tmp_path):
    from mi_dsl.compile import prepare
    from tests.analyses.test_patching import write_spec

    body = with_analyses("- {kind: head_detection, exclude_bos: true}")
    with pytest.raises(MiError) as info:
        prepare(str(write_spec(tmp_path, GEMMA, body)), [], [])
    assert info.value.location.path == "analyses[1].exclude_bos"


# --------------------------------------------------------------------------- ablation under post-norms


def test_ablation_splits_rescaling_by_the_post_norm_from_changed_output(compared):
    """Gemma's post-attention norm: zeroing L0H0 at the final position changes layer 0's norm scale, so
    its sibling heads' attributions move though their outputs do not. That move is all 'rescaled'."""
    result = compute(compared, "ablation", "ablate", heads="L0H0", positions="final")
    d = result.data
    before, after = torch.tensor(d["dla_before"]), torch.tensor(d["dla_after"])
    rescaled, changed = torch.tensor(d["dla_rescaled"]), torch.tensor(d["dla_changed_output"])
    size = float(before.abs().max())
    assert torch.allclose(after - before, rescaled + changed, atol=1e-6 * size, rtol=1e-5)
    assert torch.allclose(before, torch.tensor(compared.results["head_attr"].data["per_head"]), rtol=1e-4,
                          atol=1e-6 * size)
    ratios = [r["mean"] for r in d["post_attn_scale_ratio"]]
    assert abs(ratios[0] - 1) > 1e-3                    # the ablated layer's norm scale moved
    siblings = [(0, h) for h in range(1, before.shape[1])]
    for l, h in siblings:                               # their z is computed before the ablation
        assert abs(changed[l, h]) <= 1e-6 * size
        assert float(rescaled[l, h]) == pytest.approx(float(after[l, h] - before[l, h]), rel=1e-4, abs=1e-7 * size)
    assert any(abs(after[l, h] - before[l, h]) > 1e-3 * size for l, h in siblings)
    assert all(b["head"] not in {f"L{l}H{h}" for l, h in siblings} for b in d["backup_heads"])
    assert "changed output" in result.convention


def test_report_shows_each_convention_and_the_compared_pairs(tmp_path):
    from mi_dsl.running import run_spec
    from tests.analyses.test_patching import write_spec

    body = with_analyses("""
        - {kind: logit_lens, normalize: per_layer}
        - {kind: activation_patching, id: exact, target: z, max_pairs: 2}
        - {kind: attribution_patching, target: z, compare_with: exact}
    """)
    outcome = run_spec(write_spec(tmp_path, GEMMA, body), progress=False, out_dir=str(tmp_path / "runs"))
    page = outcome.report_path.read_text()
    for name, a in outcome.results["analyses"].items():
        assert a["convention"], name
    assert page.count("<b>Convention.</b>") == len(outcome.results["analyses"])
    assert "normalize: per_layer" in page
    assert "on the same 2 pairs" in page


def test_single_prompt_analyses_record_the_one_pair_they_read(compared):
    assert compute(compared, "predictions", "pred", index=1).pairs == {"count": 1, "indices": [1]}
    assert compute(compared, "predictions", "pred2", prompt="The cats are", answer=" big").pairs["count"] == 0
    assert compute(compared, "attention", "att", heads="L0H0", prompts=[0, 2]).pairs == {"count": 2, "indices": [0, 2]}
