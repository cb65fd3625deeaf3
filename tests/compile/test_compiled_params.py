"""Compile once: each plan step carries frozen, typed parameters (core/typed.py: one dataclass per
analysis kind) with the defaults filled and every selector compiled; the runtime never parses a
selector or a keep-condition again, and `mi-run plan --json` prints the parameters that run."""
from __future__ import annotations

import json
import textwrap

import pytest

from tests.compile.test_plan_is_what_runs import SPEC

SPECS_WITH_SELECTORS = SPEC.replace(
    "  - {kind: ablation, heads: 'top(heads, 2)'}",
    "  - {kind: ablation, heads: 'top(heads, 2)', positions: final}\n"
    "  - {kind: attention_vs_contribution, id: avc_to, heads: [L0H0, L1H1], from: final, to: noun}")


def _prepare(tmp_path, text=SPECS_WITH_SELECTORS):
    from mi_dsl.compile import prepare

    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(text))
    return prepare(path)


def test_params_are_frozen_hashable_and_thaw_to_what_was_written():
    from mi_dsl.core.params import Params

    params = Params({"kind": "x", "layers": [1, 2], "nested": {"a": [3]}})
    assert params["layers"] == (1, 2) and params["nested"]["a"] == (3,)
    assert params.to_json() == {"kind": "x", "layers": [1, 2], "nested": {"a": [3]}}
    assert hash(params) == hash(Params({"nested": {"a": [3]}, "layers": [1, 2], "kind": "x"}))
    with pytest.raises(AttributeError):
        params.kind = "y"
    with pytest.raises(TypeError):
        params["kind"] = "y"  # noqa  (a Mapping has no item assignment)


def test_defaults_are_filled_and_selectors_compiled(tmp_path):
    import dataclasses

    from mi_dsl.core.params import Selection
    from mi_dsl.core.registry import REGISTRY
    from mi_dsl.core.typed import StepParams

    plan = _prepare(tmp_path).plan
    steps = {s.id: s for s in plan.analyses}
    assert all(isinstance(s.params, StepParams) for s in plan.analyses + plan.pipeline)
    for step in plan.analyses:  # each step's parameters are its kind's own frozen dataclass
        assert type(step.params) is REGISTRY[step.kind].params
        with pytest.raises(dataclasses.FrozenInstanceError):
            step.params.id = "other"
    assert steps["heads"].params.top_k == 12 and steps["heads"].params.normalize is True
    assert steps["logit_lens"].params.normalize == "final"
    patch = steps["patch"].params
    assert (patch.target, patch.direction, patch.top_k, patch.prefix_reuse) == ("z", "denoising", 10, True)
    avc = steps["attention_vs_contribution"].params
    assert isinstance(avc.from_, Selection) and avc.from_.default and avc.from_.to_json() == "final"
    assert avc.to.to_json() == "descriptor" and avc.direction == "answer"
    assert steps["avc_to"].params.to.to_json() == "noun" and not steps["avc_to"].params.to.default
    assert steps["avc_to"].params.heads.to_json() == ["L0H0", "L1H1"]
    resid = steps["patch_resid"].params.positions
    assert [s.text for s in resid] == ["final", "descriptor"] and resid.listed
    assert steps["ablation"].params.method == "zero"
    assert steps["ablation"].params.heads.selectors[0].compiled.references() == [("heads", 4)]


def test_plan_json_prints_the_compiled_parameters(tmp_path):
    from mi_dsl.compile.summary import plan_steps

    prepared = _prepare(tmp_path)
    printed = {a["id"]: a["params"] for a in plan_steps(prepared.plan, 1)["analyses"]}
    json.dumps(printed)  # plain data
    for step in prepared.plan.analyses:
        assert printed[step.id] == step.params.to_json()
    assert printed["attention_vs_contribution"]["from"] == "final"
    assert printed["ablation"]["heads"] == "top(heads, 2)"
    assert printed["patch_resid"]["positions"] == ["final", "descriptor"]


def test_the_runtime_never_parses_a_selector_or_keep_condition_again(tmp_path, monkeypatch):
    """After prepare, parsing is impossible; the run still computes every analysis."""
    import mi_dsl.compile.compiler as compiler
    import mi_dsl.expr as expr
    import mi_dsl.expr.selectors as selectors
    from mi_dsl.running import run_prepared

    text = SPECS_WITH_SELECTORS.replace("analyses:\n", "pipeline:\n  - keep: clean.logit_diff > -1000\nanalyses:\n")
    prepared = _prepare(tmp_path, text)

    def refuse(*args, **kwargs):
        raise AssertionError("parsed at run time")

    for module in (expr, selectors):
        monkeypatch.setattr(module, "parse_heads", refuse)
        monkeypatch.setattr(module, "parse_positions", refuse)
    for module in (expr, compiler):
        monkeypatch.setattr(module, "compile_expression", refuse)
    outcome = run_prepared(prepared, out_dir=str(tmp_path / "runs"), progress=False)
    results = outcome.results["analyses"]
    assert results["ablation"]["positions"] == "final"
    assert len(results["avc_to"]["to_positions"][0]) >= 1


def test_an_extra_analysis_compiles_against_the_spec_with_located_faults(tmp_path):
    from mi_dsl.compile.compiler import compile_analysis
    from mi_dsl.errors import MiError

    spec = _prepare(tmp_path).spec
    step = compile_analysis(spec, {"kind": "activation_patching", "heads": "top(heads, 1)"})
    assert step.params.target == "z" and step.depends_on == ("heads",)
    with pytest.raises(MiError, match="top_k"):
        compile_analysis(spec, {"kind": "head_attribution", "top_k": 0})
    with pytest.raises(MiError, match="unknown analysis"):
        compile_analysis(spec, {"kind": "activation_patching", "heads": "top(nowhere, 1)"})
    assert compile_analysis(spec, {"kind": "activation_patching", "heads": "top(extra, 1)"},
                            known=["extra"]).depends_on == ("extra",)


def test_symmetric_pairs_carry_their_own_slot_values():
    from mi_dsl.dataset.build import Prompt, PromptPair

    clean, corrupted = Prompt("a x", (1, 2), {}), Prompt("a y", (1, 3), {})
    pair = PromptPair(clean, corrupted, (2,), (3,), (("s", "x"),), (("s", "y"),))
    swapped = pair.swapped()
    assert swapped.clean is corrupted and swapped.values == (("s", "y"),)
    assert swapped.corrupted_values == (("s", "x"),) and swapped.swapped() == pair


def test_a_metric_expression_is_bound_to_its_own_tokenizer_and_never_registered():
    """The same expression compiled for two tokenizers is two objects, each reading its own ids;
    nothing enters the global metric registry (before: it was registered under its own text, and
    each run read the ids again through its unembedding's tokenizer)."""
    import torch

    from mi_dsl.metric_expr import compile_metric
    from mi_dsl.metrics import METRICS, compute_metrics
    from mi_dsl.runtime.unembed import Unembed

    class Fixed:
        def __init__(self, table, origin):
            self.table, self.origin = table, origin

        def encode(self, text):
            return self.table[text]

    first, second = Fixed({" she": [3], " he": [5]}, "first"), Fixed({" she": [7], " he": [1]}, "second")
    text = 'logit(" she") - logit(" he")'
    unbound = compile_metric(text, lambda off: None)
    bound = {t.origin: unbound.bound(t) for t in (first, second)}
    assert text not in METRICS
    torch.manual_seed(0)
    W_U, x = torch.randn(4, 9), torch.randn(2, 4)
    logits = x @ W_U
    ids = torch.tensor([0, 0])
    for origin, (she, he) in (("first", (3, 5)), ("second", (7, 1))):
        got = compute_metrics(x, ids, ids, [bound[origin]], Unembed(W_U, None))[text]
        assert torch.allclose(got, logits[:, she] - logits[:, he], rtol=1e-5)
        assert bound[origin].tokenizer == origin
    with pytest.raises(RuntimeError, match="not bound"):
        compute_metrics(x, ids, ids, [unbound], Unembed(W_U, None))
    with pytest.raises(TypeError):  # an expression has no name to look up: only its plan's object computes
        compute_metrics(x, ids, ids, [text], Unembed(W_U, None))
