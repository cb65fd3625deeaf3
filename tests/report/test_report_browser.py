"""The report in a real browser: headless Chromium (Debian's `chromium`, which .ci/run
installs) driven by playwright. A tiny random model's run is opened from disk and must
show no console error, draw every plotly figure, mount the circuitsvis view, and have
every link, iframe and script resolve to a file of the run (or an anchor of the page).
test_report_pixels.py checks the shipped reports by their pixels; docs/report-*.jpg are
photographs of them (tests/report/screenshots.py).
"""
from __future__ import annotations

from urllib.parse import unquote, urlparse

import pytest

from tests.report.browser import browser, open_report
from tests.test_api import write

ATTENTION = """\
  - {kind: attention, id: patterns, heads: 'top(heads, 3)', prompts: [0, 1]}
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    pytest.importorskip("playwright.sync_api", reason="playwright is a test dependency (pip install -e .[test])")
    import mi_dsl
    from tests.test_api import BODY

    folder = tmp_path_factory.mktemp("browser")
    spec = write(folder, BODY + ATTENTION)
    results = mi_dsl.run(spec, out_dir=str(folder / "runs"), progress=False)
    return results.run_dir


@pytest.fixture(scope="module")
def page(report):
    with browser() as instance:
        page, errors = open_report(instance, report)  # every figure opened: each draws when opened
        page.wait_for_timeout(1500)
        yield page, errors


def test_no_console_errors(page):
    _, errors = page
    assert errors == []


def test_every_plotly_figure_is_drawn(page, report):
    p, _ = page
    boxes = p.locator("details[data-fig]")
    count = boxes.count()
    figures = list((report / "figures").glob("*.json"))
    assert count == len(figures) >= 4
    for i in range(count):
        assert boxes.nth(i).locator(".plot .main-svg").count() >= 1, boxes.nth(i).inner_text()
    # the small multiples: one figure with a heatmap per head
    grid = p.locator("details[data-fig]", has_text="heads_prompt0")
    assert grid.locator(".plot .hm, .plot .heatmaplayer image, .plot image").count() >= 1


def test_the_circuitsvis_view_is_mounted(page):
    p, _ = page
    frame = next(f for f in p.frames if f.url.endswith("patterns__view.html"))
    frame.wait_for_selector("#view-0 *", timeout=15000)
    assert frame.locator("#view-0 *").count() > 5
    assert frame.locator("#view-1 *").count() > 5


def test_every_link_resolves(page, report):
    p, _ = page
    targets = p.evaluate("""() => [
        ...[...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href')),
        ...[...document.querySelectorAll('iframe[src], script[src]')].map(e => e.getAttribute('src'))]""")
    assert len(targets) > 10
    ids = set(p.evaluate("() => [...document.querySelectorAll('[id]')].map(e => e.id)"))
    for target in targets:
        if target.startswith("#"):
            assert target[1:] in ids, target
            continue
        parsed = urlparse(target)
        assert not parsed.scheme and not parsed.netloc, f"the report links outside the run: {target}"
        assert (report / unquote(parsed.path)).is_file(), target


def test_sidebar_and_sections(page):
    p, _ = page
    nav = p.locator("nav a").all_inner_texts()
    assert nav[:2] == ["Overview", "Dataset"] and any(t.startswith("heads") for t in nav)
    assert any(t.startswith("Warnings") for t in nav)
    # token-by-token pairs: answer and foil marked, slot tokens coloured
    assert p.locator("#dataset .tok.answer").count() >= 2 and p.locator("#dataset .tok[title*='slot noun']").count()
    assert "forward passes" in p.locator("#timings").inner_text()
    assert "top(heads): " in p.locator("#a-heads .summary").inner_text()
