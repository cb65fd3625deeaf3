"""Prompts of different lengths in one batch: every number equals per-prompt unpadded runs.

Padded batches have silently broken results in other interpretability tools (a final
position read at the padding, position ids shifted by left padding). mi-dsl pads on the
right (runtime/executor.py pad_right) and reads each prompt at its own final position.
Here a dataset mixes token lengths (nouns of one and two tokens); the whole run, every
analysis kind that runs on such a dataset, is computed once with every prompt in one
padded batch and once with one prompt per batch (nothing padded), and every number of the
results must agree within 1e-5 relative. Patching pads the whole set once (its rows are
cells x prompts), so here it only shows batch sizes change nothing; tests/compile/test_alignment.py
compares each prompt of a padded patching batch with the pair patched alone. head_detection
has no dataset.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tests.analyses.test_patching import model_yaml, sharp_models  # noqa: F401

from tests.golden.record import golden_numbers  # drops wall-clock, paths and pass counts
from tests.golden_compare import differences
from tests.spec_parts import syllogism

MIXED = "\n" + syllogism(("birds", "fish"), (("big", "small"), ("wild", "tame")),
                        ("Cows", "Horses", "Dogs", "Elephants"), equal_lengths=False) + """\
metric: logit_diff
pipeline:
  - symmetric: true
analyses:
  - {kind: logit_lens}
  - {kind: layer_attribution}
  - {kind: head_attribution, id: heads}
  - {kind: attention_vs_contribution, heads: 'top(heads, 3)', from: final, to: descriptor}
  - {kind: ablation, heads: 'top(heads, 2)', positions: final, method: zero}
  - {kind: ablation, id: ablate_noun, heads: [L0H1, L1H0], positions: noun, method: zero}
  - {kind: ablation, id: resample_noun, heads: [L0H1, L1H0], positions: noun, method: resample}
  - {kind: attention, heads: 'top(heads, 2)', prompts: [0, 1, 2, 3]}
  - {kind: predictions, index: 3}
  - {kind: activation_patching, id: patch, target: z_by_position, positions: [final, noun], layers: [1]}
  - {kind: attribution_patching, target: z_by_position, positions: [final, noun], layers: [1], compare_with: patch}
"""

KINDS_RUN = {"logit_lens", "layer_attribution", "head_attribution", "attention_vs_contribution", "ablation",
             "attention", "predictions", "activation_patching", "attribution_patching"}


def run_with_batch(folder: Path, batch_size: int) -> dict:
    from mi_dsl.running import run_spec

    folder.mkdir()
    path = folder / "spec.yaml"
    path.write_text("version: 1\nname: mixed\n" + model_yaml("gpt_neox") + textwrap.dedent(MIXED))
    outcome = run_spec(path, overrides=[f"run.batch_size={batch_size}"], out_dir=str(folder / "runs"),
                       progress=False, fresh=True)
    return json.loads((outcome.run_dir / "results.json").read_text())


def test_every_number_of_a_padded_run_equals_unpadded_runs(tmp_path):
    padded = run_with_batch(tmp_path / "padded", 64)
    alone = run_with_batch(tmp_path / "alone", 1)
    assert len(padded["dataset"]["token_lengths"]) >= 2, padded["dataset"]["token_lengths"]  # really mixed
    assert {a["kind"] for a in _analyses()} == KINDS_RUN
    assert padded["forward_passes"] < alone["forward_passes"] / 4  # one padded batch, not one per prompt
    diffs = differences(_without_passes(golden_numbers(alone)), golden_numbers(padded))
    assert not diffs, "\n".join(diffs[:20])
    # and the check can fail: the ablations moved the metric, the heads differ
    for name in ("ablation", "ablate_noun", "resample_noun"):
        data = padded["analyses"][name]
        assert abs(data["metric_after"] - data["metric_before"]) > 1e-4, name
    assert padded["per_prompt"]["clean"]["logit_diff"] != padded["per_prompt"]["corrupted"]["logit_diff"]


def _analyses():
    import yaml

    return yaml.safe_load(MIXED)["analyses"]


def _without_passes(value):
    """Forward-pass counts differ with the batch size by design; every other number must not."""
    if isinstance(value, dict):
        return {k: _without_passes(v) for k, v in value.items() if k != "passes"}
    if isinstance(value, list):
        return [_without_passes(v) for v in value]
    return value
