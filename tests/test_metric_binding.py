"""A spec's metric expression is compiled into its own plan and bound to its own tokenizer.

One process prepares the same expression for two models whose tokenizers give the strings
different ids, runs both interleaved, and checks each run's per-prompt numbers against the
model's own logits read by hand; the global metric registry never holds the expression.
"""
from __future__ import annotations

import torch

from tests.spec_parts import animals, spec_text

EXPRESSION = 'logit(" big") - logit(" small")'


def write(tmp_path, name, model):
    path = tmp_path / f"{name}.yaml"
    path.write_text(spec_text(f"""
        version: 1
        name: {name}
        model: {model}
        """, animals(), f"""
        metric: '{EXPRESSION}'
        """))
    return path


def by_hand(prepared, pairs):
    """The expression from the model's logits at each clean prompt's final position."""
    from mi_dsl.models import load_model

    tokenizer = prepared.tokenizer
    big, small = tokenizer.encode(" big")[0], tokenizer.encode(" small")[0]
    bridge = load_model(prepared.spec.model).bridge
    with torch.no_grad():
        logits = torch.stack([bridge(torch.tensor([p.clean.ids]), prepend_bos=False)[0, -1] for p in pairs])
    return (logits[:, big] - logits[:, small]).tolist(), (big, small)


def test_one_process_two_tokenizers_the_same_expression(tmp_path, tiny_tokenizer):
    from mi_dsl.compile import prepare
    from mi_dsl.metrics import METRICS
    from mi_dsl.runtime.run import execute

    specs = {
        "words": write(tmp_path, "words", "{source: random, architecture: gpt_neox, size: tiny, "
                                          f"tokenizer: {tiny_tokenizer}, prepend_bos: true}}"),
        "gemma": write(tmp_path, "gemma", "{source: random, architecture: gemma3, size: tiny, prepend_bos: true}"),
    }
    prepared = {name: prepare(str(path), [], []) for name, path in specs.items()}  # both before either runs
    assert EXPRESSION not in METRICS
    ids = {}
    for name in ("words", "gemma"):
        log = execute(prepared[name], store_dir=tmp_path / name / ".store", progress=False, fresh=True)
        expected, ids[name] = by_hand(prepared[name], prepared[name].dataset.pairs)
        got = log.per_prompt["clean"][EXPRESSION]
        assert len(got) == len(expected) > 0
        for a, b in zip(got, expected):
            assert abs(a - b) <= 1e-4 * max(1.0, abs(b)), (name, got, expected)
        assert prepared[name].plan.main_metric.tokenizer == prepared[name].tokenizer.origin
    assert ids["words"] != ids["gemma"]  # the strings are different tokens in the two vocabularies
