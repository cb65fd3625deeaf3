"""Keys and values reused before a position (runtime/kv.py) and prompts sharing a prefix running
it once (runtime/shared_prefix.py): the same numbers as full forwards, on random models with
roughened norms and biases, for every architecture the tests build."""
from __future__ import annotations

import pytest
import torch

from mi_dsl.runtime import kv
from mi_dsl.runtime.shared_prefix import SharedPrefix, best_length

ARCHITECTURES = ["gpt_neox", "gemma3", "llama", "gpt2"]


def loaded_model(architecture: str, size: str):
    from mi_dsl.models import load_model
    from mi_dsl.spec.model import ModelSpec
    from tests.word_tokenizer import word_tokenizer_file

    tokenizer = None if architecture == "gemma3" else str(word_tokenizer_file())
    return load_model(ModelSpec(source="random", architecture=architecture, size=size, seed=5,
                                tokenizer=tokenizer, device="cpu"))


@pytest.fixture(scope="module")
def models(rough_models):
    return {a: loaded_model(a, rough_models) for a in ARCHITECTURES}


def full_and_continued(bridge, tokens, starts, rows):
    """(the full forward's logits, {p: the logits of rows `rows` continued from position p})."""
    store: kv.KV = {}
    with torch.no_grad():
        with kv.recording(bridge, store):
            full = bridge(tokens, prepend_bos=False)
        assert sorted(store) == list(range(bridge.cfg.n_layers))
        continued = {}
        for p in starts:
            with kv.continuing(bridge, kv.take(store, rows, p)):
                continued[p] = bridge(tokens[rows, p:], prepend_bos=False,
                                      position_ids=kv.positions(p, tokens.shape[1], len(rows), "cpu"))
    return full, continued


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_a_continued_forward_equals_the_full_forward(models, architecture):
    bridge = models[architecture].bridge
    torch.manual_seed(1)
    tokens = torch.randint(5, 300, (3, 11))
    rows = torch.tensor([2, 0, 1])
    full, continued = full_and_continued(bridge, tokens, (1, 4, 10), rows)
    for p, rest in continued.items():
        expected = full[rows, p:]
        assert torch.allclose(rest, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max())), p
    assert 1 <= kv.exact_rest(bridge, tokens) < tokens.shape[1]
    for attention in kv.attentions(bridge):  # nothing left behind on the modules
        assert "_update_kv_cache" not in attention.__dict__
        assert "_apply_reconstruct_attention_mask" not in attention.__dict__


def test_finding_the_exact_rest_never_computes_logits(models):
    """exact_rest compares the unembedding's input: the probe forwards stop before the unembedding
    (Gemma's 262,144-token logits cost more than its forwards; the probes took 2 s of a run)."""
    bridge = models["gemma3"].bridge
    calls = []
    handle = bridge.unembed.register_forward_hook(lambda module, args, output: calls.append(1))
    try:
        rest = kv.exact_rest(bridge, torch.randint(5, 300, (2, 9)))
    finally:
        handle.remove()
    assert rest >= 1
    assert calls == []


def test_a_sliding_window_is_kept_by_the_continued_mask(models):
    """Gemma-3's local layers attend to the last `window` positions only; a window shorter than
    the prompt shows whether the continued mask keeps it."""
    loaded = models["gemma3"]
    bridge = loaded.bridge
    config = loaded.hf_model.config
    sliding = [a.original_component for a in kv.attentions(bridge) if a.original_component.sliding_window]
    assert sliding, "the tiny Gemma-3 has sliding-window layers"
    saved = config.sliding_window
    try:
        config.sliding_window = 3
        for module in sliding:
            module.sliding_window = 3
        torch.manual_seed(2)
        tokens = torch.randint(5, 300, (2, 10))
        full, continued = full_and_continued(bridge, tokens, (6,), torch.arange(2))
        rest = continued[6]
        config.sliding_window = saved
        with torch.no_grad():
            unwindowed = bridge(tokens, prepend_bos=False)
        assert not torch.allclose(full[:, 6:], unwindowed[:, 6:], atol=1e-4)  # the window matters here
        assert torch.allclose(rest, full[:, 6:], rtol=1e-5, atol=1e-5 * float(full.abs().max()))
    finally:
        config.sliding_window = saved
        for module in sliding:
            module.sliding_window = saved


def test_the_prefix_length_is_where_sharing_saves_most():
    same_start = [(1, 2, 3, 4, 10 + i, 20 + i) for i in range(6)] + [(1, 2, 3, 5, 30 + i, 40 + i) for i in range(6)]
    assert best_length(same_start) == 4   # 2 x 4 + 12 x 2 tokens, against 1 x 3 + 12 x 3 (p = 3) or 72
    assert best_length([(1, 2, 3), (4, 5, 6), (7, 8, 9)]) == 0   # nothing shared
    assert best_length([(1, 2, 3, 4)]) == 0
    assert best_length([(1, 9, 5), (1, 8, 5), (2, 7, 5)]) == 0   # 8 tokens instead of 9: too little to pay


@pytest.mark.parametrize("architecture", ["gemma3", "gpt_neox"])
def test_prompts_sharing_a_prefix_run_it_once_with_the_same_metrics(models, architecture):
    from mi_dsl.runtime.executor import Executor
    from mi_dsl.runtime.pipeline import prompt_metrics
    from mi_dsl.runtime.unembed import Unembed, final_metrics

    loaded = models[architecture]
    executor, unembed = Executor(loaded, batch_size=4, progress=False), Unembed.of(loaded.bridge)
    torch.manual_seed(3)
    heads = [torch.randint(5, 300, (5,)).tolist() for _ in range(2)]
    prompts = [tuple(heads[i % 2] + torch.randint(5, 300, (3 + i % 3,)).tolist()) for i in range(10)]
    answers = [(11 + i,) for i in range(10)]
    foils = [(40 + i,) for i in range(10)]
    from mi_dsl.runtime.shared_prefix import continuable

    assert continuable(executor, prompts) >= 1  # (its check runs a few forwards of its own first)
    seen = []
    handle = loaded.bridge.blocks[0].register_forward_pre_hook(
        lambda module, args: seen.append(args[0].shape[0] * args[0].shape[1]))
    try:
        got = prompt_metrics(executor, unembed, prompts, answers, foils, ["logit_diff", "prob"])
    finally:
        handle.remove()
    assert sum(seen) < sum(len(p) for p in prompts)  # tokens run
    for i, ids in enumerate(prompts):
        alone = final_metrics(executor, torch.tensor([ids]), torch.tensor([list(answers[i])]),
                              torch.tensor([list(foils[i])]), ["logit_diff", "prob"], unembed)
        for name in ("logit_diff", "prob"):
            assert torch.allclose(got[name][i], alone[name][0].cpu(), rtol=1e-5, atol=1e-6), (i, name)
    # the 5 shared tokens, unless the kernels need more positions run than the shortest prompt's 3 after them
    assert SharedPrefix.plan(executor, prompts).length == min(5, 8 - continuable(executor, prompts))
