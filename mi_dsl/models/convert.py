"""Dequantise a GGUF file into a float32 safetensors model directory, one tensor at a time.

transformers' own GGUF path (`from_pretrained(gguf_file=...)`) dequantises every tensor into
one dict, loads it into a model and `save_pretrained` copies it again: three float32 copies
of the model at once (2.8 GB for Gemma-3-270m, and 6.5 GB for the whole cold start). Here
the model exists only on the meta device (names and shapes); each GGUF tensor is
dequantised, passed through transformers' own tensor processor for its architecture (the
same name map and value fixes, e.g. Gemma's norm weights minus one) and written at once;
a large tensor (the 262k-row embedding) is dequantised in slices of rows. The bytes
written are the ones transformers' path writes (tests/runtime/test_convert.py compares
both on a GGUF with quantised tensors; the embedded Gemma's were compared tensor by tensor).

An architecture whose tensor processor merges or renames tensors (the mixture-of-experts
ones) goes through transformers' whole-model path instead.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

from ..errors import RunError, first_line
from .tensorfile import TensorFileWriter

SLICE_BYTES = 64 << 20     # dequantise tensors larger than this (as float32) a slice of rows at a time


class _NotStreamable(Exception):
    """This GGUF needs transformers' whole-model conversion (said why)."""


def convert_gguf(gguf: Path, scratch: Path, say) -> None:
    """Write a transformers model directory for `gguf` into `scratch` (float32 safetensors)."""
    from .gguf_reader import release, shared

    say(f"converting {gguf.name} to float32 safetensors (once; about a minute on a CPU)")
    try:
        with _gguf_bars_off(), shared():
            plan = _plan(gguf)
    except _NotStreamable:
        plan = None
    except RunError:
        raise
    except Exception as err:  # transformers and gguf raise many kinds for an unsupported file
        raise RunError(f"cannot convert GGUF file '{gguf}': {first_line(err)}", hint=_HINT) from None
    finally:
        release()  # the plan holds its reader while it writes; nothing after this reads the metadata
    if plan is None:
        _convert_whole(gguf, scratch)
        return
    config, reader, tensors, processor, context = plan
    _write_config(config, scratch)
    entries = [(hf_name, "F32", shape) for _, hf_name, shape in tensors]
    with TensorFileWriter(scratch / "model.safetensors", entries, {"format": "pt"}) as out:
        for tensor, hf_name, shape in tensors:
            for part in _dequantised_parts(tensor, shape, processor, context):
                out.write(hf_name, part)


def convert_gguf_tokenizer(gguf: Path, scratch: Path, say) -> None:
    """Write the GGUF's tokenizer as a transformers tokenizer directory (tokenizer.json) into `scratch`."""
    from transformers import AutoTokenizer

    from .gguf_reader import shared

    say(f"reading the tokenizer of {gguf.name} (once)")
    try:
        with shared():  # the model's conversion, next, reads the same metadata
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as err:  # transformers raises many kinds for an unreadable GGUF
        raise RunError(f"cannot read the tokenizer of GGUF file '{gguf}': {first_line(err)}") from None
    tokenizer.save_pretrained(str(scratch))
    if not (scratch / "tokenizer.json").is_file():
        raise RunError(f"the tokenizer of GGUF file '{gguf}' has no fast (tokenizer.json) form")


_HINT = ("transformers can dequantise GGUF files of common architectures (llama, gemma, qwen, ...); "
         "check the file is a complete model")


def _plan(gguf: Path):
    """(config, reader, [(gguf tensor, hf name, shape)], processor, processor context), or
    _NotStreamable. Nothing is dequantised here: shapes come from a model on the meta device."""
    import torch
    from gguf import GGUFReader
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers import modeling_gguf_pytorch_utils as reading

    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    parsed = reading.load_gguf_checkpoint(str(gguf), return_tensors=False)
    reader = GGUFReader(str(gguf))
    architecture = reading.read_field(reader, "general.architecture")[0]
    processor_class = reading.TENSOR_PROCESSORS.get(architecture, reading.TensorProcessor)
    if processor_class not in _streamable_processors(reading):
        raise _NotStreamable(processor_class.__name__)
    processor = processor_class(config=parsed["config"])
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    names = reading.get_gguf_hf_weights_map(model, processor)
    shapes = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    tensors: List[Tuple[Any, str, Tuple[int, ...]]] = []
    written = set()
    for tensor in reader.tensors:
        hf_name = names.get(tensor.name)
        if hf_name is None:  # transformers skips tensors the model has no place for
            continue
        if hf_name not in shapes or hf_name in written:
            raise _NotStreamable(hf_name)
        written.add(hf_name)
        tensors.append((tensor, hf_name, shapes[hf_name]))
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    missing = sorted(set(shapes) - written - tied)
    if missing:
        raise RunError(f"GGUF file '{gguf}' has no tensor for {', '.join(missing[:4])}"
                       + (f" and {len(missing) - 4} more" if len(missing) > 4 else ""), hint=_HINT)
    config.architectures = [type(model).__name__]
    config.dtype = torch.float32
    return config, reader, tensors, processor, {"tensor_key_mapping": names, "parsed_parameters": parsed}


def _streamable_processors(reading) -> tuple:
    """Processors that keep a tensor's name and shape and change values element by element
    (so a slice of rows is processed as the whole tensor would be), and Llama's, which
    permutes rows within a tensor (its tensors are processed whole)."""
    return (reading.TensorProcessor, reading.Gemma2TensorProcessor, reading.LlamaTensorProcessor)


def _dequantised_parts(tensor, shape, processor, context) -> Iterator[Any]:
    """The tensor as float32 torch tensors: whole, or in slices of rows when it is large and its
    processor works element by element."""
    import numpy as np
    import torch
    from gguf import dequantize
    from transformers import modeling_gguf_pytorch_utils as reading

    rows = tensor.data.shape[0] if tensor.data.ndim > 1 else 1
    row_bytes = 4 * int(np.prod(shape)) // max(1, shape[0]) if shape else 4
    elementwise = type(processor) in (reading.TensorProcessor, reading.Gemma2TensorProcessor)
    step = rows if not elementwise or len(shape) < 2 or rows != shape[0] else max(1, SLICE_BYTES // row_bytes)
    for start in range(0, rows, step):
        block = tensor.data[start:start + step] if step < rows else tensor.data
        values = processor.process(weights=dequantize(block, tensor.tensor_type), name=tensor.name,
                                   **context).weights
        part = torch.from_numpy(np.array(values, dtype=np.float32, copy=True))
        expected = shape if step >= rows else (min(step, rows - start),) + tuple(shape[1:])
        if tuple(part.shape) != tuple(expected):
            raise RunError(f"GGUF tensor {tensor.name} has shape {tuple(part.shape)} where the model "
                           f"expects {tuple(expected)}", hint=_HINT)
        yield part


def _write_config(config, scratch: Path) -> None:
    from transformers import GenerationConfig

    config.save_pretrained(str(scratch))
    try:
        GenerationConfig.from_model_config(config).save_pretrained(str(scratch))
    except (ValueError, TypeError):  # a config without generation settings: none is needed
        pass


def _convert_whole(gguf: Path, scratch: Path) -> None:
    """transformers' own path: every tensor in memory at once (mixture-of-experts processors)."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with _gguf_bars_off():
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                         dtype=torch.float32)
    except Exception as err:  # transformers raises many kinds for an unsupported GGUF
        raise RunError(f"cannot convert GGUF file '{gguf}': {first_line(err)}", hint=_HINT) from None
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.architectures = [type(model).__name__]
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


def tensors_equal(first: Path, second: Path) -> Dict[str, str]:
    """{name: what differs} between two safetensors files (empty when every tensor is equal):
    the check that this converter writes what transformers' path writes."""
    import torch
    from safetensors import safe_open

    differences = {}
    with safe_open(str(first), "pt") as a, safe_open(str(second), "pt") as b:
        for name in sorted(set(a.keys()) | set(b.keys())):
            if name not in a.keys() or name not in b.keys():
                differences[name] = "missing on one side"
            elif not torch.equal(a.get_tensor(name), b.get_tensor(name)):
                differences[name] = "values differ"
    return differences
