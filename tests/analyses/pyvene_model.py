"""The plain-transformers model of the pyvene comparison: a tiny GPT-2 with random weights made from a
seed by explicit draws (no transformers initialiser, so any transformers version builds the same
weights), and their checksum. Imports torch and transformers only: the reference environment
(benchmarks/pyvene/compare.py) builds it too."""
from __future__ import annotations

import hashlib

CONFIG = dict(vocab_size=8192, n_embd=64, n_layer=2, n_head=4, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0,
              attn_pdrop=0.0, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0)
SEED = 23


def build(seed: int = SEED):
    """GPT2LMHeadModel in eval mode: weights N(0, 0.2), LayerNorm weights 1 + N(0, 0.5), biases
    N(0, 0.2), drawn in parameter-name order from one generator."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(**CONFIG)).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
            if name.endswith("bias"):
                param.copy_(0.2 * noise)
            elif ".ln_" in name or name.startswith("transformer.ln_f"):
                param.copy_(1.0 + 0.5 * noise)
            else:
                param.copy_(0.2 * noise)
    return model


def checksum(model) -> str:
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(param.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


# The task both sides run: the size is the answer, its opposite the foil and the corruption; the causal
# model's variable `d` is the size (tests/analyses/test_pyvene_fixture.py, benchmarks/pyvene/).
SPEC = """\
version: 1
name: pyvene_comparison
seed: 0
model:
  source: local
  path: {path}
  tokenizer: {tokenizer}
  bos_token: '<|endoftext|>'
  prepend_bos: true
  processing: false
vocabularies:
  animal: {{items: [cats, dogs, owls, mice, birds, fish]}}
  size: {{pairs: [[big, small], [tall, short], [fast, slow], [wild, tame], [long, thin], [loud, quiet]]}}
prompts:
  template: "The {{animal}} are {{size}}. Are the {{animal}}"
  answer: 'first_token(" " + size)'
  foil: 'first_token(" " + opposite(size))'
  corrupt: {{swap: size}}
metric: logit_diff
causal_model:
  variables:
    d: size
  output: 'first_token(" " + d)'
"""

# Full-vector sites: the residual stream entering each layer (pyvene's block_input) at two positions.
FULL = {"kind": "interchange", "id": "full", "variables": ["d"], "source": "corrupted", "positions": ["size", "final"]}
# DAS at one site; every epoch runs (patience = epochs), so both sides do the same steps.
DAS = {"kind": "interchange", "id": "das", "variables": ["d"], "source": "corrupted", "layers": [1],
       "positions": ["final"], "featurizer": "das", "dims": 2,
       "training": {"epochs": 4, "lr": 0.01, "batch_size": 8, "patience": 4, "seed": 3, "test_fraction": 0.3}}
