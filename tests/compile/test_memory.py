"""The plan's memory estimate (compile/memory.py) sizes the widest forward a run feeds the model.

With continuation answers that is a prompt followed by its continuation but the last token, not
the prompt alone: checked against the padded batches the runtime itself builds
(runtime/continuation.py's ContinuationBatch) for every prompt and continuation of the dataset.
"""
from __future__ import annotations

import pytest

from tests.test_continuations import COUNTRIES, write_spec


def plan_of(path):
    from mi_dsl.compile import prepare
    from mi_dsl.compile.summary import plan_summary

    prepared = prepare(str(path), [], [])
    return prepared, plan_summary(prepared)


def test_the_estimate_counts_continuation_tokens(tmp_path):
    from mi_dsl.compile.memory import activation_bytes_per_row
    from mi_dsl.runtime.continuation import ContinuationBatch

    prepared, summary = plan_of(write_spec(tmp_path, "gpt_neox", "tiny"))
    memory, pairs = summary["memory"], prepared.dataset.pairs
    fed = max(ContinuationBatch.of([getattr(p, which).ids for p in pairs],
                                   [getattr(p, side) for p in pairs]).tokens.shape[1]
              for which in ("clean", "corrupted") for side in ("answers", "foils"))
    assert memory["max_tokens"] == fed
    assert fed > max(summary["dataset"]["token_lengths"])  # the prompts alone would undercount
    per_row = activation_bytes_per_row(fed, 64, 256, 4)  # the tiny NeoX preset: d_model 64, d_mlp 256, 4 heads
    assert memory["activations_gb_per_batch"] == pytest.approx(per_row * memory["batch_rows"] / 2 ** 30, rel=1e-9)


def test_token_answers_count_the_prompt_only(tmp_path):
    body = COUNTRIES.replace("continuation(", "first_token(")
    prepared, summary = plan_of(write_spec(tmp_path, "gpt_neox", "tiny", metric="logit_diff", body=body))
    assert summary["memory"]["max_tokens"] == max(summary["dataset"]["token_lengths"])
