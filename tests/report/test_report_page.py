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


def with_pairs(**dataset):
    log = {**LOG, "dataset": {**LOG["dataset"], **dataset}}
    log["dataset"]["pairs"] = [{"clean": "a b", "corrupted": "c b", "answer": 5, "foil": 6},
                               {"clean": "a <x>", "corrupted": "c <x>", "answer": 6, "foil": 5}]
    log["per_prompt"] = {"clean": {"logit_diff": [2.0, 1.0]}, "corrupted": {"logit_diff": [-2.0, -1.0]}}
    log["candidate_metrics"] = {"clean": {"logit_diff": [2.0, -0.5, 1.0]},
                                "corrupted": {"logit_diff": [-2.0, 0.5, -1.0]}}
    return log


def test_each_final_pair_is_a_sortable_row_with_its_metrics():
    from mi_dsl.report.per_prompt import final_pair_rows

    html = index_page(with_pairs(), {}, {}, {"files": [], "note": ""}, Path("."))
    assert "<table class='sortable'>" in html and "a &lt;x&gt;" in html
    rows = final_pair_rows(with_pairs())
    assert [r["clean logit_diff"] for r in rows] == [2.0, 1.0] and rows[1]["corrupted logit_diff"] == -1.0
    assert rows[0]["pair"] == 0 and rows[0]["answer"] == 5


def test_rejected_candidates_are_listed_with_prompts_and_metrics():
    from mi_dsl.report.per_prompt import candidate_rows

    kept = [{"clean": "p0", "corrupted": "q0", "kept": True}, {"clean": "p1", "corrupted": "q1", "kept": False},
            {"clean": "p2", "corrupted": "q2", "kept": True}]
    log = with_pairs(candidate_pairs=kept)
    rows = candidate_rows(log)
    assert [r["kept"] for r in rows] == ["yes", "no", "yes"] and rows[1]["clean logit_diff"] == -0.5
    html = index_page(log, {}, {}, {"files": [], "note": ""}, Path("."))
    assert "3 candidates judged by the last keep step; 1 rejected" in html
    rejected = html[html.index("The rejected candidates"):]
    assert "p1" in rejected and "p0" not in rejected


def test_candidates_without_their_prompts_are_not_paired_by_guess():
    from mi_dsl.report.per_prompt import candidate_rows

    log = with_pairs(candidate_pairs=[{"clean": "p0", "corrupted": "q0", "kept": True}])  # one of three
    rows = candidate_rows(log)
    assert len(rows) == 3 and all("clean" not in r and "kept" not in r for r in rows)
    assert "an unknown number of rejected" in index_page(log, {}, {}, {"files": [], "note": ""}, Path("."))
