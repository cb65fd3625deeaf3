"""The shared final-position pass continues after the prefixes the pipeline ran once.

The keep-condition runs one whole prompt per distinct prefix and keeps its keys and values
(runtime/shared_prefix.py). The shared pass then reruns the final pairs' clean prompts, which
begin with those prefixes: it runs only the positions after them, its attention patterns' first
rows come from the prefixes' own forwards, and the keys and values it keeps for ablation's rerun
join the prefix's with its own. Every number must be that of the pass over whole prompts, on a
Gemma-like model (grouped-query attention, norms after attention) and a Pythia-like one, both
with sharp attention and roughened norms (tests/conftest.py)."""
from __future__ import annotations

import textwrap

import pytest
import torch

from tests.analyses.test_ablation_continued import MODELS, _run
from tests.spec_parts import syllogism


def _spec(model: str, size: str) -> str:
    model_line = MODELS[model].replace("size: tiny", f"size: {size}")
    return "version: 1\nname: prefixes\n" + model_line + syllogism() + textwrap.dedent("""\
        pipeline:
          - keep: 'clean.logit_diff > -1000'
          - symmetric: true
        analyses:
          - {kind: logit_lens}
          - {kind: head_attribution, id: head_attr}
          - {kind: attention, heads: 'top(head_attr, 2)', prompts: [0, 1, 2]}
          - {kind: attention_vs_contribution, heads: 'top(head_attr, 2)', from: final, to: descriptor}
          - {kind: ablation, heads: [L1H0, L0H1], positions: final, method: zero}
        """)


def pass_widths(monkeypatch) -> list:
    """The list that receives the width of each forward of a shared pass (those that keep every
    position of the attention patterns, with no intervention)."""
    from mi_dsl.runtime.executor import ALL, Executor

    widths = []
    real = Executor.capture

    def counted(self, tokens, keep, **options):
        if keep.get("blocks.0.attn.hook_pattern") is ALL and not options.get("interventions"):
            widths.append(tokens.shape[1])
        return real(self, tokens, keep, **options)

    monkeypatch.setattr(Executor, "capture", counted)
    return widths


def _numbers(value, path=""):
    """Every number in a result's data, by its path."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() if "second" not in key
                for k, v in _numbers(item, f"{path}/{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in _numbers(item, f"{path}[{i}]").items()}
    return {path: float(value)} if isinstance(value, (int, float)) and not isinstance(value, bool) else {}


@pytest.mark.parametrize("model", ["gemma3", "gpt_neox"])
def test_the_pass_after_the_prefixes_equals_the_pass_over_whole_prompts(tmp_path, monkeypatch, model, rough_models):
    from mi_dsl.runtime import shared_prefix

    widths = pass_widths(monkeypatch)
    text = _spec(model, rough_models)  # sharp attention: a prompt's pattern rows are its own
    after = _run(tmp_path, text, "after")
    after_widths, widths[:] = list(widths), []
    monkeypatch.setattr(shared_prefix, shared_prefix.covering.__name__, lambda executor, prompts: None)
    whole = _run(tmp_path, text, "whole")
    longest = max(whole["dataset"]["token_lengths"])
    assert widths and set(widths) == {longest}
    assert after_widths and max(after_widths) < longest, after_widths
    for name in ("logit_lens", "head_attr", "attention", "attention_vs_contribution", "ablation"):
        a, b = _numbers(after["analyses"][name]), _numbers(whole["analyses"][name])
        assert a.keys() == b.keys() and a, name
        x, y = torch.tensor(list(a.values()), dtype=torch.float64), torch.tensor(list(b.values()), dtype=torch.float64)
        assert torch.allclose(x, y, rtol=1e-5, atol=1e-6), name
    # the patterns' prefix rows are there: every row of a prompt's pattern sums to 1
    for prompt in after["analyses"]["attention"]["prompts"]:
        rows = torch.tensor(prompt["patterns"]).sum(-1)
        assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)


@pytest.mark.parametrize("budget", ["CACHE_BYTES", "KEPT_BYTES"])
def test_prefixes_past_a_budget_leave_the_pass_whole(tmp_path, monkeypatch, rough_models, budget):
    """A large model's long prefixes would hold gigabytes of pattern rows, or of keys and values, for
    the rest of the run: past the pattern cache's budget no pattern rows are kept, past KEPT_BYTES the
    plan is not kept at all, and the pass runs its prompts whole."""
    from mi_dsl.runtime import shared_prefix

    widths = pass_widths(monkeypatch)
    monkeypatch.setattr(shared_prefix, budget, 0)
    results = _run(tmp_path, _spec("gpt_neox", rough_models), "budget")
    assert widths and set(widths) == {max(results["dataset"]["token_lengths"])}
