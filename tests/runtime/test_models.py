"""Model loading (mi_dsl.models): random, local, embedded Gemma, errors, caches.

Real artifacts (the converted embedded Gemma, its tokenizer) go to the normal cache root
(`$MI_DSL_CACHE` or ~/.cache/mi-dsl) so they are built once per machine, not per run.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from mi_dsl.errors import FileAccessError, RunError
from mi_dsl.spec.model import ModelSpec, Processing
from mi_dsl.models import cache
from tests.word_tokenizer import word_tokenizer_file

REPO = Path(__file__).resolve().parents[2]
# Built in the run (tests/word_tokenizer.py): loading tests need no shared file.
TOKENIZER = word_tokenizer_file()
SYLLOGISM = "All flowers are angiosperms. Daisies are flowers. Therefore, daisies are"

def tiny(architecture: str, **changes) -> ModelSpec:
    tokenizer = str(TOKENIZER) if architecture == "gpt_neox" else None  # gemma3: embedded
    return replace(ModelSpec(source="random", architecture=architecture, size="tiny",
                             tokenizer=tokenizer, device="cpu"), **changes)


TINY = ["gpt_neox", "gemma3"]


def logits_of(loaded, text: str = "The quick brown fox jumps over the lazy"):
    import torch

    tokens = loaded.bridge.to_tokens(text, prepend_bos=True)
    with torch.no_grad():
        return loaded.bridge(tokens)


@pytest.fixture(scope="module")
def load():
    """load_model, memoised per spec within this module (random tiny loads take seconds)."""
    from mi_dsl.models import load_model

    seen = {}

    def get(spec: ModelSpec):
        if spec not in seen:
            seen[spec] = load_model(spec)
        return seen[spec]
    return get


# --------------------------------------------------------------------------- import cost


def test_importing_models_does_not_import_torch():
    code = ("import sys, mi_dsl.models, mi_dsl.models.cache, mi_dsl.models.random_weights; "
            "print(sorted(m for m in ('torch', 'transformers', 'transformer_lens') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- random models


@pytest.mark.parametrize("architecture", TINY)
def test_random_tiny_model_boots_and_runs(load, architecture):
    loaded = load(tiny(architecture))
    logits = logits_of(loaded)
    info = loaded.info
    assert logits.shape[-1] == info["d_vocab"] == loaded.bridge.cfg.d_vocab
    assert bool(logits.isfinite().all())
    assert info["source"] == "random" and info["n_layers"] == 2 and info["d_model"] == 64
    assert info["cached"] is False and info["load_seconds"] > 0
    assert Path(loaded.tokenizer_dir, "tokenizer.json").is_file()
    assert loaded.bridge.compatibility_mode
    assert loaded.bridge.cfg.default_prepend_bos is True


def test_random_gemma3_is_grouped_query(load):
    info = load(tiny("gemma3")).info
    assert (info["n_heads"], info["n_kv_heads"], info["d_head"]) == (4, 1, 16)
    assert info["architecture"] == "Gemma3ForCausalLM"


@pytest.mark.parametrize("architecture", TINY)
def test_same_seed_gives_identical_logits(load, architecture):
    import torch
    from mi_dsl.models import load_model

    first = logits_of(load(tiny(architecture)))
    again = logits_of(load_model(tiny(architecture)))
    other = logits_of(load_model(tiny(architecture, seed=1)))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


@pytest.mark.parametrize("architecture", TINY)
def test_processing_changes_logits_only_by_a_constant_per_position(load, architecture):
    processed = logits_of(load(tiny(architecture)))[0, -1]
    raw = logits_of(load(tiny(architecture, processing=Processing(enabled=False))))[0, -1]
    a, b = 11, 42  # any two tokens: their logit difference must not move
    assert float(processed[a] - processed[b]) == pytest.approx(float(raw[a] - raw[b]), abs=1e-4)
    spread = (processed - processed.mean()) - (raw - raw.mean())
    assert float(spread.abs().max()) < 1e-4


@pytest.mark.parametrize("enabled", [True, False])
def test_hook_names_are_hooked_transformer_style(load, enabled):
    loaded = load(tiny("gemma3", processing=Processing(enabled=enabled)))
    tokens = loaded.bridge.to_tokens("a b c", prepend_bos=True)
    _, activations = loaded.bridge.run_with_cache(tokens)
    for name in ("blocks.0.hook_resid_pre", "blocks.1.attn.hook_pattern", "blocks.1.hook_resid_post"):
        assert name in activations, name


def test_prepend_bos_false_is_recorded(load):
    loaded = load(tiny("gemma3", prepend_bos=False))
    assert loaded.bridge.cfg.default_prepend_bos is False
    with_bos = loaded.bridge.to_tokens("a b", prepend_bos=True)[0].tolist()
    without = loaded.bridge.to_tokens("a b", prepend_bos=False)[0].tolist()
    assert with_bos == [loaded.tokenizer.bos_token_id] + without


def test_local_directory_loads_the_same_weights(load, tmp_path):
    import torch
    from mi_dsl.models import random_weights as random_models
    from mi_dsl.models import load_model

    generated = load(tiny("gpt_neox"))
    shape = random_models.shape_for("gpt_neox", "tiny")
    random_models.build(shape, generated.info["d_vocab"], seed=0).save_pretrained(tmp_path)
    local = load_model(ModelSpec(source="local", path=str(tmp_path), tokenizer=str(TOKENIZER),
                                 device="cpu"))
    assert local.info["source"] == "local" and local.info["path"] == str(tmp_path)
    assert torch.allclose(logits_of(local), logits_of(generated), atol=1e-5)


# --------------------------------------------------------------------------- errors


def test_pretrained_name_missing_offline_is_a_clear_error(monkeypatch):
    from mi_dsl.models import load_model

    monkeypatch.delenv("MI_DSL_ONLINE", raising=False)
    name = "mi-dsl-tests/no-such-model-anywhere"
    with pytest.raises(RunError) as caught:
        load_model(ModelSpec(source="pretrained", name=name))
    message = str(caught.value)
    assert name in message and "offline" in message and "Hugging Face cache" in message
    assert "source: embedded" in message  # the hint says what to do


@pytest.mark.parametrize("source", ["local", "gguf"])
def test_missing_path_names_the_path(tmp_path, source):
    from mi_dsl.models import load_model

    missing = str(tmp_path / ("nothing-here.gguf" if source == "gguf" else "nothing-here"))
    with pytest.raises((RunError, FileAccessError)) as caught:
        load_model(ModelSpec(source=source, path=missing))
    assert missing in str(caught.value)


def test_local_directory_without_config_is_refused(tmp_path):
    from mi_dsl.models import load_model

    with pytest.raises(FileAccessError, match="config.json"):
        load_model(ModelSpec(source="local", path=str(tmp_path)))


@pytest.mark.parametrize("changes, words", [
    ({"architecture": "gpt_neo"}, "did you mean 'gpt_neox'"),
    ({"size": "huge"}, "known: tiny"),
    ({"device": "tpu9"}, "device"),
    ({"dtype": "float8"}, "dtype"),
    ({"source": "ftp"}, "unknown model source"),
])
def test_bad_spec_fields_are_run_errors(changes, words):
    from mi_dsl.models import load_model

    with pytest.raises(RunError) as caught:
        load_model(replace(tiny("gemma3"), **changes))
    assert words in str(caught.value)


def test_random_model_without_a_tokenizer_says_so():
    from mi_dsl.models import tokenizer_dir_for

    with pytest.raises(RunError, match="model.tokenizer"):
        tokenizer_dir_for(ModelSpec(source="random", architecture="gpt_neox", size="tiny"))


# --------------------------------------------------------------------------- tokenizer dirs


def test_tokenizer_dir_from_a_file_names_special_tokens(tmp_path):
    import json

    from mi_dsl.models import tokenizer_dir_for

    spec = tiny("gpt_neox")
    directory = Path(tokenizer_dir_for(spec, cache_root=tmp_path))
    assert directory.is_relative_to(tmp_path)
    assert (directory / "tokenizer.json").read_bytes() == TOKENIZER.read_bytes()
    config = json.loads((directory / "tokenizer_config.json").read_text())
    assert config["bos_token"] == config["eos_token"] == "<|endoftext|>"
    assert tokenizer_dir_for(spec, cache_root=tmp_path) == str(directory)


def test_cached_tokenizer_dir_needs_no_torch(tmp_path):
    from mi_dsl.models import tokenizer_dir_for

    tokenizer_dir_for(tiny("gpt_neox"), cache_root=tmp_path)
    code = (f"import sys; from mi_dsl.models import tokenizer_dir_for; "
            f"from mi_dsl.spec.model import ModelSpec; "
            f"tokenizer_dir_for(ModelSpec(source='random', architecture='gpt_neox', size='tiny', "
            f"tokenizer={str(TOKENIZER)!r}), cache_root={str(tmp_path)!r}); "
            f"print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_bridge_tokenizes_like_the_torch_free_layer(load):
    from tokenizers import Tokenizer

    loaded = load(tiny("gpt_neox"))
    plain = Tokenizer.from_file(str(Path(loaded.tokenizer_dir) / "tokenizer.json"))
    text = " herbivorous  Pigs\tare Ünïcode 🙂"
    expected = [loaded.tokenizer.bos_token_id] + plain.encode(text, add_special_tokens=False).ids
    assert loaded.bridge.to_tokens(text, prepend_bos=True)[0].tolist() == expected


# --------------------------------------------------------------------------- caches


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MI_DSL_CACHE", str(tmp_path))
    assert cache.cache_root() == tmp_path
    monkeypatch.delenv("MI_DSL_CACHE")
    assert cache.cache_root() == Path.home() / ".cache" / "mi-dsl"


def test_a_failed_build_leaves_no_entry(tmp_path):
    final = cache.entry(tmp_path, "models", "abc")
    with pytest.raises(KeyboardInterrupt):
        with cache.building(final) as scratch:
            (scratch / "half.bin").write_bytes(b"x")
            raise KeyboardInterrupt
    assert not final.exists() and list(final.parent.iterdir()) == []
    with cache.building(final) as scratch:
        (scratch / "whole.bin").write_bytes(b"x")
    assert cache.ready(final) and (final / "whole.bin").is_file()


def test_file_fingerprint_changes_with_the_file(tmp_path):
    file = tmp_path / "m.gguf"
    file.write_bytes(b"GGUF" + b"\0" * 100)
    before = cache.file_fingerprint(file)
    assert cache.file_fingerprint(file) == before
    file.write_bytes(b"GGUF" + b"\1" * 100)
    assert cache.file_fingerprint(file) != before


def test_processed_weights_cache_round_trips(tmp_path):
    """The second start takes processed weights from disk and computes the same logits."""
    import torch
    from mi_dsl.models import boot, files
    from mi_dsl.models.sources import source_of

    spec = tiny("gemma3")
    results = []
    for _ in range(2):
        tokenizer = boot.load_bridge_tokenizer(files.tokenizer_dir_for(spec))
        weights = source_of(spec).load(spec, None, torch.float32, lambda m: None, tokenizer)
        weights.weights_key = "test-weights"
        bridge = boot.boot_bridge(weights.hub_name, weights.hf_model, tokenizer, torch.device("cpu"), torch.float32)
        hit = boot.enable_compatibility(bridge, spec, weights, tmp_path, torch.device("cpu"),
                                        torch.float32, lambda m: None)
        with torch.no_grad():
            results.append((hit, bridge(bridge.to_tokens("one two three", prepend_bos=True))))
    assert [hit for hit, _ in results] == [False, True]
    assert torch.equal(results[0][1], results[1][1])
    assert len(list((tmp_path / f"v{cache.FORMAT}" / "processed").iterdir())) == 1


# --------------------------------------------------------------------------- GGUF files


def write_tiny_gemma3_gguf(path: Path, seed: int = 0) -> Path:
    """A one-layer Gemma-3 GGUF (float32, 267-token vocabulary), for the gguf source."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    d, ff, heads, kv, hd = 64, 128, 4, 1, 16
    tokens = (["<pad>", "<eos>", "<bos>", "<unk>"] + [f"<0x{i:02X}>" for i in range(256)]
              + ["\u2581", "\u2581a", "\u2581b", "\u2581the", "\u2581cat", "a", "b"])
    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_context_length(512)
    writer.add_embedding_length(d)
    writer.add_block_count(1)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv)
    writer.add_key_length(hd)
    writer.add_value_length(hd)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    writer.add_sliding_window(64)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * 260 + [-1.0, -2.0, -2.0, -3.0, -3.0, -4.0, -4.0])
    writer.add_token_types([3, 3, 3, 2] + [6] * 256 + [1] * 7)
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)

    def normal(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    ones = lambda n: np.ones(n, dtype=np.float32)  # noqa: E731
    writer.add_tensor("token_embd.weight", normal(len(tokens), d))
    writer.add_tensor("output_norm.weight", ones(d))
    for name, array in [
        ("attn_norm", ones(d)), ("attn_q", normal(heads * hd, d)), ("attn_k", normal(kv * hd, d)),
        ("attn_v", normal(kv * hd, d)), ("attn_output", normal(d, heads * hd)),
        ("attn_q_norm", ones(hd)), ("attn_k_norm", ones(hd)), ("post_attention_norm", ones(d)),
        ("ffn_norm", ones(d)), ("ffn_gate", normal(ff, d)), ("ffn_up", normal(ff, d)),
        ("ffn_down", normal(d, ff)), ("post_ffw_norm", ones(d)),
    ]:
        writer.add_tensor(f"blk.0.{name}.weight", array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_file_is_converted_once_and_keyed_by_its_content(tmp_path):
    import torch
    from mi_dsl.models import load_model, tokenizer_dir_for

    file = write_tiny_gemma3_gguf(tmp_path / "tiny.gguf")
    spec = ModelSpec(source="gguf", path=str(file), device="cpu")
    root = tmp_path / "cache"
    first = load_model(spec, cache_root=root)
    assert first.info["cached"] is False and first.info["source"] == "gguf"
    assert first.info["name"] == "google/gemma-3-270m"  # from the file's architecture
    assert (first.info["n_layers"], first.info["n_kv_heads"], first.info["d_vocab"]) == (1, 1, 267)
    assert Path(tokenizer_dir_for(spec, cache_root=root), "tokenizer.json").is_file()
    second = load_model(spec, cache_root=root)
    assert second.info["cached"] is True and second.info["processed_cached"] is True
    assert torch.equal(logits_of(first, "a b"), logits_of(second, "a b"))

    write_tiny_gemma3_gguf(file, seed=1)  # another file at the same path
    os.utime(file, ns=(1, 1))
    changed = load_model(spec, cache_root=root)
    assert changed.info["cached"] is False
    assert not torch.allclose(logits_of(changed, "a b"), logits_of(first, "a b"))


# --------------------------------------------------------------------------- embedded Gemma


@pytest.mark.slow
def test_embedded_gemma_is_cached_and_completes_the_syllogism():
    import gc

    import torch
    from mi_dsl.models import load_model

    spec = ModelSpec(source="embedded", device="cpu")
    load_model(spec)  # converts on a fresh machine, else already cached
    gc.collect()
    loaded = load_model(spec)
    info = loaded.info
    assert info["cached"] is True and info["processed_cached"] is True
    assert (info["n_layers"], info["n_heads"], info["n_kv_heads"], info["d_model"], info["d_head"],
            info["d_vocab"]) == (18, 4, 1, 640, 256, 262144)
    tokens = loaded.bridge.to_tokens(SYLLOGISM, prepend_bos=True)
    assert tokens[0, 0].item() == loaded.tokenizer.bos_token_id == 2
    with torch.no_grad():
        top = int(loaded.bridge(tokens)[0, -1].argmax())
    assert loaded.tokenizer.decode([top]) == " angios"


@pytest.mark.slow
def test_gguf_tokenizer_dir_has_tokenizer_json():
    from tokenizers import Tokenizer

    from mi_dsl.models import tokenizer_dir_for

    directory = Path(tokenizer_dir_for(ModelSpec(source="embedded")))
    backend = Tokenizer.from_file(str(directory / "tokenizer.json"))
    assert backend.token_to_id("<bos>") == 2
    assert backend.encode(" angios", add_special_tokens=False).ids
