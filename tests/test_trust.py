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
from test_patching import DATA, compute, model_yaml, run_context, sharp_models, with_analyses  # noqa: F401

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
    assert compared.results["exact"].data["pairs"] == {"count": 2, "indices": [0, 1]}
    assert compared.results["attrib"].data["pairs"] == {"count": n, "indices": list(range(n))}
    assert compared.results["head_attr"].data["pairs"]["count"] == n


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


def test_compare_with_checks_the_direction(tmp_path):
    from mi_dsl.compile import prepare
    from test_patching import write_spec

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
        (layer, head), = compared.select_heads({"heads": f"{rule}(exact, 1)"})
        assert f"{rule}(exact, 1): L{layer}H{head} " in summary, (rule, summary)


def test_top_and_top_abs_differ_on_a_negative_score_and_summaries_say_which():
    from mi_dsl.analyses._patching import ranking_summary
    from mi_dsl.analyses.base import ranked_heads

    table = [[0.5, -0.9], [0.1, 0.2]]
    assert ranked_heads(table, "top", 1) == [(0, 0)]
    assert ranked_heads(table, "top_abs", 1) == [(0, 1)]
    assert ranked_heads(table, "bottom", 1) == [(0, 1)]
    data = {"per_head": table, "top": []}
    text = ranking_summary(data, {"kind": "activation_patching", "id": "p"})
    assert "top(p, 1): L0H0 0.500" in text and "top_abs(p, 1): L0H1 -0.900" in text


def test_head_attribution_top_list_is_what_top_selects(compared):
    data = compared.results["head_attr"].data
    picked = compared.select_heads({"heads": "top(head_attr, 5)"})
    assert [t["head"] for t in data["top"][:5]] == [f"L{l}H{h}" for l, h in picked]
