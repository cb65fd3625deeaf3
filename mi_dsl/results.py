"""`Results`: a finished run as a notebook uses it (what `mi_dsl.run` returns).

    r = mi_dsl.run("specs/tutorial.yaml")
    r.summary                   # one line per analysis
    r.table("head_attr")        # pandas.DataFrame of the analysis's table
    r.figure("head_attr")       # plotly figure
    r                           # in Jupyter: a small HTML overview (_repr_html_)
    r = Results.load(r.run_dir) # the same, read back from a run directory (no torch)

It wraps the frozen run log (runtime/log.py); `r.raw` is the log as plain data (the
content of results.json) and `r["analyses"]` reads it like the dict older code used.
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import RunError
from .core.log import RunLog
from .suggest import unknown

_DATASET_TABLES = ("pairs", "pipeline", "per_prompt", "candidates")


class Results:
    def __init__(self, log: RunLog, run_dir: Optional[Path] = None):
        self.log = log
        self.run_dir = Path(run_dir) if run_dir is not None else None

    @classmethod
    def load(cls, run_dir) -> "Results":
        """A finished run read back from its directory (runs/<name>/<timestamp>/)."""
        run_dir = Path(run_dir)
        path = run_dir / "results.json"
        if run_dir.name.startswith(".partial-"):  # report/html.py's folder while it writes
            raise RunError(f"'{run_dir}' is a run folder whose writing did not finish",
                           hint="rerun the spec; finished steps are reused")
        if not path.is_file():
            raise RunError(f"'{run_dir}' is not a run directory: it has no results.json",
                           hint="pass a folder such as runs/<name>/<timestamp>/")
        return cls(RunLog.from_json(json.loads(path.read_text())), run_dir)

    # ------------------------------------------------------------------ plain data

    @property
    def raw(self) -> Dict[str, Any]:
        return self.log.to_json()

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    @property
    def report_path(self) -> Optional[Path]:
        return self.run_dir / "index.html" if self.run_dir else None

    @property
    def analyses(self) -> List[str]:
        return list(self.log.analyses)

    @property
    def summary(self) -> str:
        """The run in a few lines: dataset, baselines, each analysis's summary."""
        log = self.log
        lines = [f"{log.spec['name']}: {log.dataset['final_pairs']} prompt pairs"]
        if log.baselines:
            lines[0] += (f"; mean {log.metric}: clean {log.baselines['clean']:.4f}, "
                         f"corrupted {log.baselines['corrupted']:.4f}")
        for analysis_id, a in log.analyses.items():
            lines.append(f"  {analysis_id} ({a['kind']}): {a.get('summary') or '-'}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ tables and figures

    def tables(self, analysis_id: str) -> List[str]:
        """The names of an analysis's tables."""
        self._check(analysis_id)
        return list(self.log.tables.get(analysis_id, {}))

    def table(self, analysis_id: str, name: Optional[str] = None):
        """An analysis's table as a pandas DataFrame (its only or first table unless `name` says
        which); also "pairs", "pipeline", "per_prompt" and "candidates" (the last keep-condition's
        candidates with their metrics) for the dataset."""
        import pandas as pd

        if analysis_id in _DATASET_TABLES and analysis_id not in self.log.analyses:
            return pd.DataFrame(self._dataset_rows(analysis_id))
        names = self.tables(analysis_id)
        if not names:
            raise RunError(f"analysis '{analysis_id}' has no table")
        if name is None:
            name = analysis_id if analysis_id in names else names[0]
        if name not in names:
            raise RunError(unknown("table", name, names, f"of analysis '{analysis_id}'"))
        rows = self.log.to_json()["tables"][analysis_id][name]
        return pd.DataFrame(rows)

    def figures(self, analysis_id: str) -> List[str]:
        """The names of an analysis's figures."""
        self._check(analysis_id)
        if self.log.figures:
            return [name for name, _ in self.log.figures.get(analysis_id, ())]
        if "figures" in self.log.analyses[analysis_id]:  # the run's order
            return list(self.log.analyses[analysis_id]["figures"])
        folder = self.run_dir / "figures" if self.run_dir else None
        prefix = f"{analysis_id}__"
        return sorted(p.stem[len(prefix):] for p in folder.glob(f"{prefix}*.html")) if folder else []

    def figure(self, analysis_id: str, name: Optional[str] = None):
        """An analysis's figure: a plotly Figure (an HTML string for interactive views such as
        circuitsvis's). Its first figure unless `name` says which."""
        names = self.figures(analysis_id)
        if not names:
            raise RunError(f"analysis '{analysis_id}' has no figure")
        name = names[0] if name is None else name
        if name not in names:
            raise RunError(unknown("figure", name, names, f"of analysis '{analysis_id}'"))
        if self.log.figures:
            return dict(self.log.figures[analysis_id])[name]
        if self.run_dir is None:
            raise RunError(f"analysis '{analysis_id}' has its figures neither in memory nor in a run directory")
        path = self.run_dir / "figures" / f"{analysis_id}__{name}"
        if path.with_suffix(".json").is_file():
            import plotly.io as pio

            return pio.from_json(path.with_suffix(".json").read_text())
        return path.with_suffix(".html").read_text()

    def _check(self, analysis_id: str) -> None:
        if analysis_id not in self.log.analyses:
            raise RunError(unknown("analysis", analysis_id, list(self.log.analyses), "in this run"))

    def _dataset_rows(self, which: str) -> List[Dict[str, Any]]:
        data = self.log.to_json()
        if which == "pairs":
            return data["dataset"]["pairs"]
        if which == "pipeline":
            return data["dataset"]["stages"]
        if which == "candidates":
            from .report.html import candidate_csv_rows

            return candidate_csv_rows(data)
        rows = []
        per_prompt = data["per_prompt"]
        for index, pair in enumerate(data["dataset"]["pairs"]):
            row = dict(pair)  # the texts, and the answer and foil (ids and token text)
            for record, metrics in per_prompt.items():
                row.update({f"{record}_{metric}": values[index] for metric, values in metrics.items()})
            rows.append(row)
        return rows

    # ------------------------------------------------------------------ notebooks

    def _repr_html_(self) -> str:
        e = html.escape
        log = self.log
        rows = "".join(f"<tr><td>{e(i)}</td><td>{e(a['kind'])}</td><td>{e(a.get('summary') or '')}</td></tr>"
                       for i, a in log.analyses.items())
        base = (f"; mean {e(log.metric)}: clean {log.baselines['clean']:.4f}, corrupted "
                f"{log.baselines['corrupted']:.4f}" if log.baselines else "")
        report = (f"<p>report: <a href='{e(self.report_path.as_uri())}'>{e(str(self.report_path))}</a></p>"
                  if self.report_path else "")
        return (f"<div><b>{e(log.spec['name'])}</b>: {log.dataset['final_pairs']} prompt pairs{base}"
                f"<table><tr><th>analysis</th><th>kind</th><th>summary</th></tr>{rows}</table>{report}</div>")

    def __repr__(self) -> str:
        return f"<Results {self.log.spec['name']}: {', '.join(self.log.analyses) or 'no analyses'}>"
