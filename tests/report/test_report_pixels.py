"""The shipped tutorial, ioi and syllogism reports as a reader sees them at 1,400 px, checked by
pixels, not by links: every figure and embedded view opened, drawn (non-zero size, coloured
pixels, every canvas of a view non-empty), nothing wider than its column, no console error;
every layer grid labels every layer, layer 0 on top; the attention browser redraws another
prompt; a per-prompt table sorts.

The specs run as shipped (templates, vocabularies, analyses) on a tiny random Gemma-shaped model
of 12 layers (so a layer axis has more rows than plotly labels by default), with a pipeline that
keeps part of the candidates (a keep step: the report's rejected candidates) and samples 8 pairs:
the same figures as on the embedded Gemma, in seconds. docs/report-*.jpg are the real model's
(tests/report/screenshots.py).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.report.browser import browser, grid_ticks, measure_figures, open_report, overflow, pixels
from tests.random_sizes import tiny_variant

ROOT = Path(__file__).resolve().parents[2]
SPECS = ("tutorial", "ioi", "syllogism")
LAYERS = 12


def tiny_report(name: str, out: Path) -> Path:
    import mi_dsl

    data = yaml.safe_load((ROOT / "specs" / f"{name}.yaml").read_text())
    with tiny_variant("tiny-report", layers=LAYERS) as size:
        data["model"] = {"source": "random", "architecture": "gemma3", "size": size, "seed": 3, "prepend_bos": True}
        data["pipeline"] = [{"keep": "clean.logit_diff > 0"}, {"sample": {"n": 8, "seed": 0}}]
        results = mi_dsl.run(data, out_dir=str(out), progress=False, base_dir=str(ROOT / "specs"), fresh=True)
    return results.run_dir


@pytest.fixture(scope="module")
def chromium_instance():
    pytest.importorskip("playwright.sync_api", reason="playwright is a test dependency (pip install -e .[test])")
    with browser() as instance:
        yield instance


@pytest.fixture(scope="module", params=SPECS)
def seen(request, chromium_instance, tmp_path_factory):
    """One report, opened and measured once: (page, console errors, figures, overflow, grid ticks)."""
    run_dir = tiny_report(request.param, tmp_path_factory.mktemp(request.param))
    page, errors = open_report(chromium_instance, run_dir)
    figures = measure_figures(page)
    out = {"name": request.param, "page": page, "errors": errors, "figures": figures,
           "overflow": overflow(page), "ticks": grid_ticks(page), "run_dir": run_dir}
    yield out
    page.close()


def test_every_figure_and_view_is_drawn(seen):
    figures = seen["figures"]
    expected = len(list((seen["run_dir"] / "figures").glob("*.html")))
    assert len(figures) == expected >= 3, [f["name"] for f in figures]
    for f in figures:
        box, px = f["box"], f["pixels"]
        assert box and box["width"] > 300 and box["height"] > 150, (f["name"], box)
        assert px["coloured"] > 100 and px["colours"] > 8, (f["name"], px)  # 8 dots of a scatter: about 200
        if f["kind"] == "view":
            assert f["drawings"] and all(w > 0 and h > 0 for w, h in f["drawings"]), (f["name"], f["drawings"])


def test_views_are_shown_whole(seen):
    views = [f for f in seen["figures"] if f["kind"] == "view"]
    if seen["name"] != "tutorial":
        assert views
    for f in views:
        assert f["frame_overflow"] <= 1, f["name"]
        assert f["box"]["height"] > 300, f  # taken from the view's content, not a fixed 240 px


def test_nothing_overflows_its_column(seen):
    assert seen["overflow"] == []


def test_no_console_errors(seen):
    assert seen["errors"] == []


def test_layer_grids_label_every_layer_with_layer_0_on_top(seen):
    grids = seen["ticks"]
    assert grids, "no layer grid was drawn"
    for grid in grids:
        if grid["ytitle"] == "Layer":  # every row labelled with its layer, in order, the first on top
            layers = [int(y) for y in grid["y"]]
            assert len(layers) == grid["rows"] and layers == sorted(set(layers)), grid
            if grid["rows"] == LAYERS:
                assert grid["y"][0] == "0" and grid["y"][-1] == str(LAYERS - 1)
        if grid["xtitle"] == "Head":
            assert grid["x"] == [str(i) for i in range(grid["columns"])], grid


def test_the_attention_browser_shows_another_prompt(seen):
    page = seen["page"]
    frames = page.locator("iframe[src$='__all_prompts.html']")
    if seen["name"] == "tutorial":
        assert frames.count() == 0
        return
    frame = frames.first.element_handle().content_frame()
    options = frame.locator("#browse-pick option")
    assert options.count() == 8  # every final pair
    frame.select_option("#browse-pick", index=3)
    frame.wait_for_function("() => document.querySelector('#browse-plot .gtitle').textContent.endsWith('pair 3')")
    frames.first.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    assert frame.locator("#browse-text").inner_text() == options.nth(3).inner_text().split(": ", 1)[1]
    assert pixels(page, frames.first.screenshot())["coloured"] > 1000


def test_per_prompt_table_sorts(seen):
    page = seen["page"]
    table = page.locator("#dataset table.sortable").first
    header = table.locator("thead th", has_text="clean logit_diff")
    column = header.evaluate("th => [...th.parentNode.children].indexOf(th)")
    header.click()
    values = [float(v) for v in table.locator(f"tbody tr td:nth-child({column + 1})").all_inner_texts()]
    assert values == sorted(values) and len(values) == 8
    header.click()
    values = [float(v) for v in table.locator(f"tbody tr td:nth-child({column + 1})").all_inner_texts()]
    assert values == sorted(values, reverse=True)


def test_rejected_candidates_are_listed_with_their_metrics(seen):
    text = seen["page"].locator("#dataset").inner_text()
    assert "rejected" in text
    rows = seen["page"].locator("#dataset table.sortable").nth(1).locator("tbody tr")
    assert rows.count() > 0
    first = rows.first.inner_text()
    assert "no" in first and float(first.split("\t")[-2]) <= 0  # rejected: clean logit_diff > 0 failed


@pytest.mark.parametrize("width", [1280, 1920])
def test_figures_fit_windows_from_1280_to_1920_px(seen, width):
    page = seen["page"]
    page.set_viewport_size({"width": width, "height": 900})
    try:
        assert overflow(page, settle_ms=20000) == []  # once the figures have re-laid themselves
    finally:
        page.set_viewport_size({"width": 1400, "height": 900})
        page.wait_for_timeout(800)
