"""Pass fusion (compile/fusion.py, RunContext.capture_final): analyses reading the clean
prompts at the final position share one sweep; the plan lists the passes; the numbers
are those of separate sweeps."""
from __future__ import annotations

import pytest
import torch

from tests.spec_parts import animals
from tests.spec_parts import spec_text as spec_parts

SHARING = ["logit_lens", "layer_attribution", "head_attr"]


def spec_text(tokenizer, architecture="gpt_neox", extra: str = "") -> str:
    tok = f"tokenizer: {tokenizer}, bos_token: '<bos>', " if architecture != "gemma3" else ""
    return spec_parts(f"""
        version: 1
        name: fusion
        model: {{source: random, architecture: {architecture}, size: tiny, seed: 2, {tok}prepend_bos: true}}
        """, animals(("cats", "dogs", "owls", "mice")), """
        metric: logit_diff
        run: {batch_size: 4}
        analyses:
          - {kind: logit_lens}
          - {kind: predictions}
          - {kind: layer_attribution}
          - {kind: head_attribution, id: head_attr}
          - {kind: head_attribution, id: head_few, max_pairs: 3}
        """) + extra


def prepared(tmp_path, text):
    from mi_dsl.compile import prepare

    path = tmp_path / "fusion.yaml"
    path.write_text(text)
    return prepare(str(path), [], [])


def test_the_plan_lists_the_fewest_passes(tmp_path, tiny_tokenizer, cli):
    plan = prepared(tmp_path, spec_text(tiny_tokenizer)).plan
    assert [(p.analyses, p.max_pairs) for p in plan.passes] == [(tuple(SHARING), None), (("head_few",), 3)]
    hooks = plan.passes[0].hooks
    assert "blocks.{L}.attn.hook_z" in hooks and "blocks.{L}.hook_mlp_out" in hooks
    assert plan.pass_of("predictions") is None  # one prompt of its own: not shared
    code, out, err = cli("plan", tmp_path / "fusion.yaml")
    assert code == 0, err
    assert "final_pass_0: clean prompts -> logit_lens, layer_attribution, head_attr" in out
    assert "final_pass_1: first 3 clean prompts -> head_few" in out


@pytest.mark.parametrize("architecture", ["gpt_neox", "gemma3"])
def test_one_sweep_serves_the_analyses_with_the_same_numbers(tmp_path, tiny_tokenizer, architecture):
    from mi_dsl.runtime.run import Session, execute

    p = prepared(tmp_path, spec_text(tiny_tokenizer, architecture))
    log = execute(p, fresh=True, store_dir=tmp_path / "store", progress=False)
    assert log.dataset["final_pairs"] == 16
    batches = -(-16 // 4)
    assert dict(log.shared_passes[0]) == {"id": "final_pass_0", "analyses": tuple(SHARING), "forwards": batches}

    session = Session.of(p, progress=False, say=lambda m: None)
    session.open()
    pairs = session.run_pipeline().pairs

    def sweep(fuse: bool):
        """The sharing analyses in plan order, each on its own context as a run makes them;
        (results, executor forwards they made)."""
        session.shared.clear()
        counted, out = session.executor.forwards, {}
        for step in p.plan.analyses:
            if step.id in SHARING:
                run = session.context_for(pairs)
                run.fuse = fuse
                out[step.id] = session.compute_analysis(step.id, run)
        return out, session.executor.forwards - counted

    fused, fused_forwards = sweep(True)
    separate, separate_forwards = sweep(False)
    # the baselines of each context cost forwards too, the same in both sweeps (one per distinct
    # prompt: runtime/pipeline.py), so the difference is the sweeps fusion saves: two of three
    assert separate_forwards - fused_forwards == 2 * batches
    for name in SHARING:
        for key in ("logit_diff", "per_head"):
            if key in separate[name].data:
                a = torch.tensor(fused[name].data[key])
                b = torch.tensor(separate[name].data[key])
                assert torch.allclose(a, b, rtol=1e-6, atol=1e-7), name
                assert float(b.abs().max()) > 0


def test_ablation_reads_its_before_sweep_from_the_pass(tmp_path, tiny_tokenizer):
    """Ablation's sweep before the knock-out is head attribution's capture: it joins the pass,
    one sweep fewer, the same numbers."""
    from mi_dsl.runtime.run import Session

    text = spec_text(tiny_tokenizer, "gemma3").replace(
        "  - {kind: head_attribution, id: head_few, max_pairs: 3}",
        "  - {kind: ablation, heads: 'top(head_attr, 1)', positions: final}")
    p = prepared(tmp_path, text)
    assert p.plan.passes[0].analyses == tuple(SHARING) + ("ablation",)
    session = Session.of(p, progress=False, say=lambda m: None)
    session.open()
    pairs = session.run_pipeline().pairs
    results = {}
    for fuse in (True, False):
        session.shared.clear()
        counted, earlier = session.executor.forwards, {}
        for step in p.plan.analyses:
            if step.id in SHARING + ["ablation"]:
                run = session.context_for(pairs, earlier=earlier)
                run.fuse = fuse
                earlier[step.id] = session.compute_analysis(step.id, run)
        results[fuse] = (earlier["ablation"], session.executor.forwards - counted)
    (fused, fused_forwards), (separate, separate_forwards) = results[True], results[False]
    assert separate_forwards - fused_forwards == 3 * -(-len(pairs) // 4)  # logit lens, layer attr., ablation
    for key in ("dla_before", "dla_after"):
        assert torch.allclose(torch.tensor(fused.data[key]), torch.tensor(separate.data[key]), rtol=1e-6, atol=1e-7)
