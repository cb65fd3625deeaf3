"""The model and the prompt pairs of the EAP-IG reference fixture, built the same way in two
environments: the mi-dsl test (tests/analyses/test_circuit_reference.py) and the reference
script run in its own virtual environment (benchmarks/reference/eap_ig_reference.py, which
imports this file by path). It needs torch, transformers and tokenizers only.

The model is a GPT-2 of 4 layers x 4 heads (d_model 32) whose every weight comes from one
seeded generator: LayerNorm weights 1 + N(0, 0.3), every bias N(0, 0.2), matrices N(0, 0.3),
embeddings N(0, 1); `checksum` hashes the weights so each side can tell the other built
the same model. The tokenizer is word-level over WORDS.
"""
from __future__ import annotations

import hashlib
import itertools
from pathlib import Path
from typing import List, Tuple

SEED = 22
NAMES = ["Mary", "John", "Alice", "Bob"]
TEMPLATE = "When {io} and {s} went to the store, {s} gave a drink to"
CORRUPTED = "When {io} and {s} went to the store, {io} gave a drink to"
SPECIAL = ["<pad>", "<unk>", "<bos>", "<eos>"]
WORDS = ["When", "and", "went", "to", "the", "store", ",", "gave", "a", "drink"] + NAMES
VOCAB = SPECIAL + WORDS + [f"filler{i}" for i in range(64 - len(SPECIAL) - len(WORDS))]
SHAPE = {"n_layer": 4, "n_head": 4, "n_embd": 32, "n_inner": 128, "n_positions": 32}


def pairs() -> List[Tuple[str, str, str, str]]:
    """(clean, corrupted, answer, foil) in the order of the product io x s with io != s."""
    out = []
    for io, s in itertools.product(NAMES, NAMES):
        if io != s:
            out.append((TEMPLATE.format(io=io, s=s), CORRUPTED.format(io=io, s=s), io, s))
    return out


def build_model():
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=len(VOCAB), activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0, layer_norm_epsilon=1e-5, bos_token_id=VOCAB.index("<bos>"),
                        eos_token_id=VOCAB.index("<eos>"), tie_word_embeddings=True, **SHAPE)
    model = GPT2LMHeadModel(config).eval()
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if ".ln_" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.3 * noise)
            elif name.endswith("bias"):
                p.copy_(0.2 * noise)
            elif "wte" in name or "wpe" in name:
                p.copy_(noise)
            else:
                p.copy_(0.3 * noise)
    return model


def checksum(model) -> str:
    digest = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(p.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def write_model(folder: Path) -> str:
    """A Hugging Face folder (config, weights, tokenizer) holding the model; returns the checksum."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    model = build_model()
    model.save_pretrained(folder)
    backend = Tokenizer(WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    backend.pre_tokenizer = Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>",
                                        unk_token="<unk>", pad_token="<pad>")
    tokenizer.save_pretrained(folder)
    return checksum(model)
