"""Prefix reuse in exact patching (runtime/prefix.py, analyses/_patching/engines.py) and in
attribution patching (analyses/_patching/attribution.py).

A cell patched at layer l runs only blocks l..L-1 from the base run's residual stream
entering block l. These tests compare it with full recomputation of every cell, for
every target and both directions, on tiny random models of three architectures whose
norm weights and biases are randomised (so a wrong layer, row or position shows).
Attribution patching's forward and backward run only the positions from the first token where
base and source prompts differ (after the keys and values of those before): the same scores as
the whole prompts'.
"""
from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from mi_dsl.analyses import _patching as core
from mi_dsl.errors import RunError
from mi_dsl.runtime.unembed import UNEMBED_INPUT

from tests.random_sizes import tiny_variant
from tests.spec_parts import ANIMAL_TEMPLATE, animals
from tests.spec_parts import spec_text as spec_parts

DEEP = "tiny-deep"


@pytest.fixture(scope="module", autouse=True)
def deep_models():
    """The tiny shapes with 4 layers and a wider initialisation, so later layers differ."""
    with tiny_variant(DEEP, layers=4):
        yield


def spec_text(architecture: str, tokenizer, bos: bool = True, template: str = ANIMAL_TEMPLATE) -> str:
    tok = f"tokenizer: {tokenizer}, bos_token: '<bos>', " if architecture != "gemma3" else ""
    tok += "prepend_bos: " + ("true" if bos else "false")
    return spec_parts(f"""
        version: 1
        name: prefix
        model: {{source: random, architecture: {architecture}, size: {DEEP}, seed: 5, {tok}}}
        """, animals(("cats", "dogs"), template=template), """
          equal_lengths: true
        metric: logit_diff
        analyses:
          - {kind: head_attribution, id: head_attr}
        """)


def randomise_norms_and_biases(model, seed: int = 0) -> None:
    """Norm weights and every bias drawn at random (not the identity a fresh init gives)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            lowered = name.lower()
            if "bias" in lowered or "norm" in lowered or "ln" in lowered.split("."):
                noise = torch.randn(param.shape, generator=generator) * 0.3
                param.add_(noise.to(param.dtype))


@pytest.fixture(scope="module", params=["gpt_neox", "gemma3", "gpt2"])
def run(request, tmp_path_factory, tiny_tokenizer):
    from mi_dsl.compile import prepare
    from mi_dsl.runtime.run import run_context

    folder = tmp_path_factory.mktemp(request.param)
    path = folder / "spec.yaml"
    path.write_text(spec_text(request.param, tiny_tokenizer))
    context = run_context(prepare(str(path), [], []))
    randomise_norms_and_biases(context.model)
    context.baselines = {}  # the model changed: baselines are recomputed by the patching code
    return context


def patched(run, direction: str, reuse: bool, **params):
    from tests.analyses.test_patching import compiled

    grid = core.resolve(compiled(run, direction=direction, **params), run)
    with torch.no_grad():
        return core.exact_patching(run, grid, reuse_prefix=reuse)


def close(a, b, rel=1e-5):
    scale = max(1.0, float(b.abs().max()))
    return float((a - b).abs().max()) <= rel * scale


@pytest.mark.parametrize("direction", ["denoising", "noising"])
@pytest.mark.parametrize("target", sorted(core.TARGETS))
def test_prefix_reuse_equals_full_recomputation(run, target, direction):
    params = {"target": target}
    if target.endswith("_by_position") or not core.TARGETS[target].has_heads:
        params["positions"] = ["size", "final"]
    if target.startswith("resid_mid") and "blocks.0.hook_resid_mid" not in run.model.hook_dict:
        for reuse in (True, False):  # a parallel-residual block has no resid_mid: refused either way
            with pytest.raises(RunError, match="no resid_mid"):
                patched(run, direction, reuse, **params)
        return
    reused, passes = patched(run, direction, True, **params)
    full, full_passes = patched(run, direction, False, **params)
    assert passes["prefix_reuse"] and not full_passes["prefix_reuse"]
    assert passes["blocks_run"] < full_passes["blocks_run"]
    assert close(reused, full), (target, direction, float((reused - full).abs().max()))
    # the patch does something: otherwise equality would prove little
    clean_tokens = run.tokens("corrupted" if direction == "denoising" else "clean")
    assert reused.shape[1] == clean_tokens.shape[0]
    assert float(reused.std()) > 0


def test_saved_work_is_the_skipped_blocks(run):
    """All layers patched: a layer-l cell skips l of L blocks, so the work saved is mean(l)/L."""
    _, passes = patched(run, "denoising", True, target="z")
    n_layers = run.cfg.n_layers
    assert passes["blocks_full"] == len(run.pairs) * n_layers * run.cfg.n_heads * n_layers
    expected = sum(range(n_layers)) / n_layers / n_layers
    assert passes["block_work_saved"] == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("target", ["resid_pre", "z_by_position"])
def test_positions_before_the_first_patch_reuse_keys_and_values(run, target):
    """Patches at the size slot and the final position: those cells run only their positions from
    the patch on (runtime/kv.py), beyond the skipped blocks, with the same numbers (above)."""
    reused, passes = patched(run, "denoising", True, target=target, positions=["size", "final"])
    assert passes["kv_reuse"]
    assert passes["token_work_saved"] > passes["block_work_saved"] + 0.1
    full, _ = patched(run, "denoising", False, target=target, positions=["size", "final"])
    assert close(reused, full)
    assert all(not {"_update_kv_cache", "_apply_reconstruct_attention_mask"} & set(block.attn.__dict__)
               for block in run.model.blocks)


def test_every_position_patching_starts_where_the_prompts_first_differ(run):
    """Before the first token where clean and corrupted prompts differ, both runs compute the same
    numbers: patching there changes nothing, so those positions are not run."""
    clean, corrupted = run.tokens("clean"), run.tokens("corrupted")
    first = int((clean != corrupted).any(0).float().argmax())
    assert first > 0
    reused, passes = patched(run, "denoising", True, target="z")
    assert passes["kv_reuse"] and passes["token_work_saved"] > passes["block_work_saved"]
    full, _ = patched(run, "denoising", False, target="z")
    assert close(reused, full)


def test_out_of_memory_during_prefix_reuse_splits_and_restores_the_blocks(run, monkeypatch):
    """A patched forward of more than 5 rows 'runs out of memory' (as CUDA would): the batch
    is halved and retried, the numbers are unchanged and no block is left skipped."""
    reference, _ = patched(run, "denoising", True, target="z")
    executor = run.executor
    real = type(executor).capture

    def small_memory(tokens, *args, **kwargs):
        if tokens.shape[0] > 5:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (forced by the test)")
        return real(executor, tokens, *args, **kwargs)

    monkeypatch.setattr(executor, "capture", small_memory)
    saved_cap, executor.oom_cap = executor.oom_cap, None
    warned = len(executor.warnings)
    try:
        squeezed, passes = patched(run, "denoising", True, target="z")
    finally:
        executor.oom_cap = saved_cap
    assert any("out of memory" in str(w) for w in executor.warnings[warned:])
    assert passes["prefix_reuse"]
    assert close(squeezed, reference)
    assert all("forward" not in block.__dict__ for block in run.model.blocks)


def test_out_of_memory_after_a_batch_recorded_its_keys_and_values_keeps_them_aligned(run, monkeypatch):
    """The base sweep records each batch's keys and values; a batch that runs out of memory after
    every layer recorded them (in the last block's MLP, say) is split and retried. Only the keys and
    values of batches that returned are kept, so each row's stay its own: the same numbers. (The
    failing batch is the second of three rows each, so a kept failed batch would shift later rows.)"""
    reference, _ = patched(run, "denoising", True, target="z")
    executor = run.executor
    real = type(executor).capture
    sweeps = []

    def late_failure(tokens, keep, **kwargs):
        out = real(executor, tokens, keep, **kwargs)  # every layer ran and recorded
        # the recording sweep: to the unembedding's input, keeping other hooks too, changing nothing
        if kwargs.get("stop_after") == UNEMBED_INPUT and len(keep) > 1 and not kwargs.get("interventions"):
            sweeps.append(tokens.shape[0])
            if len(sweeps) == 2:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (forced by the test)")
        return out

    monkeypatch.setattr(executor, "capture", late_failure)
    saved = executor.oom_cap, executor.batch_size
    executor.oom_cap, executor.batch_size = None, 3
    try:
        squeezed, passes = patched(run, "denoising", True, target="z")
    finally:
        executor.oom_cap, executor.batch_size = saved
    assert len(sweeps) > 3 and sweeps[1] == 3  # it failed and was split
    assert passes["kv_reuse"]
    assert close(squeezed, reference)


@pytest.mark.parametrize("target", ["z", "resid_pre"])
def test_symmetric_pairs_read_the_source_activations_from_the_base_sweep(run, target):
    """Every corrupted prompt of the animals is another pair's clean prompt: the base sweep that records
    keys and values keeps the patched hooks too, and no source sweep runs. A subset of the pairs whose
    sources are not all base prompts sweeps them; both give full recomputation's numbers."""
    shared, passes = patched(run, "denoising", True, target=target)
    whole, whole_passes = patched(run, "denoising", False, target=target)
    assert passes.get("source_from_base") and passes["source_forwards"] == 0
    assert not whole_passes.get("source_from_base") and whole_passes["source_forwards"] >= 1
    assert close(shared, whole)
    pairs, baselines = run.pairs, run.baselines
    run.pairs = [pair for i, pair in enumerate(pairs) if i % 4 != 1]
    run.baselines = {}
    try:
        subset, passes = patched(run, "denoising", True, target=target)
        reference, _ = patched(run, "denoising", False, target=target)
    finally:
        run.pairs, run.baselines = pairs, baselines
    assert not passes.get("source_from_base") and passes["source_forwards"] >= 1
    assert close(subset, reference)


def test_an_instance_forward_is_put_back(run):
    """A block that carries its own instance-level forward (accelerate's device-map wrapper
    does) gets it back after a resumed forward, not deleted."""
    from mi_dsl.runtime.prefix import resume_at

    block = run.model.blocks[0]
    marker = block.forward  # a bound method standing in for accelerate's wrapper
    block.__dict__["forward"] = marker
    try:
        with resume_at(run.model, 2, torch.zeros(1)):
            assert block.__dict__["forward"] is not marker
        assert block.__dict__["forward"] is marker
    finally:
        block.__dict__.pop("forward", None)


# --------------------------------------------------------------------------- attribution patching


def attributed(run, direction: str, reuse: bool, **params):
    from tests.analyses.test_patching import compiled

    grid = core.resolve(compiled(run, "attribution_patching", direction=direction, **params), run)
    with torch.no_grad():  # as the runner computes: the engine turns gradients on itself
        return core.attribution_patching(run, grid, reuse_prefix=reuse)


def skipped_positions(run) -> int:
    """Where the animals' prompts first differ (the size slot), or earlier where a continued forward
    must run more positions to be exact (kv.exact_rest)."""
    clean, corrupted = run.tokens("clean"), run.tokens("corrupted")
    first = int((clean != corrupted).any(0).float().argmax())
    assert first > 0 and run.executor.kv_rest
    return min(first, clean.shape[1] - run.executor.kv_rest)


@contextmanager
def gradient_forwards(run):
    """[tokens' shape] of every forward run with gradients on (attribution's forward and backward)."""
    shapes = []
    executor = run.executor
    real = type(executor).capture

    def recording(tokens, *args, **kwargs):
        if torch.is_grad_enabled():
            shapes.append(tuple(tokens.shape))
        return real(executor, tokens, *args, **kwargs)

    executor.capture = recording
    try:
        yield shapes
    finally:
        del executor.capture


ATTRIBUTED = sorted(name for name, t in core.TARGETS.items() if t.layout != "pattern")


@pytest.mark.parametrize("direction", ["denoising", "noising"])
@pytest.mark.parametrize("target", ATTRIBUTED)
def test_attribution_from_the_first_difference_equals_the_whole_prompts(run, target, direction):
    """Before the first token where base and source prompts differ both runs hold the same
    activations (delta 0) and nothing later changes them: the scores of a forward and backward of
    the later positions alone equal those of the whole prompts."""
    params = {"target": target, **({"positions": ["size", "final"]} if target.endswith("_by_position") else {})}
    if target.startswith("resid_mid") and "blocks.0.hook_resid_mid" not in run.model.hook_dict:
        return  # a parallel-residual block has no resid_mid: refused (test_prefix_reuse_equals_full_recomputation)
    skipped, passes = attributed(run, direction, True, **params)
    whole, whole_passes = attributed(run, direction, False, **params)
    assert passes["kv_reuse"] and not whole_passes["kv_reuse"]
    assert passes["token_work_saved"] == round(skipped_positions(run) / run.tokens("clean").shape[1], 4)
    assert whole_passes["token_work_saved"] == 0
    difference, size = float((skipped - whole).abs().max()), float(whole.abs().max())
    assert size > 1e-3 and difference <= 1e-5 * size, (target, direction, difference, size)


def test_attribution_runs_only_the_positions_from_the_first_difference(run):
    """The forward kept for the backward runs positions p.. (p > 0), and only that one forward per batch."""
    n, p = run.tokens("corrupted").shape[1], skipped_positions(run)
    assert 0 < p < n
    with gradient_forwards(run) as shapes:
        _, passes = attributed(run, "denoising", True, target="z")
    assert shapes == [(len(run.pairs), n - p)] and passes["forward_backward_passes"] == 1
    with gradient_forwards(run) as shapes:
        attributed(run, "denoising", False, target="z")
    assert shapes == [(len(run.pairs), n)]
    assert all(not {"_update_kv_cache", "_apply_reconstruct_attention_mask"} & set(block.attn.__dict__)
               for block in run.model.blocks)


def attributed_in_batches(run, batch_size=None, reuse=True):
    from tests.analyses.test_patching import compiled

    grid = core.resolve(compiled(run, "attribution_patching", direction="denoising", target="z"), run)
    with torch.no_grad():
        return core.attribution_patching(run, grid, batch_size=batch_size, reuse_prefix=reuse)


def test_attribution_reads_each_source_from_its_partners_base_forward(run):
    """Every corrupted prompt of the animals is another pair's clean prompt (the size swapped within its
    pair of sizes): no source prompt runs; the keys and values before p come from one whole forward per
    distinct first p tokens (one per animal), not from every prompt (_patching/partners.py)."""
    n = len(run.pairs)
    skipped, passes = attributed_in_batches(run)
    whole, _ = attributed_in_batches(run, reuse=False)
    assert passes["sources_from_partners"] == n and passes["sources_run"] == 0
    p = skipped_positions(run)
    prefixes = len({tuple(row[:p]) for row in run.tokens("corrupted").tolist()})
    assert passes["prefix_forwards"] == 1 and passes["source_forwards"] == 1 and prefixes < n
    difference, size = float((skipped - whole).abs().max()), float(whole.abs().max())
    assert size > 1e-3 and difference <= 1e-5 * size


def test_a_partner_in_another_batch_or_none_runs_its_source_prompt(run):
    """Batches of 3 split some partners apart; a subset of the pairs leaves some without one: those rows'
    source prompts run (positions p.. only), and every score is still the whole prompts'."""
    whole, _ = attributed_in_batches(run, reuse=False)
    split, passes = attributed_in_batches(run, batch_size=3)
    assert passes["sources_run"] > 0 and passes["sources_from_partners"] > 0
    assert float((split - whole).abs().max()) <= 1e-5 * float(whole.abs().max())
    pairs, baselines = run.pairs, run.baselines
    run.pairs = [pair for i, pair in enumerate(pairs) if i % 4 != 1]  # some sources are no base prompt now
    run.baselines = {}
    try:
        whole, _ = attributed_in_batches(run, reuse=False)
        subset, passes = attributed_in_batches(run)
    finally:
        run.pairs, run.baselines = pairs, baselines
    assert passes["sources_run"] > 0
    assert float((subset - whole).abs().max()) <= 1e-5 * float(whole.abs().max())


def test_attention_pattern_attribution_runs_every_position(run):
    """A pattern row at a later position holds the earlier columns, so the pattern runs whole."""
    assert skipped_positions(run) > 0
    for target in ("pattern", "pattern_by_position"):
        with gradient_forwards(run) as shapes:
            _, passes = attributed(run, "denoising", True, target=target)
        assert not passes["kv_reuse"] and passes["token_work_saved"] == 0
        assert shapes == [tuple(run.tokens("corrupted").shape)]


def test_attribution_of_prompts_that_differ_at_the_first_token_runs_every_position(tmp_path, tiny_tokenizer):
    """No BOS and the size first: clean and corrupted prompts differ at position 0, so nothing is skipped."""
    from mi_dsl.compile import prepare
    from mi_dsl.runtime.run import run_context

    path = tmp_path / "spec.yaml"
    template = "{size} are the {animal}. Are the {animal}"
    path.write_text(spec_text("gpt_neox", tiny_tokenizer, bos=False, template=template))
    context = run_context(prepare(str(path), [], []))
    clean, corrupted = context.tokens("clean"), context.tokens("corrupted")
    assert bool((clean[:, 0] != corrupted[:, 0]).any())
    with gradient_forwards(context) as shapes:
        _, passes = attributed(context, "denoising", True, target="z")
    assert not passes["kv_reuse"] and passes["token_work_saved"] == 0
    assert shapes == [tuple(corrupted.shape)]


def test_the_resumable_probe_runs_the_first_block_only_and_refuses_tuple_blocks(run):
    """block_returns_tensor: True for the bridge's blocks, from one forward that stops after block 0
    (no later block, no logits); False where block 0 returns a tuple, and the probe leaves no hook."""
    from mi_dsl.runtime.prefix import block_returns_tensor

    blocks, tokens = run.model.blocks, run.tokens("clean")
    called = []
    handles = [block.register_forward_pre_hook(lambda module, args, i=i: called.append(i))
               for i, block in enumerate(blocks)]
    try:
        assert block_returns_tensor(run.model, tokens) and called == [0]
    finally:
        for handle in handles:
            handle.remove()
    as_tuple = blocks[0].register_forward_hook(lambda module, args, output: (output,))
    try:
        assert not block_returns_tensor(run.model, tokens)
    finally:
        as_tuple.remove()
    assert block_returns_tensor(run.model, tokens)
    assert not blocks[0]._forward_hooks
