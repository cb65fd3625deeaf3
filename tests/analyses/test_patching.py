"""Activation and attribution patching (analyses/activation_patching.py, attribution_patching.py).

On tiny random GPT-NeoX (the tokenizer built in the run) and grouped-query Gemma-3 models:
- the endpoints: patching the residual stream where clean and corrupted differ gives 1
  (denoising) or 0 (noising); where they agree it changes nothing;
- exact patching equals TransformerLens's own `transformer_lens.patching` functions, which
  run one forward per cell (so the stacked batches are checked against a per-cell loop);
- attribution patching equals exact patching where the metric is linear in the patched
  activation;
- selectors pick exactly what they name; batch sizes do not change a number.
The embedded Gemma-3-270m runs in the slow tests.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from mi_dsl.analyses._patching import baselines
from mi_dsl.core.registry import REGISTRY, load_all
from mi_dsl.errors import MiError, SpecMeaningError

from tests.random_sizes import tiny_variant
from tests.spec_parts import syllogism
from tests.word_tokenizer import word_tokenizer_file

# Built in the run (tests/word_tokenizer.py), with Pythia's token lengths for these words.
TOKENIZER = word_tokenizer_file()

# 8 pairs of prompts of one length; the descriptor (1 token) is the only difference between
# clean and corrupted; the first noun is 2 tokens (as in Pythia's tokenizer: a 2-token slot).
DATA = "\n" + syllogism(("birds",), (("big", "small"), ("wild", "tame")), ("Cows", "Horses"), equal_lengths=True) + """\
metric: logit_diff
analyses:
  - {kind: head_attribution, id: head_attr}
"""


SHARP = "tiny-sharp"


@pytest.fixture(scope="module", autouse=True)
def sharp_models():
    """The tiny shapes initialised with 10x the usual spread (initializer_range 0.2): sharper
    attention and logit differences of a few units, so patches move the metric visibly."""
    with tiny_variant(SHARP):
        yield


def model_yaml(architecture: str, source: str = "random") -> str:
    if source == "embedded":
        return "model: {source: embedded, prepend_bos: true}\n"
    tokenizer = f"  tokenizer: {TOKENIZER}\n  bos_token: '<|endoftext|>'\n" if architecture == "gpt_neox" else ""
    return (f"model:\n  source: random\n  architecture: {architecture}\n  size: {SHARP}\n  seed: 3\n"
            f"  prepend_bos: true\n{tokenizer}")


def write_spec(folder: Path, model: str, body: str = DATA) -> Path:
    path = folder / "spec.yaml"
    path.write_text("version: 1\nname: patching\n" + model + textwrap.dedent(body))
    return path


def with_analyses(text: str, body: str = DATA) -> str:
    """DATA with more analyses (YAML list items, one a line) after head_attr."""
    return body + textwrap.indent(textwrap.dedent(text).strip() + "\n", "  ")


def run_context(folder: Path, model: str, body: str = DATA):
    """The RunContext of a finished run of the spec (pipeline, baselines, its analyses)."""
    from mi_dsl.compile import prepare
    from mi_dsl.runtime.run import run_context as finished_context

    return finished_context(prepare(str(write_spec(folder, model, body)), [], []))


@pytest.fixture(scope="module")
def neox(tmp_path_factory):
    return run_context(tmp_path_factory.mktemp("neox"), model_yaml("gpt_neox"))


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    return run_context(tmp_path_factory.mktemp("gemma"), model_yaml("gemma3"))


def linear_final_norm(divisor: float):
    """Forward hooks that replace the final norm by its linear part: the residual entering
    ln_final, centred, divided by a constant (the exact-linear checks of attribution patching)."""
    final = {}

    def save(act, hook=None):
        final["resid"] = act
        return act

    def linear_norm(act, hook=None):
        x = final["resid"]
        return (x - x.mean(-1, keepdim=True)) / divisor

    return [("ln_final.hook_in", save), ("unembed.hook_in", linear_norm)]


def compiled(run, kind: str = "activation_patching", **params):
    """An analysis's parameters compiled against the run's spec, as the compiler compiles the
    spec's own (defaults filled, selectors compiled); earlier results are rankable."""
    from mi_dsl.compile.compiler import compile_analysis

    return compile_analysis(run.spec, {"kind": kind, **params}, known=list(run.results)).params


def compute(run, kind: str = "activation_patching", id: str = None, **params):
    """Run one analysis on a finished run, as the runner does (under no_grad); keep its result."""
    load_all()
    with torch.no_grad():
        result = REGISTRY[kind].implementation().compute(compiled(run, kind, **params), run)
    run.results[id or kind] = result
    return result


def grid(result, key: str = "values") -> torch.Tensor:
    """The result grid as a tensor (None -> nan)."""
    def fill(x):
        return [fill(v) for v in x] if isinstance(x, list) else (float("nan") if x is None else x)
    return torch.tensor(fill(result.data[key]), dtype=torch.float64)


def differing_positions(run):
    pair = run.pairs[0]
    return [i for i, (a, b) in enumerate(zip(pair.clean.ids, pair.corrupted.ids)) if a != b]


# --------------------------------------------------------------------------- endpoints


def test_denoising_and_noising_endpoints(neox):
    n_positions = len(neox.pairs[0].clean.ids)
    changed = differing_positions(neox)
    assert changed == [i for s, e in neox.pairs[0].clean.spans["descriptor"] for i in range(s, e)]
    same = [p for p in range(n_positions) if p not in changed]
    for direction, at_changed, at_same in (("denoising", 1.0, 0.0), ("noising", 0.0, 1.0)):
        norm = grid(compute(neox, target="resid_pre", layers=[0], direction=direction), "normalized")[0]
        # every position at once: the positions that differ, the others being identical anyway
        assert norm[changed] == pytest.approx(at_changed, abs=1e-4), direction
        # patching a position whose activations agree changes nothing
        assert norm[same] == pytest.approx(at_same, abs=1e-4), direction
    # a selector naming the slot patches it as one column
    whole = compute(neox, target="resid_pre", layers=[0], positions="descriptor")
    assert grid(whole, "normalized")[0, 0] == pytest.approx(1.0, abs=1e-4)
    assert whole.data["baselines"] == {"clean": neox.baselines["clean"], "corrupted": neox.baselines["corrupted"]}


# --------------------------------------------------------------------------- TransformerLens


def tl_patch(run, function: str, direction: str = "denoising", index=None):
    """TransformerLens's own patching (one forward per cell, full logits) on the same model and
    prompts; `index` (rows of TL's index axes) restricts it to those cells, flattened."""
    import pandas as pd
    import transformer_lens.patching as tlp

    model = run.model
    base, source = ("corrupted", "clean") if direction == "denoising" else ("clean", "corrupted")
    answers, foils = run.answers(), run.foils()
    rows = torch.arange(len(answers))

    def metric(logits):
        last = logits[:, -1]
        return (last[rows, answers] - last[rows, foils]).mean()

    kwargs = {}
    if index is not None:
        kwargs = {"index_axis_names": None, "index_df": pd.DataFrame(index[1], columns=index[0])}
    original = tlp.tqdm
    tlp.tqdm = lambda it, *a, **k: it
    try:
        with torch.no_grad():
            _, cache = model.run_with_cache(run.tokens(source))
            return getattr(tlp, function)(model, run.tokens(base), cache, metric, **kwargs).double()
    finally:
        tlp.tqdm = original


def cells_of(result):
    """[(grid index, {axis: index})] of the cells a result patched."""
    d = result.data
    heads = [int(h[2:] if h.startswith("KV") else h[1:]) for h in d["heads"] or []]
    out = []
    for index in torch.cartesian_prod(*[torch.arange(n) for n in grid(result).shape]).reshape(-1, len(d["axes"])):
        index = tuple(index.tolist())
        if torch.isnan(grid(result)[index]):
            continue
        named = dict(zip(d["axes"], index))
        axes = {"layer": d["layers"][named["layer"]]}
        if "head" in named:
            axes["head"] = heads[named["head"]]
        if "position" in named:
            (axes["pos"],) = d["positions"][named["position"]]["indices"]
        out.append((index, axes))
    return out


def agrees_with_tl(run, result, function, tl_axes, direction="denoising"):
    """Our grid equals TL's values for the same cells (TL given exactly our cells)."""
    cells = cells_of(result)
    rename = {"head_index": "head", "dest_pos": "pos"}
    index = (list(tl_axes), [[axes[rename.get(a, a)] for a in tl_axes] for _, axes in cells])
    theirs = tl_patch(run, function, direction, index)
    ours = torch.tensor([float(grid(result)[i]) for i, _ in cells], dtype=torch.float64)
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=0), float((ours - theirs).abs().max())
    # not vacuous: the cells differ from each other well beyond the tolerance
    assert float((theirs - theirs.mean()).abs().max()) > 1e-2


SOME_POSITIONS = ["descriptor", "final"]
LAYER_POS, LAYER_HEAD = ("layer", "pos"), ("layer", "head")
NEOX_CASES = [  # (our target, TransformerLens function, TL's index axes)
    ("resid_pre", "get_act_patch_resid_pre", LAYER_POS),
    ("attn_out", "get_act_patch_attn_out", LAYER_POS),
    ("mlp_out", "get_act_patch_mlp_out", LAYER_POS),
    ("z", "get_act_patch_attn_head_out_all_pos", LAYER_HEAD),
    ("q", "get_act_patch_attn_head_q_all_pos", LAYER_HEAD),
    ("k", "get_act_patch_attn_head_k_all_pos", LAYER_HEAD),
    ("v", "get_act_patch_attn_head_v_all_pos", LAYER_HEAD),
    ("pattern", "get_act_patch_attn_head_pattern_all_pos", ("layer", "head_index")),
    ("z_by_position", "get_act_patch_attn_head_out_by_pos", ("layer", "pos", "head")),
    ("pattern_by_position", "get_act_patch_attn_head_pattern_by_pos", ("layer", "head_index", "dest_pos")),
]


def params_for(target: str):
    """Every cell of the all-position head targets; a few positions of the others, and one
    layer of the head-by-position ones (TL's full-logit forward per cell makes them slow)."""
    if target in ("z", "q", "k", "v", "pattern"):
        return {"target": target}
    layers = {"layers": [1]} if target.endswith("_by_position") else {}
    return {"target": target, "positions": SOME_POSITIONS, **layers}


@pytest.mark.parametrize("target,function,tl_axes", NEOX_CASES, ids=[c[0] for c in NEOX_CASES])
def test_exact_patching_equals_transformer_lens(neox, target, function, tl_axes):
    agrees_with_tl(neox, compute(neox, **params_for(target)), function, tl_axes)


def test_noising_equals_transformer_lens_with_runs_swapped(neox):
    result = compute(neox, target="z", direction="noising")
    agrees_with_tl(neox, result, "get_act_patch_attn_head_out_all_pos", LAYER_HEAD, "noising")


GEMMA_CASES = [
    ("k", "get_act_patch_attn_head_k_all_pos", LAYER_HEAD),
    ("v", "get_act_patch_attn_head_v_all_pos", LAYER_HEAD),
    ("k_by_position", "get_act_patch_attn_head_k_by_pos", ("layer", "pos", "head")),
    ("resid_mid", "get_act_patch_resid_mid", LAYER_POS),
]


@pytest.mark.parametrize("target,function,tl_axes", GEMMA_CASES, ids=[c[0] for c in GEMMA_CASES])
def test_grouped_query_gemma_equals_transformer_lens(gemma, target, function, tl_axes):
    result = compute(gemma, **params_for(target))
    agrees_with_tl(gemma, result, function, tl_axes)
    if target.startswith(("k", "v")):  # one key/value head serves the 4 query heads
        assert result.data["heads"] == ["KV0"]
        assert {r["head"] for r in result.tables["cells"]} == {f"L{l}KV0" for l in result.data["layers"]}


def test_resid_mid_is_refused_without_it(neox):
    from mi_dsl.errors import RunError

    with pytest.raises(RunError, match="no resid_mid"):
        compute(neox, target="resid_mid")


# --------------------------------------------------------------------------- batching


def test_batch_size_and_stacking_do_not_change_numbers(neox):
    """The cells of a layer patched from one position on in one forward (keys and values before it
    reused), rows of a cell split across batches of 7 or 5 rows, and a plain loop of one
    run_with_hooks per cell all agree."""
    params = dict(target="z_by_position", positions=["noun", "final"])  # noun: 2 tokens patched together
    default = compute(neox, **params)
    n_layers, n_columns = len(default.data["layers"]), 2
    assert default.data["passes"]["kv_reuse"]
    assert default.data["passes"]["patched_forwards"] == n_layers * n_columns  # one per layer and first position
    for batch_size in (7, 5):  # 8 prompts: a cell's rows split across batches
        other = compute(neox, batch_size=batch_size, **params)
        assert torch.allclose(grid(other), grid(default), atol=1e-6)
    per_group = len(neox.pairs) * len(default.tables["cells"]) // (n_layers * n_columns)  # rows of one forward
    assert other.data["passes"]["patched_forwards"] == n_layers * n_columns * -(-per_group // 5)
    assert torch.allclose(grid(default), naive_loop(neox, default), atol=1e-6)


def naive_loop(run, result):
    """One forward of all prompts per cell, patching z at the cell's positions in place."""
    clean, corrupted = run.tokens("clean"), run.tokens("corrupted")
    rows = torch.arange(len(clean))
    answers, foils = run.answers(), run.foils()
    out = torch.full(grid(result).shape, float("nan"), dtype=torch.float64)
    with torch.no_grad():
        _, cache = run.model.run_with_cache(clean, names_filter=lambda n: n.endswith("hook_z"))
        for li, layer in enumerate(result.data["layers"]):
            for hi in range(run.cfg.n_heads):
                for ci, column in enumerate(result.data["positions"]):
                    name, pos = f"blocks.{layer}.attn.hook_z", column["indices"]

                    def hook(z, hook=None, name=name, pos=pos, head=hi):
                        z[:, pos, head] = cache[name][:, pos, head]
                        return z
                    logits = run.model.run_with_hooks(corrupted, fwd_hooks=[(name, hook)])[:, -1]
                    out[li, hi, ci] = float((logits[rows, answers] - logits[rows, foils]).mean())
    return out


# --------------------------------------------------------------------------- attribution


def test_attribution_equals_exact_where_the_metric_is_linear(neox):
    """Make the metric linear in the last layer's attention and MLP outputs, then compare.

    The logit difference is (W_U[:, a] - W_U[:, f]) . LN_final(resid_final) at the final
    position. With fold_ln the final norm is centring (linear) divided by the residual's
    norm (not linear). A hook replaces the unembedding's input by the centred residual
    (divided by a constant: 1, which keeps the gap well above float32 noise), i.e. the final
    norm's linear part, in every run (baselines,
    exact and attribution alike). In a parallel-residual NeoX block the last layer's
    attn_out and mlp_out are added straight into that final residual, attn_out is linear
    in z (z @ W_O), z is linear in v and in the pattern (z = pattern @ v), and nothing
    reads them after: so the metric is exactly linear in each of attn_out, mlp_out, z, v
    and pattern of the last layer, where the first-order estimate must be exact.
    """
    cases = [(t, "denoising") for t in ("attn_out", "mlp_out", "z", "z_by_position", "v", "pattern")]
    for estimate in attribution_equals_exact_linearised(neox, cases + [("z", "noising")]):
        assert estimate.data["comparison"]["spearman"] == pytest.approx(1.0, abs=1e-6)


def attribution_equals_exact_linearised(run, cases):
    """With the final norm replaced by its linear part (linear_final_norm) in every run, baselines
    included: for each (target, direction) of the last layer, attribution patching equals exact
    patching (atol 1e-4 on normalised cells that differ by more than 1e-2). Returns the estimates."""
    last = run.cfg.n_layers - 1
    saved = dict(run.baselines)
    estimates = []
    try:
        with run.model.hooks(fwd_hooks=linear_final_norm(1.0)):
            run.baselines.clear()  # the baselines of the linearised model, computed as the analyses do
            with torch.no_grad():
                linear = baselines(run)
            run.baselines.update(clean=linear.clean, corrupted=linear.corrupted)
            assert abs(linear.gap) > 0.1 and abs(linear.clean - saved["clean"]) > 1e-3  # the hook works
            for target, direction in cases:
                exact = compute(run, target=target, layers=[last], direction=direction, id="exact")
                estimate = compute(run, "attribution_patching", target=target, layers=[last],
                                   direction=direction, compare_with="exact")
                e, a = grid(exact, "normalized"), grid(estimate, "normalized")
                e, a = e[~e.isnan()], a[~a.isnan()]
                assert torch.allclose(a, e, atol=1e-4), (target, float((a - e).abs().max()))
                assert float((e - e.mean()).abs().max()) > 1e-2, target  # cells differ
                estimates.append(estimate)
    finally:
        run.baselines.clear()
        run.baselines.update(saved)
    return estimates


def test_attribution_is_a_first_order_estimate(neox):
    """Off the linear case it differs from exact patching but ranks cells alike (the
    random tiny model is nearly linear), with one forward and backward per batch."""
    exact = compute(neox, target="z", id="z_exact")
    estimate = compute(neox, "attribution_patching", target="z")  # finds z_exact itself
    c = estimate.data["comparison"]
    assert c["with"] == "z_exact" and c["cells"] == neox.cfg.n_layers * neox.cfg.n_heads
    assert c["spearman"] > 0.9
    passes = estimate.data["passes"]
    assert passes["source_forwards"] == 1 and passes["forward_backward_passes"] == 1
    assert passes["kv_reuse"]  # the prompts first differ at the descriptor: positions before it are not run
    assert estimate.data["per_head"] is not None and exact.data["per_head"] is not None


def test_attribution_batches_fit_the_memory_budget_with_every_block_kept(neox):
    """A forward kept for a backward holds every block's saved tensors, not one block's: with a
    budget of three rows of that size, attribution patching runs its pairs three rows a batch
    (the one-block estimate would put every pair in one batch and overrun the budget). A pattern
    target runs whole prompts, and `mi-run plan` tells that batch size before the model loads. Other
    targets run positions p.. only (the prompts first differ at p) after the keys and values of the
    positions before, and a row is sized as that forward: fewer positions, each query's scores over
    all of them, the earlier keys and values held; more rows fit than the plan's whole-prompt bound."""
    from dataclasses import replace
    from types import SimpleNamespace

    from mi_dsl.compile.memory import activation_bytes_per_row, estimate as plan_estimate, graph_bytes_per_row

    cfg, n_pairs = neox.cfg, len(neox.pairs)
    width = max(len(p.corrupted.ids) for p in neox.pairs)
    d_mlp = getattr(cfg, "d_mlp", None) or 4 * cfg.d_model

    def row(positions: int, past: int = 0) -> int:
        return (activation_bytes_per_row(positions, cfg.d_model, d_mlp, cfg.n_heads, past)
                + graph_bytes_per_row(positions, cfg.d_model, d_mlp, cfg.n_heads, cfg.d_head, cfg.n_layers, past))

    first = differing_positions(neox)[0]
    continued = row(width - first, first)
    assert continued < row(width) and n_pairs > 3
    for target, size in (("pattern", row(width)), ("z", continued)):
        assert n_pairs * activation_bytes_per_row(width, cfg.d_model, d_mlp, cfg.n_heads) < 3.5 * size
        saved = neox.executor.memory_gb
        neox.executor.memory_gb = 3.5 * size / 2 ** 30
        try:
            estimate = compute(neox, "attribution_patching", target=target, id="budgeted")
        finally:
            neox.executor.memory_gb = saved
        passes = estimate.data["passes"]
        assert passes["kv_reuse"] == (target != "pattern")
        assert passes["token_work_saved"] == (0 if target == "pattern" else round(first / width, 4))
        assert passes["forward_backward_passes"] == -(-n_pairs // 3), target
    # `mi-run plan` tells the whole prompts' batch size before the model loads
    step = SimpleNamespace(id="budgeted", kind="attribution_patching")
    budget = 3.5 * row(width) / 2 ** 30
    plan = replace(neox.plan, analyses=neox.plan.analyses + (step,), memory_gb=budget, batch_size="auto")
    told = plan_estimate(neox.spec, plan, cfg.d_vocab, width)
    assert told["backward"]["analyses"] == ["budgeted"] and told["backward"]["batch_rows"] == 3


def test_spearman():
    from mi_dsl.analyses._patching import spearman

    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    assert spearman(x, x ** 3) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    # ties take the average rank: ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4)
    assert spearman(torch.tensor([1.0, 2.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0, 4.0])) == \
        pytest.approx(0.9486833, abs=1e-6)


# --------------------------------------------------------------------------- selectors


def test_head_selectors_pick_exactly_their_heads(neox):
    table = neox.results["head_attr"].data["per_head"]
    ranked = sorted(((v, l, h) for l, row in enumerate(table) for h, v in enumerate(row)), reverse=True)
    top3 = {(l, h) for _, l, h in ranked[:3]}
    result = compute(neox, target="z", heads=["top(head_attr, 3)", "L1H2"])
    values = grid(result)
    rows = result.data["layers"]  # the grid's rows: only the layers the selectors reach
    picked = {(l, h) for row, l in enumerate(rows) for h in range(4) if not torch.isnan(values[row, h])}
    assert picked == top3 | {(1, 2)}
    assert {r["head"] for r in result.tables["cells"]} == {f"L{l}H{h}" for l, h in picked}
    assert "per_head" not in result.data  # a partial grid is no ranking table
    result = compute(neox, target="z", heads="L0H*", layers=[0, 1])
    assert result.data["layers"] == [0] and len(result.tables["cells"]) == 4


def test_grouped_query_head_selector_picks_the_kv_head(gemma):
    result = compute(gemma, target="v", heads="L1H3")
    assert [r["head"] for r in result.tables["cells"]] == ["L1KV0"]


def test_position_selectors_pick_exactly_their_positions(neox):
    prompt = neox.pairs[0].clean
    spans = prompt.spans
    n = len(prompt.ids)
    result = compute(neox, target="resid_pre", layers=[1], positions=["final", "noun", "category#2[-1]", 4, -2])
    columns = result.data["positions"]
    assert [c["indices"] for c in columns] == [
        [n - 1], list(range(*spans["noun"][0])), [spans["category"][1][1] - 1], [4], [n - 2]]
    assert len(columns[1]["indices"]) == 2 and columns[1]["slot"] == "noun"  # 'Cows' is 2 tokens, patched together
    assert columns[0]["tokens"] == [neox.tokenizer.token_str(prompt.ids[-1])]
    # all-position head targets patch the union of the selected positions, once per head
    z = compute(neox, target="z", positions=["final", "noun"])
    assert z.data["patched_positions"] == sorted([n - 1, *range(*spans["noun"][0])])
    # patching z at the final position only equals the final column of z_by_position
    by_pos = compute(neox, target="z_by_position", positions="final")
    assert torch.allclose(grid(compute(neox, target="z", positions="final")), grid(by_pos)[:, :, 0], atol=1e-6)


# --------------------------------------------------------------------------- the spec


def compile_only(tmp_path, analyses: str, metric: str = "logit_diff"):
    from mi_dsl.compile import prepare

    data = DATA.replace("metric: logit_diff", f"metric: {metric}")
    if metric != "logit_diff":  # head attribution splits the logit difference: say so, or it is refused
        data = data.replace("{kind: head_attribution, id: head_attr}",
                            "{kind: head_attribution, id: head_attr, direction: logit_diff}")
    body = with_analyses(analyses, data)
    p = prepare(str(write_spec(tmp_path, model_yaml("gemma3"), body)), [], [], need_tokenizer=False)
    return p.spec, p.plan, p.dataset, p.skipped


def test_compile_checks_the_parameters(tmp_path):
    _, plan, _, _ = compile_only(tmp_path, """
      - {kind: activation_patching, id: ap, target: z, heads: "top(head_attr, 3)", positions: [final, noun]}
      - {kind: attribution_patching, target: z, compare_with: ap}
    """)
    ap, attr = plan.analyses[1:]
    assert ap.depends_on == ("head_attr",) and attr.depends_on == ("ap",)
    # + the sweep recording keys and values (read to the final norm) and prefix reuse's residuals
    assert ap.hooks == ("blocks.{L}.attn.hook_z", "unembed.hook_in", "ln_final.hook_in", "blocks.{L}.hook_resid_pre")
    cases = [
        ("- {kind: activation_patching, target: resid_pre, heads: L0H1}", "has no heads to select"),
        ("- {kind: activation_patching, positions: nuon}", "nuon"),
        ("- {kind: activation_patching, heads: 'top(nothing, 3)'}", "nothing"),
        ("- {kind: attribution_patching, compare_with: head_attr}", "must name an activation_patching"),
        ("- {kind: activation_patching, id: ap, target: q}\n- {kind: attribution_patching, compare_with: ap}",
         "patches q, not z"),
        ("- {kind: attribution_patching, compare_with: ap}\n- {kind: activation_patching, id: ap}",
         "comes later"),
    ]
    for text, message in cases:
        with pytest.raises(MiError, match=message):
            compile_only(tmp_path, text)
    with pytest.raises(SpecMeaningError, match="linear in the final residual"):
        compile_only(tmp_path, "- {kind: attribution_patching}", metric="rank")


def test_a_spec_runs_end_to_end_with_figures(tmp_path):
    from mi_dsl.running import run_spec

    analyses = """
      - {kind: activation_patching, id: resid, target: resid_pre}
      - {kind: activation_patching, id: heads, target: z_by_position, positions: [noun, final],
         heads: 'top(head_attr, 2)'}
      - {kind: activation_patching, id: z, target: z}
      - {kind: attribution_patching, target: z}
    """
    outcome = run_spec(write_spec(tmp_path, model_yaml("gpt_neox"), with_analyses(analyses)),
                       progress=False, out_dir=str(tmp_path / "runs"))
    a = outcome.results["analyses"]
    assert a["attribution_patching"]["comparison"]["with"] == "z"
    figures = {p.name for p in (outcome.run_dir / "figures").iterdir() if p.suffix == ".html"}
    assert {"resid__activation_patching.html", "heads__activation_patching.html", "z__activation_patching.html",
            "attribution_patching__attribution_patching.html",
            "attribution_patching__attribution_vs_exact.html"} <= figures
    assert (outcome.run_dir / "tables" / "resid__cells.csv").is_file()
    heads = a["heads"]
    assert heads["axes"] == ["layer", "head", "position"] and len(heads["positions"]) == 2
    assert sum(v is not None for layer in heads["values"] for head in layer for v in head) == 2 * 2
    # each prompt's value of the largest cells: their mean is the cell's (normalising is linear)
    for name in ("z", "attribution_patching"):
        top, cells = a[name]["top_per_prompt"], a[name]["top"]
        assert top["cells"] == [c["label"] for c in cells[:len(top["cells"])]] and len(top["cells"]) == 8
        for cell, values in zip(cells, top["normalized"]):
            assert sum(values) / len(values) == pytest.approx(cell["normalized"], rel=1e-4, abs=1e-6)
        rows = outcome.results["tables"][name]["per_prompt"]
        assert [r[top["cells"][0]] for r in rows] == top["normalized"][0] and rows[0]["pair"] == 0
    assert "z__activation_patching_per_prompt.html" in figures


# --------------------------------------------------------------------------- the embedded Gemma


@pytest.mark.slow
def test_embedded_gemma_agrees_with_transformer_lens_and_attribution(tmp_path):
    """Gemma-3-270m (grouped-query, post-attention norms, 262k vocabulary): exact patching of z
    and k equals TransformerLens's on three layers; attribution ranks the heads alike."""
    body = DATA.replace("nouns: {items: [Cows, Horses]}", "nouns: {items: [Dogs, Cows]}")
    run = run_context(tmp_path, model_yaml("gemma3", "embedded"), body)
    assert run.baselines["clean"] - run.baselines["corrupted"] > 1.0
    layers = [0, run.cfg.n_layers // 2, run.cfg.n_layers - 1]
    exact = compute(run, target="z", layers=layers, id="z")
    agrees_with_tl(run, exact, "get_act_patch_attn_head_out_all_pos", LAYER_HEAD)
    estimate = compute(run, "attribution_patching", target="z", layers=layers)
    print("spearman", estimate.data["comparison"]["spearman"], estimate.data["comparison"]["max_abs_difference"])
    assert estimate.data["comparison"]["spearman"] > 0.5
    k = compute(run, target="k", layers=layers)
    assert k.data["heads"] == ["KV0"]
    agrees_with_tl(run, k, "get_act_patch_attn_head_k_all_pos", LAYER_HEAD)
