"""The benchmark harness's --quick path (benchmarks/harness.py) on a tiny random model.

It must run through mi-dsl's own entry points, finish, agree between methods, and report
every goal with a value and a verdict. No timing is asserted."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

TINY_SPEC = """
version: 1
name: bench_tiny
model: {source: random, architecture: gpt_neox, size: tiny, seed: 0, prepend_bos: true, bos_token: "<bos>"}
vocabularies:
  animal: {items: [cats, dogs, owls, mice]}
  size: {pairs: [[big, small], [tall, short], [fast, slow]]}
prompts:
  template: "The {animal} are {size}. Are the {animal}"
  answer: 'first_token(" " + size)'
  foil: 'first_token(" " + opposite(size))'
  corrupt: {swap: size}
  equal_lengths: true
pipeline:
  - keep: 'clean.logit_diff > corrupted.logit_diff'
analyses:
  - {kind: head_attribution, id: head_attr}
  - {kind: activation_patching, id: patch_z, target: z}
  - {kind: activation_patching, id: patch_z_pos, target: z_by_position}
  - {kind: activation_patching, id: patch_resid, target: resid_pre}
  - {kind: activation_patching, id: patch_resid_full, target: resid_pre, prefix_reuse: false}
  - {kind: attribution_patching, id: attrib_z, target: z}
"""


def test_quick_harness_runs_through_the_product(tmp_path, tiny_tokenizer):
    spec = tmp_path / "bench_tiny.yaml"
    spec.write_text(textwrap.dedent(TINY_SPEC))
    items = "filter,head_attr,patch_z,patch_z_pos,patch_resid,attrib,threads"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "harness.py"), "--quick", "--device", "cpu",
                           "--models", "pythia", "--items", items, "--pythia-spec", str(spec),
                           "--tokenizer", str(tiny_tokenizer), "--filter-n", "24", "--n", "4", "--n-pos", "2",
                           "--threads", "1", "--out-dir", str(tmp_path / "out"), "--tag", "smoke"],
                          capture_output=True, text=True, timeout=600, cwd=str(ROOT))
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads((tmp_path / "out" / "smoke.json").read_text())
    model = out["models"]["pythia"]
    assert set(model["items"]) == set(items.split(","))
    for item in ("filter", "head_attr", "patch_z", "patch_z_pos", "patch_resid"):
        assert model["items"][item]["agreement"]["agree"], (item, model["items"][item]["agreement"])
    resid = model["items"]["patch_resid"]
    assert {"mi", "mi_full", "bare_last"} <= set(resid["methods"]) and "mi/mi_full" in resid["ratios"]
    assert model["prefix_reuse"]["patch_resid"]["prefix_reuse"] is True
    assert model["threads"]["threads"] == 1 and model["threads"]["reason"] == "--threads"
    goals = {g["goal"]: g for g in out["goals"]}
    assert any("residual patching" in g for g in goals) and any("z patching" in g for g in goals)
    assert all("value" in g and "met" in g for g in out["goals"])
    assert (tmp_path / "out" / "smoke.md").read_text().count("| pythia |") >= 5


def test_harness_modules_stay_small():
    for path in [ROOT / "benchmarks" / "harness.py", *(ROOT / "benchmarks" / "mibench").glob("*.py")]:
        assert len(path.read_text().splitlines()) < 400, path


def test_the_shipped_bench_specs_load_as_the_harness_loads_them(tiny_tokenizer):
    """benchmarks/specs/*.yaml extend specs/ outside their folder; the harness must allow that read
    (an H200 run stopped here: the quick test above passes its own spec and never loaded them)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from mibench.bench import BENCH_SPEC_READS
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from mi_dsl.spec.resolve import load_spec

    for name, overrides in (("pythia_shaped.yaml", [f"model.tokenizer={tiny_tokenizer}"]), ("gemma.yaml", [])):
        spec = load_spec(str(ROOT / "benchmarks" / "specs" / name), overrides, [Path(p) for p in BENCH_SPEC_READS])
        assert spec.name.startswith("bench_") and spec.analyses, name
