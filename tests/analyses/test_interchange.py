"""The interchange analysis (analyses/interchange.py, analyses/_interchange/).

- Full-vector interchange at a site is activation patching of that site: with the causal model
  "the descriptor is the answer" and the clean prompt as source, each site's mean logit difference
  toward the label is exact patching's patched logit difference (denoising), and with the
  corrupted prompt as source its negative (noising), on every component: tiny random models with
  random norm weights and biases (GPT-NeoX, grouped-query Gemma-3), and the embedded Gemma-3-270m.
- DAS on a planted toy model (tests/analyses/planted.py: the variable lives in one known
  direction) reaches test IIA >= 0.99 with one dimension, where a random direction does not move
  the prediction; DAS is bit-for-bit reproducible with a seed, and its saved subspace, read back by
  a later spec, gives the same IIA.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

from mi_dsl.analyses.registry import REGISTRY, load_all

from tests.conftest import roughen
from tests.random_sizes import tiny_variant
from tests.spec_parts import syllogism
from tests.word_tokenizer import word_tokenizer_file

ROUGH = "tiny-rough"
CAUSAL = """\
causal_model:
  variables:
    d: descriptor
  output: 'first_token(" " + d)'
"""
DATA = syllogism(("birds",), (("big", "small"), ("wild", "tame")), ("Cows", "Horses"), equal_lengths=True)


@pytest.fixture(scope="module", autouse=True)
def rough():
    with tiny_variant(ROUGH, finish=roughen):
        yield


def model_yaml(architecture: str) -> str:
    if architecture == "embedded":
        return "model: {source: embedded, prepend_bos: true}\n"
    tokenizer = (f"  tokenizer: {word_tokenizer_file()}\n  bos_token: '<|endoftext|>'\n"
                 if architecture == "gpt_neox" else "")
    return (f"model:\n  source: random\n  architecture: {architecture}\n  size: {ROUGH}\n  seed: 3\n"
            f"  prepend_bos: true\n{tokenizer}")


def finished_run(folder: Path, model: str, body: str = DATA + CAUSAL):
    from mi_dsl.compile import prepare
    from mi_dsl.runtime.run import run_context

    path = folder / "spec.yaml"
    path.write_text("version: 1\nname: interchange\n" + model + "metric: logit_diff\n" + textwrap.dedent(body))
    return run_context(prepare(str(path)))


def compute(run, kind: str, **params):
    from mi_dsl.compile.compiler import compile_analysis

    load_all()
    compiled = compile_analysis(run.spec, {"kind": kind, **params}, known=list(run.results)).params
    with torch.no_grad():
        return REGISTRY[kind].implementation().compute(compiled, run)


def as_tensor(grid) -> torch.Tensor:
    return torch.tensor([[float("nan") if v is None else v for v in row] for row in grid], dtype=torch.float64)


# component -> the activation patching target of the same activation, one position at a time
TARGETS = {"resid_pre": "resid_pre", "resid_mid": "resid_mid", "attn_out": "attn_out", "mlp_out": "mlp_out",
           "z": "z_by_position"}
POSITIONS = ["descriptor", "final"]


def check_equals_patching(run, components) -> None:
    for source, direction, sign in (("clean", "denoising", 1.0), ("corrupted", "noising", -1.0)):
        exchanged = compute(run, "interchange", variables=["d"], source=source, positions=POSITIONS,
                            components=components).data
        for component in components:
            patched = as_tensor_patching(compute(run, "activation_patching", target=TARGETS[component],
                                                 direction=direction, positions=POSITIONS).data["values"])
            mine = sign * as_tensor(exchanged["logit_diff"]["d"][component])
            if component == "z":  # patching [layer][head][position] -> interchange [layer][head @ position]
                patched = patched.permute(0, 2, 1).reshape(patched.shape[0], -1)
            assert mine.shape == patched.shape, component
            assert patched.abs().max() > 0.01, f"{component}: the patches must move the metric for this to test"
            assert torch.allclose(mine, patched, atol=1e-6, rtol=0), (component, source, mine, patched)


def as_tensor_patching(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


@pytest.mark.parametrize("architecture, components", [
    ("gpt_neox", ["resid_pre", "attn_out", "mlp_out", "z"]),
    ("gemma3", ["resid_pre", "resid_mid", "attn_out", "mlp_out", "z"]),
])
def test_full_vector_interchange_equals_activation_patching(architecture, components, tmp_path):
    check_equals_patching(finished_run(tmp_path, model_yaml(architecture)), components)


def test_symmetric_pairs_share_one_sweep_of_the_base_prompts(tmp_path, monkeypatch):
    """Every corrupted prompt is another pair's clean prompt: one sweep of the base prompts gives the
    source activations, the residuals the forwards resume from, the unintervened run (two forwards
    fewer) and the keys and values the evaluation forwards continue after, with the numbers of separate
    sweeps run whole."""
    from mi_dsl.analyses._interchange import engine
    from mi_dsl.analyses._interchange import run as interchange_run

    run = finished_run(tmp_path, model_yaml("gemma3"))
    params = dict(variables=["d"], source="corrupted", positions=POSITIONS, components=["resid_pre", "mlp_out"])
    counted, widths, capture = run.executor.forwards, [], run.executor.capture

    def recording(tokens, *args, **kwargs):
        widths.append(tokens.shape[1])
        return capture(tokens, *args, **kwargs)

    monkeypatch.setattr(run.executor, "capture", recording)
    shared = compute(run, "interchange", **params).data
    monkeypatch.undo()
    shared_forwards = run.executor.forwards - counted
    # the evaluation forwards continue after the sweep's keys and values: from the descriptor, or the final
    # position's last kv.exact_rest positions
    full = run.tokens("clean").shape[1]
    assert widths[0] == full and min(widths) < full and run.executor.kv_rest
    real = engine.prepare
    monkeypatch.setattr(interchange_run, "prepare", lambda *a, **k: real(*a, **k, one_sweep=False))
    counted = run.executor.forwards
    separate = compute(run, "interchange", **params).data
    assert run.executor.forwards - counted == shared_forwards + 2
    for component in params["components"]:
        mine = as_tensor(shared["logit_diff"]["d"][component])
        theirs = as_tensor(separate["logit_diff"]["d"][component])
        assert theirs.abs().max() > 0.01 and torch.allclose(mine, theirs, atol=1e-6, rtol=0), component
        assert as_tensor(shared["iia"]["d"][component]).equal(as_tensor(separate["iia"]["d"][component]))
    mine, theirs = shared["unintervened"]["d"], separate["unintervened"]["d"]
    assert mine["logit_diff"] == pytest.approx(theirs["logit_diff"], rel=1e-6, abs=1e-6)
    assert {k: v for k, v in mine.items() if k != "logit_diff"} == \
        {k: v for k, v in theirs.items() if k != "logit_diff"}


@pytest.mark.slow
def test_full_vector_interchange_equals_activation_patching_on_gemma(tmp_path):
    body = DATA.replace("[big, small], [wild, tame]", "[big, small], [fast, slow]") + CAUSAL
    run = finished_run(tmp_path, model_yaml("embedded"), body + "pipeline:\n  - sample: {n: 4, seed: 0}\n")
    for component in ("resid_pre", "attn_out", "z"):
        layers = [0, 5, 11] if component != "z" else [3]
        for source, direction, sign in (("clean", "denoising", 1.0), ("corrupted", "noising", -1.0)):
            mine = sign * as_tensor(compute(run, "interchange", variables=["d"], source=source, positions=POSITIONS,
                                            components=[component], layers=layers).data["logit_diff"]["d"][component])
            patched = as_tensor_patching(compute(run, "activation_patching", target=TARGETS[component], layers=layers,
                                                 direction=direction, positions=POSITIONS).data["values"])
            if component == "z":
                patched = patched.permute(0, 2, 1).reshape(patched.shape[0], -1)
            assert patched.abs().max() > 0.05
            assert torch.allclose(mine, patched, atol=1e-6 * max(1.0, float(patched.abs().max())), rtol=0), component


def test_iia_reads_the_label_among_the_candidates(tmp_path):
    """Interchanging the residual entering layer 0 at the descriptor (the only token where clean and
    corrupted prompts differ) runs the source prompt itself. So with the corrupted prompt as source,
    IIA of `d` (label: the corrupted descriptor's token, the pair's foil) is the share of corrupted
    runs that prefer the foil, and the logit difference toward the label is minus their logit_diff:
    both measured independently here by the pipeline's own metric of the corrupted prompts."""
    from mi_dsl.runtime.pipeline import pair_metrics

    run = finished_run(tmp_path, model_yaml("gemma3"))
    data = compute(run, "interchange", variables=["d"], source="corrupted", layers=[0], positions=["descriptor"]).data
    measured = pair_metrics(run.executor, run.unembed, run.pairs, ["logit_diff"], "x")
    corrupted, clean = measured["corrupted"]["logit_diff"].double(), measured["clean"]["logit_diff"].double()
    assert 0 < float((corrupted < 0).double().mean()) < 1, "a mix of right and wrong runs, or this tests little"
    assert data["iia"]["d"]["resid_pre"][0][0] == pytest.approx(float((corrupted < 0).double().mean()))
    assert data["logit_diff"]["d"]["resid_pre"][0][0] == pytest.approx(float(-corrupted.mean()), abs=1e-6)
    # no intervention: the clean run, scored against the label it should move to
    assert data["unintervened"]["d"]["iia"] == pytest.approx(float((clean < 0).double().mean()))
    assert data["unintervened"]["d"]["n_changed"] == len(run.pairs) == data["examples"]


# --------------------------------------------------------------------------- featurizers, planted


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    from tests.analyses.planted import planted_models, write

    with planted_models():
        yield finished_run_at(write(tmp_path_factory.mktemp("planted"), "  - {kind: predictions}"))


def finished_run_at(path: Path):
    from mi_dsl.compile import prepare
    from mi_dsl.runtime.run import run_context

    return run_context(prepare(str(path)))


SOURCE = {"where": "source.size != base.size"}


def test_das_finds_the_planted_direction_and_a_random_one_does_not(planted):
    das = compute(planted, "interchange", variables=["positive"], source=SOURCE, layers=[1], featurizer="das",
                  training={"batch_size": 8}).data
    rnd = compute(planted, "interchange", variables=["positive"], source=SOURCE, layers=[1],
                  featurizer="random").data
    full = compute(planted, "interchange", variables=["positive"], source=SOURCE, layers=[1]).data
    assert das["split"]["test"] >= 8 and das["examples"] >= 24
    assert das["iia"]["positive"]["resid_pre"][0][0] >= 0.99
    # every kept example's label changes (a same-sign source leaves one candidate and is dropped), so a
    # subspace that misses the variable keeps the base prediction: IIA 0, below chance (1/2) as reported
    assert rnd["iia"]["positive"]["resid_pre"][0][0] <= 0.1
    assert full["iia"]["positive"]["resid_pre"][0][0] == 1.0
    assert das["unintervened"]["positive"]["iia"] == 0.0
    # the learned direction leans on the planted one (|cos| 0.77 here; a random direction of 64: ~0.12);
    # it need not be it: any direction whose interchange crosses the readout's sign moves the label
    from tests.analyses.planted import direction

    W = saved_W(das)
    assert abs(float(W[:, 0] @ direction(W.shape[0]))) > 0.6


def saved_W(data) -> torch.Tensor:
    from safetensors.torch import load

    from mi_dsl.analyses._interchange.saved import files

    (blob,) = files(data).values()
    return load(blob)["W"]


def test_das_is_bit_for_bit_reproducible_with_a_seed(planted):
    params = dict(variables=["positive"], source=SOURCE, layers=[1], featurizer="das",
                  training={"batch_size": 8, "epochs": 3, "seed": 5})
    first, second = compute(planted, "interchange", **params).data, compute(planted, "interchange", **params).data
    assert first["subspace_files"] == second["subspace_files"]
    untimed = lambda data: [{k: v for k, v in c.items() if k != "seconds"} for c in data["training"]]  # noqa: E731
    assert untimed(first) == untimed(second) and first["iia"] == second["iia"]
    other = compute(planted, "interchange", **{**params, "training": {"batch_size": 8, "epochs": 3, "seed": 6}}).data
    assert not torch.equal(saved_W(first), saved_W(other))


def test_a_saved_subspace_is_read_back_by_a_later_spec(planted, tmp_path):
    from mi_dsl.analyses._interchange.saved import files

    das = compute(planted, "interchange", variables=["positive"], source=SOURCE, layers=[1], featurizer="das",
                  training={"batch_size": 8}).data
    ((name, blob),) = files(das).items()
    assert name == "subspaces/interchange/positive__L1_resid_pre___final.safetensors"
    target = Path(planted.spec.file).parent / "saved.safetensors"
    target.write_bytes(blob)
    again = compute(planted, "interchange", variables=["positive"], source=SOURCE, layers=[1],
                    subspace="saved.safetensors").data
    assert again["iia"] == das["iia"] and again["logit_diff"] == das["logit_diff"]
    provenance = again["loaded_subspace"]["provenance"]
    assert provenance["variable"] == "positive" and provenance["featurizer"] == "das"
    assert provenance["site"]["layer"] == 1 and provenance["dims"] == 1


# Countries of one and two words (prompts of two lengths), each with a field the causal model reads;
# CATS is the kind of cats.
KINDS = """\
vocabularies:
  country:
    items: [{name: Cows, kind: two}, {name: Horses, kind: two}, {name: cats, kind: CATS}, {name: dogs, kind: one}]
prompts:
  template: "The {country} are big . Are the"
  answer: 'first_token(" big")'
  foil: 'first_token(" small")'
causal_model:
  variables:
    c: country
  output: 'first_token(" big") if c.kind == "one" else first_token(" small")'
"""


def test_prompts_of_different_lengths_interchange_by_name(tmp_path):
    """Sources of another length: the residual entering layer 0 at the country's last token is that
    token's embedding, so interchanging it equals running the base prompt with that one token replaced
    by the source's (measured here by the executor on the edited token ids, each read at its own final
    position): the positions are aligned by name, not by index."""
    from mi_dsl.runtime.executor import pad_right
    from mi_dsl.runtime.unembed import final_inputs

    run = finished_run(tmp_path, model_yaml("gpt_neox"), KINDS.replace("CATS", "one"))
    lengths = {len(p.clean.ids) for p in run.pairs}
    assert len(lengths) == 2, "prompts of two lengths, or this tests nothing"
    data = compute(run, "interchange", variables=["c"], source={"where": "source.c.kind != base.c.kind"},
                   layers=[0], positions=["country[-1]"]).data
    from mi_dsl.causal import Builder, compile_source, load_causal_model

    model, reader = load_causal_model(run.spec)
    rule = compile_source(run.spec, {"where": "source.c.kind != base.c.kind"}, model, reader, ("analyses",), 0)
    examples = Builder(model, reader, run.tokenizer).examples(run.pairs, rule)
    edited = []
    for e in examples:
        ids = list(e.base.ids)
        ids[e.base.spans["country"][0][1] - 1] = e.source.ids[e.source.spans["country"][0][1] - 1]
        edited.append(ids)
    tokens, final = pad_right(edited)
    with torch.no_grad():
        x = final_inputs(run.executor, tokens, final=final)
    big, small = (run.tokenizer.encode(w)[0] for w in (" big", " small"))
    logits = run.unembed.full(x).double()
    labels = torch.tensor([e.label("c") for e in examples])
    other = torch.where(labels == big, torch.tensor(small), torch.tensor(big))
    margin = logits[torch.arange(len(examples)), labels] - logits[torch.arange(len(examples)), other]
    assert data["logit_diff"]["c"]["resid_pre"][0][0] == pytest.approx(float(margin.mean()), abs=1e-5)
    assert data["iia"]["c"]["resid_pre"][0][0] == pytest.approx(float((margin > 0).double().mean()))


def test_each_iia_carries_its_wilson_interval():
    """The Wilson 95% interval of a share, against statsmodels 0.15's proportion_confint(k, n, alpha=0.05,
    method="wilson") run once in a separate environment (not a project dependency): 3 of 5 -> [0.23072,
    0.88238]; 0 of 5 -> [0, 0.43448], not the empty [0, 0]; 50 of 100 -> [0.40383, 0.59617]."""
    from mi_dsl.analyses._interchange.score import wilson

    assert wilson(3, 5) == pytest.approx((0.23072, 0.88237), abs=1e-5)
    assert wilson(0, 5) == pytest.approx((0.0, 0.43448), abs=1e-5)
    assert wilson(50, 100) == pytest.approx((0.40383, 0.59617), abs=1e-5)
    assert wilson(0, 0) == (None, None)


def test_the_best_site_says_how_sure_its_iia_is(planted):
    data = compute(planted, "interchange", variables=["positive"], source=SOURCE, layers=[1],
                   featurizer="random").data
    best = data["best"]["positive"]
    assert best["iia_low"] <= best["iia"] <= best["iia_high"] and best["iia_high"] - best["iia_low"] > 0.05
    assert f"over {best['n']} examples" in compute(planted, "interchange", variables=["positive"], source=SOURCE,
                                                   layers=[1], featurizer="random").summary


def test_a_subspace_file_saved_again_is_read_again_not_answered_from_the_store(tmp_path):
    """A spec that reads a saved subspace once reused its stored result after the file was replaced by
    another training's subspace (the key held the path only). Its content is now part of the key."""
    from mi_dsl.running import run_spec
    from tests.analyses.planted import planted_models, write

    learn = tmp_path / "first"
    learn.mkdir()
    das = ("  - {{kind: interchange, id: das{seed}, variables: [positive], "
           "source: {{where: 'source.size != base.size'}}, "
           "layers: [1], featurizer: das, training: {{batch_size: 8, epochs: 2, seed: {seed}}}}}")
    use = ("  - {kind: interchange, id: use, variables: [positive], source: {where: 'source.size != base.size'}, "
           "layers: [1], subspace: saved.safetensors}")
    with planted_models():
        trained = run_spec(write(learn, das.format(seed=5) + "\n" + das.format(seed=6)), out_dir=str(learn / "runs"),
                           progress=False).run_dir
        blobs = [next((trained / "subspaces" / f"das{seed}").glob("*.safetensors")).read_bytes() for seed in (5, 6)]
        assert blobs[0] != blobs[1]
        spec = write(tmp_path, use)
        saved = tmp_path / "saved.safetensors"
        stores = []
        for blob in (blobs[0], None, blobs[1]):
            if blob is not None:
                saved.write_bytes(blob)
            outcome = run_spec(spec, out_dir=str(tmp_path / "runs"), progress=False)
            stores.append(json.loads((outcome.run_dir / "results.json").read_text())["store"])
    assert stores[1] == {"reused": 2, "computed": 0, "distrusted": []}   # the same file: reused
    assert stores[2] == {"reused": 1, "computed": 1, "distrusted": []}   # another subspace: read again


def test_a_changed_vocabulary_field_is_never_answered_from_the_store(tmp_path):
    """A causal model reads the vocabularies' fields, which the token ids do not show: changing one
    (cats: kind one -> two) once reused every stored step and printed the old IIA."""
    from mi_dsl.running import run_spec

    body = KINDS + """\
analyses:
  - {kind: interchange, id: swap, variables: [c], source: {where: 'source.c.kind != base.c.kind'}, layers: [0]}
"""
    spec = tmp_path / "spec.yaml"

    def run(kind):
        spec.write_text("version: 1\nname: interchange\n" + model_yaml("gpt_neox") + "metric: logit_diff\n"
                        + body.replace("CATS", kind))
        outcome = run_spec(spec, out_dir=str(tmp_path / "runs"), progress=False)
        results = json.loads((outcome.run_dir / "results.json").read_text())
        return results["store"], results["analyses"]["swap"]["iia"]

    first, iia = run("one")
    again, iia_again = run("two")
    assert again == {"reused": 0, "computed": 2, "distrusted": []}
    assert iia_again != iia   # other labels and sources: another IIA (0.5 -> 0.25 here)
