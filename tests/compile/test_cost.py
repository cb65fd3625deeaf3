"""Issue 27, finding 6: cost before compute.

Before: `activation_patching` with `z_by_position` over IOI's 810 pairs (874,800 patched rows)
passed `mi-run plan` with no count of cells, rows or time, and `head_detection` with
`seq_len: 4096, batch: 1000` was estimated at 2.3 MB and passed 5 GB (the 1 GB batch budget was
not kept). Now every analysis declares its cost (compile/cost.py), the plan prints it, a run over
its max_cost asks for --yes, and one row over the batch budget is refused.
"""
from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from mi_dsl.analyses.registry import load_all
from mi_dsl.compile import prepare
from mi_dsl.compile.cost import check_cost, plan_costs
from mi_dsl.errors import RunError, SpecMeaningError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def assumed_rate(tmp_path, monkeypatch):
    """No measured rate: the estimates use the assumed one, whatever this machine's runs recorded."""
    from mi_dsl.compile import cost

    monkeypatch.setattr(cost, cost._rates_path.__name__, lambda: tmp_path / cost.RATES_FILE)


def test_every_analysis_kind_declares_its_cost():
    missing = [kind for kind, entry in load_all().items() if not callable(getattr(entry.implementation, "cost", None))]
    assert not missing, f"analysis kinds without a cost(params, inputs) method: {missing}"


def ioi_child(tmp_path: Path, analyses: str, extra: str = "") -> Path:
    """specs/ioi.yaml with other analyses and no sampling: a child spec beside a copy of it."""
    shutil.copy(REPO / "specs" / "ioi.yaml", tmp_path / "ioi.yaml")
    child = tmp_path / "child.yaml"
    child.write_text("extends: ioi.yaml\npipeline: []\nanalyses:\n" + textwrap.dedent(analyses) + extra)
    return child


def test_the_plan_counts_the_patched_rows_of_the_issues_probe(tmp_path, cli, assumed_rate):
    child = ioi_child(tmp_path, "  - {kind: activation_patching, target: z_by_position}\n")
    prepared = prepare(child)
    pairs = len(prepared.dataset.pairs)
    [length] = prepared.dataset.token_lengths
    assert pairs == 810
    [row] = plan_costs(prepared)["analyses"]
    cells = 18 * 4 * length  # Gemma-3-270m: 18 layers x 4 heads, one column per position
    assert row["cells"] == cells and row["patched_rows"] == cells * pairs == 874_800
    assert row["forward_rows"] == cells * pairs + 2 * pairs  # the source and base runs too
    assert row["seconds"] > 0 and row["batch_rows"] >= 1
    code, out, _ = cli("plan", child)
    assert code == 0 and "874,800 patched" in out and "cost before compute" in out
    with pytest.raises(SpecMeaningError, match="estimated at .* over the 60 minutes") as err:
        check_cost(prepared)
    assert err.value.location.path == "analyses[0]" and "--yes" in err.value.hint
    check_cost(prepared, yes=True)  # the command line may say yes


def test_the_spec_may_allow_a_longer_run(tmp_path):
    child = ioi_child(tmp_path, "  - {kind: activation_patching, target: z_by_position}\n",
                      "run: {max_cost: 100000000}\n")
    check_cost(prepare(child))
    lower = ioi_child(tmp_path, "  - {kind: head_attribution}\n", "run: {max_cost: 0.00001}\n")
    with pytest.raises(SpecMeaningError, match="over the 1e-05 minutes") as err:
        check_cost(prepare(lower))
    assert err.value.location.path == "run.max_cost"


def test_head_detection_over_the_batch_budget_is_refused_before_the_model_loads(tmp_path, cli):
    child = ioi_child(tmp_path, "  - {kind: head_detection, seq_len: 4096, batch: 1000}\n")
    [row] = plan_costs(prepare(child))["analyses"]
    assert row["tokens_per_row"] == 8193 and row["forward_rows"] == 1000
    assert row["row_gb"] > 1 and row["fits"] is False  # the plan said 2.3 MB before
    code, out, _ = cli("plan", child)
    assert "OVER THE 1 GB BATCH BUDGET" in out
    cpu = ioi_child(tmp_path, "  - {kind: head_detection, seq_len: 4096, batch: 1000}\n",
                    "model: {device: cpu}\n")
    with pytest.raises(SpecMeaningError, match="one row of 8,193 tokens needs about .* GB .* budget of 1 GB") as err:
        check_cost(prepare(cpu))
    assert err.value.location.path == "analyses[0]"


def test_the_executor_keeps_the_batch_budget_for_one_row_too():
    from mi_dsl.runtime.executor import Executor
    from mi_dsl.models import load_model
    from mi_dsl.spec.model import ModelSpec
    from tests.word_tokenizer import word_tokenizer_file

    loaded = load_model(ModelSpec(source="random", architecture="gpt_neox", size="tiny",
                                  tokenizer=str(word_tokenizer_file())))
    executor = Executor(loaded, memory_gb=0.05, progress=False)
    assert executor.rows_per_batch(100) >= 1
    with pytest.raises(RunError, match="one row of 4,001 tokens|one row of 4001 tokens"):
        executor.rows_per_batch(4001)


def test_a_run_records_its_rate_and_the_next_plan_uses_it(tmp_path, monkeypatch):
    from mi_dsl.running import run_spec
    from tests.runtime.test_runtime import tiny, write_spec

    monkeypatch.setenv("MI_DSL_CACHE", str(tmp_path / "cache"))
    spec = write_spec(tmp_path, tiny("gpt_neox"), analyses="analyses:\n  - {kind: activation_patching, target: "
                      "resid_pre}\n", extra="run: {max_cost: 0.000001}\n")
    before = plan_costs(prepare(spec))
    assert before["rate"].startswith("assumed")
    with pytest.raises(SpecMeaningError, match="over the 1e-06 minutes"):
        run_spec(spec, progress=False, out_dir=str(tmp_path / "runs"))
    run_spec(spec, progress=False, out_dir=str(tmp_path / "runs"), yes=True)
    after = plan_costs(prepare(spec))
    assert after["rate"].startswith("measured on this machine (cpu") and after["seconds"] != before["seconds"]


def test_attention_costs_count_the_browser_and_the_pattern_sweep_outside_the_shared_pass(tmp_path):
    """An attention view on dataset prompts also captures every final pair for its prompt browser; the
    shared final-position pass keeps every head's patterns for the run's cache when an analysis reads
    them, so views after its first analysis run no sweep, and attention_vs_contribution takes both its
    head outputs and its patterns from the pass. A literal text is its own forward."""
    child = ioi_child(tmp_path, "  - {kind: head_attribution, id: head_attr}\n"
                                "  - {kind: attention_vs_contribution, heads: [L0H0], from: final, to: final}\n"
                                "  - {kind: attention, heads: [L0H0], prompts: [0, 1]}\n"
                                "  - {kind: attention, id: literal, heads: [L0H0], text: \"a b c\"}\n")
    prepared = prepare(child)
    rows = {row["kind"] + str(i): row for i, row in enumerate(plan_costs(prepared)["analyses"])}
    assert rows["attention_vs_contribution1"]["forward_rows"] == 0
    assert "reads shared pass" in rows["attention_vs_contribution1"]["note"]
    assert rows["attention2"]["forward_rows"] == 0
    assert "pattern cache (filled by shared pass" in rows["attention2"]["note"]
    assert rows["attention3"]["forward_rows"] == 1


def test_an_attention_view_before_the_shared_pass_pays_for_the_patterns(tmp_path):
    """The first reader fills the run's pattern cache: a view before any shared-pass analysis sweeps
    its prompts and the browser's; attention_vs_contribution after it reads the cache."""
    child = ioi_child(tmp_path, "  - {kind: attention, heads: [L0H0], prompts: [0, 1]}\n"
                                "  - {kind: head_attribution, id: head_attr}\n"
                                "  - {kind: attention_vs_contribution, heads: [L0H0], from: final, to: final}\n")
    prepared = prepare(child)
    pairs = len(prepared.dataset.pairs)
    rows = {row["kind"] + str(i): row for i, row in enumerate(plan_costs(prepared)["analyses"])}
    assert rows["attention0"]["forward_rows"] == 2 + pairs
    assert rows["attention_vs_contribution2"]["forward_rows"] == 0


def test_shared_token_work_counts_each_prefix_once():
    from mi_dsl.compile.prefix_work import shared_token_work

    same_start = [(1, 2, 3, 4, 5 + i, 6) for i in range(6)]  # 6 prompts, 4 shared tokens
    # p = 4: one whole prompt (6 tokens) + 5 prompts x 2 tokens after the prefix
    assert shared_token_work(same_start) == 6 + 5 * 2
    two_prefixes = same_start + [(9, 2, 3, 4, 5, 6), (9, 2, 3, 4, 7, 6)]
    assert shared_token_work(two_prefixes) == 2 * 6 + 6 * 2
    assert shared_token_work([(1, 2, 3), (4, 5, 6)]) == 6  # nothing shared: every prompt whole


@pytest.mark.parametrize("architecture", ["gpt_neox", "gemma3"])
def test_the_plan_counts_the_keep_condition_s_tokens_as_the_run_runs_them(tmp_path, tiny_tokenizer, architecture):
    """The keep-condition's forwards were missing from the plan's cost (a quarter of the syllogism's
    time, and a large vocabulary product passed the max_cost check unestimated)."""
    from mi_dsl.runtime.run import Session
    from mi_dsl.runtime.shared_prefix import continuable
    from tests.compile.test_fusion import prepared, spec_text

    p = prepared(tmp_path, spec_text(tiny_tokenizer, architecture, "pipeline:\n  - keep: clean.logit_diff > -1000\n"))
    costs = plan_costs(p)
    [row] = costs["pipeline"]
    distinct = {tuple(q.clean.ids) for q in p.dataset.pairs} | {tuple(q.corrupted.ids) for q in p.dataset.pairs}
    assert row["id"] == "pipeline[0]" and row["forward_rows"] == len(distinct)
    assert row["forward_tokens"] < len(distinct) * row["tokens_per_row"]  # the shared prefix runs once
    assert costs["seconds"] >= row["seconds"] > 0
    session = Session.of(p, progress=False, say=lambda m: None)
    session.open()
    continuable(session.executor, [q.clean.ids for q in p.dataset.pairs])  # its probe is not the stage's work
    before = session.executor.forward_tokens
    session.run_pipeline()
    assert session.executor.forward_tokens - before == row["forward_tokens"]


def test_a_keep_condition_over_the_max_cost_is_located_at_its_step(tmp_path, tiny_tokenizer, monkeypatch, cli):
    from mi_dsl.compile import cost
    from tests.compile.test_fusion import prepared, spec_text

    text = spec_text(tiny_tokenizer, "gpt_neox").split("analyses:")[0]  # one cheap analysis: the keep step is larger
    p = prepared(tmp_path, text + "analyses:\n  - {kind: predictions}\npipeline:\n  - keep: clean.logit_diff > -1000\n")
    monkeypatch.setattr(cost, "per_token_seconds", lambda model, shape: (60.0, "a test's rate"))
    with pytest.raises(SpecMeaningError, match=r"the largest part is pipeline\[0\] \(keep") as err:
        check_cost(p)
    assert err.value.location.path == "pipeline[0]"
    code, out, _ = cli("plan", tmp_path / "fusion.yaml")
    assert code == 0 and "pipeline[0] [keep]: 16 forward rows x 9 tokens, 96 tokens run" in out


def test_a_small_run_moves_the_measured_rate_by_its_share_of_tokens(tmp_path, monkeypatch):
    """A spec's 31,000 forward tokens measured 0.96 ms each; a 470-token test run then measured 1.35 ms
    (per-forward overhead) and replaced it: the next plan's estimates rose 40%."""
    from mi_dsl.compile import cost
    from mi_dsl.models.model_spec import ModelSpec

    monkeypatch.setenv("MI_DSL_CACHE", str(tmp_path / "cache"))
    model = ModelSpec(source="embedded")
    cost.record_rate(model, "cpu", 30_000, 30.0)          # 1 ms a token
    cost.record_rate(model, "cpu", 500, 1.0)              # 2 ms a token, 500 tokens
    rate, source = cost.per_token_seconds(model, None)
    assert rate == pytest.approx(31.0 / 30_500) and "30,500 tokens" in source
    cost.record_rate(model, "cpu", cost.RATE_MEMORY, 3.0 * cost.RATE_MEMORY / 1000)  # a slower machine now: 3 ms
    rate, _ = cost.per_token_seconds(model, None)
    assert 2e-3 < rate < 3e-3  # the earlier runs count as much as the new one's tokens, at most
    cost.record_rate(model, "cuda", 1000, 0.01)           # another device: its own rate, not an average
    assert cost.per_token_seconds(model, None)[0] == pytest.approx(1e-5)


@pytest.mark.parametrize("architecture", ["gpt_neox", "gemma3"])
def test_the_patching_estimate_counts_the_work_the_run_does(tmp_path, tiny_tokenizer, architecture):
    """Exact patching runs a patched row from its layer on (prefix reuse) and from the first position at
    which the prompts differ (key/value reuse): the plan's share of a full forward is the run's."""
    from mi_dsl.runtime.run import execute
    from tests.compile.test_fusion import prepared, spec_text

    text = spec_text(tiny_tokenizer, architecture).split("analyses:")[0]
    p = prepared(tmp_path, text + "analyses:\n  - {kind: activation_patching, target: z, max_pairs: 4}\n")
    [row] = plan_costs(p)["analyses"]
    first = next(i for i, (a, b) in enumerate(zip(p.dataset.pairs[0].clean.ids, p.dataset.pairs[0].corrupted.ids))
                 if a != b)
    assert first > 0 and row["note"] == f"prefix reuse counted, positions {first}.. only"
    pairs = 4  # the source and base runs are whole forwards; the patched rows are the rest of the share
    patched_share = (row["block_fraction"] * row["forward_rows"] - 2 * pairs) / row["patched_rows"]
    log = execute(p, fresh=True, store_dir=tmp_path / "store", progress=False)
    [result] = log.to_json()["analyses"].values()
    passes = result["passes"]
    assert passes["kv_reuse"] and passes["prefix_reuse"]
    assert patched_share == pytest.approx(1 - passes["token_work_saved"], abs=1e-4)


def test_the_attribution_estimate_counts_the_positions_the_run_skips(tmp_path, tiny_tokenizer):
    from mi_dsl.runtime.run import execute
    from tests.compile.test_fusion import prepared, spec_text

    text = spec_text(tiny_tokenizer, "gemma3").split("analyses:")[0]
    p = prepared(tmp_path, text + "analyses:\n  - {kind: attribution_patching, target: z, max_pairs: 4}\n")
    [row] = plan_costs(p)["analyses"]
    log = execute(p, fresh=True, store_dir=tmp_path / "store", progress=False)
    [result] = log.to_json()["analyses"].values()
    passes = result["passes"]
    assert passes["kv_reuse"] and row["note"] == f"positions {passes['first_position']}.. only"
    assert row["block_fraction"] == pytest.approx(1 - passes["token_work_saved"], abs=1e-4)
    assert row["block_fraction"] < 1
