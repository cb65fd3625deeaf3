"""Randomly initialised models with a real architecture's shapes (`source: random`).

They let a spec, and the tests, run the whole pipeline with no weights on disk.
Initialisation is seeded without touching the global random state, so two loads with
the same seed give identical weights on any device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

from ...errors import RunError
from ...suggest import did_you_mean


@dataclass(frozen=True)
class Shape:
    hub_name: str                    # the name the bridge is booted with
    make_config: Callable[[int], Any]  # vocabulary size -> a transformers config
    fixed_vocab: Optional[int] = None  # the real model's (padded) vocabulary size, else the tokenizer's
    finish: Optional[Callable[[Any], None]] = None  # fn(model) after initialisation, under the same seed


def _gpt_neox(hidden: int, layers: int, heads: int, intermediate: int) -> Callable[[int], Any]:
    def make(vocab: int):
        from transformers import GPTNeoXConfig

        config = GPTNeoXConfig(
            vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
            num_attention_heads=heads, intermediate_size=intermediate, rotary_pct=0.25,
            max_position_embeddings=2048, use_parallel_residual=True,
            tie_word_embeddings=False, bos_token_id=0, eos_token_id=0,
        )
        config.architectures = ["GPTNeoXForCausalLM"]
        return config
    # Torch-free sizes, for `mi-run plan`'s memory estimate.
    make.dims = dict(hidden=hidden, layers=layers, heads=heads, kv_heads=heads, head_dim=hidden // heads,
                     intermediate=intermediate, gated=False, tied=False, positions=0)
    return make


def _gemma3(hidden: int, layers: int, heads: int, kv_heads: int, head_dim: int,
            intermediate: int, sliding_window: int) -> Callable[[int], Any]:
    def make(vocab: int):
        from transformers import Gemma3TextConfig

        config = Gemma3TextConfig(
            vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
            intermediate_size=intermediate, query_pre_attn_scalar=head_dim,
            sliding_window=sliding_window, max_position_embeddings=32768,
            bos_token_id=2, eos_token_id=1, pad_token_id=0, tie_word_embeddings=True,
        )
        config.architectures = ["Gemma3ForCausalLM"]
        return config
    # Torch-free sizes, for `mi-run plan`'s memory estimate.
    make.dims = dict(hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
                     intermediate=intermediate, gated=True, tied=True, positions=0)
    return make


def _llama(hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int) -> Callable[[int], Any]:
    def make(vocab: int):
        from transformers import LlamaConfig

        config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                             num_attention_heads=heads, num_key_value_heads=kv_heads,
                             intermediate_size=intermediate, max_position_embeddings=2048,
                             tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
        config.architectures = ["LlamaForCausalLM"]
        return config
    make.dims = dict(hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads, head_dim=hidden // heads,
                     intermediate=intermediate, gated=True, tied=True, positions=0)
    return make


def _gpt2(hidden: int, layers: int, heads: int, positions: int) -> Callable[[int], Any]:
    def make(vocab: int):
        from transformers import GPT2Config

        config = GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=heads,
                            n_positions=positions, bos_token_id=0, eos_token_id=0)
        config.architectures = ["GPT2LMHeadModel"]
        return config
    # Torch-free sizes, for `mi-run plan`'s memory estimate.
    make.dims = dict(hidden=hidden, layers=layers, heads=heads, kv_heads=heads, head_dim=hidden // heads,
                     intermediate=4 * hidden, gated=False, tied=True, positions=positions)
    return make


SHAPES: Dict[str, Dict[str, Shape]] = {
    "gpt_neox": {
        "tiny": Shape("EleutherAI/pythia-160m", _gpt_neox(64, 2, 4, 256)),
        # 4 layers x 8 heads, d_model 256: a Pythia-shaped model a 2-core CPU patches in seconds
        "small": Shape("EleutherAI/pythia-160m", _gpt_neox(256, 4, 8, 1024), 50304),
        "pythia-70m": Shape("EleutherAI/pythia-70m", _gpt_neox(512, 6, 8, 2048), 50304),
        "pythia-160m": Shape("EleutherAI/pythia-160m", _gpt_neox(768, 12, 12, 3072), 50304),
    },
    "gemma3": {
        # 4 query heads share 1 key/value head (grouped-query), as in Gemma-3-270m.
        "tiny": Shape("google/gemma-3-270m", _gemma3(64, 2, 4, 1, 16, 256, 64)),
        "gemma-3-270m": Shape("google/gemma-3-270m", _gemma3(640, 18, 4, 1, 256, 2048, 512), 262144),
    },
    "llama": {
        # 3 query heads share each key/value head, as in SmolLM2-135M (9 on 3).
        "tiny": Shape("HuggingFaceTB/SmolLM2-135M", _llama(48, 2, 6, 2, 128)),
        # the embedded SmolLM2-135M-Instruct's shapes (compile/memory.model_dims reads them offline)
        "smollm2-135m": Shape("HuggingFaceTB/SmolLM2-135M", _llama(576, 30, 9, 3, 1536), 49152),
    },
    "gpt2": {
        "tiny": Shape("openai-community/gpt2", _gpt2(64, 2, 4, 1024)),
        "gpt2": Shape("openai-community/gpt2", _gpt2(768, 12, 12, 1024), 50257),
    },
}


def shape_for(architecture: Optional[str], size: Optional[str]) -> Shape:
    """The shape a random spec names, or a RunError listing the known ones."""
    if architecture not in SHAPES:
        known = ", ".join(sorted(SHAPES))
        raise RunError(f"unknown random-model architecture {architecture!r}; known: {known}",
                       hint=did_you_mean(str(architecture), SHAPES))
    sizes = SHAPES[architecture]
    if size not in sizes:
        raise RunError(f"unknown size {size!r} for architecture {architecture!r}; "
                       f"known: {', '.join(sizes)}", hint=did_you_mean(str(size), sizes))
    return sizes[size]


def build(shape: Shape, vocab_size: int, seed: int):
    """A fresh model in float32 on the CPU, in eval mode, initialised from `seed`."""
    import torch
    from transformers import AutoModelForCausalLM

    if shape.fixed_vocab is not None and vocab_size > shape.fixed_vocab:
        raise RunError(f"the tokenizer has {vocab_size} tokens but this shape's vocabulary holds "
                       f"{shape.fixed_vocab}", hint="use a size whose vocabulary fits, such as 'tiny'")
    config = shape.make_config(shape.fixed_vocab or vocab_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        if shape.finish is not None:
            with torch.no_grad():
                shape.finish(model)
    return model.eval()
