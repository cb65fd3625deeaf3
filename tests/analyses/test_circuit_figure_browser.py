"""The circuit figure in a real browser (headless Chromium through playwright, as
tests/report/test_report_browser.py drives it): on a SmolLM2-shaped graph (30 layers, 9 query
heads on 3 key/value heads) with a circuit touching most nodes, no two node labels overlap,
and on a tiny graph too.

`MI_DSL_SCREENSHOT_CIRCUIT=PATH` also saves a screenshot."""
from __future__ import annotations

import os
import random

import pytest

from mi_dsl.analyses._circuit.graph import Graph
from tests.report.browser import chromium


def synthetic(graph: Graph, edges: int, seed: int) -> dict:
    rng = random.Random(seed)
    names = graph.edge_names()
    scores = {n: rng.uniform(-1, 1) for n in names}
    circuit = rng.sample(names, edges) + [n for n in names if n.endswith("->logits")]
    return {"graph": dict(graph.describe(), d_model=64),
            "methods": {"eap": {"scores": scores, "circuit": sorted(set(circuit)), "circuit_edges": len(set(circuit)),
                                "circuit_nodes": graph.n_forward + 1}}}


def label_boxes(fig, tmp_path, screenshot=None):
    from playwright.sync_api import sync_playwright

    path = tmp_path / "figure.html"
    fig.write_html(path, include_plotlyjs=True, full_html=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(path.as_uri())
        page.wait_for_selector(".scatterlayer .trace text")
        boxes = page.evaluate("""() => {
            const traces = document.querySelectorAll('.scatterlayer .trace');
            const nodes = traces[traces.length - 1];
            return Array.from(nodes.querySelectorAll('text')).map(t => {
                const r = t.getBoundingClientRect();
                return [t.textContent, r.left, r.top, r.right, r.bottom];
            });
        }""")
        if screenshot:
            page.screenshot(path=screenshot, full_page=True)
        browser.close()
    return boxes


def overlaps(boxes):
    found = []
    for i, (a, l1, t1, r1, b1) in enumerate(boxes):
        for b, l2, t2, r2, b2 in boxes[i + 1:]:
            if l1 < r2 and l2 < r1 and t1 < b2 and t2 < b1:
                found.append((a, b))
    return found


@pytest.mark.parametrize("shape,edges", [((30, 9, 3), 250), ((2, 4, 1), 20), ((12, 12, 12), 250)])
def test_no_two_node_labels_overlap(tmp_path, shape, edges):
    pytest.importorskip("playwright.sync_api", reason="playwright is a test dependency (pip install -e .[test])")
    from mi_dsl.analyses._circuit.drawing import graph_figure

    graph = Graph(*shape)
    fig = graph_figure(synthetic(graph, edges, seed=1), "eap")
    boxes = label_boxes(fig, tmp_path, os.environ.get("MI_DSL_SCREENSHOT_CIRCUIT") if shape[0] == 30 else None)
    labels = {b[0] for b in boxes}
    assert "input" in labels and "logits" in labels and len(boxes) > 0.5 * graph.n_forward
    assert all(b[3] > b[1] and b[4] > b[2] for b in boxes)  # drawn, with a size
    assert overlaps(boxes) == []


def test_overlap_check_can_fail():
    assert overlaps([("a", 0, 0, 10, 10), ("b", 5, 5, 15, 15)]) == [("a", "b")]
    assert overlaps([("a", 0, 0, 10, 10), ("b", 10, 0, 20, 10)]) == []
