"""Patching with continuation metrics (answers written continuation(...)): attribution patching,
and exact patching of head targets (z, q, k, v) against a hand-written plain transformers patch.

The estimate is (source - base activation) . d metric / d activation at the base run, where
the metric is the teacher-forced continuation log-probability summed over the continuation's
tokens; for continuation_logprob_diff the answer's forward minus the foil's, two different
token sequences after the prompt, whose gradients at a prompt position add up. Checked:
- against the same quantity written by hand with torch.autograd in plain transformers
  (float64, each prompt + continuation on its own, no padding, no hooks of ours), on tiny
  random models with roughened norms and biases, prompts of two lengths aligned by name and
  continuations of one to three tokens;
- exactly equal to exact continuation patching where the metric is linear in the patched
  activation (a construction: see the test);
- ranking cells like exact continuation patching on a tiny model, and on the embedded Gemma.
Exact patching of one head's z, q, k or v (grouped-query Llama: k and v per key/value head) at
two named positions equals patching that head's slice by hand with torch hooks on the plain
transformers modules (q/k/v projections' outputs, o_proj's input), each prompt + continuation
on its own, log-probabilities summed by hand.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.analyses.test_patching import SHARP, attribution_equals_exact_linearised, compute, sharp_models  # noqa: F401
from tests.spec_parts import syllogism
from tests.test_continuations import countries, compiled, hf_layers, write_spec  # noqa: F401  (countries: a fixture)


def _run(session):
    return session.context_for(session.pairs, session.baselines)


def _slot_end(prompt, slot: str) -> int:
    return prompt.spans[slot][0][1] - 1


def _base_and_source(pair, direction: str):
    return (pair.corrupted, pair.clean) if direction == "denoising" else (pair.clean, pair.corrupted)


def _with_leaf(model, layer: int, holder: dict):
    """A forward pre-hook on HF layer `layer` that swaps its input for a leaf tensor (its gradient is
    d output / d resid_pre[layer]) and keeps it in holder['leaf']."""
    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        holder["leaf"] = hidden.detach().clone().requires_grad_(True)
        if args:
            return (holder["leaf"],) + tuple(args[1:]), kwargs
        return args, dict(kwargs, hidden_states=holder["leaf"])

    return hf_layers(model)[layer].register_forward_pre_hook(hook, with_kwargs=True)


def reference_estimates(model_dir: Path, pairs, layer: int, direction: str, sides=("answer", "foil")) -> dict:
    """{position name: [per pair]} (source - base resid_pre[layer]) . d metric / d resid_pre[layer] at the
    base prompt's `final` or `country[-1]` position (the source's position of the same name), written
    by hand: a float64 plain transformers forward of the base prompt followed by each continuation on
    its own, its summed log-probability, torch.autograd.grad; the answer's gradient minus the foil's."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), torch_dtype=torch.float64).eval()
    out = {"final": [], "country[-1]": []}
    for pair in pairs:
        base, source = _base_and_source(pair, direction)
        with torch.no_grad():
            hidden = {which: model(torch.tensor([p.ids]), output_hidden_states=True).hidden_states[layer][0]
                      for which, p in (("base", base), ("source", source))}
        gradient = torch.zeros_like(hidden["base"])
        for side, sign in (("answer", 1.0), ("foil", -1.0)):
            if side not in sides:
                continue
            continuation = pair.answers if side == "answer" else pair.foils
            holder: dict = {}
            handle = _with_leaf(model, layer, holder)
            try:
                logp = model(torch.tensor([list(base.ids) + list(continuation)])).logits[0].log_softmax(-1)
            finally:
                handle.remove()
            total = sum(logp[len(base.ids) - 1 + i, t] for i, t in enumerate(continuation))
            gradient += sign * torch.autograd.grad(total, holder["leaf"])[0][0, :len(base.ids)]
        for name, at in (("final", lambda p: len(p.ids) - 1), ("country[-1]", lambda p: _slot_end(p, "country"))):
            delta = hidden["source"][at(source)] - hidden["base"][at(base)]
            out[name].append(float(delta @ gradient[at(base)]))
    return out


@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_attribution_with_a_continuation_metric_equals_the_gradient_by_hand(countries, direction):  # noqa: F811
    """Every cell (layer x position, aligned by name across prompts of two lengths) and prompt equals
    the hand-written autograd estimate; batches of 4 prompts cut the dataset unevenly."""
    from mi_dsl.analyses import _patching as core

    _, model_dir, session = countries
    run = _run(session)
    params = compiled(run, {"kind": "attribution_patching", "target": "resid_pre",
                            "positions": ["country[-1]", "final"], "direction": direction})
    with torch.no_grad():  # as the runner computes: the engine turns gradients on itself
        grid = core.resolve(params, run)
        got, passes = core.attribution_patching(run, grid, batch_size=4)
    assert passes["forward_backward_passes"] == 4  # 2 batches x (answer's forward + foil's forward)
    names = [c.label.split(" (")[0] for c in grid.columns]
    assert names == ["country[-1]", "final"]
    for cell, row in zip(grid.cells, got):
        column = names[cell.grid_index[-1]]
        expected = reference_estimates(model_dir, run.pairs, cell.layer, direction)[column]
        assert row.tolist() == pytest.approx(expected, rel=1e-4, abs=1e-5), (cell.label, column)
    # the check can fail: estimates are not all zero, and the foil's forward carries its own gradient
    assert got.abs().max() > 0.05
    answer_only = reference_estimates(model_dir, run.pairs, grid.cells[-1].layer, direction, sides=("answer",))
    last_column = names[grid.cells[-1].grid_index[-1]]
    assert max(abs(a - b) for a, b in zip(answer_only[last_column], got[-1].tolist())) > 0.05


# The syllogism prompts of tests/analyses/test_patching.py (one length), answers as continuations.
SYLLOGISM = syllogism(("birds",), (("big", "small"), ("wild", "tame")), ("Cows", "Horses"), equal_lengths=True)
ONE_TOKEN = ('continuation(" " + descriptor)', 'continuation(" " + opposite(descriptor))')
SHARED_PREFIX = ('continuation(" " + category + " " + descriptor)',
                 'continuation(" " + category + " " + opposite(descriptor))')


def syllogism_run(folder: Path, size: str, answers):
    from mi_dsl.compile import prepare
    from mi_dsl.runtime.run import run_context

    body = SYLLOGISM.replace("""'first_token(" " + descriptor)'""", f"'{answers[0]}'").replace(
        """'first_token(" " + opposite(descriptor))'""", f"'{answers[1]}'")
    assert body.count("continuation(") == 2
    return run_context(prepare(str(write_spec(folder, "gpt_neox", size, body=body)), [], []))


@pytest.mark.parametrize("answers,length,targets", [(ONE_TOKEN, 1, ("attn_out", "mlp_out", "z", "v", "pattern")),
                                                    (SHARED_PREFIX, 2, ("v",))], ids=["one_token", "shared_prefix"])
def test_attribution_equals_exact_continuation_patching_where_the_metric_is_linear(rough_models, tmp_path,
                                                                                  answers, length, targets):
    """A sum of log-softmaxes is not linear, so the construction makes it so. Answer and foil
    continuations differ in their last token only, so both are read from ONE forward of the same
    tokens (runtime/continuation.py), and answer minus foil is, token by token, log P(a_i) - log P(f_i):
    identical tokens cancel exactly, and at the last one the log-sum-exps (same position, same
    forward) cancel, leaving logit(a_last) - logit(f_last) at the last read position. With the final
    norm replaced by its linear part (the hook of test_patching's linear test) that is linear in the
    final residual at that position. In the parallel-residual NeoX block the last layer's attn_out
    and mlp_out are added straight into it, z and v feed it linearly (z = pattern @ v, attn_out = z
    W_O) and so does the pattern row of the read position; nothing reads them after. One-token
    continuations: read at the prompt's final position, so all five targets are exactly linear
    there. Two-token continuations (" birds big" / " birds small"): read at the continuation's
    position after the prompt, which only v at prompt positions reaches (through that position's
    attention, with a pattern the patch leaves alone): v is exactly linear, at prompt positions."""
    run = syllogism_run(tmp_path, rough_models, answers)
    assert {(len(p.answers), len(p.foils)) for p in run.pairs} == {(length, length)}
    cases = [(t, "denoising") for t in targets] + [(targets[-1], "noising")]
    for estimate in attribution_equals_exact_linearised(run, cases):
        assert "summed over the continuation's tokens" in estimate.convention


def test_attribution_ranks_cells_like_exact_continuation_patching(sharp_models, tmp_path):
    """Off the linear case it is a first-order estimate: it must order cells as exact patching does.
    z by position (2 layers x 4 heads x {country[-1], final}: 16 cells), prompts of two lengths, on
    test_patching's sharp tiny NeoX (initializer_range 0.2: logit differences of a few units, so the
    sum of log-softmaxes over up to three tokens bends). Threshold 0.8: over model seeds 1-8 of this
    spec (a change of the test vocabulary re-seeds it in effect) Spearman was 0.94-1.0; the smallest
    effects sit within each other's second-order error, so their order is noise, and the threshold
    leaves room for that, not for a wrong gradient. Not on the sharp or rough tiny Llama: there the
    first-order estimate itself ranks poorly on some seeds (0.24-0.97 over the same seeds), and the
    hand-gradient test above shows that is the method's error, not the code's."""
    from mi_dsl.compile import prepare
    from mi_dsl.runtime.run import run_context

    run = run_context(prepare(str(write_spec(tmp_path, "gpt_neox", SHARP)), [], []))
    exact = compute(run, target="z_by_position", positions=["country[-1]", "final"], id="z_exact")
    estimate = compute(run, "attribution_patching", target="z_by_position", positions=["country[-1]", "final"])
    c = estimate.data["comparison"]
    assert c["with"] == "z_exact" and c["cells"] == 2 * run.cfg.n_layers * run.cfg.n_heads == 16
    assert c["spearman"] > 0.8, c["spearman"]
    assert c["max_abs_difference"] > 1e-4  # not linear: the estimate is not exact here
    assert estimate.data["passes"]["forward_backward_passes"] == 2  # one batch: answer's forward + foil's
    assert "first-order" in estimate.convention and "summed" in estimate.convention
    assert exact.data["method"] == "exact"


@pytest.mark.slow
def test_attribution_with_a_continuation_metric_runs_every_position(sharp_models, tmp_path):  # noqa: F811
    """Prompts of one length that first differ at the descriptor, on a model whose forward can continue
    after earlier keys and values: a metric read at the final position would skip the positions before
    (tests/runtime/test_prefix_reuse.py). A continuation metric's forwards append each side's
    continuation after the prompt, so they run every position."""
    from mi_dsl.runtime.shared_prefix import continuable

    run = syllogism_run(tmp_path, SHARP, ONE_TOKEN)
    clean, corrupted = run.tokens("clean"), run.tokens("corrupted")
    assert int((clean != corrupted).any(0).float().argmax()) > 0
    assert continuable(run.executor, corrupted.tolist()) > 0
    estimate = compute(run, "attribution_patching", target="z")
    passes = estimate.data["passes"]
    assert not passes["kv_reuse"] and passes["token_work_saved"] == 0
    assert passes["forward_backward_passes"] == 1  # answer and foil read from one forward (one token each)


def test_embedded_gemma_attribution_ranks_like_exact_continuation_patching(tmp_path):
    """Gemma-3-270m, the four countries of test_continuations (capitals of one to three tokens, prompts
    of two lengths), continuation_logprob_diff: attention outputs at the country's last token and the
    final position, every layer (36 cells). Attribution patching of attention outputs tracks exact
    patching closely on real models (Kramar et al. 2024, AtP*); when written: Spearman 0.977, Pearson
    0.998. Thresholds 0.85 / 0.9 leave room for another BLAS, yet a wrong sign, a missing side's
    gradient or misread positions break them."""
    from mi_dsl.compile import prepare
    from mi_dsl.runtime.run import run_context

    from tests.test_continuations import FACTS

    path = tmp_path / "spec.yaml"
    path.write_text("version: 1\nname: facts\nmodel: {source: embedded, prepend_bos: true}\n" + FACTS)
    run = run_context(prepare(str(path), [], []))
    positions = ["country[-1]", "final"]
    compute(run, target="attn_out", positions=positions, id="exact")
    estimate = compute(run, "attribution_patching", target="attn_out", positions=positions, compare_with="exact")
    c = estimate.data["comparison"]
    assert c["cells"] == 2 * run.cfg.n_layers
    assert c["spearman"] > 0.85 and c["pearson"] > 0.9, (c["spearman"], c["pearson"])
    assert "summed over the continuation's tokens" in estimate.convention


# --------------------------------------------------------------------------- head targets, exact

@pytest.fixture(scope="module")
def llama_countries(rough_models, tmp_path_factory):
    """(model folder, RunContext) on a rough tiny Llama (6 query heads on 2 key/value heads), the
    countries of test_continuations: prompts of two lengths, continuations of one to three tokens."""
    from mi_dsl.compile import prepare
    from mi_dsl.runtime.run import Session
    from mi_dsl.runtime.store import StepStore

    from tests.test_continuations import local_model, local_spec

    folder = tmp_path_factory.mktemp("llama_heads")
    model_dir = local_model(folder, "llama", rough_models)
    session = Session.of(prepare(str(local_spec(folder, model_dir)), [], []), progress=False)
    session.open()
    session.dataset_step(StepStore(folder / "store", enabled=False))
    return model_dir, _run(session)


def _head_module(model, layer: int, target: str):
    """The plain transformers module whose output (q, k, v: the projections, before rotary) or input
    (z: what o_proj reads, the heads' outputs side by side) holds the target, per head in d_head slices."""
    attention = model.model.layers[layer].self_attn
    return {"q": attention.q_proj, "k": attention.k_proj, "v": attention.v_proj, "z": attention.o_proj}[target]


def reference_head_patch(model, pair, layer: int, head: int, target: str) -> float:
    """Denoising by hand: the clean run's `target` of one head (a key/value head for k and v) at the
    clean prompt's country[-1] and final positions written over the corrupted run's at its own
    positions of those names, in a forward of the corrupted prompt followed by the answer, then the
    foil, continuation (plain torch hooks); each side's float64 log-softmax summed; answer minus foil."""
    d_head = model.config.head_dim if getattr(model.config, "head_dim", None) else \
        model.config.hidden_size // model.config.num_attention_heads
    part = slice(head * d_head, (head + 1) * d_head)
    module = _head_module(model, layer, target)
    places = lambda p: [_slot_end(p, "country"), len(p.ids) - 1]  # noqa: E731
    captured = {}

    def read(mod, args, output=None):
        captured["act"] = (args[0] if target == "z" else output)[0].detach().clone()

    handle = (module.register_forward_pre_hook(read) if target == "z" else module.register_forward_hook(read))
    try:
        model(torch.tensor([pair.clean.ids]))
    finally:
        handle.remove()
    source = captured["act"][places(pair.clean)][:, part]
    where = places(pair.corrupted)

    def write_input(mod, args):
        x = args[0].clone()
        x[0, where, part] = source
        return (x,) + tuple(args[1:])

    def write_output(mod, args, output):
        out = output.clone()
        out[0, where, part] = source
        return out

    sides = []
    for continuation in (pair.answers, pair.foils):
        handle = (module.register_forward_pre_hook(write_input) if target == "z"
                  else module.register_forward_hook(write_output))
        try:
            ids = torch.tensor([list(pair.corrupted.ids) + list(continuation)])
            logp = model(ids).logits[0].double().log_softmax(-1)
        finally:
            handle.remove()
        final = len(pair.corrupted.ids) - 1
        sides.append(sum(float(logp[final + i, t]) for i, t in enumerate(continuation)))
    return sides[0] - sides[1]


@pytest.mark.parametrize("target", ["z", "q", "k", "v"])
def test_head_patching_with_a_continuation_metric_equals_patching_by_hand(llama_countries, target):
    """Every (layer, head) cell of z, q, k and v (k and v per key/value head: 2 of them, each shared by
    3 query heads), patched at country[-1] and final at once (aligned by name across prompts of two
    lengths), equals the hand-patched plain transformers forward of each prompt + continuation."""
    from transformers import AutoModelForCausalLM

    from mi_dsl.analyses import _patching as core

    model_dir, run = llama_countries
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), torch_dtype=torch.float32).eval()
    run.executor.batch_size = 5  # rows = cells x prompts: batches cut across cells and prompts
    params = compiled(run, {"kind": "activation_patching", "target": target,
                            "positions": ["country[-1]", "final"]})
    with torch.no_grad():
        grid = core.resolve(params, run)
        got, _ = core.exact_patching(run, grid)
        heads = getattr(run.cfg, "n_key_value_heads", None) if target in ("k", "v") else run.cfg.n_heads
        assert heads == (2 if target in ("k", "v") else 6)
        assert len(grid.cells) == run.cfg.n_layers * heads
        for cell, row in zip(grid.cells, got):
            expected = [reference_head_patch(model, pair, cell.layer, cell.head, target) for pair in run.pairs]
            assert row.tolist() == pytest.approx(expected, rel=1e-5, abs=1e-5), cell.label
    # the check can fail: the patches move the metric, head by head differently
    assert float((got.mean(1) - run.baselines["corrupted"]).abs().max()) > 0.05
    assert float(got.mean(1).std()) > 0.01
