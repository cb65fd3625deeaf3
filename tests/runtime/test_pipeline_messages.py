"""The pipeline says what it did (issue 24): a step that changes nothing warns, located at the
step (the tutorial's `symmetric: true` added nothing, and the plan said '<= 72'); a keep-condition
that leaves nothing still writes every candidate's clean and corrupted metrics (tables/candidates.csv)
and its hint names the file and `mi-run plan --metrics`, which prints them without a run."""
from __future__ import annotations

import csv
import json
import textwrap

import pytest

from mi_dsl.errors import NoPromptsLeft

from tests.analyses.test_patching import model_yaml, sharp_models  # noqa: F401
from tests.spec_parts import syllogism


def write(folder, pipeline: str):
    path = folder / "spec.yaml"
    steps = textwrap.indent(textwrap.dedent(pipeline).strip(), "  ")
    path.write_text("version: 1\nname: steps\n" + model_yaml("gpt_neox")
                    + syllogism(("birds",), (("big", "small"), ("wild", "tame")), ("Cows", "Horses"))
                    + f"metric: logit_diff\npipeline:\n{steps}\nanalyses:\n  - {{kind: head_attribution}}\n")
    return path


def test_steps_that_change_nothing_say_so_at_the_step(tmp_path):
    from mi_dsl.running import run_spec

    path = write(tmp_path, "- keep: 'clean.logit_diff > -1000'\n- symmetric: true")
    results = json.loads((run_spec(path, out_dir=str(tmp_path), progress=False).run_dir / "results.json").read_text())
    lines = path.read_text().splitlines()
    keep_line = next(i for i, l in enumerate(lines, 1) if "- keep:" in l)
    warnings = [w for w in results["warnings"] if "changed nothing" in w]
    assert len(warnings) == 2, results["warnings"]
    assert f"spec.yaml:{keep_line}:" in warnings[0] and "every one of the 8 pairs satisfies" in warnings[0]
    assert f"spec.yaml:{keep_line + 1}:" in warnings[1] and "it added no pair" in warnings[1]
    assert [s["after"] for s in results["dataset"]["stages"]] == [8, 8]


def test_a_keep_that_leaves_nothing_writes_the_candidates_metrics(tmp_path, cli):
    from mi_dsl.running import run_spec

    path = write(tmp_path, "- keep: 'clean.logit_diff > 1000'")
    with pytest.raises(NoPromptsLeft) as err:
        run_spec(path, out_dir=str(tmp_path / "runs"), progress=False)
    table = next((tmp_path / "runs" / "steps").glob("*/tables/candidates.csv"))
    assert str(table) in err.value.hint and "mi-run plan --metrics" in err.value.hint
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 8 and {r["kept"] for r in rows} == {"False"}
    assert {"clean", "corrupted", "answer_text", "foil_text", "clean_logit_diff",
            "corrupted_logit_diff"} <= set(rows[0])
    results = json.loads((table.parents[1] / "results.json").read_text())
    assert results["status"].startswith("failed: no prompts are left")
    clean = results["candidate_metrics"]["clean"]["logit_diff"]
    assert [float(r["clean_logit_diff"]) for r in rows] == pytest.approx(clean)
    code, out, _ = cli("plan", path, "--metrics", "--csv", tmp_path / "c.csv")
    assert code == 0 and "keep step 1 (clean.logit_diff > 1000) alone keeps 0 of 8 candidates" in out
    assert "clean.logit_diff: min " in out
    again = list(csv.DictReader((tmp_path / "c.csv").open()))
    assert [float(r["clean_logit_diff"]) for r in again] == pytest.approx([float(r["clean_logit_diff"]) for r in rows],
                                                                           rel=1e-5)
