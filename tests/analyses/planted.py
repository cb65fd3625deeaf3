"""A planted toy model for the featurizer tests: a variable that lives in one known direction.

A tiny random GPT-NeoX whose blocks are made the identity (attention and MLP outputs zero), so the
residual stream at the final position is the final token's embedding. Each word of the `size`
vocabulary embeds as 2 s u + 3 n: s = +1 or -1 its sign (the variable), u one unit direction, n a
random nuisance orthogonal to u (and to the all-ones vector, so LayerNorm's centring leaves both
alone); the unembedding reads " yes" - " no" along u only. So the sign lives in the 1-d subspace
span(u) of any layer's residual at the final position: interchanging u alone moves the
prediction to the source's sign; a random direction of the 64 barely touches it.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator

import torch

from tests.random_sizes import tiny_variant
from tests.word_tokenizer import word_tokenizer_file

PLANTED = "tiny-planted"
POSITIVE = ("big", "tall", "fast", "wild", "long", "loud")
NEGATIVE = ("small", "short", "slow", "tame", "thin", "quiet")
ANIMALS = ("cats", "dogs", "owls", "mice")

SPEC = """\
version: 1
name: planted
seed: 0
model:
  source: random
  architecture: gpt_neox
  size: {size}
  seed: 1
  prepend_bos: true
  tokenizer: {tokenizer}
  bos_token: '<|endoftext|>'
vocabularies:
  animal: {{items: [{animals}]}}
  size:
    items: [{sizes}]
prompts:
  template: "The {{animal}} are {{size}}"
  answer: 'first_token(" yes" if size.sign == "plus" else " no")'
  foil: 'first_token(" no" if size.sign == "plus" else " yes")'
  corrupt: {{resample: size, where: 'new.sign != size.sign'}}
metric: logit_diff
causal_model:
  variables:
    positive: 'size.sign == "plus"'
  output: 'first_token(" yes" if positive else " no")'
analyses:
{analyses}
"""


def spec_text(analyses: str, size: str = PLANTED) -> str:
    sizes = ", ".join([f"{{word: {w}, sign: plus}}" for w in POSITIVE]
                      + [f"{{word: {w}, sign: minus}}" for w in NEGATIVE])
    return SPEC.format(size=size, tokenizer=word_tokenizer_file(), animals=", ".join(ANIMALS), sizes=sizes,
                       analyses=analyses)


def token_ids() -> Dict[str, int]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(word_tokenizer_file()))
    out = {}
    for word in POSITIVE + NEGATIVE + ("yes", "no"):
        ids = tokenizer.encode(" " + word, add_special_tokens=False).ids
        assert len(ids) == 1, word
        out[word] = ids[0]
    return out


def direction(d: int) -> torch.Tensor:
    """The planted unit direction u (fixed, orthogonal to the all-ones vector)."""
    g = torch.Generator().manual_seed(7)
    u = torch.randn(d, generator=g)
    u = u - u.mean()
    return u / u.norm()


def _plant(model) -> None:
    ids = token_ids()
    neox = model.gpt_neox
    for layer in neox.layers:
        for linear in (layer.attention.dense, layer.mlp.dense_4h_to_h):
            linear.weight.zero_()
            linear.bias.zero_()
    d = neox.embed_in.weight.shape[1]
    u = direction(d)
    g = torch.Generator().manual_seed(11)
    for word in POSITIVE + NEGATIVE:
        n = torch.randn(d, generator=g)
        n = n - n.mean()
        n = n - (n @ u) * u
        n = n / n.norm()
        sign = 1.0 if word in POSITIVE else -1.0
        neox.embed_in.weight[ids[word]] = 2 * sign * u + 3 * n
    neox.final_layer_norm.weight.fill_(1.0)
    neox.final_layer_norm.bias.zero_()
    model.get_output_embeddings().weight[ids["yes"]] = 5 * u
    model.get_output_embeddings().weight[ids["no"]] = -5 * u


@contextmanager
def planted_models() -> Iterator[str]:
    with tiny_variant(PLANTED, finish=_plant) as name:
        yield name


def write(folder: Path, analyses: str) -> Path:
    path = folder / "planted.yaml"
    path.write_text(spec_text(analyses))
    return path
