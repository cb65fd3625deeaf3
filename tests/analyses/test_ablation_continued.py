"""Ablation's rerun continues from the shared pass's keys and values (runtime/pass_kv.py).

A head knocked out at the final position cannot change any earlier position, so the rerun
with it knocked out runs only the last positions (at least kv.exact_rest of them), after the
keys and values the shared final-position pass kept of the same clean prompts. The numbers
must be those of a whole rerun (the keys and values budget set to 0), on a Gemma-like model
(grouped-query attention, norms after attention, random norm weights) and a Pythia-like one,
for every ablation method, and on prompts of several lengths (right-padded batches)."""
from __future__ import annotations

import textwrap

import pytest
import torch

from tests.spec_parts import syllogism
from tests.word_tokenizer import word_tokenizer_file

MODELS = {
    "gemma3": "model: {source: random, architecture: gemma3, size: tiny, seed: 5, prepend_bos: true}\n",
    "gpt_neox": ("model: {source: random, architecture: gpt_neox, size: tiny, seed: 3, prepend_bos: true, "
                 f"tokenizer: '{word_tokenizer_file()}', bos_token: '<|endoftext|>'}}\n"),
}


def _spec(model: str, method: str, lengths: str) -> str:
    descriptors = (("herbivorous", "carnivorous"), ("endothermic", "ectothermic")) if lengths == "several" \
        else (("herbivorous", "carnivorous"), ("bipedal", "quadrupedal"))
    return "version: 1\nname: ablate\n" + MODELS[model] + syllogism(
        categories=("birds", "fish", "mammals"), descriptors=descriptors, nouns=("Cows", "Horses", "Wolves"),
        equal_lengths=lengths == "one") + textwrap.dedent(f"""\
        analyses:
          - {{kind: head_attribution, id: head_attr}}
          - {{kind: ablation, heads: [L1H0, L0H1], positions: final, method: {method}}}
        """)


def _run(tmp_path, text: str, name: str):
    from mi_dsl.running import run_spec

    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return run_spec(path, progress=False, fresh=True, out_dir=str(tmp_path / "runs")).results


@pytest.mark.parametrize("model,method,lengths", [
    ("gemma3", "zero", "one"), ("gemma3", "mean", "one"), ("gemma3", "resample", "one"),
    ("gpt_neox", "zero", "one"), ("gemma3", "zero", "several"), ("gpt_neox", "resample", "several")])
def test_the_ablated_rerun_equals_a_whole_rerun_and_runs_fewer_positions(tmp_path, monkeypatch, model, method,
                                                                         lengths):
    from mi_dsl.runtime import pass_kv
    from mi_dsl.runtime.executor import Executor

    widths = []
    real = Executor.capture

    def counted(self, tokens, keep, *, interventions=(), **options):
        if interventions:  # the ablated rerun (the replacement captures of mean/resample have none)
            widths.append(tokens.shape[1])
        return real(self, tokens, keep, interventions=interventions, **options)

    monkeypatch.setattr(Executor, "capture", counted)
    text = _spec(model, method, lengths)
    continued = _run(tmp_path, text, "continued")
    continued_widths, widths[:] = list(widths), []
    monkeypatch.setattr(pass_kv, "KV_BYTES", 0)
    whole = _run(tmp_path, text, "whole")
    longest = max(continued["dataset"]["token_lengths"])
    assert widths and all(w == longest for w in widths)  # the whole rerun: every position
    assert continued_widths and max(continued_widths) < longest, continued_widths
    if lengths == "several":
        assert len(set(continued["dataset"]["token_lengths"])) > 1
    a, b = continued["analyses"]["ablation"], whole["analyses"]["ablation"]
    for key in ("metric_after_per_prompt", "dla_after", "metric_before_per_prompt", "dla_before"):
        x, y = torch.tensor(a[key], dtype=torch.float64), torch.tensor(b[key], dtype=torch.float64)
        assert torch.allclose(x, y, rtol=1e-5, atol=1e-5 * float(y.abs().max())), key
    # and the knock-out did something: the rerun is not the clean run again
    assert not torch.allclose(torch.tensor(a["metric_after_per_prompt"]), torch.tensor(a["metric_before_per_prompt"]))


def test_every_position_ablated_reruns_whole(tmp_path, monkeypatch):
    """Without `positions` a head is knocked out everywhere: nothing can be skipped, and the pass
    keeps no keys and values for it."""
    from mi_dsl.compile import prepare
    from mi_dsl.runtime.executor import Executor

    text = _spec("gemma3", "zero", "one").replace(", positions: final", "")
    path = tmp_path / "every.yaml"
    path.write_text(text)
    assert not any(p.keys_values for p in prepare(path).plan.passes)
    widths = []
    real = Executor.capture

    def counted(self, tokens, keep, *, interventions=(), **options):
        if interventions:
            widths.append(tokens.shape[1])
        return real(self, tokens, keep, interventions=interventions, **options)

    monkeypatch.setattr(Executor, "capture", counted)
    results = _run(tmp_path, text, "every")
    assert widths and set(widths) == {max(results["dataset"]["token_lengths"])}


def test_a_change_within_float_rounding_is_no_backup():
    """Heads the knock-out cannot reach change by ~1e-9 when the rerun sums in another order (a
    continued forward, another batch size); only changes past 1e-5 of the largest attribution count."""
    from mi_dsl.analyses.ablation import _backups

    changed = torch.zeros(2, 4)
    changed[1, 1] = -0.0055   # a real backup: it moved against the lost effect (own change +)
    changed[0, 2] = -3.9e-9   # rounding
    changed[0, 3] = 0.2       # moved with the lost effect: no backup
    found = _backups([(0, 1), (1, 0)], changed, own_change=1.5, scale=3.2)
    assert [b["head"] for b in found] == ["L1H1"]
