"""Run-time faults get a clear message naming the spec field, exit code 2, no traceback;
a batch that runs out of memory is split and retried; the generated reference is current;
the Python API returns the results."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.runtime.test_runtime import TOKENIZER, tiny, write_spec

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "mi_dsl.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_pretrained_model_missing_offline_is_a_clean_error(tmp_path):
    model = f"""model:
  source: pretrained
  name: EleutherAI/pythia-14m-not-cached
  tokenizer: {TOKENIZER}
  bos_token: '<|endoftext|>'
  prepend_bos: true
"""
    spec = write_spec(tmp_path, model, analyses="")
    done = run_cli("run", spec, "--quiet")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "pythia-14m-not-cached" in done.stderr and "offline" in done.stderr
    assert f"{spec}:" in done.stderr and "model" in done.stderr


@pytest.mark.parametrize("source, path", [("local", "missing"), ("gguf", "missing.gguf")])
def test_a_model_file_that_is_not_there_is_a_located_error(source, path, tmp_path):
    """The store's key reads the weights' fingerprint before anything loads: a model path that does not
    exist must still be refused at model.path, as the loader would refuse it."""
    model = f"""model:
  source: {source}
  path: {path}
  tokenizer: {TOKENIZER}
  bos_token: '<|endoftext|>'
  prepend_bos: true
"""
    spec = write_spec(tmp_path, model, analyses="")
    done = run_cli("run", spec, "--quiet", "--allow-path", TOKENIZER)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{spec}:" in done.stderr and "does not exist (at model.path)" in done.stderr


def test_nan_metric_names_the_keep_condition(tmp_path, monkeypatch):
    from mi_dsl.errors import RunError
    from mi_dsl.running import run_spec
    from mi_dsl.runtime.unembed import Unembed

    # Patch a method, not a module-level function: importers bind functions at import time.
    real = Unembed.logits_of
    monkeypatch.setattr(Unembed, "logits_of", lambda self, x, ids: real(self, x, ids) * float("nan"))
    spec = write_spec(tmp_path, tiny("gpt_neox"), analyses="",
                      extra="pipeline:\n  - keep: 'clean.logit_diff > 0'\n")
    with pytest.raises(RunError) as err:
        run_spec(spec, progress=False, fresh=True)
    assert "NaN" in err.value.message and err.value.location.path == "pipeline[0].keep"
    assert err.value.location.line is not None


def test_out_of_memory_batch_is_split_and_retried(tmp_path, monkeypatch):
    """A forward of more than 3 prompts 'runs out of memory': the executor halves the batch,
    warns, and the numbers equal an unconstrained run's."""
    from mi_dsl.running import run_spec
    from mi_dsl.runtime.executor import Executor

    spec = write_spec(tmp_path, tiny("gpt_neox"), analyses="analyses:\n  - {kind: head_attribution, id: heads}\n",
                      extra="run: {batch_size: 16}\n")
    reference = run_spec(spec, progress=False, fresh=True, out_dir=str(tmp_path / "a")).results
    real = Executor.capture

    def small_memory(self, tokens, *args, **kwargs):
        if tokens.shape[0] > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (forced by the test)")
        return real(self, tokens, *args, **kwargs)

    monkeypatch.setattr(Executor, "capture", small_memory)
    # a located warning in the run log (FILE:LINE:COL: warning: ...), not a Python warning
    squeezed = run_spec(spec, progress=False, fresh=True, out_dir=str(tmp_path / "b")).results
    # halved until a batch fits (at most 3 rows here; shared prefixes batch the distinct prompts, so the
    # sizes tried depend on the dataset: 16 -> 8 -> 4 -> 2, or 6 -> 3)
    assert any(w.startswith(f"{spec}:") and ": warning: out of memory with " in w
               and int(w.rsplit("retrying with ", 1)[-1].split()[0]) <= 3
               for w in squeezed["warnings"] if "retrying with " in w), ("halved until a batch fits",
                                                                          squeezed["warnings"])
    for record in ("clean", "corrupted"):
        assert torch.allclose(torch.tensor(reference["per_prompt"][record]["logit_diff"]),
                              torch.tensor(squeezed["per_prompt"][record]["logit_diff"]), atol=1e-5)
    assert torch.allclose(torch.tensor(reference["analyses"]["heads"]["per_head"]),
                          torch.tensor(squeezed["analyses"]["heads"]["per_head"]), atol=1e-5)


def test_generated_reference_doc_is_current():
    from mi_dsl.cli.listing import reference_markdown

    committed = (ROOT / "docs" / "spec-reference.md").read_text()
    assert committed == reference_markdown(), \
        "docs/spec-reference.md is stale: run `python -m mi_dsl.cli.listing > docs/spec-reference.md`"


def test_python_api_returns_the_results(tmp_path):
    import mi_dsl

    spec = write_spec(tmp_path, tiny("gpt_neox"), analyses="analyses:\n  - {kind: logit_lens}\n")
    results = mi_dsl.run(spec, progress=False)
    assert results["analyses"]["logit_lens"]["kind"] == "logit_lens"
    # the baseline against the model's own forward (full logits, unembedding bias), not against another
    # reading of the same unembedding input
    from mi_dsl.models import load_model
    from mi_dsl.compile import prepare

    prepared = prepare(str(spec), [], [])
    bridge = load_model(prepared.plan.model).bridge
    with torch.no_grad():
        diffs = [bridge(torch.tensor([p.clean.ids]))[0, -1] for p in prepared.dataset.pairs]
    expected = sum(float(d[p.answer] - d[p.foil]) for d, p in zip(diffs, prepared.dataset.pairs)) / len(diffs)
    assert abs(expected) > 1e-5
    assert results["baselines"]["clean"] == pytest.approx(expected, rel=1e-4, abs=1e-7)
