"""The model cache's integrity (runtime/models/integrity.py, cache.py), the streaming GGUF
conversion (convert.py, tensorfile.py) and the processed-weight cache's memory (processed.py).

Issue 27.8: a truncated converted model gave a SafetensorError traceback on every run;
weights altered in place gave silently different numbers; two concurrent cold runs
converted twice. Issue 26.2: the cold start peaked at 6.5 GB (three float32 copies of the
model during conversion, two copies of the state dict during weight processing).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mi_dsl.models import cache, convert, integrity
from mi_dsl.spec.model import ModelSpec
from tests.runtime.test_models import logits_of, write_tiny_gemma3_gguf

REPO = Path(__file__).resolve().parents[2]


def quantised_gguf(path: Path) -> Path:
    """The tiny Gemma-3 GGUF with its embedding and two projections quantised (Q8_0), so the
    converter's dequantisation (and its slicing of a large tensor) is exercised."""
    import gguf
    import numpy as np

    source = write_tiny_gemma3_gguf(path.with_suffix(".f32.gguf"), seed=3)
    reader = gguf.GGUFReader(str(source))
    writer = gguf.GGUFWriter(str(path), "gemma3")
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        value = field.contents()
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, kind, sub_type=sub)
    for tensor in reader.tensors:
        data = np.array(tensor.data)
        if tensor.name in ("token_embd.weight", "blk.0.ffn_up.weight", "blk.0.attn_q.weight"):
            quantised = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(tensor.name, quantised, raw_shape=quantised.shape,
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(tensor.name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# --------------------------------------------------------------------------- streaming files


def test_tensor_file_round_trips_every_dtype_and_slices(tmp_path):
    import torch
    from safetensors.torch import load_file

    from mi_dsl.models.tensorfile import TensorFileWriter, save_tensors

    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5), "c": torch.randn(2, 3).t(), "e": torch.zeros(0, 3),
               "h": torch.randn(4).half(), "bf": torch.randn(3).bfloat16(), "s": torch.tensor(2.5),
               "mask": torch.tensor([True, False])}
    save_tensors(tensors, tmp_path / "x.safetensors")
    back = load_file(str(tmp_path / "x.safetensors"))
    assert set(back) == set(tensors) and all(torch.equal(back[k], v) for k, v in tensors.items())
    with TensorFileWriter(tmp_path / "y.safetensors", [("w", "F32", (6, 2))]) as out:
        out.write("w", torch.ones(2, 2))
        out.write("w", torch.zeros(4, 2))
    assert torch.equal(load_file(str(tmp_path / "y.safetensors"))["w"],
                       torch.cat([torch.ones(2, 2), torch.zeros(4, 2)]))
    with pytest.raises(ValueError, match="not written"):
        with TensorFileWriter(tmp_path / "z.safetensors", [("w", "F32", (6, 2))]) as out:
            out.write("w", torch.ones(2, 2))


@pytest.mark.parametrize("slice_bytes", [64 << 20, 4096])
def test_streaming_conversion_writes_what_transformers_writes(tmp_path, monkeypatch, slice_bytes):
    """The same bytes as transformers' from_pretrained(gguf_file) + save_pretrained, with the
    embedding dequantised whole or in slices of rows."""
    from mi_dsl.models import convert

    monkeypatch.setattr(convert, "SLICE_BYTES", slice_bytes)
    file = quantised_gguf(tmp_path / "q.gguf")
    (tmp_path / "streamed").mkdir()
    (tmp_path / "whole").mkdir()
    convert.convert_gguf(file, tmp_path / "streamed", lambda message: None)
    convert._convert_whole(file, tmp_path / "whole")
    assert convert.tensors_equal(tmp_path / "streamed" / "model.safetensors",
                                 tmp_path / "whole" / "model.safetensors") == {}
    streamed, whole = (json.loads((tmp_path / side / "config.json").read_text()) for side in ("streamed", "whole"))
    assert streamed == whole


def test_a_cold_start_reads_the_gguf_metadata_once(tmp_path, monkeypatch):
    """The tokenizer's conversion, the model's config, transformers' metadata parse and the tensor
    plan share one reader (gguf_reader.py; each read took 9 s and 0.7 GB for the embedded Gemma)
    and convert the same bytes; a file that changes on disk is read again."""
    import gguf

    from mi_dsl.models import gguf_reader

    file = quantised_gguf(tmp_path / "q.gguf")
    built, original = [], gguf.GGUFReader

    def reader(path, *args, **kwargs):
        built.append(path)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(gguf, "GGUFReader", reader)
    gguf_reader.release()
    for name in ("tokenizer", "model", "again"):
        (tmp_path / name).mkdir()
    convert.convert_gguf_tokenizer(file, tmp_path / "tokenizer", lambda message: None)
    convert.convert_gguf(file, tmp_path / "model", lambda message: None)
    assert len(built) == 1 and gguf.GGUFReader is reader  # one read; the swap put back
    assert (tmp_path / "tokenizer" / "tokenizer.json").is_file()
    convert.convert_gguf(file, tmp_path / "again", lambda message: None)  # the conversion let its reader go
    assert len(built) == 2
    assert convert.tensors_equal(tmp_path / "model" / "model.safetensors",
                                 tmp_path / "again" / "model.safetensors") == {}
    with gguf_reader.shared():
        first = gguf.GGUFReader(str(file))
        assert gguf.GGUFReader(str(file)) is first
        os.utime(file, ns=(time.time_ns(), time.time_ns() + 10**9))  # the file changed on disk
        assert gguf.GGUFReader(str(file)) is not first
    gguf_reader.release()


FRONT_END = """
import json, sys
from mi_dsl.models import gguf_job, tokenizer_dir_for
from mi_dsl.spec.model import ModelSpec
said = []
with gguf_job.model_too(said.append):  # as a run prepares: the front end passes no progress of its own
    found = tokenizer_dir_for(ModelSpec(source="gguf", path=sys.argv[1]), cache_root=sys.argv[2])
print(json.dumps({"dir": found, "said": said, "heavy": sorted({"torch", "transformers", "gguf"} & set(sys.modules))}))
"""


def test_a_cold_gguf_converts_in_one_child_process_and_writes_what_this_process_writes(tmp_path, monkeypatch):
    """gguf_job.py: the tokenizer and, when a run wants it, the model are converted in one child
    process (the memory a conversion leaves behind goes with it); the front end imports no
    torch for it, the child's progress reaches the caller, and the files are the ones an
    in-process conversion writes."""
    from mi_dsl.models import cache, gguf_job, load_model

    file = quantised_gguf(tmp_path / "q.gguf")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop(gguf_job.IN_PROCESS_ENV, None)
    done = subprocess.run([sys.executable, "-c", FRONT_END, str(file), str(tmp_path / "child")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["heavy"] == []  # neither torch nor transformers nor gguf in the calling process
    assert any("reading the tokenizer" in line for line in out["said"])
    assert any("q.gguf to float" in line for line in out["said"])
    models = [p for p in (tmp_path / "child" / f"v{cache.FORMAT}" / "models").iterdir() if p.is_dir()]
    assert len(models) == 1 and cache.ready(models[0])  # the model's entry came with the tokenizer

    monkeypatch.setenv(gguf_job.IN_PROCESS_ENV, "1")
    spec = ModelSpec(source="gguf", path=str(file), device="cpu")
    here = load_model(spec, cache_root=tmp_path / "here")
    assert here.info["cached"] is False
    tokenizers = [Path(out["dir"]), Path(here.tokenizer_dir)]
    assert (tokenizers[0] / "tokenizer.json").read_bytes() == (tokenizers[1] / "tokenizer.json").read_bytes()
    assert convert.tensors_equal(models[0] / "model.safetensors",
                                 Path(here.info["weights"]) / "model.safetensors") == {}

    assert load_model(spec, cache_root=tmp_path / "child").info["cached"] is True  # made by another process

    monkeypatch.delenv(gguf_job.IN_PROCESS_ENV)
    said = []
    first = load_model(spec, cache_root=tmp_path / "third", progress=said.append)
    assert first.info["cached"] is False  # made by this run's child, with the tokenizer
    assert sum("q.gguf to float" in line for line in said) == 1
    assert load_model(spec, cache_root=tmp_path / "third").info["cached"] is True


@pytest.mark.slow
def test_a_random_gemma_converts_the_embedded_tokenizer_without_the_embedded_model(tmp_path):
    """A random gemma3 borrows the embedded tokenizer only: its first load must not convert the
    embedded model too (1 GB) as a run of the embedded model does."""
    from mi_dsl.models import load_model
    from tests.runtime.test_models import tiny

    said = []
    load_model(tiny("gemma3"), cache_root=tmp_path, progress=said.append)
    assert any("reading the tokenizer" in line for line in said)
    assert not any(" to float" in line for line in said)
    assert not [p for p in (tmp_path / f"v{cache.FORMAT}" / "models").glob("*") if p.is_dir()]


@pytest.mark.parametrize("in_process", [False, True])
def test_a_broken_gguf_gives_the_same_error_from_the_child(tmp_path, monkeypatch, in_process):
    from mi_dsl.errors import RunError
    from mi_dsl.models import load_model

    from mi_dsl.models.gguf_job import IN_PROCESS_ENV

    if in_process:
        monkeypatch.setenv(IN_PROCESS_ENV, "1")
    else:
        monkeypatch.delenv(IN_PROCESS_ENV, raising=False)
    file = tmp_path / "broken.gguf"
    file.write_bytes(b"GGUF" + bytes(range(256)) * 8)
    with pytest.raises(RunError) as caught:
        load_model(ModelSpec(source="gguf", path=str(file), device="cpu"), cache_root=tmp_path / "cache")
    assert caught.value.message.startswith(f"cannot read the tokenizer of GGUF file '{file}': ")
    assert "Traceback" not in caught.value.format()


# --------------------------------------------------------------------------- checksums


def entry_with(tmp_path, files):
    final = cache.entry(tmp_path, "models", "k")
    with cache.building(final) as scratch:
        for name, data in files.items():
            (scratch / name).write_bytes(data)
    return final


def test_an_entry_is_ready_until_a_file_changes(tmp_path):
    big = os.urandom(3 << 20)
    final = entry_with(tmp_path, {"w.bin": big, "config.json": b"{}"})
    assert cache.ready(final) and cache.take_repairs() == []
    recorded = json.loads((final / integrity.MANIFEST).read_text())["files"]["w.bin"]

    os.utime(final / "w.bin")  # touched, bytes unchanged: hashed once, then cheap again
    assert cache.ready(final)
    assert json.loads((final / integrity.MANIFEST).read_text())["files"]["w.bin"]["mtime_ns"] != recorded["mtime_ns"]

    with (final / "w.bin").open("r+b") as handle:  # one float altered in place, between the samples
        handle.seek(len(big) // 2 + 1000)
        handle.write(b"\x01\x02\x03\x04")
    assert not cache.ready(final)
    assert "differs from what was written (SHA-256" in cache.take_repairs()[0]


def test_an_alteration_that_keeps_the_mtime_is_caught_by_the_samples(tmp_path):
    final = entry_with(tmp_path, {"w.bin": os.urandom(1 << 20)})
    stat = (final / "w.bin").stat()
    with (final / "w.bin").open("r+b") as handle:
        handle.seek(0)
        handle.write(b"\0" * 16)  # the header region is always sampled
    os.utime(final / "w.bin", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert not cache.ready(final)
    assert "sampled checksum" in cache.take_repairs()[0]


def test_truncation_and_missing_manifest_are_named(tmp_path):
    final = entry_with(tmp_path, {"w.bin": os.urandom(1 << 20)})
    with (final / "w.bin").open("r+b") as handle:
        handle.truncate(1000)
    assert not cache.ready(final)
    assert "is 1000 bytes but 1048576 were written (truncated)" in cache.take_repairs()[0]
    (final / integrity.MANIFEST).unlink()
    assert not cache.ready(final) and integrity.MANIFEST in cache.take_repairs()[0]


def test_full_verification_on_request(tmp_path, monkeypatch):
    final = entry_with(tmp_path, {"w.bin": os.urandom(1 << 20)})
    stat = (final / "w.bin").stat()
    between = (stat.st_size - integrity.BLOCK) * 10 // (integrity.SAMPLES - 1) + integrity.BLOCK + 100
    with (final / "w.bin").open("r+b") as handle:  # between samples, mtime kept: only a full hash sees it
        handle.seek(between)
        handle.write(b"\x07")
    os.utime(final / "w.bin", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cache.ready(final)
    monkeypatch.setenv(integrity.VERIFY_ENV, "full")
    assert not cache.ready(final)
    cache.take_repairs()


# --------------------------------------------------------------------------- the loader


def test_a_damaged_converted_model_is_converted_again_with_a_message(tmp_path):
    """Before: a truncated model.safetensors raised SafetensorError on every load, and bytes
    altered in place gave other logits silently."""
    import torch
    from mi_dsl.models import load_model

    file = write_tiny_gemma3_gguf(tmp_path / "tiny.gguf")
    spec = ModelSpec(source="gguf", path=str(file), device="cpu")
    root = tmp_path / "cache"
    reference = logits_of(load_model(spec, cache_root=root), "a b")
    weights = Path(load_model(spec, cache_root=root).info["weights"]) / "model.safetensors"
    size = weights.stat().st_size

    with weights.open("r+b") as handle:
        handle.truncate(size // 2)
    said = []
    repaired = load_model(spec, cache_root=root, progress=said.append)
    assert repaired.info["cached"] is False
    assert any("truncated" in fault and str(weights) in fault for fault in repaired.info["cache_repairs"])
    assert any("building models/" in line and "again" in line for line in said)
    assert torch.equal(logits_of(repaired, "a b"), reference)

    with weights.open("r+b") as handle:  # plausible values: a norm weight nudged
        handle.seek(size - 64)
        handle.write(b"\x00\x00\x80\x3f" * 4)
    altered = load_model(spec, cache_root=root)
    assert "cache_repairs" in altered.info and altered.info["cached"] is False
    assert torch.equal(logits_of(altered, "a b"), reference)
    again = load_model(spec, cache_root=root)
    assert again.info["cached"] is True and "cache_repairs" not in again.info


def test_a_damaged_processed_entry_is_recomputed(tmp_path):
    import torch
    from mi_dsl.models import load_model

    file = write_tiny_gemma3_gguf(tmp_path / "tiny.gguf")
    spec = ModelSpec(source="gguf", path=str(file), device="cpu")
    root = tmp_path / "cache"
    reference = logits_of(load_model(spec, cache_root=root), "a b")
    processed = next((root / f"v{cache.FORMAT}" / "processed").glob("*/weights.safetensors"))
    with processed.open("r+b") as handle:
        handle.seek(processed.stat().st_size - 32)
        handle.write(b"\x00\x00\x00\x40" * 8)
    again = load_model(spec, cache_root=root)
    assert again.info["processed_cached"] is False and "cache_repairs" in again.info
    assert torch.equal(logits_of(again, "a b"), reference)


def test_weight_processing_without_copies_gives_the_same_weights():
    """processed._steps_consume_their_input skips the steps' opening deep copies; every
    processed tensor must be bit for bit what the copying steps give (random norms, biases,
    layer norm and RMS norm models)."""
    import torch
    from transformer_lens.weight_processing import ProcessWeights

    from mi_dsl.models import boot, files, processed
    from mi_dsl.models.sources import source_of
    from tests.runtime.test_models import tiny

    for architecture in ("gpt_neox", "gemma3"):
        spec = tiny(architecture)
        tokenizer = boot.load_bridge_tokenizer(files.tokenizer_dir_for(spec))
        results = []
        for consume in (False, True):
            made = source_of(spec).load(spec, None, torch.float32, lambda m: None, tokenizer)
            bridge = boot.boot_bridge(made.hub_name, made.hf_model, tokenizer, torch.device("cpu"), torch.float32)
            state = {k: v.clone() for k, v in bridge.state_dict().items()}
            torch.manual_seed(0)  # the same random norms and biases for both
            for value in state.values():  # not the identity: norms and biases random
                if value.dim() == 1:
                    value.copy_(torch.randn_like(value))
            if consume:
                with processed._steps_consume_their_input():
                    out = ProcessWeights.process_weights(state, bridge.cfg, adapter=bridge.adapter)
            else:
                out = ProcessWeights.process_weights(state, bridge.cfg, adapter=bridge.adapter)
            results.append(out)
        plain, consumed = results
        assert set(plain) == set(consumed)
        for key in plain:
            assert torch.equal(plain[key], consumed[key]), (architecture, key)


def test_a_first_processing_serves_the_weights_it_wrote(tmp_path):
    """The first processing used to hand the bridge its computed state dict: every processed
    tensor (all of Gemma's 262k-token embedding and unembedding) stayed in memory for the whole
    run (1.8 GB more in the cold run than in a later start, which reads the entry memory
    mapped). Now the first run reads back what it wrote: the same numbers, other tensors."""
    import torch
    from transformer_lens.weight_processing import ProcessWeights

    from mi_dsl.models import boot, files, processed
    from mi_dsl.models.sources import source_of
    from tests.runtime.test_models import tiny

    spec = tiny("gemma3")
    tokenizer = boot.load_bridge_tokenizer(files.tokenizer_dir_for(spec))
    made = source_of(spec).load(spec, None, torch.float32, lambda m: None, tokenizer)
    bridge = boot.boot_bridge(made.hub_name, made.hf_model, tokenizer, torch.device("cpu"), torch.float32)
    state = {k: v.clone() for k, v in bridge.state_dict().items()}
    torch.manual_seed(0)
    for value in state.values():  # not the identity: norms and biases random
        if value.dim() == 1:
            value.copy_(torch.randn_like(value))
    expected = ProcessWeights.process_weights({k: v.clone() for k, v in state.items()}, bridge.cfg,
                                              adapter=bridge.adapter)
    computed = {}
    write = processed._write

    def keep(folder, signature, state_dict):
        computed.update(state_dict)
        write(folder, signature, state_dict)

    folder = tmp_path / "entry"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(processed, "_write", keep)
        with processed.processed_weights(folder, torch.device("cpu"), lambda m: None) as outcome:
            served = ProcessWeights.process_weights(state, bridge.cfg, adapter=bridge.adapter)
    assert outcome["hit"] is False and (folder / processed.FILE).is_file()
    assert set(served) == set(expected) == set(computed)
    for key in expected:
        assert torch.equal(served[key], expected[key]), key
        assert served[key] is not computed[key], key  # read from the entry, not the computed tensor


CONCURRENT = """
import sys, time
from pathlib import Path
from mi_dsl.models import load_model
from mi_dsl.spec.model import ModelSpec

start = Path(sys.argv[3])
Path(sys.argv[4]).write_text("")  # imported: ready to start
while not start.exists():
    time.sleep(0.05)
said = []
loaded = load_model(ModelSpec(source="gguf", path=sys.argv[1], device="cpu"), cache_root=sys.argv[2],
                    progress=said.append)
print("converted" if not loaded.info["cached"] else "reused",
      "processed" if any("processing weights" in s for s in said) else "read-processed",
      "waited" if any("waiting for another" in s and "writing tokenizers/" in s for s in said) else "no-wait")
"""


def test_two_concurrent_cold_loads_convert_once(tmp_path):
    file = write_tiny_gemma3_gguf(tmp_path / "tiny.gguf")
    script = tmp_path / "load.py"
    script.write_text(CONCURRENT)
    go = tmp_path / "go"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    runs = [subprocess.Popen([sys.executable, str(script), str(file), str(tmp_path / "cache"), str(go),
                              str(tmp_path / f"ready{i}")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    deadline = time.time() + 240
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)) and time.time() < deadline:
        time.sleep(0.1)
    go.write_text("")  # both start loading at once
    outputs = [run.communicate(timeout=300) for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    lines = sorted(out.strip().splitlines()[-1].split() for out, _ in outputs)
    # one converts (in its child) while the other waits for that conversion; either may then process
    # the weights first, and the other may wait for that (so only the conversion's wait is asserted)
    assert [line[0] for line in lines] == ["converted", "reused"], outputs
    assert sorted(line[1] for line in lines) == ["processed", "read-processed"], outputs
    assert [line[2] for line in lines] == ["no-wait", "waited"], outputs


def test_a_run_prints_what_its_front_end_conversion_does(monkeypatch, capsys):
    """The GGUF job of a run's front end (the tokenizer's, and the model's with it) has no progress
    lines of its own: run_spec lends it the run's, so a cold run is not silent while it converts."""
    import mi_dsl.compile as compile_stage
    from mi_dsl import running
    from mi_dsl.models import gguf_job

    class Stop(Exception):
        pass

    def prepare(*args, **kwargs):
        gguf_job.with_conversion_progress(lambda message: None)("reading the tokenizer of q.gguf")
        raise Stop
    monkeypatch.setattr(compile_stage, "prepare", prepare)
    with pytest.raises(Stop):
        running.run_spec("spec.yaml", progress=True)
    assert "[mi-run] reading the tokenizer of q.gguf" in capsys.readouterr().err
    with pytest.raises(Stop):
        running.run_spec("spec.yaml", progress=False)
    assert "reading" not in capsys.readouterr().err


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_validate_and_plan_print_what_a_conversion_does_and_convert_no_model(command, monkeypatch, capsys):
    """A first `mi-run validate` of the embedded model converts its tokenizer (~20 s): it says so on
    stderr (stdout stays the command's own, `plan --json` included), and makes no model entry."""
    from mi_dsl.cli import plan, validate
    from mi_dsl.models import gguf_job

    class Stop(Exception):
        pass

    seen = {}

    def prepare(*args, **kwargs):
        seen["model_too"] = gguf_job._model_too.get()
        gguf_job.with_conversion_progress(lambda message: None)("reading the tokenizer of q.gguf")
        raise Stop
    monkeypatch.setattr(validate if command == "validate" else plan, "prepare", prepare)
    with pytest.raises(Stop):
        if command == "validate":
            validate.validate_specs(["spec.yaml"], [], [], debug=True)
        else:
            plan.show_plan("spec.yaml", [], [], as_json=True)
    out = capsys.readouterr()
    assert "[mi-run] reading the tokenizer of q.gguf" in out.err and "reading" not in out.out
    assert seen["model_too"] is False
