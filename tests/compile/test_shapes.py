"""The model shape validate checks selectors against (compile/shapes.py) is the loaded model's.

The shape comes from configs without weights; here it is compared with what the loaded
models report (random tiny models here; the embedded Gemma's in test_shipped_specs, from
the run's provenance)."""
from __future__ import annotations

import pytest

from mi_dsl.compile.shapes import model_shape
from mi_dsl.spec.model import ModelSpec
from tests.word_tokenizer import word_tokenizer_file


@pytest.mark.parametrize("architecture", ["gpt_neox", "gemma3", "gpt2"])
def test_random_model_shapes_match_the_loaded_models(architecture):
    from mi_dsl.runtime.models import load_model

    tokenizer = None if architecture == "gemma3" else str(word_tokenizer_file())
    spec = ModelSpec(source="random", architecture=architecture, size="tiny", tokenizer=tokenizer)
    cfg = load_model(spec).bridge.cfg
    shape = model_shape(spec)
    assert (shape.n_layers, shape.n_heads, shape.n_kv_heads) == (
        cfg.n_layers, cfg.n_heads, getattr(cfg, "n_key_value_heads", None) or cfg.n_heads)


def test_local_config_json(tmp_path):
    (tmp_path / "config.json").write_text('{"num_hidden_layers": 12, "num_attention_heads": 12, '
                                          '"hidden_size": 768, "vocab_size": 50304}')
    shape = model_shape(ModelSpec(source="local", path=str(tmp_path)))
    assert (shape.n_layers, shape.n_heads, shape.n_kv_heads) == (12, 12, 12)
    assert model_shape(ModelSpec(source="pretrained", name="x/y")) is None  # unknown offline: not checked
