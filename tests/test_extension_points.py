"""Every extension point is one place, and what it adds behaves like a built-in.

tests/toy_plugin.py, a module outside the package, adds a metric, an expression function, a
vocabulary file format, a model source and an analysis (with every capability a registration
can declare, and a figure). A fresh process imports it, then: the schema and the reference
list each; a spec using all of them runs and its report shows the toy's figure; and each of the
toy analysis's capabilities is enforced by the framework exactly as for a built-in analysis
(no framework file names a kind)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SPEC = """
version: 1
name: toy
model: {{source: toy, tokenizer: {tokenizer}, prepend_bos: true}}
vocabularies:
  animal: {{file: animals.tsv, filter: 'toy_double(ntokens(item)) >= 2'}}
  size: {{pairs: [[big, small], [tall, short]]}}
prompts:
  template: "The {{animal}} are {{size}}. Are the {{animal}}"
  answer: 'first_token(" " + size)'
  foil: 'first_token(" " + opposite(size))'
  corrupt: {{swap: size}}
metric: {metric}
analyses:
  - {{kind: toy_dla, id: toy, layer: {layer}, prompt: {prompt}{extra}}}
"""

SCRIPT = """
import json, sys, traceback
sys.path.insert(0, {tests!r})
import toy_plugin  # noqa: F401  (registers every toy)
import mi_dsl
from mi_dsl.cli.listing import reference_markdown
from mi_dsl.compile import prepare
from mi_dsl.compile.summary import plan_summary
from mi_dsl.errors import MiError
from mi_dsl.spec.schema import build_schema
from mi_dsl.sweep.report import _per_head_ids

out = {{}}
schema, doc = json.dumps(build_schema()), reference_markdown()
out["schema"] = [name in schema for name in ("toy_dla", "toy_answer_logit", '"toy"', '"tsv"')]
out["reference"] = [name in doc for name in ("toy_dla", "toy_double", "toy_answer_logit")]

def refusal(path):
    try:
        prepare(path)
    except MiError as err:
        return err.format()
    return None

specs = json.loads({specs!r})
for name, path in specs.items():
    if name != "runs":
        out[name] = refusal(path)
summary = plan_summary(prepare(specs["runs"]))
out["backward"] = summary["memory"].get("backward", {{}}).get("analyses")
results = mi_dsl.run(specs["runs"], out_dir={runs!r}, progress=False)
out["per_head_ids"] = _per_head_ids(results.log.to_json())
out["toy"] = results.log.to_json()["analyses"]["toy"]
out["report"] = results.report_path.read_text()
out["figures"] = sorted(p.name for p in (results.run_dir / "figures").iterdir())
print(json.dumps(out))
"""


def write(folder: Path, name: str, tokenizer: Path, metric="toy_answer_logit", layer=1, prompt=0, extra="",
          animals=("cats", "dogs", "owls")) -> str:
    sub = folder / name
    sub.mkdir()
    (sub / "animals.tsv").write_text("name\tlegs\n" + "".join(f"{a}\t4\n" for a in animals))
    (sub / "spec.yaml").write_text(textwrap.dedent(SPEC.format(tokenizer=tokenizer, metric=metric, layer=layer,
                                                               prompt=prompt, extra=extra)))
    return str(sub / "spec.yaml")


@pytest.fixture(scope="module")
def outcome(tmp_path_factory, tiny_tokenizer):
    folder = tmp_path_factory.mktemp("plugin")
    specs = {
        "runs": write(folder, "runs", tiny_tokenizer),
        "not_linear": write(folder, "not_linear", tiny_tokenizer, metric="prob"),
        "with_direction": write(folder, "with_direction", tiny_tokenizer, metric="prob",
                                extra=", direction: logit_diff"),
        "layer_out_of_range": write(folder, "layer_out_of_range", tiny_tokenizer, layer=5),
        "prompt_out_of_range": write(folder, "prompt_out_of_range", tiny_tokenizer, prompt=99),
        # a three-word animal makes prompts of two lengths
        "lengths": write(folder, "lengths", tiny_tokenizer, animals=("cats", "very big dogs")),
    }
    code = SCRIPT.format(tests=str(ROOT / "tests"), specs=json.dumps(specs), runs=str(folder / "out"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_schema_and_reference_list_every_toy(outcome):
    assert outcome["schema"] == [True] * 4
    assert outcome["reference"] == [True] * 3


def test_a_spec_using_every_toy_runs_and_its_report_shows_the_toy_figure(outcome):
    toy = outcome["toy"]
    assert toy["kind"] == "toy_dla" and toy["convention"] and toy["pairs"]["count"] > 0
    assert len(toy["per_head"]) == 2 and toy["key_numbers"]["layer_total"] == pytest.approx(sum(toy["per_head"][1]))
    assert any(f.startswith("toy__toy_heads") or "toy_heads" in f for f in outcome["figures"])
    assert "toy_heads" in outcome["report"]  # the report's section embeds the toy's figure


def test_each_declared_capability_is_enforced_like_a_builtin(outcome):
    assert "toy_dla decomposes the metric" in outcome["not_linear"]            # reads_metric="decomposes"
    assert outcome["with_direction"] is None                                   # ... unless direction: logit_diff
    assert "layer 5 is out of range" in outcome["layer_out_of_range"]          # layer_indices, the source's shape
    assert "prompt 99 does not exist" in outcome["prompt_out_of_range"]        # prompt_indices
    assert "compares clean and corrupted prompts position by position" in outcome["lengths"]  # alignment
    assert outcome["backward"] == ["toy"]                                      # graph_bytes_per_row
    assert outcome["per_head_ids"] == ["toy"]                                  # per_head (sweeps compare it)
