"""The attention, attention_vs_contribution, ablation and head_detection analyses.

Invariants, on a tiny random GPT-NeoX (loaded once for the module; every spec run reuses
it) and (slow) on the embedded Gemma-3-270m:
- selectors pick exactly the heads they name, and top()/bottom() rank by the earlier result;
- patterns equal a plain forward's, and the interactive view holds no external URL;
- attention_vs_contribution's y on the logit-difference direction averages to head_attribution;
- zero-ablating a head whose W_O slice is zero changes nothing; mean-ablating with one
  prompt changes nothing; resampling every head before the corrupted token changes nothing;
  ablation equals the seed's hook recipe applied by hand;
- detection scores are the seed's diagonal means, checked on hand-built patterns.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mi_dsl.analyses.head_detection import detection_scores

from tests.spec_parts import ANIMAL_TEMPLATE, animals, syllogism
from tests.spec_parts import spec_text as spec_parts
from tests.word_tokenizer import word_tokenizer_file

# Built in the run (tests/word_tokenizer.py), with Pythia's token lengths for these words.
TOKENIZER = word_tokenizer_file()

MODEL = f"""
model:
  source: random
  architecture: gpt_neox
  size: tiny
  tokenizer: {TOKENIZER}
  bos_token: "<|endoftext|>"
  prepend_bos: true
  device: cpu
"""

DATA = "\n" + syllogism(categories=("birds", "fish", "insects", "mammals"), nouns=("Cows", "Horses", "Pigs", "Wolves"),
                       equal_lengths=True)

PIPELINE = """
pipeline:
  - sample: {n: 5, seed: 42}
  - symmetric: true
"""

REPEATED = "Research in mechanistic interpretability."


def spec_text(analyses: str, pipeline: str = PIPELINE, model: str = MODEL, data: str = DATA) -> str:
    return "version: 1\nname: t\n" + textwrap.dedent(model) + textwrap.dedent(data) + textwrap.dedent(pipeline) \
        + "analyses:\n" + textwrap.indent(textwrap.dedent(analyses).strip(), "  ") + "\n"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def loaded():
    from mi_dsl.spec.model import ModelSpec
    from mi_dsl.models import load_model

    return load_model(ModelSpec(source="random", architecture="gpt_neox", size="tiny", tokenizer=str(TOKENIZER),
                                device="cpu"))


@pytest.fixture(scope="module")
def run(loaded, tmp_path_factory):
    """run(analyses yaml, pipeline=...) -> (results, run dir); every run reuses the loaded model."""
    from mi_dsl.running import run_spec

    folder = tmp_path_factory.mktemp("specs")
    count = iter(range(10**6))

    def go(analyses: str, **parts):
        path = folder / f"spec{next(count)}.yaml"
        path.write_text(spec_text(analyses, **parts))
        with pytest.MonkeyPatch.context() as patch:  # only while this run loads its model
            patch.setattr("mi_dsl.models.load_model", lambda spec, **kw: loaded)
            outcome = run_spec(path, progress=False, fresh=True, out_dir=str(folder / "runs"))
        return outcome.results, outcome.run_dir

    return go


@pytest.fixture(scope="module")
def main_run(run):
    """One run of every analysis kind, shared by the tests that only read results."""
    return run("""
        - {kind: head_attribution, id: head_attr}
        - {kind: attention, id: named, heads: [L1H2, "L0H*", L1H2]}
        - {kind: attention, id: ranked, heads: "top(head_attr, 3)", prompts: [0, 3]}
        - {kind: attention, id: lowest, heads: "bottom(head_attr, 2)", text: "%s", repeat: 2}
        - {kind: attention_vs_contribution, id: avc, heads: "L*H*", direction: logit_diff}
        - {kind: attention_vs_contribution, id: avc_answer, heads: [L1H0], from: final, to: descriptor}
        - {kind: head_detection, id: detect, seq_len: 7, batch: 3, seed: 5, heads: [L1H1], text: "%s"}
    """ % (REPEATED, REPEATED))


def pattern_of(loaded, ids, layer):
    with torch.no_grad():
        _, cache = loaded.bridge.run_with_cache(torch.tensor([ids]), prepend_bos=False)
    return cache[f"blocks.{layer}.attn.hook_pattern"][0]


# --------------------------------------------------------------------------- detection scores (no model)


def hand_scores(pattern, n: int, bos: bool):
    """[B, H, T, T] -> [B, 3, H], by explicit loops over the seed's (query, key) pairs."""
    off = 1 if bos else 0
    pairs = {"previous": [(q, q - 1) for q in range(1, 2 * n)],
             "duplicate": [(q, q - n) for q in range(n, 2 * n)],
             "induction": [(q, q - n + 1) for q in range(n - 1, 2 * n)]}
    out = torch.zeros(pattern.shape[0], 3, pattern.shape[1])
    for b in range(pattern.shape[0]):
        for h in range(pattern.shape[1]):
            for i, name in enumerate(pairs):
                values = [float(pattern[b, h, off + q, off + k]) for q, k in pairs[name]]
                out[b, i, h] = sum(values) / len(values)
    return out


def causal_pattern(batch: int, heads: int, size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    raw = torch.rand(batch, heads, size, size, generator=g).tril()
    return raw / raw.sum(-1, keepdim=True)


@pytest.mark.parametrize("bos", [False, True])
def test_detection_scores_are_the_diagonal_means(bos):
    n = 5
    pattern = causal_pattern(2, 3, 2 * n + bos)
    assert torch.allclose(detection_scores(pattern, n, bos), hand_scores(pattern, n, bos), atol=1e-6)


def test_detection_scores_ignore_bos_row_and_column():
    n = 4
    inner = causal_pattern(1, 2, 2 * n, seed=1)
    with_bos = torch.zeros(1, 2, 2 * n + 1, 2 * n + 1)
    with_bos[..., 1:, 1:] = inner
    with_bos[..., :, 0] = 0.5  # attention to BOS counts for no score
    assert torch.allclose(detection_scores(with_bos, n, True), detection_scores(inner, n, False))


def test_a_previous_token_head_scores_one_on_previous_and_zero_elsewhere():
    n, size = 6, 12
    pattern = torch.zeros(1, 1, size, size)
    pattern[0, 0, 0, 0] = 1.0
    for q in range(1, size):
        pattern[0, 0, q, q - 1] = 1.0
    scores = detection_scores(pattern, n, False)[0, :, 0]
    assert scores.tolist() == [1.0, 0.0, 0.0]


def test_detection_scores_check_the_length():
    with pytest.raises(ValueError, match="expected a pattern over 10 tokens"):
        detection_scores(torch.zeros(1, 1, 9, 9), 5, False)


# --------------------------------------------------------------------------- offline view (no model)


def test_attention_view_is_standalone_and_offline():
    from mi_dsl.analyses._attention import attention_view, circuitsvis_bundle

    if circuitsvis_bundle() is None:
        pytest.skip("circuitsvis is not installed, so there is no bundle to inline")
    tokens = ["<bos>", " see", " https://example.com/x", "</script>"]
    page = attention_view([("a prompt with a URL", tokens, causal_pattern(2, 1, 4)[0], ["L0H0", "L0H1"])], "view")
    assert not re.search(r"https?://", page), "the page names an external address"
    # the bundle, the render calls and the height it posts to an embedding report: the token's "</script>" is escaped
    assert page.count("</script>") == 3 and "<script src" not in page
    assert "CircuitsVis.render('view-0', CircuitsVis.AttentionHeads" in page
    assert "example.com" in page  # the token is there, its slashes escaped
    check_scripts_parse(page)


def check_scripts_parse(page: str) -> None:
    node = shutil.which("node")
    if node is None:
        return
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    done = subprocess.run([node, "--check"], input="\n;\n".join(scripts), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


# --------------------------------------------------------------------------- compile-time checks (no model)


@pytest.fixture
def compile_errors(tmp_path, tiny_tokenizer):
    """prepare() on a word-level tokenizer spec; returns the raised MiError (or None)."""
    from mi_dsl.compile import prepare
    from mi_dsl.errors import MiError

    def compile_with(analyses: str, template: str = ANIMAL_TEMPLATE):
        text = spec_parts(f"""
            version: 1
            name: c
            model: {{source: random, architecture: gpt_neox, size: tiny, tokenizer: {tiny_tokenizer},
                     prepend_bos: true, bos_token: "<bos>"}}
            """, animals(template=template), "analyses:")
        text += textwrap.indent(textwrap.dedent(analyses).strip(), "  ") + "\n"
        path = tmp_path / "c.yaml"
        path.write_text(text)
        try:
            prepare(str(path), [], [])
        except MiError as err:
            return err
        return None

    return compile_with


@pytest.mark.parametrize("analyses, says, at", [
    ("- {kind: attention, heads: L0H0, prompts: [0], text: hi}", "either `prompts`", None),
    ("- {kind: attention, heads: L0H0, repeat: 2}", "`repeat` repeats `text`", None),
    ("- {kind: head_detection, low: 500, high: 400}", "low (500) must be below high (400)", None),
    ("- {kind: head_attribution, id: head_attr}\n- {kind: ablation, heads: 'top(head_atr, 2)'}",
     "did you mean 'head_attr'?", (16, 34)),
    ("- {kind: ablation, heads: L0H0, positions: animl}", "did you mean 'animal'?", (15, 46)),
    ("- {kind: attention_vs_contribution, heads: L0H0, to: sise}", "did you mean 'size'?", (15, 56)),
    ("- {kind: attention_vs_contribution, heads: L0H0}", "`to` defaults to 'descriptor'", None),
    ("- {kind: attention, heads: L0H9x}", "not a head selector", None),
])
def test_compile_refuses_with_located_messages(compile_errors, analyses, says, at):
    err = compile_errors(analyses)
    assert err is not None and says in str(err), str(err)
    if at is not None:
        assert (err.location.line, err.location.column) == at, str(err)


def test_ablation_method_is_checked_by_the_schema(compile_errors):
    err = compile_errors("- {kind: ablation, heads: L0H0, method: resampel}")
    assert err is not None and "did you mean 'resample'?" in str(err)


def test_compiling_the_four_analyses_imports_no_torch(tmp_path, tiny_tokenizer):
    spec = tmp_path / "s.yaml"
    spec.write_text(spec_parts(f"""
        version: 1
        name: s
        model: {{source: random, architecture: gpt_neox, size: tiny, tokenizer: {tiny_tokenizer},
                 prepend_bos: true, bos_token: "<bos>"}}
        """, animals(), """
        analyses:
          - {kind: head_attribution, id: h}
          - {kind: attention, heads: "top(h, 2)"}
          - {kind: attention_vs_contribution, heads: [L0H0], to: size}
          - {kind: ablation, heads: "L1H*", positions: final, method: mean}
          - {kind: head_detection, heads: [L0H1], text: "The cats"}
        """))
    code = (f"import sys; from mi_dsl.compile import prepare; prepare({str(spec)!r}, [], []); "
            "print(sorted(m for m in ('torch', 'transformer_lens', 'plotly') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- attention


def test_selectors_pick_exactly_the_named_heads(main_run):
    a = main_run[0]["analyses"]
    assert a["named"]["heads"] == ["L1H2", "L0H0", "L0H1", "L0H2", "L0H3"]  # in order, no repeats
    scores = torch.tensor(a["head_attr"]["per_head"]).flatten()
    n_heads = len(a["head_attr"]["per_head"][0])
    label = lambda i: f"L{i // n_heads}H{i % n_heads}"  # noqa: E731
    assert a["ranked"]["heads"] == [label(i) for i in torch.argsort(scores, descending=True)[:3].tolist()]
    assert a["lowest"]["heads"] == [label(i) for i in torch.argsort(scores)[:2].tolist()]
    assert [h["head"] for h in a["avc"]["heads"]] == [label(i) for i in range(len(scores))]


@pytest.mark.parametrize("analyses, says", [
    ("- {kind: attention, heads: L0H0, prompts: [0, 99]}",
     "prompt 99 does not exist: the pipeline leaves at most 10 prompt pairs"),
    ("- {kind: logit_lens, id: lens}\n- {kind: attention, heads: 'top(lens, 2)'}",
     "analysis 'lens' gives no per-head scores"),
    ("- {kind: attention, heads: L5H0}", "layer 5 is out of range: the model has 2 layers"),
])
def test_runtime_selector_faults_are_located(run, analyses, says):
    from mi_dsl.errors import MiError

    with pytest.raises(MiError) as caught:
        run(analyses)
    assert says in str(caught.value) and caught.value.location.line is not None, str(caught.value)


def test_patterns_equal_a_plain_forward(main_run, loaded):
    results, _ = main_run
    ranked = results["analyses"]["ranked"]
    tok = loaded.bridge.tokenizer
    for prompt in ranked["prompts"]:
        ids = [tok.bos_token_id] + tok.encode(prompt["text"], add_special_tokens=False)
        assert prompt["tokens"] == [tok.decode([i]) for i in ids]
        for name, pattern in zip(ranked["heads"], prompt["patterns"]):
            layer, head = map(int, name[1:].split("H"))
            assert torch.allclose(torch.tensor(pattern), pattern_of(loaded, ids, layer)[head], atol=1e-6)
            assert torch.allclose(torch.tensor(pattern).sum(-1), torch.ones(len(ids)), atol=1e-5)
    lowest = results["analyses"]["lowest"]["prompts"][0]
    assert lowest["text"] == REPEATED * 2
    single = tok.encode(REPEATED, add_special_tokens=False)
    assert len(lowest["tokens"]) == 1 + 2 * len(single)


def test_patterns_the_shared_pass_kept_on_prompts_of_several_lengths_equal_a_plain_forward(run, loaded):
    """The shared pass runs prompts of several lengths right-padded in one batch; the patterns it
    keeps for the cache are each prompt's own (cut to its length), as a forward of it alone gives."""
    data = "\n" + syllogism(categories=("birds", "fish", "insects", "mammals"),
                            descriptors=(("herbivorous", "carnivorous"), ("endothermic", "ectothermic")),
                            nouns=("Cows", "Horses", "Pigs", "Wolves"), equal_lengths=False)
    results, _ = run("""
        - {kind: head_attribution, id: head_attr}
        - {kind: attention, id: view, heads: [L1H2, L0H0], prompts: [0, 8, 12, 60]}
    """, data=data, pipeline="")
    prompts = results["analyses"]["view"]["prompts"]
    tok = loaded.bridge.tokenizer
    lengths = set()
    for prompt in prompts:
        ids = [tok.bos_token_id] + tok.encode(prompt["text"], add_special_tokens=False)
        lengths.add(len(ids))
        for name, pattern in zip(["L1H2", "L0H0"], prompt["patterns"]):
            layer, head = map(int, name[1:].split("H"))
            assert torch.allclose(torch.tensor(pattern), pattern_of(loaded, ids, layer)[head], atol=1e-6)
    assert len(lengths) > 1, lengths  # the pass padded some of them


def test_figures_and_offline_view_are_written(main_run):
    _, run_dir = main_run
    figures = {p.name for p in (run_dir / "figures").iterdir()}
    for name in ["named__heads.html", "ranked__view.html", "lowest__view.html", "avc__L0H0.html",
                 "detect__induction.html", "detect__previous_token.html", "detect__duplicate_token.html",
                 "detect__view.html", "detect__pattern_L1H1.html"]:
        assert name in figures, sorted(figures)
    assert any(n.startswith("ranked__") and n.endswith("_prompt3.html") for n in figures)
    # Small multiples: one figure holds every named head's pattern, one heatmap per head, titled.
    grid = json.loads((run_dir / "figures" / "named__heads.json").read_text())
    assert [t["name"] for t in grid["data"]] == ["L1H2", "L0H0", "L0H1", "L0H2", "L0H3"]
    assert all(t["type"] == "heatmap" for t in grid["data"])
    assert not any(n.startswith("named__L") for n in figures)
    page = (run_dir / "figures" / "ranked__view.html").read_text()
    assert not re.search(r"https?://", page)
    assert page.count("CircuitsVis.render(") == 2  # one view per prompt


def test_the_prompt_browser_holds_every_pair_within_a_step_of_the_exact_patterns(main_run):
    from mi_dsl.analyses._attention_browser import decode

    results, run_dir = main_run
    ranked = results["analyses"]["ranked"]
    browse = ranked["browse"]
    assert [p["pair"] for p in browse["prompts"]] == list(range(results["dataset"]["final_pairs"]))
    assert browse["heads"] == ranked["heads"] and "of a 4 MB budget" in browse["note"]
    for exact in ranked["prompts"]:  # the spec's prompts 0 and 3, exact in the result
        index = int(exact["label"].split()[-1])
        stored = browse["prompts"][index]
        assert stored["text"] == exact["text"] and len(stored["labels"]) == len(exact["tokens"])
        back = torch.tensor(decode(stored["patterns"], len(ranked["heads"])))
        assert (back - torch.tensor(exact["patterns"])).abs().max() <= 0.5 / 255 + 1e-6
    assert "lowest" in results["analyses"] and "browse" not in results["analyses"]["lowest"]  # a literal text
    page = (run_dir / "figures" / "ranked__all_prompts.html").read_text()
    assert page.count("<option ") == len(browse["prompts"]) and not re.search(r"https?://", page)


def test_per_prompt_tables_hold_each_prompts_values(main_run):
    results, _ = main_run
    tables, analyses = results["tables"], results["analyses"]
    rows = tables["head_attr"]["per_prompt"]
    assert [r["prompt"] for r in rows] == [p["clean"] for p in results["dataset"]["pairs"]]
    heads = [k for k in rows[0] if k not in ("pair", "prompt")]
    assert len(heads) == 8
    for label in heads:
        layer, head = map(int, label[1:].split("H"))
        mean = sum(r[label] for r in rows) / len(rows)
        assert mean == pytest.approx(analyses["head_attr"]["per_head"][layer][head], rel=1e-5, abs=1e-9)
    avc = {h["head"]: h for h in analyses["avc"]["heads"]}
    for i, row in enumerate(tables["avc"]["per_prompt"]):
        assert row["L1H2 contribution"] == avc["L1H2"]["contribution"][i]
        assert row["L0H3 attention"] == avc["L0H3"]["attention"][i]


# --------------------------------------------------------------------------- attention_vs_contribution


def test_contribution_on_logit_diff_averages_to_head_attribution(main_run):
    a = main_run[0]["analyses"]
    per_head = torch.tensor(a["head_attr"]["per_head"]).flatten()
    means = torch.tensor([sum(h["contribution"]) / len(h["contribution"]) for h in a["avc"]["heads"]])
    assert torch.allclose(means, per_head, atol=1e-6)


def test_attention_to_a_multi_token_slot_is_summed(main_run, loaded, run):
    results, _ = main_run
    avc = results["analyses"]["avc_answer"]
    tok = loaded.bridge.tokenizer
    for i, text in enumerate(avc["prompts"][:3]):
        ids = [tok.bos_token_id] + tok.encode(text, add_special_tokens=False)
        keys = avc["to_positions"][i]
        assert len(keys) == 3 and avc["from_positions"][i] == [len(ids) - 1]  # ' herb|iv|orous' etc.
        expected = pattern_of(loaded, ids, 1)[0, -1, keys].sum()
        assert avc["heads"][0]["attention"][i] == pytest.approx(float(expected), abs=1e-6)


# --------------------------------------------------------------------------- ablation


def zero_output_weights(loaded, layer: int, head: int):
    weight = loaded.bridge.blocks[layer].attn.o._original_component.weight
    d_head = loaded.bridge.cfg.d_head
    saved = weight.detach().clone()
    with torch.no_grad():
        weight[:, head * d_head:(head + 1) * d_head] = 0.0
    return weight, saved


def test_zero_ablating_a_head_with_zero_output_weights_changes_nothing(run, loaded):
    weight, saved = zero_output_weights(loaded, 1, 2)
    try:
        results, _ = run("""
            - {kind: ablation, id: dead, heads: [L1H2]}
            - {kind: ablation, id: live, heads: [L1H1]}
        """)
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    dead, live = results["analyses"]["dead"], results["analyses"]["live"]
    assert dead["metric_after_per_prompt"] == pytest.approx(dead["metric_before_per_prompt"], abs=1e-7)
    assert torch.allclose(torch.tensor(dead["dla_after"]), torch.tensor(dead["dla_before"]), atol=1e-7)
    assert dead["ln_scale_ratio"] == pytest.approx(1.0, abs=1e-7)
    assert dead["dla_before"][1][2] == 0.0
    assert max(abs(a - b) for a, b in zip(live["metric_after_per_prompt"], live["metric_before_per_prompt"])) > 1e-6
    rows = results["tables"]["live"]["per_prompt"]
    assert [r["logit_diff before"] for r in rows] == live["metric_before_per_prompt"]
    assert [r["change"] for r in rows] == [a - b for a, b in zip(live["metric_after_per_prompt"],
                                                                  live["metric_before_per_prompt"])]


def test_mean_ablation_of_a_single_prompt_changes_nothing(run):
    results, _ = run("- {kind: ablation, heads: 'L*H*', method: mean}", pipeline="pipeline:\n  - sample: {n: 1}\n")
    a = results["analyses"]["ablation"]
    assert len(a["metric_before_per_prompt"]) == 1
    assert a["metric_after"] == pytest.approx(a["metric_before"], abs=1e-7)
    assert torch.allclose(torch.tensor(a["dla_after"]), torch.tensor(a["dla_before"]), atol=1e-7)


def test_ablation_follows_the_seed_hook_recipe(run, loaded):
    """Every method, done by hand with plain hooks on the bridge, gives the same metric."""
    results, run_dir = run("""
        - {kind: head_attribution, id: head_attr}
        - {kind: ablation, id: zero_final, heads: [L1H1, L0H3], positions: final}
        - {kind: ablation, id: zero_minus_one, heads: [L0H3, L1H1], positions: -1}
        - {kind: ablation, id: resample_final, heads: "L*H*", positions: final, method: resample}
        - {kind: ablation, id: resample_prefix, heads: "L*H*", positions: category, method: resample}
        - {kind: ablation, id: mean_all, heads: [L0H2], method: mean}
    """)
    a = results["analyses"]
    assert torch.allclose(torch.tensor(a["zero_final"]["dla_before"]), torch.tensor(a["head_attr"]["per_head"]),
                          atol=1e-6)
    assert a["zero_final"]["dla_after"][1][1] == 0.0 and a["zero_final"]["dla_after"][0][3] == 0.0
    bridge, tok = loaded.bridge, loaded.bridge.tokenizer
    pairs = pair_rows(run_dir)
    encode = lambda t: [tok.bos_token_id] + tok.encode(t, add_special_tokens=False)  # noqa: E731
    clean_tokens = torch.tensor([encode(row["clean"]) for row in pairs])
    corrupt_tokens = torch.tensor([encode(row["corrupted"]) for row in pairs])
    answers = torch.tensor([row["answer"] for row in pairs])
    foils = torch.tensor([row["foil"] for row in pairs])

    def metric(hooks):
        with torch.no_grad():
            logits = bridge.run_with_hooks(clean_tokens, fwd_hooks=hooks, prepend_bos=False)[:, -1]
        rows = torch.arange(len(answers))
        return (logits[rows, answers] - logits[rows, foils]).tolist()

    def set_heads(heads, value_of, positions=slice(None)):
        def hook(z, hook):
            z = z.clone()
            for h in heads:
                z[:, positions, h] = value_of(hook.name)[:, positions, h]
            return z
        return hook

    with torch.no_grad():
        _, corrupt_cache = bridge.run_with_cache(corrupt_tokens, prepend_bos=False)
        _, clean_cache = bridge.run_with_cache(clean_tokens, prepend_bos=False)
    zeros = lambda name: torch.zeros_like(clean_cache[name])  # noqa: E731
    z = [f"blocks.{l}.attn.hook_z" for l in range(2)]
    expected = {
        "zero_final": metric([(z[1], set_heads([1], zeros, -1)), (z[0], set_heads([3], zeros, -1))]),
        "resample_final": metric([(n, set_heads(range(4), corrupt_cache.__getitem__, -1)) for n in z]),
        "mean_all": metric([(z[0], set_heads([2], lambda n: clean_cache[n].mean(0, keepdim=True).expand_as(
            clean_cache[n])))]),
    }
    for name, values in expected.items():
        assert a[name]["metric_after_per_prompt"] == pytest.approx(values, abs=1e-5), name
    assert a["zero_minus_one"]["metric_after_per_prompt"] == a["zero_final"]["metric_after_per_prompt"]
    # The corrupted prompt differs first at the descriptor, so every head's z before it is the
    # clean one: resampling all heads there changes nothing, while at the final position it does.
    prefix = a["resample_prefix"]
    assert prefix["metric_after_per_prompt"] == pytest.approx(prefix["metric_before_per_prompt"], abs=1e-6)
    final = a["resample_final"]
    assert max(abs(x - y) for x, y in zip(final["metric_after_per_prompt"], final["metric_before_per_prompt"])) > 1e-5


def pair_rows(run_dir: Path):
    """The final pairs, from the report's tables/pairs.csv."""
    import csv

    with (run_dir / "tables" / "pairs.csv").open() as handle:
        return [{**row, "answer": int(row["answer"]), "foil": int(row["foil"])} for row in csv.DictReader(handle)]


# --------------------------------------------------------------------------- head detection


def test_head_detection_equals_diagonals_of_a_plain_forward(main_run, loaded):
    d = main_run[0]["analyses"]["detect"]
    high = min(20000, loaded.bridge.cfg.d_vocab)  # the seed's default, clipped to the vocabulary
    assert loaded.bridge.cfg.d_vocab < 20000, "the test tokenizer's vocabulary: the clipping is tested too"
    assert d["bos"] is True and d["token_range"] == [100, high] and d["batch"] == 3
    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(100, high, (3, 7), generator=g)
    tokens = torch.cat([torch.full((3, 1), loaded.bridge.tokenizer.bos_token_id), tokens, tokens], dim=1)
    with torch.no_grad():
        _, cache = loaded.bridge.run_with_cache(tokens, prepend_bos=False)
    for layer in range(2):
        expected = hand_scores(cache[f"blocks.{layer}.attn.hook_pattern"], 7, True).mean(0)  # [3, H]
        for i, kind in enumerate(["previous_token", "duplicate_token", "induction"]):
            assert d[kind][layer] == pytest.approx(expected[i].tolist(), abs=1e-6), kind
    assert d["per_head"] == d["induction"] and d["rank_by"] == "induction"
    view = d["view"]
    assert view["heads"] == ["L1H1"] and view["text"] == REPEATED * 2


def test_head_detection_without_bos_and_ranking_by_another_score(run, loaded):
    model = MODEL.replace("prepend_bos: true", "prepend_bos: false")
    results, _ = run("""
        - {kind: head_detection, id: detect, seq_len: 5, batch: 2, rank_by: previous_token, high: 99999999}
        - {kind: attention, heads: "top(detect, 2)", text: "one two"}
    """, model=model)
    a = results["analyses"]
    assert a["detect"]["bos"] is False and a["detect"]["per_head"] == a["detect"]["previous_token"]
    assert a["detect"]["token_range"] == [100, loaded.bridge.cfg.d_vocab]  # high clipped to the vocabulary
    assert "view" not in a["detect"]
    scores = torch.tensor(a["detect"]["previous_token"]).flatten()
    top = torch.argsort(scores, descending=True)[:2].tolist()
    assert a["attention"]["heads"] == [f"L{i // 4}H{i % 4}" for i in top]
    assert a["attention"]["prompts"][0]["tokens"][0] != "<|endoftext|>"


# --------------------------------------------------------------------------- the embedded Gemma (slow)


@pytest.mark.slow
def test_embedded_gemma_ablation_contribution_and_detection(tmp_path):
    from mi_dsl.running import run_spec

    data = DATA.replace("[[herbivorous, carnivorous], [bipedal, quadrupedal]]",
                        "[[endothermic, ectothermic], [toothed, toothless]]")
    model = "model:\n  source: embedded\n  prepend_bos: true\n"
    path = tmp_path / "gemma.yaml"
    path.write_text(spec_text("""
        - {kind: head_attribution, id: head_attr}
        - {kind: attention_vs_contribution, id: avc, heads: "L*H*", direction: logit_diff}
        - {kind: ablation, heads: "top(head_attr, 1)", positions: final}
        - {kind: head_detection, seq_len: 20, batch: 2, heads: "top(head_attr, 2)", text: "%s"}
    """ % REPEATED, model=model, data=data, pipeline="pipeline:\n  - sample: {n: 4, seed: 42}\n"))
    outcome = run_spec(path, progress=False, fresh=True, out_dir=str(tmp_path / "runs"))
    a = outcome.results["analyses"]
    per_head = torch.tensor(a["head_attr"]["per_head"]).flatten()
    means = torch.tensor([sum(h["contribution"]) / len(h["contribution"]) for h in a["avc"]["heads"]])
    assert torch.allclose(means, per_head, atol=1e-4)  # exact through Gemma's post-attention norm
    ablation = a["ablation"]
    layer, head = map(int, ablation["heads"][0][1:].split("H"))
    assert ablation["dla_after"][layer][head] == pytest.approx(0.0, abs=1e-6)
    assert torch.allclose(torch.tensor(ablation["dla_before"]), per_head.reshape(len(ablation["dla_before"]), -1),
                          atol=1e-4)
    assert ablation["metric_after"] != pytest.approx(ablation["metric_before"], abs=1e-4)
    detect = a["head_detection"]
    # Gemma-3-270m has clear previous-token and induction heads (0.67 and 0.78 at seq_len 20, tests/golden):
    # scores read at a wrong offset or from a wrong layer would be near 0 everywhere
    for kind in ("previous_token", "induction"):
        scores = torch.tensor(detect[kind])
        assert scores.max() > 0.4, kind
        assert scores.max() > 5 * scores.median(), kind
    assert not re.search(r"https?://", (outcome.run_dir / "figures" / "head_detection__view.html").read_text())


def test_attention_views_on_the_same_prompts_share_one_capture(run, monkeypatch):
    """The run keeps every head's patterns of a prompt once captured (runtime/patterns.py): the shared
    final-position pass of head_attribution keeps them during its sweep, so the views, the prompt
    browser and attention_vs_contribution read them without a forward, with the numbers a capture
    of their own gives (the cache off: a zero budget)."""
    import mi_dsl.runtime.patterns as attention
    from mi_dsl.runtime.executor import Executor

    analyses = """
        - {kind: head_attribution, id: head_attr}
        - {kind: attention, id: first, heads: [L1H2, L0H0], prompts: [0, 2]}
        - {kind: attention, id: second, heads: ["L0H*"], prompts: [2]}
        - {kind: attention_vs_contribution, id: avc, heads: [L1H0, L0H3], from: final, to: descriptor}
    """
    captures = []
    real = Executor.capture

    def counted(self, tokens, *args, **kwargs):
        captures.append(kwargs.get("stop_after"))
        return real(self, tokens, *args, **kwargs)

    monkeypatch.setattr(Executor, "capture", counted)
    cached, _ = run(analyses)
    with_cache = len(captures)
    # head_attribution's shared pass kept every head's patterns: no view ran a pattern sweep of its own
    assert not [stop for stop in captures if stop and "hook_pattern" in stop]
    monkeypatch.setattr(attention, "CACHE_BYTES", 0)
    captures.clear()
    alone, _ = run(analyses)
    assert with_cache < len(captures)  # the cache saved forwards
    for name in ("first", "second"):
        for a, b in zip(cached["analyses"][name]["prompts"], alone["analyses"][name]["prompts"]):
            torch.testing.assert_close(torch.tensor(a["patterns"]), torch.tensor(b["patterns"]), rtol=1e-5, atol=1e-6)
        assert cached["analyses"][name]["browse"]["prompts"] == alone["analyses"][name]["browse"]["prompts"]
    for a, b in zip(cached["analyses"]["avc"]["heads"], alone["analyses"]["avc"]["heads"]):
        torch.testing.assert_close(torch.tensor(a["attention"]), torch.tensor(b["attention"]), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(torch.tensor(a["contribution"]), torch.tensor(b["contribution"]),
                                   rtol=1e-5, atol=1e-5)
