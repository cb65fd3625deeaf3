"""Multi-token continuations (answer: continuation(...)) and their teacher-forced metrics.

continuation_logprob is the sum over a continuation's tokens of log P(c_i | prompt, c_<i),
read at positions final + i of one forward of the prompt followed by the continuation but
its last token (runtime/continuation.py); continuation_logprob_diff is answer minus foil,
each from its own forward. Checked here against a plain transformers forward of every
prompt + continuation on its own (no padding, no hooks, torch's log_softmax), on tiny random
models with roughened norms and biases, with prompts of several lengths (countries of one
and two words) and continuations of one to three tokens in one padded batch; exact
activation patching with a continuation metric against a hand-written per-prompt patch;
and every misuse refused before a model loads, located.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from tests.word_tokenizer import word_tokenizer_file

# Countries of one and two words (prompts of two lengths) and capitals of one to three
# words (continuations of one to three tokens in the test tokenizer).
COUNTRIES = """\
vocabularies:
  countries:
    items:
      - {country: France, capital: Paris}
      - {country: Sri Lanka, capital: Sri Jayawardenepura Kotte}
      - {country: Argentina, capital: Buenos Aires}
      - {country: Mexico, capital: Mexico City}
      - {country: Burkina Faso, capital: Ouagadougou}
      - {country: Japan, capital: Tokyo}
prompts:
  template: "The capital of {country} is"
  slots: {country: countries}
  answer: 'continuation(" " + country.capital)'
  foil: 'continuation(" " + corrupted.country.capital)'
  corrupt: {resample: country, seed: 3}
"""


def write_spec(folder: Path, architecture: str, size: str, metric: str = "continuation_logprob_diff",
               analyses: str = "", body: str = COUNTRIES, extra: str = "") -> Path:
    model = (f"model:\n  source: random\n  architecture: {architecture}\n  size: {size}\n  seed: 4\n"
             f"  tokenizer: {word_tokenizer_file()}\n  bos_token: '<|endoftext|>'\n  prepend_bos: true\n")
    return _spec_file(folder, model, body, metric, analyses, extra)


def _spec_file(folder: Path, model: str, body: str, metric: str, analyses: str, extra: str) -> Path:
    path = folder / "spec.yaml"
    text = "version: 1\nname: continuations\n" + model + body + f"metric: {metric}\n" + extra
    if analyses:
        text += "analyses:\n" + textwrap.indent(textwrap.dedent(analyses).strip() + "\n", "  ")
    path.write_text(text)
    return path


def compiled(run, params: dict):
    """An analysis's parameters compiled against the run's spec, as the compiler does the spec's own."""
    from mi_dsl.compile.compiler import compile_analysis

    return compile_analysis(run.spec, params).params


def local_model(folder: Path, architecture: str, size: str, seed: int = 7) -> Path:
    """A tiny random model saved as a local Hugging Face folder, so a plain transformers forward of
    the very same weights is the reference."""
    from tokenizers import Tokenizer

    from mi_dsl.models import random_weights

    vocab = Tokenizer.from_file(str(word_tokenizer_file())).get_vocab_size()
    model = random_weights.build(random_weights.SHAPES[architecture][size], vocab, seed)
    model.save_pretrained(folder / "model")
    return folder / "model"


def local_spec(folder: Path, model_dir: Path, metric: str = "continuation_logprob_diff", analyses: str = "",
               extra: str = "") -> Path:
    model = (f"model:\n  source: local\n  path: {model_dir}\n  tokenizer: {word_tokenizer_file()}\n"
             f"  bos_token: '<|endoftext|>'\n  prepend_bos: true\n  dtype: float32\n")
    return _spec_file(folder, model, COUNTRIES, metric, analyses, extra)


def reference_logprobs(model_dir: Path, rows) -> list:
    """Per (prompt ids, continuation ids): the continuation's log-probability from a plain transformers
    forward of that prompt + continuation alone (float64 log_softmax of its logits)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), torch_dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for prompt, continuation in rows:
            ids = torch.tensor([list(prompt) + list(continuation)])
            logp = model(ids).logits[0].double().log_softmax(-1)
            final = len(prompt) - 1
            out.append(sum(float(logp[final + i, t]) for i, t in enumerate(continuation)))
    return out


@pytest.fixture(scope="module", params=["gpt_neox", "llama"])
def countries(request, rough_models, tmp_path_factory):
    """(prepared spec, model folder, Session after the dataset step) on a rough tiny model."""
    from mi_dsl.compile import prepare
    from mi_dsl.runtime.run import Session
    from mi_dsl.runtime.store import StepStore

    folder = tmp_path_factory.mktemp(request.param)
    model_dir = local_model(folder, request.param, rough_models)
    prepared = prepare(str(local_spec(folder, model_dir)), [], [])
    session = Session.of(prepared, progress=False)
    session.open()
    session.dataset_step(StepStore(folder / "store", enabled=False))
    return prepared, model_dir, session


def test_the_dataset_mixes_prompt_and_continuation_lengths(countries):
    prepared, _, _ = countries
    pairs = prepared.dataset.pairs
    assert all(p.continuation for p in pairs)
    assert len({len(p.clean.ids) for p in pairs}) == 2
    assert {len(p.answers) for p in pairs} == {1, 2, 3}
    assert any(len(p.answers) != len(p.foils) for p in pairs)


@pytest.mark.parametrize("batch_size", [64, 1, 3])
def test_continuation_metrics_equal_a_plain_forward_of_each_prompt_and_continuation(countries, batch_size):
    from mi_dsl.runtime.pipeline import pair_metrics

    prepared, model_dir, session = countries
    pairs = session.pairs
    names = ["continuation_logprob", "continuation_logprob_diff"]
    session.executor.batch_size = batch_size
    with torch.no_grad():
        got = pair_metrics(session.executor, session.unembed, pairs, names)
    for which in ("clean", "corrupted"):
        prompts = [getattr(p, which).ids for p in pairs]
        answer = reference_logprobs(model_dir, [(q, p.answers) for q, p in zip(prompts, pairs)])
        foil = reference_logprobs(model_dir, [(q, p.foils) for q, p in zip(prompts, pairs)])
        for i in range(len(pairs)):
            assert float(got[which]["continuation_logprob"][i]) == pytest.approx(answer[i], rel=1e-5), (which, i)
            assert float(got[which]["continuation_logprob_diff"][i]) == pytest.approx(answer[i] - foil[i],
                                                                                     rel=1e-5, abs=1e-5), (which, i)
    # the check can fail: continuations differ in log-probability, and a one-token read would not match
    assert len({round(v, 3) for v in got["clean"]["continuation_logprob"].tolist()}) == len(pairs)


def hf_layers(model):
    return model.gpt_neox.layers if hasattr(model, "gpt_neox") else model.model.layers


def reference_patched(model_dir: Path, pairs, layer: int, direction: str = "denoising") -> list:
    """Per pair, patching by hand in plain transformers (denoising: the clean run's residual entering
    `layer` at the clean prompt's final position replaces the corrupted run's at its own final position,
    in a forward of the corrupted prompt followed by the answer, then by the foil, continuation; noising
    the other way round); answer minus foil."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), torch_dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for pair in pairs:
            source_prompt, base_prompt = ((pair.clean, pair.corrupted) if direction == "denoising"
                                          else (pair.corrupted, pair.clean))
            hidden = model(torch.tensor([source_prompt.ids]), output_hidden_states=True).hidden_states[layer][0]
            source, target = hidden[len(source_prompt.ids) - 1], len(base_prompt.ids) - 1

            def patch(module, args, kwargs, source=source, target=target):
                hidden = (args[0] if args else kwargs["hidden_states"]).clone()
                hidden[0, target] = source
                if args:
                    return (hidden,) + tuple(args[1:]), kwargs
                return args, dict(kwargs, hidden_states=hidden)

            handle = hf_layers(model)[layer].register_forward_pre_hook(patch, with_kwargs=True)
            try:
                sides = []
                for continuation in (pair.answers, pair.foils):
                    ids = torch.tensor([list(base_prompt.ids) + list(continuation)])
                    logp = model(ids).logits[0].double().log_softmax(-1)
                    sides.append(sum(float(logp[target + i, t]) for i, t in enumerate(continuation)))
            finally:
                handle.remove()
            out.append(sides[0] - sides[1])
    return out


@pytest.mark.parametrize("prefix_reuse,direction", [(True, "denoising"), (False, "denoising"), (True, "noising")])
def test_patching_with_a_continuation_metric_equals_patching_by_hand(countries, prefix_reuse, direction):
    """Prompts of two lengths (clean and corrupted differ), continuations of one to three tokens: each
    cell (layer x the final position, aligned by name) and prompt equals the hand-patched forward."""
    from mi_dsl.analyses import _patching as core

    _, model_dir, session = countries
    run = session.context_for(session.pairs, session.baselines)
    session.executor.batch_size = 5  # rows = cells x prompts: batches cut across cells and prompts
    params = compiled(run, {"kind": "activation_patching", "target": "resid_pre", "positions": ["final"],
                            "direction": direction})
    with torch.no_grad():
        grid = core.resolve(params, run)
        got, passes = core.exact_patching(run, grid, reuse_prefix=prefix_reuse)
    assert passes["prefix_reuse"] is prefix_reuse
    assert [c.layer for c in grid.cells] == [0, 1]
    for cell, row in zip(grid.cells, got):
        expected = reference_patched(model_dir, run.pairs, cell.layer, direction)
        assert row.tolist() == pytest.approx(expected, rel=1e-5, abs=1e-5), cell.label
    # the check can fail: patching moved the metric away from the unpatched run's
    unpatched = "corrupted" if direction == "denoising" else "clean"
    base = torch.tensor(session.final[unpatched]["continuation_logprob_diff"])
    assert (got - base).abs().max() > 0.05


# --------------------------------------------------------------------------- the real model

FACTS = """\
vocabularies:
  countries:
    items:
      - {country: Argentina, capital: Buenos Aires, continent: America}
      - {country: Mexico, capital: Mexico City, continent: America}
      - {country: Burkina Faso, capital: Ouagadougou, continent: Africa}
      - {country: France, capital: Paris, continent: Europe}
prompts:
  template: "The capital of {country} is"
  slots: {country: countries}
  answer: 'continuation(" " + country.capital)'
  foil: 'continuation(" " + corrupted.country.capital)'
  corrupt: {resample: country, where: 'new.continent != country.continent', seed: 1}
metric: continuation_logprob_diff
"""


@pytest.mark.slow
def test_embedded_gemma_prefers_the_true_multi_token_capital(tmp_path):
    """On Gemma-3-270m every true capital, several tokens long, is more likely after its prompt than
    another continent's capital (checked on the model beforehand on the countries of specs/data),
    and the batched metric equals the model's own full forward of each prompt + capital alone."""
    from mi_dsl.compile import prepare
    from mi_dsl.runtime.run import Session
    from mi_dsl.runtime.store import StepStore

    path = tmp_path / "spec.yaml"
    path.write_text("version: 1\nname: facts\nmodel: {source: embedded, prepend_bos: true}\n" + FACTS)
    prepared = prepare(str(path), [], [])
    tok = prepared.tokenizer
    by_country = {dict(p.values)["country"]: p for p in prepared.dataset.pairs}
    assert [tok.token_str(t) for t in by_country["Argentina"].answers] == [" Buenos", " Aires"]
    session = Session.of(prepared, progress=False)
    session.open()
    session.dataset_step(StepStore(tmp_path / "store", enabled=False))
    clean = session.final["clean"]["continuation_logprob_diff"]
    assert min(clean) > 1.0, clean  # the true capital wins, by a margin, for every country
    assert max(session.final["corrupted"]["continuation_logprob_diff"]) < -1.0
    with torch.no_grad():
        for pair, value in zip(session.pairs, clean):
            sides = []
            for continuation in (pair.answers, pair.foils):
                ids = torch.tensor([list(pair.clean.ids) + list(continuation)])
                logp = session.loaded.bridge(ids, prepend_bos=False)[0].double().log_softmax(-1)
                final = len(pair.clean.ids) - 1
                sides.append(sum(float(logp[final + i, t]) for i, t in enumerate(continuation)))
            assert value == pytest.approx(sides[0] - sides[1], rel=1e-4, abs=1e-4), pair.clean.text


# One-word countries only: clean and corrupted prompts of one length, so attention patterns can be
# patched (every destination row of a head); capitals of one and two tokens.
EQUAL = COUNTRIES.replace("      - {country: Sri Lanka, capital: Sri Jayawardenepura Kotte}\n", "").replace(
    "      - {country: Burkina Faso, capital: Ouagadougou}\n", "")


def test_pattern_patching_with_continuations_equals_a_patched_forward_of_each_prompt(rough_models, tmp_path):
    """A prompt position attends to none of the continuation after it, so the clean pattern (captured
    without one) is padded with zeros; each cell equals the model run on its own, one prompt + one
    continuation at a time, with the head's clean pattern written over the prompt's rows."""
    from mi_dsl.analyses import _patching as core
    from mi_dsl.compile import prepare
    from mi_dsl.runtime.run import Session
    from mi_dsl.runtime.store import StepStore

    path = write_spec(tmp_path, "gpt_neox", rough_models, body=EQUAL)
    prepared = prepare(str(path), [], [])
    pairs = prepared.dataset.pairs
    assert len({len(p.clean.ids) for p in pairs} | {len(p.corrupted.ids) for p in pairs}) == 1
    session = Session.of(prepared, progress=False)
    session.open()
    session.dataset_step(StepStore(tmp_path / "store", enabled=False))
    run = session.context_for(session.pairs, session.baselines)
    with torch.no_grad():
        grid = core.resolve(compiled(run, {"kind": "activation_patching", "target": "pattern"}), run)
        got, _ = core.exact_patching(run, grid)
        bridge = session.loaded.bridge
        for cell, row in zip(grid.cells, got):
            name = f"blocks.{cell.layer}.attn.hook_pattern"
            for pair, value in zip(run.pairs, row.tolist()):
                _, cache = bridge.run_with_cache(torch.tensor([pair.clean.ids]), prepend_bos=False, names_filter=name)
                clean, n = cache[name][0, cell.head], len(pair.corrupted.ids)

                def patch(act, hook=None, cell=cell, n=n, clean=clean):
                    act = act.clone()
                    act[0, cell.head, :n, :n] = clean
                    act[0, cell.head, :n, n:] = 0
                    return act

                sides = []
                for continuation in (pair.answers, pair.foils):
                    ids = torch.tensor([list(pair.corrupted.ids) + list(continuation)])
                    with bridge.hooks(fwd_hooks=[(name, patch)]):
                        logp = bridge(ids, prepend_bos=False)[0].double().log_softmax(-1)
                    sides.append(sum(float(logp[n - 1 + i, t]) for i, t in enumerate(continuation)))
                assert value == pytest.approx(sides[0] - sides[1], rel=1e-5, abs=1e-5), (cell.label, pair.clean.text)
    assert (got - torch.tensor(session.final["corrupted"]["continuation_logprob_diff"])).abs().max() > 0.05


def test_an_answer_written_with_tokens_is_a_set_and_the_dataset_says_so(rough_models, tmp_path):
    from mi_dsl.compile import prepare

    body = COUNTRIES.replace("continuation(", "tokens(")
    prepared = prepare(str(write_spec(tmp_path, "gpt_neox", rough_models, metric="prob_diff", body=body)), [], [])
    pair = next(p for p in prepared.dataset.pairs if dict(p.values)["country"] == "Argentina")
    assert not pair.continuation and len(pair.answers) == 2
    warned = [w for w in prepared.dataset.warnings if "SET of alternative next tokens" in w.format()]
    assert len(warned) == 2 and warned[0].location.line == path_line(tmp_path / "spec.yaml", "answer:")


def path_line(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_forwards_run_only_for_the_sides_a_metric_reads(countries):
    """continuation_logprob runs the answer's forward only; the difference runs the foil's too, unless
    both feed the model the same tokens (continuations that differ in their last token only)."""
    from mi_dsl.runtime.continuation import continuation_metrics

    _, _, session = countries
    executor, unembed = session.executor, session.unembed
    prompts = [p.clean.ids for p in session.pairs]
    one = [(5,)] * len(prompts)
    two = [(5, 6)] * len(prompts)
    cases = [("continuation_logprob", two, (7, 8), 1), ("continuation_logprob_diff", two, (7, 8), 2),
             ("continuation_logprob_diff", one, (7,), 1), ("continuation_logprob_diff", two, (5, 8), 1)]
    with torch.no_grad():
        for name, answers, foil, forwards in cases:
            before = executor.forwards
            got = continuation_metrics(executor, unembed, prompts, answers, [foil] * len(prompts), [name])[name]
            assert executor.forwards - before == forwards, (name, answers[0], foil)
            assert torch.isfinite(got).all() and got.abs().min() > 0


def test_predictions_rank_a_continuations_first_token_and_say_so(countries):
    from mi_dsl.core.registry import REGISTRY, load_all

    _, _, session = countries
    run = session.context_for(session.pairs, session.baselines)
    index = next(i for i, p in enumerate(run.pairs) if len(p.answers) == 2)
    load_all()
    with torch.no_grad():
        result = REGISTRY["predictions"].implementation().compute(
            compiled(run, {"kind": "predictions", "index": index}), run)
    answer = result.data["answer"]
    assert answer["token_id"] == run.pairs[index].answers[0] and answer["continuation_tokens"] == 2
    assert "first token" in answer["note"] and "first token (of 2)" in result.summary


def test_analyses_computed_through_the_api_are_refused_too(countries):
    """compile_analysis (extra analyses on a finished run) applies the same rule as the compiler."""
    from mi_dsl.errors import SpecMeaningError

    _, _, session = countries
    run = session.context_for(session.pairs, session.baselines)
    for kind in ("logit_lens", "head_attribution", "ablation"):
        with pytest.raises(SpecMeaningError, match="cannot measure the continuation metric"):
            compiled(run, {"kind": kind, **({"heads": ["L0H0"]} if kind == "ablation" else {})})
    for kind in ("activation_patching", "attribution_patching"):
        assert compiled(run, {"kind": kind, "target": "resid_pre", "positions": ["final"]}).target == "resid_pre"
