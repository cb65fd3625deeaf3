"""report/page.py on a hand-written run log: the convention line, key numbers, the sidebar
and escaping (the browser test covers a real run)."""
from __future__ import annotations

from pathlib import Path

from mi_dsl.report.page import index_page, key_numbers

LOG = {
    "format_version": 1, "status": "complete",
    "spec": {"name": "p<1>", "file": "spec.yaml", "hash": "abc", "description": "a <b>test</b>"},
    "provenance": {"model": {"id": "random"}, "device": "cpu", "seed": 0},
    "dataset": {"candidates": 2, "final_pairs": 2, "token_lengths": [3], "vocab": {}, "stages": [],
                "examples": [{"clean": {"tokens": ["<bos>", " a", " b"], "slots": [None, "x", None]},
                              "corrupted": {"tokens": ["<bos>", " c", " b"], "slots": [None, "x", None]},
                              "answer": [5, " yes"], "foil": [6, " no"]}]},
    "baselines": {"clean": 1.5, "corrupted": -1.5}, "metric": "logit_diff",
    "analyses": {"patch": {"kind": "activation_patching", "summary": "best L1", "pairs_used": 2,
                           "convention": "denoising: 0 = corrupted, 1 = clean", "best": 0.75, "flag": True,
                           "values": [[0.1]]},
                 "plain": {"kind": "logit_lens", "summary": "", "pairs_used": 2}},
    "warnings": ["spec.yaml:3:4: warning: something <odd>"],
    "timings": {"total": 1.25}, "forward_passes": 7, "store": {"reused": 1, "computed": 2},
}


def page() -> str:
    return index_page(LOG, {}, {}, {"files": [], "note": "not asked"}, Path("."))


def test_convention_is_shown_when_the_result_states_one():
    html = page()
    assert "<p class='convention'><b>Convention.</b> denoising: 0 = corrupted, 1 = clean</p>" in html
    assert html.count("class='convention'") == 1  # the analysis without one shows none


def test_key_numbers_are_the_scalar_numbers():
    assert key_numbers(LOG["analyses"]["patch"]) == {"best": 0.75}


def test_sidebar_links_every_section_and_text_is_escaped():
    html = page()
    for anchor in ("#overview", "#dataset", "#baselines", "#analyses", "#a-patch", "#a-plain", "#warnings",
                   "#timings", "#static"):
        assert f"href='{anchor}'" in html
        assert f"id='{anchor[1:]}'" in html
    assert "p&lt;1&gt;" in html and "a &lt;b&gt;test&lt;/b&gt;" in html and "&lt;odd&gt;" in html
    assert "7 forward passes" in html
    assert "<span class='tok answer' title='answer, id 5'> yes</span>" in html
    assert "title='position 1, slot x'" in html
