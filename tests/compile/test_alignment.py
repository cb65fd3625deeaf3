"""Patching prompts of different lengths: aligned by name, or refused before the model loads.

The corrupted template has one more token ("All the birds ...") than the clean one, so
position i is not the same token in the two prompts. Issue 11 found "final @14" patched
into corrupted position 14 (not its last token) with no error, and attribution patching
ending in a raw RuntimeError. Here:
- every position by default, or attention patterns, are refused at plan time, located;
- named positions are patched by name; each cell equals a hand-written hook that copies
  the clean activation at the clean position into the corrupted run at the corrupted
  position (checked against the model itself, not against mi-dsl's own index arithmetic);
- attribution patching, aligned the same way, equals exact patching where the metric is
  linear in the patched activation.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from mi_dsl.errors import SpecMeaningError

from tests.analyses.test_patching import compiled, compute, grid, linear_final_norm, model_yaml, sharp_models  # noqa: F401
from tests.spec_parts import syllogism

LONGER = """
vocabularies:
  categories: {items: [birds]}
  descriptors: {pairs: [[big, small], [wild, tame]]}
  nouns: {items: [Cows, Horses]}
prompts:
  template: "All {category} are {descriptor}. {noun} are {category}. Therefore, {lower(noun)} are"
  slots: {category: categories, descriptor: descriptors, noun: nouns}
  answer: 'first_token(" " + descriptor)'
  foil: 'first_token(" " + opposite(descriptor))'
  corrupt:
    template: "All the {category} are {opposite(descriptor)}. {noun} are {category}. Therefore, {lower(noun)} are"
  equal_lengths: false
metric: logit_diff
analyses:
"""


def write(folder: Path, analyses: str, architecture: str = "gpt_neox") -> Path:
    path = folder / "spec.yaml"
    body = LONGER + textwrap.indent(textwrap.dedent(analyses).strip() + "\n", "  ")
    path.write_text("version: 1\nname: lengths\n" + model_yaml(architecture) + textwrap.dedent(body))
    return path


def prepare_spec(folder: Path, analyses: str, architecture: str = "gpt_neox"):
    from mi_dsl.compile import prepare

    return prepare(str(write(folder, analyses, architecture)), [], [])


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_every_position_of_prompts_of_different_lengths_is_refused_at_plan_time(tmp_path):
    for kind in ("activation_patching", "attribution_patching"):
        with pytest.raises(SpecMeaningError, match="patches every position by default") as err:
            prepare_spec(tmp_path, f"- {{kind: {kind}, target: resid_pre}}")
        assert err.value.location.line == line_of(tmp_path / "spec.yaml", f"kind: {kind}")
        assert "positions: [final" in err.value.hint


def test_patterns_and_one_sided_slots_are_refused(tmp_path):
    with pytest.raises(SpecMeaningError, match="key axes of different sizes") as err:
        prepare_spec(tmp_path, "- {kind: activation_patching, target: pattern, positions: final}")
    assert err.value.location.line == line_of(tmp_path / "spec.yaml", "target: pattern")
    with pytest.raises(SpecMeaningError, match="is an index, not a name") as err:
        prepare_spec(tmp_path, "- {kind: activation_patching, target: resid_pre, positions: [final, 3]}")
    assert err.value.location.line == line_of(tmp_path / "spec.yaml", "positions: [final, 3]")


@pytest.fixture(scope="module", params=["gpt_neox", "gemma3"])
def longer(request, tmp_path_factory):
    """The issue's case on a tiny NeoX and on a tiny grouped-query Gemma-3 (post-attention norms)."""
    from mi_dsl.runtime.run import run_context

    return run_context(prepare_spec(tmp_path_factory.mktemp("longer"),
                                    "- {kind: activation_patching, target: resid_pre, "
                                    "positions: [final, descriptor, noun]}",
                                    request.param))


def by_hand(run, hook: str, moves, direction: str = "denoising"):
    """Mean metric of the base run with the source run's `hook` activation copied from source
    position s into base position b for each (s, b) in `moves`: TransformerLens-style hooks on the
    model, one forward per prompt set."""
    from mi_dsl.metrics import compute_metrics
    from mi_dsl.runtime.unembed import UNEMBED_INPUT

    base, source = ("corrupted", "clean") if direction == "denoising" else ("clean", "corrupted")
    src_tokens, base_tokens = run.tokens(source), run.tokens(base)
    _, kept = run.executor.capture(src_tokens, {hook: lambda a: a})
    saved = kept[hook]

    def patch(act, hook=None):
        act = act.clone()
        for s, b in moves:
            act[:, b] = saved[:, s]
        return act

    _, out = run.executor.capture(base_tokens, {UNEMBED_INPUT: lambda a: a[:, -1]}, interventions=[(hook, patch)],
                                  stop_after=UNEMBED_INPUT)
    values = compute_metrics(out[UNEMBED_INPUT], run.answers(), run.foils(), [run.metric], run.unembed)
    return float(values[run.metric].mean())


def test_named_positions_are_patched_by_name(longer):
    run = longer
    pair = run.pairs[0]
    assert len(pair.corrupted.ids) == len(pair.clean.ids) + 1
    clean_d = pair.clean.spans["descriptor"][0][0]
    corrupted_d = pair.corrupted.spans["descriptor"][0][0]
    assert corrupted_d == clean_d + 1
    for direction in ("denoising", "noising"):
        result = compute(run, target="resid_pre", positions=["final", "descriptor"], direction=direction)
        values = grid(result)  # [layers, columns]
        assert "by name" in result.data["alignment"]
        for layer in range(run.cfg.n_layers):
            hook = f"blocks.{layer}.hook_resid_pre"
            n_c, n_k = len(pair.clean.ids), len(pair.corrupted.ids)
            final = [(n_c - 1, n_k - 1)] if direction == "denoising" else [(n_k - 1, n_c - 1)]
            moved = [(clean_d, corrupted_d)] if direction == "denoising" else [(corrupted_d, clean_d)]
            expected = [by_hand(run, hook, final, direction), by_hand(run, hook, moved, direction)]
            assert values[layer].tolist() == pytest.approx(expected, rel=1e-5, abs=1e-6), (direction, layer)
        # the final position moves the metric (the test can fail if it were patched elsewhere)
        assert abs(values[-1, 0] - (run.baselines["corrupted"] if direction == "denoising"
                                     else run.baselines["clean"])) > 1e-3


def test_head_targets_are_aligned_too(longer):
    run = longer
    pair = run.pairs[0]
    n_c, n_k = len(pair.clean.ids), len(pair.corrupted.ids)
    result = compute(run, target="z", positions="final", layers=[0])
    values = grid(result)  # [1, heads]
    _, kept_clean = run.executor.capture(run.tokens("clean"), {"blocks.0.attn.hook_z": lambda a: a})
    from mi_dsl.metrics import compute_metrics
    from mi_dsl.runtime.unembed import UNEMBED_INPUT

    for head in range(run.cfg.n_heads):
        def patch(z, hook=None, head=head):
            z = z.clone()
            z[:, n_k - 1, head] = kept_clean["blocks.0.attn.hook_z"][:, n_c - 1, head]
            return z
        _, out = run.executor.capture(run.tokens("corrupted"), {UNEMBED_INPUT: lambda a: a[:, -1]},
                                      interventions=[("blocks.0.attn.hook_z", patch)], stop_after=UNEMBED_INPUT)
        m = compute_metrics(out[UNEMBED_INPUT], run.answers(), run.foils(), ["logit_diff"], run.unembed)
        assert float(values[0, head]) == pytest.approx(float(m["logit_diff"].mean()), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("longer", ["gpt_neox"], indirect=True)
def test_attribution_patching_is_aligned_and_exact_where_linear(longer):
    """The linearised final norm of test_patching's linear check: on the last layer's z and
    attn_out the first-order estimate must equal exact patching, also across lengths. NeoX
    only: the exact linear case needs the last layer's outputs to enter the final residual
    unnormalised; Gemma's post-attention norm is not linear."""
    run = longer
    assert not run.has_post_attn_norm()
    last = run.cfg.n_layers - 1
    saved = dict(run.baselines)
    try:
        from mi_dsl.analyses._patching import baselines

        with run.model.hooks(fwd_hooks=linear_final_norm(4.0)):
            run.baselines.clear()
            with torch.no_grad():
                linear = baselines(run)
            run.baselines.update(clean=linear.clean, corrupted=linear.corrupted)
            for target in ("attn_out", "z", "z_by_position"):
                for direction in ("denoising", "noising"):
                    exact = compute(run, target=target, layers=[last], positions=["final", "descriptor"],
                                    direction=direction, id="exact")
                    estimate = compute(run, "attribution_patching", target=target, layers=[last],
                                       positions=["final", "descriptor"], direction=direction, compare_with="exact")
                    e, a = grid(exact, "normalized"), grid(estimate, "normalized")
                    e, a = e[~e.isnan()], a[~a.isnan()]
                    assert torch.allclose(a, e, atol=1e-4), (target, direction, float((a - e).abs().max()))
                    assert float((e - e.mean()).abs().max()) > 1e-3, target
    finally:
        run.baselines.clear()
        run.baselines.update(saved)


# --------------------------------------------------------------------------- several lengths in one set

MIXED = LONGER.replace("nouns: {items: [Cows, Horses]}", "nouns: {items: [Cows, Horses, Dogs, Elephants]}")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Nouns of one and two tokens and a corrupted template one token longer: every set mixes
    lengths, and each clean prompt differs in length from its partner."""
    from mi_dsl.compile import prepare
    from mi_dsl.runtime.run import run_context

    folder = tmp_path_factory.mktemp("mixed")
    path = folder / "spec.yaml"
    body = MIXED + "  - {kind: activation_patching, target: resid_pre, positions: [final, noun]}\n"
    path.write_text("version: 1\nname: mixed\n" + model_yaml("gpt_neox") + textwrap.dedent(body))
    return run_context(prepare(str(path), [], []))


@pytest.mark.parametrize("target", ["resid_pre", "z", "z_by_position", "attn_out"])
@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_padded_batches_of_several_lengths_equal_each_pair_alone(mixed, target, direction):
    """Each prompt's patched metric in one right-padded batch of every length equals the same
    pair patched alone (one pair: one length each, no padding), for exact and attribution
    patching."""
    import dataclasses

    from mi_dsl.analyses._patching import attribution_patching, exact_patching, resolve

    run = mixed
    assert len({len(p.clean.ids) for p in run.pairs}) > 1  # the set really mixes lengths
    params = compiled(run, target=target, positions=["final", "noun"], direction=direction,
                      layers=[0, run.cfg.n_layers - 1])
    with torch.no_grad():
        together, _ = exact_patching(run, resolve(params, run))
    estimate, _ = attribution_patching(run, resolve(params, run))
    assert together.abs().max() > 0
    for n, pair in enumerate(run.pairs):
        alone_run = dataclasses.replace(run, pairs=[pair], baselines={})
        with torch.no_grad():
            alone, _ = exact_patching(alone_run, resolve(params, alone_run))
        alone_estimate, _ = attribution_patching(alone_run, resolve(params, alone_run))
        assert torch.allclose(together[:, n], alone[:, 0], rtol=1e-5, atol=1e-5), (n, pair.clean.text)
        assert torch.allclose(estimate[:, n], alone_estimate[:, 0], rtol=1e-4, atol=1e-5), (n, pair.clean.text)



# The clean and corrupted descriptor differ in token count: " herbivorous" is 3 tokens, " small" 1.
UNEVEN_SLOT = syllogism(("birds",), (("herbivorous", "small"),), ("Cows", "Horses")) + """\
metric: logit_diff
analyses:
  - {kind: activation_patching, target: resid_pre, positions: [final, descriptor]}
"""


def test_a_slot_of_different_token_counts_is_refused_with_its_own_one_token_selector(tmp_path):
    """`descriptor` cannot be patched token for token; the hint names the selector that can
    (`descriptor[-1]`), not a generic example."""
    from mi_dsl.compile import prepare

    path = tmp_path / "spec.yaml"
    path.write_text("version: 1\nname: lengths\n" + model_yaml("gpt_neox") + UNEVEN_SLOT)
    with pytest.raises(SpecMeaningError, match="position 'descriptor' names 3 token") as err:
        prepare(str(path), [], [])
    assert err.value.location.line == line_of(path, "positions: [final, descriptor]")
    assert "descriptor[-1]" in err.value.hint
