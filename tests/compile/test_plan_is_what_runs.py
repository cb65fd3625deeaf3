"""The plan `mi-run plan --json` prints is what runs: every hook the executor captures or
intervenes on during an analysis is one its plan step (or the shared pass it is part of) lists."""
from __future__ import annotations

import textwrap

from tests.spec_parts import SYLLOGISM_PROMPTS

SPEC = """
version: 1
name: plan_truth
model: {source: random, architecture: gemma3, size: tiny, seed: 5, prepend_bos: true}
vocabularies:
  categories: {items: [birds, fish, mammals], filter: 'ntokens(" " + item) == 1'}
  descriptors:
    pairs: [[endothermic, ectothermic], [toothed, toothless], [herbivorous, carnivorous]]
    filter: 'ntokens(" " + item) == 2'
  nouns: {items: [Dogs, Cows, Wolves], filter: 'ntokens(" " + lower(item)) == 1'}
""" + SYLLOGISM_PROMPTS + """\
causal_model:
  variables: {d: descriptor}
  output: 'first_token(" " + d)'
analyses:
  - kind: predictions
  - kind: logit_lens
  - kind: layer_attribution
  - {kind: head_attribution, id: heads}
  - {kind: attention, heads: 'top(heads, 2)'}
  - {kind: attention_vs_contribution, heads: 'L1H*'}
  - {kind: activation_patching, id: patch, target: z}
  - {kind: activation_patching, id: patch_resid, target: resid_pre, positions: [final, descriptor]}
  - {kind: attribution_patching, id: attrib, target: z}
  - {kind: ablation, heads: 'top(heads, 2)'}
  - {kind: interchange, variables: [d], components: [attn_out, z], layers: [1], positions: [descriptor, final]}
  - {kind: interchange, id: das, variables: [d], layers: [1], positions: [final], featurizer: das,
     training: {epochs: 1}}
"""


def _expand(pattern: str, n_layers: int):
    pattern = pattern.rstrip("?")  # "?": captured only where the architecture has the hook
    if "{L}" in pattern:
        return {pattern.replace("{L}", str(l)) for l in range(n_layers)}
    return {pattern.replace("{last}", str(n_layers - 1))}


def test_every_captured_hook_is_listed_in_the_plan_step(tmp_path, monkeypatch):
    from mi_dsl.core.registry import load_all
    from mi_dsl.compile import prepare
    from mi_dsl.runtime.executor import Executor
    from mi_dsl.running import run_prepared
    from mi_dsl.runtime.unembed import UNEMBED_INPUT

    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(SPEC))
    prepared = prepare(path)
    steps = {s.id: s for s in prepared.plan.analyses}
    used, current = {}, []
    original = Executor.capture

    def recording(self, tokens, keep, *, interventions=(), stop_after=None, **options):
        if current:
            names = set(keep) | {name for name, _ in interventions}
            used.setdefault(current[-1], set()).update(names)
        return original(self, tokens, keep, interventions=interventions, stop_after=stop_after, **options)

    monkeypatch.setattr(Executor, "capture", recording)
    for kind in load_all().values():
        impl = kind.implementation
        compute = impl.compute

        def wrapped(self, params, run, compute=compute):
            current.append(params.name)
            try:
                return compute(self, params, run)
            finally:
                current.pop()
        monkeypatch.setattr(impl, "compute", wrapped)
    outcome = run_prepared(prepared, out_dir=str(tmp_path / "runs"), progress=False)
    n_layers = outcome.results["provenance"]["model"]["n_layers"]
    plan = prepared.plan
    served = {a for p in plan.passes for a in p.analyses[1:]}  # read the shared pass the first one ran
    # and the attention view on dataset prompts reads the patterns that pass kept for the run's cache
    served |= {s.id for s in plan.analyses if s.reads_patterns and any(p.patterns for p in plan.passes)}
    # every analysis ran forwards, except those a shared pass served (one served may still run its own:
    # ablation's sweep with the heads knocked out)
    assert set(steps) - served <= set(used) <= set(steps)
    unlisted = {}
    for analysis_id, names in used.items():
        shared = plan.pass_of(analysis_id)  # the first analysis of a shared pass captures for all of it
        patterns = steps[analysis_id].hooks + (shared.hooks if shared else ())
        listed = set().union(*(_expand(h, n_layers) for h in patterns)) | {UNEMBED_INPUT}
        unlisted.update({analysis_id: sorted(n for n in names if n not in listed)})
    assert not any(unlisted.values()), f"hooks captured but not listed in the plan: {unlisted}"
