"""Static PNG/SVG copies of a run's plotly figures, for papers (`output.static: [png, svg]`).

Plotly renders static images through kaleido, which drives a Chrome/Chromium found on the
machine. Neither is a dependency of mi-dsl (`pip install "mi-dsl[export]"` adds kaleido);
when one is missing the report says so instead of failing the run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List


def export_static(log, run_dir: Path, formats: List[str]) -> Dict[str, object]:
    """{"formats", "files": [paths], "note": what happened, in words}."""
    figures = [(f"{analysis_id}__{name}", fig) for analysis_id, figs in log.figures.items()
               for name, fig in figs if not isinstance(fig, str)]
    if not formats:
        return {"formats": [], "files": [], "note": "Static PNG/SVG copies were not asked for (set "
                                                    "output.static: [png, svg] in the spec to write them)."}
    if not figures:
        return {"formats": formats, "files": [], "note": "This run has no plotly figures to export."}
    try:
        import kaleido  # noqa: F401  (plotly's static renderer)
    except ImportError:
        return {"formats": formats, "files": [], "note": "No static renderer on this machine: kaleido is not "
                "installed, so no PNG/SVG copies were written (pip install 'mi-dsl[export]'; it also needs "
                "Chrome or Chromium)."}
    import plotly.io as pio

    folder = run_dir / "figures" / "static"
    folder.mkdir(parents=True, exist_ok=True)
    files = [f"figures/static/{name}.{fmt}" for fmt in formats for name, _ in figures]
    try:  # one call for all: kaleido starts the browser once
        pio.write_images([fig for _ in formats for _, fig in figures], [str(run_dir / f) for f in files])
    except Exception as err:  # noqa: BLE001  (a missing or broken browser: the report says which)
        return {"formats": formats, "files": [], "note": f"Static export failed: kaleido found no working "
                f"renderer ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). Install "
                "Chrome or Chromium (e.g. apt-get install chromium)."}
    return {"formats": formats, "files": files,
            "note": f"{len(files)} static copies ({', '.join(formats)}) in figures/static/."}
