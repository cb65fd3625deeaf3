"""The Python API (mi_dsl.run/validate/plan, Results), the run log, where runs land, and
warnings as located messages. One tiny random Gemma run serves most tests."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import mi_dsl
from mi_dsl.errors import MiError, RunError, SchemaError

from tests.runtime.test_runtime import tiny
from tests.spec_parts import syllogism

ROOT = Path(__file__).resolve().parents[1]

BODY = """\
version: 1
name: api
description: the API test spec
""" + syllogism(nouns=("Cows", "Horses", "Wolves", "Cows"), equal_lengths=False) + """\
pipeline:
  - sample: {n: 500, seed: 0}
analyses:
  - {kind: head_attribution, id: heads}
  - {kind: logit_lens, max_pairs: 5}
"""


def write(folder: Path, body: str = BODY) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spec.yaml"
    path.write_text(tiny("gemma3") + body)
    return path


@pytest.fixture(scope="module")
def api_run(tmp_path_factory):
    """mi_dsl.run from a working directory of its own, the spec in another folder, no --out."""
    base = tmp_path_factory.mktemp("api")
    spec = write(base / "specs")
    work = base / "work"
    work.mkdir()
    before = Path.cwd()
    os.chdir(work)
    try:
        results = mi_dsl.run(spec, progress=False)
    finally:
        os.chdir(before)
    return results, base


def test_runs_land_under_runs_in_the_current_directory(api_run):
    results, base = api_run
    assert results.run_dir.parent.parent == base / "work" / "runs"
    assert results.run_dir.parent.name == "api"
    assert not (base / "specs" / "runs").exists()


def test_table_is_a_dataframe_of_the_analysis_table(api_run):
    import pandas as pd

    results, _ = api_run
    table = results.table("heads")
    assert isinstance(table, pd.DataFrame)
    per_head = results["analyses"]["heads"]["per_head"]
    assert len(table) == len(per_head) * len(per_head[0])
    row = table[(table["layer"] == 1) & (table["head"] == 2)].iloc[0]
    assert row.iloc[-1] == pytest.approx(per_head[1][2], rel=1e-9)
    pairs = results.table("pairs")
    assert len(pairs) == results["dataset"]["final_pairs"] and {"clean", "corrupted"} <= set(pairs.columns)
    per_prompt = results.table("per_prompt")
    assert per_prompt["clean_logit_diff"].mean() == pytest.approx(results["baselines"]["clean"], rel=1e-6)


def test_candidates_table_is_the_candidates_csv():
    """Results.table("candidates"): the keep-condition's candidates as tables/candidates.csv has them
    (each record's metric as RECORD_METRIC). It imported a name report/html.py no longer has (found by
    mypy): every call raised ImportError."""
    from mi_dsl.core.log import RUN_LOG_VERSION, RunLog
    from mi_dsl.results import Results

    log = RunLog.from_json({"format_version": RUN_LOG_VERSION,
                            "dataset": {"candidate_pairs": [{"clean": "a", "kept": True},
                                                            {"clean": "b", "kept": False}]},
                            "candidate_metrics": {"clean": {"logit_diff": [1.5, -0.5]}}})
    table = Results(log).table("candidates")
    assert table.to_dict("records") == [{"clean": "a", "kept": True, "clean_logit_diff": 1.5},
                                        {"clean": "b", "kept": False, "clean_logit_diff": -0.5}]


def test_unknown_table_or_figure_is_a_clear_error(api_run):
    results, _ = api_run
    with pytest.raises(RunError, match="unknown analysis 'head' in this run; did you mean 'heads'"):
        results.table("head")
    with pytest.raises(RunError, match="unknown figure 'nope'"):
        results.figure("heads", "nope")


def test_figure_summary_and_notebook_view(api_run):
    import plotly.graph_objects as go

    results, _ = api_run
    assert isinstance(results.figure("heads"), go.Figure)
    assert results.figures("heads") == ["head_attribution", "head_attribution_top", "per_prompt"]
    assert "heads (head_attribution): top(heads): " in results.summary
    assert "logit_lens (logit_lens)" in results.summary
    page = results._repr_html_()
    assert "<table>" in page and "heads" in page and "index.html" in page


def test_results_load_reads_the_run_directory_back(api_run):
    from pandas.testing import assert_frame_equal

    results, _ = api_run
    again = mi_dsl.Results.load(results.run_dir)
    assert again.raw == json.loads((results.run_dir / "results.json").read_text())
    assert_frame_equal(again.table("heads"), results.table("heads"))
    assert again.figure("heads").to_dict()["data"][0]["z"] is not None
    assert again.figures("heads") == results.figures("heads")
    with pytest.raises(RunError, match="not a run directory"):
        mi_dsl.Results.load(results.run_dir / "tables")


def test_the_run_log_is_frozen_and_versioned(api_run):
    from mi_dsl.core.log import RUN_LOG_VERSION, RunLog

    results, _ = api_run
    log = results.log
    assert log.format_version == RUN_LOG_VERSION and log.status == "complete"
    with pytest.raises(TypeError):
        log.analyses["heads"]["kind"] = "other"
    with pytest.raises(AttributeError):
        log.status = "failed"
    assert [a["id"] for a in log.plan["analyses"]] == ["heads", "logit_lens"]
    assert log.analyses["logit_lens"]["pairs_used"] == 5  # its own view: the max_pairs prefix
    newer = dict(results.raw, format_version=RUN_LOG_VERSION + 1)
    with pytest.raises(RunError, match="run-log format"):
        RunLog.from_json(newer)


def test_warnings_are_located_messages(api_run):
    results, _ = api_run
    warnings = results["warnings"]
    spec = str(results.log.spec["file"])
    sample = [w for w in warnings if "sample asks for 500 prompts" in w]
    assert sample and sample[0].startswith(f"{spec}:22:17:") and ": warning: " in sample[0]
    assert "(at pipeline[0].sample.n)" in sample[0]
    duplicate = [w for w in warnings if "'Cows' more than once" in w]
    assert duplicate and duplicate[0].startswith(f"{spec}:13:")


def test_a_run_from_a_mapping_with_overrides(tmp_path):
    spec = yaml.safe_load(tiny("gemma3") + BODY)
    spec["analyses"] = [{"kind": "logit_lens"}]
    results = mi_dsl.run(spec, {"pipeline.0.sample.n": 4}, out_dir=str(tmp_path / "out"), progress=False,
                         base_dir=str(tmp_path))
    assert results["dataset"]["final_pairs"] == 4
    assert results.run_dir.parent.parent == tmp_path / "out"
    assert not list(tmp_path.glob(".*.yaml")), "the mapping's spec file is removed after the run"


def test_validate_and_plan_raise_the_located_errors(tmp_path):
    spec = write(tmp_path)
    assert any(": warning: vocabulary 'nouns' lists 'Cows'" in w for w in mi_dsl.validate(spec))
    plan = mi_dsl.plan(spec)
    assert [a["id"] for a in plan["analyses"]] == ["heads", "logit_lens"]
    bad = write(tmp_path / "bad", BODY.replace("equal_lengths: false", "equal_lengths: maybe"))
    with pytest.raises(MiError) as info:
        mi_dsl.validate(bad)
    assert info.value.format().startswith(f"{bad}:") and info.value.location.line == 20
    with pytest.raises(SchemaError, match="unknown key 'sede'"):
        mi_dsl.plan({"version": 1, "sede": 3, "model": {"source": "random", "architecture": "gemma3",
                                                      "prepend_bos": True}},
                    base_dir=str(tmp_path))


def test_cli_prints_warnings_with_spec_locations_and_no_python_paths(tmp_path):
    spec = write(tmp_path, BODY.replace("analyses:\n  - {kind: head_attribution, id: heads}\n  - "
                                        "{kind: logit_lens, max_pairs: 5}\n", "analyses: []\n"))
    done = subprocess.run([sys.executable, "-m", "mi_dsl.cli", "run", str(spec), "--out", str(tmp_path / "o"),
                           "--quiet"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()  # --quiet drops progress lines, never warnings
    assert any(line.startswith(f"{spec}:22:17: warning: sample asks for 500 prompts") for line in lines), lines
    assert any(line.startswith(f"{spec}:13:10: warning: vocabulary 'nouns' lists 'Cows'") for line in lines)
    assert ".py:" not in done.stderr and "UserWarning" not in done.stderr


def test_tutorial_table_as_the_issue_asks(tmp_path, monkeypatch):
    """`mi_dsl.run("specs/tutorial.yaml").table("head_attr")` on the embedded Gemma: a DataFrame,
    the run under ./runs."""
    pytest.importorskip("pandas")
    if os.environ.get("MI_DSL_SKIP_REAL_MODEL"):
        pytest.skip("MI_DSL_SKIP_REAL_MODEL is set")
    monkeypatch.chdir(tmp_path)
    results = mi_dsl.run(ROOT / "specs" / "tutorial.yaml", progress=False)
    table = results.table("head_attr")
    assert len(table) == len(results["analyses"]["head_attr"]["per_head"][0]) * len(
        results["analyses"]["head_attr"]["per_head"])
    assert results.run_dir.is_relative_to(tmp_path / "runs" / "tutorial")


test_tutorial_table_as_the_issue_asks = pytest.mark.slow(test_tutorial_table_as_the_issue_asks)


PROBE = '''
from mi_dsl.core.registry import analysis
from mi_dsl.core.typed import AnalysisParams
from mi_dsl.analyses.base import Result, step

@analysis("toy_probe", "reports what an analysis is handed (a test toy)", AnalysisParams)
class ToyProbe:
    def compile(self, params, ctx):
        return step(ctx, params, "probe")
    def compute(self, params, run):
        tried = {}
        for name, attempt in (("pairs", lambda: run.pairs.append(run.pairs[0])),
                              ("results", lambda: run.results.__setitem__("x", 1)),
                              ("baselines", lambda: run.baselines.__setitem__("clean", 0.0))):
            try:
                attempt()
                tried[name] = "mutated"
            except (AttributeError, TypeError):
                tried[name] = "refused"
        return Result({"n_pairs": len(run.pairs), "pairs_type": type(run.pairs).__name__,
                       "earlier": sorted(run.results), "refused": tried,
                       "clean_baseline": run.baselines["clean"]}, {}, "probed", convention="a probe")
    def figures(self, result, run):
        return []
'''


def test_each_analysis_gets_its_own_read_only_view(tmp_path):
    """A toy analysis registered from outside: its pairs are a tuple (its max_pairs prefix),
    earlier results and baselines read-only; a later analysis sees the full set again."""
    (tmp_path / "toy_probe.py").write_text(PROBE)
    spec = write(tmp_path, BODY.replace("  - {kind: logit_lens, max_pairs: 5}\n",
                                        "  - {kind: toy_probe, id: first, max_pairs: 3}\n"
                                        "  - {kind: toy_probe, id: second}\n"))
    code = (f"import sys, json; sys.path.insert(0, {str(tmp_path)!r}); import toy_probe, mi_dsl\n"
            f"r = mi_dsl.run({str(spec)!r}, out_dir={str(tmp_path / 'runs')!r}, progress=False)\n"
            "print(json.dumps({k: r['analyses'][k] for k in ('first', 'second')}))\n"
            "print(json.dumps(r['per_prompt']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    analyses, per_prompt = [json.loads(line) for line in done.stdout.strip().splitlines()[-2:]]
    first, second = analyses["first"], analyses["second"]
    assert first["n_pairs"] == 3 and first["pairs"]["count"] == 3
    assert first["pairs_type"] == "tuple" and first["earlier"] == ["heads"]
    assert first["refused"] == {"pairs": "refused", "results": "refused", "baselines": "refused"}
    assert first["clean_baseline"] == pytest.approx(sum(per_prompt["clean"]["logit_diff"][:3]) / 3, rel=1e-9)
    assert second["n_pairs"] == 48 and second["earlier"] == ["first", "heads"]
    assert second["clean_baseline"] == pytest.approx(sum(per_prompt["clean"]["logit_diff"]) / 48, rel=1e-9)



def test_where_runs_go(tmp_path, monkeypatch):
    """--out DIR, else output.dir (relative to the spec, inside its tree), else ./runs here."""
    from mi_dsl.compile import prepare
    from mi_dsl.runtime.run import runs_root_of

    monkeypatch.chdir(tmp_path)
    plain = prepare(write(tmp_path / "a"), need_tokenizer=False).spec
    assert plain.output_dir is None and runs_root_of(plain) == tmp_path / "runs"
    named = prepare(write(tmp_path / "b", BODY + "output: {dir: results}\n"), need_tokenizer=False).spec
    assert runs_root_of(named) == tmp_path / "b" / "results"
    assert runs_root_of(named, "elsewhere") == tmp_path / "elsewhere"


def test_a_mapping_names_its_temporary_file_without_leaving_base_dir(tmp_path, monkeypatch):
    """Issue 27: the mapping's `name` became part of the temporary file's path (`/../x` left base_dir)."""
    import mi_dsl
    from mi_dsl.errors import SchemaError

    inside = tmp_path / "base"
    inside.mkdir()
    written = []
    real = Path.write_text
    monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: written.append(self.resolve()) or real(self, *a, **k))
    with pytest.raises(SchemaError, match="name"):
        mi_dsl.validate({"version": 1, "name": "/../escaped", "model": {"source": "embedded", "prepend_bos": True}},
                        base_dir=str(inside))
    assert written and all(path.parent == inside for path in written)
