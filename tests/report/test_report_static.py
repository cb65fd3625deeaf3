"""Static PNG/SVG copies of a report's figures (report/static.py): written when kaleido and a
Chromium are there, and the report says why not when they are not."""
from __future__ import annotations

import shutil
import sys
from types import SimpleNamespace

import pytest


def figures():
    import plotly.graph_objects as go

    return SimpleNamespace(figures={"heads": (("grid", go.Figure(go.Heatmap(z=[[0.0, 1.0], [0.5, 0.25]]))),
                                              ("view", "<html>an HTML view is not exported</html>"))})


def test_nothing_asked_nothing_written(tmp_path):
    from mi_dsl.report.static import export_static

    out = export_static(figures(), tmp_path, [])
    assert out["files"] == [] and "output.static" in out["note"]
    assert not (tmp_path / "figures").exists()


def test_without_kaleido_the_report_says_so(tmp_path, monkeypatch):
    from mi_dsl.report.static import export_static

    monkeypatch.setitem(sys.modules, "kaleido", None)  # `import kaleido` raises ImportError
    out = export_static(figures(), tmp_path, ["png", "svg"])
    assert out["files"] == [] and "kaleido is not installed" in out["note"] and "mi-dsl[export]" in out["note"]


def test_svg_and_png_are_written_where_a_renderer_exists(tmp_path):
    pytest.importorskip("kaleido", reason="kaleido is optional (pip install 'mi-dsl[export]')")
    if not (shutil.which("chromium") or shutil.which("google-chrome")):
        pytest.skip("kaleido needs Chrome or Chromium")
    from mi_dsl.report.static import export_static

    (tmp_path / "figures").mkdir()
    out = export_static(figures(), tmp_path, ["svg", "png"])
    assert out["files"] == ["figures/static/heads__grid.svg", "figures/static/heads__grid.png"], out["note"]
    assert (tmp_path / out["files"][0]).read_text().lstrip().startswith("<svg")
    assert (tmp_path / out["files"][1]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
