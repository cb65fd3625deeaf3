"""Metrics of many (prompt, answer, foil) rows run one forward per distinct prompt: a pair's
corrupted prompt is often another pair's clean one. Each row must still read its own answer
and foil, at its own prompt's final position, whatever the batch it falls in."""
from __future__ import annotations

import pytest
import torch

METRICS = ["logit_diff", "prob", "rank"]


@pytest.fixture(scope="module")
def tiny(rough_models):
    from mi_dsl.runtime.executor import Executor
    from mi_dsl.models import load_model
    from mi_dsl.runtime.unembed import Unembed
    from mi_dsl.spec.model import ModelSpec
    from tests.word_tokenizer import word_tokenizer_file

    loaded = load_model(ModelSpec(source="random", architecture="gpt_neox", size=rough_models, seed=3,
                                  tokenizer=str(word_tokenizer_file()), device="cpu"))
    return Executor(loaded, batch_size=3, progress=False), Unembed.of(loaded.bridge)


def test_rows_sharing_a_prompt_read_their_own_answers_with_one_forward_per_prompt(tiny):
    from mi_dsl.runtime.pipeline import prompt_metrics
    from mi_dsl.runtime.unembed import final_metrics

    executor, unembed = tiny
    torch.manual_seed(0)
    distinct = [tuple(torch.randint(5, 200, (n,)).tolist()) for n in (5, 7, 5, 6)]
    # every prompt asked twice or more, the second time with answer and foil swapped (the symmetric
    # syllogisms), mixed lengths, and a token set among the answers
    prompts = [distinct[i] for i in (0, 1, 2, 0, 3, 1, 2, 3, 0)]
    answers = [(11,), (12,), (13, 14), (21,), (15,), (22,), (23,), (24,), (31,)]
    foils = [(21,), (22,), (23,), (11,), (25,), (12,), (13, 14), (15,), (32,)]
    before = executor.forwards
    got = prompt_metrics(executor, unembed, prompts, answers, foils, METRICS)
    assert executor.forwards - before == 2  # 4 distinct prompts in batches of 3, not 9 rows
    for i, (ids, a, f) in enumerate(zip(prompts, answers, foils)):
        alone = final_metrics(executor, torch.tensor([ids]), torch.tensor([list(a)]), torch.tensor([list(f)]),
                              METRICS, unembed)
        for name in METRICS:
            assert torch.allclose(got[name][i], alone[name][0].cpu(), rtol=1e-5, atol=1e-6), (i, name)
    assert torch.allclose(got["logit_diff"][0], -got["logit_diff"][3], rtol=1e-5)  # swapped answer/foil
