"""Large-model placement on the CPU: `model.device_map` dispatches the layers through
accelerate's hooks (forced even on one device, so this is the path a multi-GPU split takes),
captures gather on the embedding's device, patching writes on each layer's device, and every
number matches the same model loaded plainly. Also: the placement options' located errors,
bfloat16, and `mi-run plan`'s memory estimate."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from mi_dsl.running import run_spec
from tests.spec_parts import SYLLOGISM_PROMPTS

BODY = """
vocabularies:
  categories: {items: [birds, fish, mammals], filter: 'ntokens(" " + item) == 1'}
  descriptors:
    pairs: [[endothermic, ectothermic], [toothed, toothless]]
    filter: 'ntokens(" " + item) == 2'
  nouns: {items: [Dogs, Cows, Wolves], filter: 'ntokens(" " + lower(item)) == 1'}
""" + SYLLOGISM_PROMPTS + """\
pipeline:
  - sample: {n: 4, seed: 2}
analyses:
  - {kind: activation_patching, id: ap, target: z, positions: [final, noun]}
  - {kind: activation_patching, id: resid, target: resid_pre, positions: [final]}
  - {kind: attribution_patching, target: z, compare_with: ap}
  - {kind: predictions, top_k: 3}
"""
# (Analyses in processed coordinates, e.g. head_attribution, need `processing: true`, which
# TransformerBridge refuses for a device_map with cpu entries: on GPUs they run dispatched too.)
MAP = """  device_map: {model.embed_tokens: cpu, model.layers.0: cpu, model.layers.1: cpu, model.norm: cpu,
               model.rotary_emb: cpu, lm_head: cpu}
"""


def write(folder: Path, model_extra: str = "", processing: str = "false", name: str = "spec") -> Path:
    text = ("version: 1\nname: t\nmodel:\n  source: random\n  architecture: gemma3\n  size: tiny\n  seed: 5\n"
            f"  prepend_bos: true\n  processing: {processing}\n{model_extra}" + textwrap.dedent(BODY))
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def numbers(results):
    return {"per_prompt": results["per_prompt"], "analyses": results["analyses"]}


def close(a, b, rel=1e-5, abs_=1e-6, where="") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            if key == "summary" or "seconds" in key:  # wall-clock times differ between runs
                continue
            close(a[key], b[key], rel, abs_, f"{where}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            close(x, y, rel, abs_, f"{where}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=rel, abs=abs_), where
    else:
        assert a == b, where


def test_dispatched_model_gives_the_plain_model_numbers(tmp_path):
    plain = run_spec(write(tmp_path, name="plain"), out_dir=str(tmp_path / "runs"), progress=False).results
    mapped = run_spec(write(tmp_path, MAP, name="mapped"), out_dir=str(tmp_path / "runs"), progress=False).results
    assert mapped["provenance"]["model"]["device_map"]["model.layers.1"] == "cpu"
    assert "device_map" not in plain["provenance"]["model"]
    assert mapped["analyses"]["ap"]["pairs_used"] == 4
    close(numbers(mapped), numbers(plain))


def test_device_map_runs_through_accelerates_hooks(tmp_path):
    from mi_dsl.spec.model import ModelSpec, Processing
    from mi_dsl.models import load_model

    spec = ModelSpec(source="random", architecture="gemma3", size="tiny", seed=5,
                     processing=Processing(enabled=False),
                     device_map=(("lm_head", "cpu"), ("model.embed_tokens", "cpu"), ("model.layers.0", "cpu"),
                                 ("model.layers.1", "cpu"), ("model.norm", "cpu"), ("model.rotary_emb", "cpu")))
    loaded = load_model(spec)
    layer = loaded.hf_model.model.layers[0]
    assert hasattr(layer, "_hf_hook"), "accelerate's AlignDevicesHook moves each block's inputs to its device"
    assert str(loaded.device) == "cpu" and loaded.hf_model.hf_device_map["model.layers.0"] == "cpu"


@pytest.mark.parametrize("extra, processing, words, field", [
    (MAP, "true", "cannot have weight processing", "device_map"),
    ("  device: cpu\n  device_map: auto\n", "false", "both place the model", "device"),
    ("  device_map: auto\n  n_devices: 2\n", "false", "shorthand for a balanced device_map", "n_devices"),
    ("  device_map: {model.layers.0: gpu}\n", "false", "device_map", "device_map"),
])
def test_placement_faults_are_located(tmp_path, cli, extra, processing, words, field):
    spec = write(tmp_path, extra, processing)
    code, _, err = cli("validate", spec)
    line = next(i for i, text in enumerate(spec.read_text().splitlines(), 1) if text.strip().startswith(f"{field}:"))
    assert code == 2 and err.startswith(f"{spec}:{line}:") and words in err, err


def test_unknown_module_in_a_device_map_is_a_run_error(tmp_path):
    from mi_dsl.errors import RunError

    spec = write(tmp_path, "  device_map: {model.embed_tokens: cpu}\n")
    with pytest.raises(RunError, match="device_map"):
        run_spec(spec, out_dir=str(tmp_path / "runs"), progress=False)


def test_n_devices_without_gpus_is_refused(tmp_path):
    import torch

    from mi_dsl.errors import RunError

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(RunError, match="no usable CUDA GPU"):
        run_spec(write(tmp_path, "  n_devices: 2\n"), out_dir=str(tmp_path / "runs"), progress=False)


def test_bfloat16_runs_and_stays_near_float32(tmp_path):
    full = run_spec(write(tmp_path, name="f32"), out_dir=str(tmp_path / "runs"), progress=False).results
    half = run_spec(write(tmp_path, "  dtype: bfloat16\n", name="bf16"), out_dir=str(tmp_path / "runs"),
                    progress=False).results
    a, b = full["per_prompt"]["clean"]["logit_diff"], half["per_prompt"]["clean"]["logit_diff"]
    scale = max(abs(x) for x in a)
    assert scale > 0 and a != b  # bfloat16 really ran: it rounds
    assert max(abs(x - y) for x, y in zip(a, b)) < 0.1 * scale + 1e-3


def test_plan_estimates_memory(tmp_path, cli):
    code, out, err = cli("plan", write(tmp_path), "--json")
    assert code == 0, err
    memory = json.loads(out)["memory"]
    assert memory["parameters"] > 0 and memory["weights_gb"] > 0 and memory["activations_gb_per_batch"] > 0
    code, out, _ = cli("plan", write(tmp_path, "  dtype: bfloat16\n"), "--json")
    half = json.loads(out)["memory"]
    assert half["parameters"] == memory["parameters"]
    assert half["weights_gb"] == pytest.approx(memory["weights_gb"] / 2, rel=1e-6)


@pytest.mark.slow
def test_device_map_on_gpus_gives_the_single_device_numbers(tmp_path):
    """On a machine with CUDA (skipped elsewhere): the tutorial (embedded Gemma-3-270m, weight
    processing on) with `device_map: auto` over every visible GPU, against `device: cuda`.
    Run it where GPUs are: `python -m pytest tests/runtime/test_device_map.py -k gpus`."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (device_map over GPUs)")
    spec = Path(__file__).resolve().parents[2] / "specs" / "tutorial.yaml"
    single = run_spec(spec, overrides=["model.device=cuda"], out_dir=str(tmp_path / "a"), progress=False).results
    spread = run_spec(spec, overrides=["model.device_map=auto"], out_dir=str(tmp_path / "b"), progress=False).results
    assert spread["provenance"]["model"]["device_map"], "the model was dispatched"
    close(numbers(spread), numbers(single), rel=1e-4, abs_=1e-5)
