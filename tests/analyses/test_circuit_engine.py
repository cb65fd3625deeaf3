"""The circuit engine against independent computations on tiny random models.

Every model here has random norm weights and biases (tests/circuit_models.py). The
independent side never uses the engine's split q/k/v inputs: it adds a difference to
the plain model's residual stream and carries the one head's query (or key/value
group) over from that run, so a wrong hook point, a lost bias or a misread group
shows up as a mismatch.
"""
from __future__ import annotations

import pytest
import torch

from tests.circuit_models import tiny_bridge
from mi_dsl.analyses._circuit.circuits import prune, top_edges
from mi_dsl.analyses._circuit.engine import GraphModel, Pass
from mi_dsl.errors import RunError
from mi_dsl.analyses._circuit.faithfulness import baselines, circuit_metrics, curve, edge_builder
from mi_dsl.analyses._circuit.graph import Graph, graph_of
from mi_dsl.analyses._circuit.scores import score_edges
from mi_dsl.runtime.unembed import Unembed

ARCHS = [pytest.param("gemma3", id="gemma3-gqa4:1"), pytest.param("llama", id="llama-gqa3:1"),
         pytest.param("gpt_neox", id="neox-parallel"), pytest.param("gpt2", id="gpt2-biases")]


class Setup:
    def __init__(self, architecture: str, n: int = 4, length: int = 7, seed: int = 0):
        self.bridge = tiny_bridge(architecture)
        self.graph = graph_of(self.bridge)
        gen = torch.Generator().manual_seed(seed)
        self.clean = torch.randint(3, 300, (n, length), generator=gen)
        self.corrupted = self.clean.clone()
        self.corrupted[:, 1:4] = torch.randint(3, 300, (n, 3), generator=gen)
        self.answers = torch.randint(3, 300, (n,), generator=gen)
        self.foils = torch.randint(3, 300, (n,), generator=gen)
        unembed = Unembed.of(self.bridge)
        self.metric = lambda x, rows: (unembed.logits_of(x, self.answers[rows])
                                       - unembed.logits_of(x, self.foils[rows]))
        self.model = GraphModel(self.bridge, self.graph, self.metric)
        self.rows = torch.arange(n)

    # ------------------------------------------------------------------ the plain model

    def plain_metric(self, tokens, hooks=()):
        logits = self.bridge.run_with_hooks(tokens, prepend_bos=False, fwd_hooks=list(hooks))[:, -1]
        return logits.gather(1, self.answers[:, None])[:, 0] - logits.gather(1, self.foils[:, None])[:, 0]

    def plain_outputs(self, tokens):
        """Each forward node's output in a plain run: resid_pre 0, z @ W_O (post-norm scaled), mlp_out."""
        g, b = self.graph, self.bridge
        kept = {}
        names = ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.attn.hook_z" for l in range(g.n_layers)] \
            + [f"blocks.{l}.hook_mlp_out" for l in range(g.n_layers)]
        if hasattr(b.blocks[0], "ln1_post"):
            names += [f"blocks.{l}.ln1_post.hook_scale" for l in range(g.n_layers)]
        with torch.no_grad():
            b.run_with_hooks(tokens, prepend_bos=False,
                             fwd_hooks=[(n, lambda a, hook, n=n: kept.__setitem__(n, a.clone())) for n in names])
        out = {0: kept["blocks.0.hook_resid_pre"]}
        for l in range(g.n_layers):
            z = kept[f"blocks.{l}.attn.hook_z"]
            heads = torch.einsum("bshd,hdm->bshm", z, b.W_O[l].detach())
            if hasattr(b.blocks[0], "ln1_post"):
                heads = heads * self.model.post_weight[l] / kept[f"blocks.{l}.ln1_post.hook_scale"][:, :, None]
            for h in range(g.n_heads):
                out[g.head_index(l, h)] = heads[:, :, h]
            out[g.mlp_index(l)] = kept[f"blocks.{l}.hook_mlp_out"]
        return out

    def explicit_metric(self, source: int, target: int, eps=None, cut=()):
        """The metric with target input's value moved by eps * (corrupted - clean output of source);
        `cut`: extra hooks (fixing a layer output to a constant) in every run."""
        delta = self.plain_outputs(self.corrupted)[source] - self.plain_outputs(self.clean)[source]
        if eps is not None:
            delta = delta * eps
        g = self.graph
        name = g.backward_names[target]
        cut = list(cut)
        if name == "logits":
            return self.plain_metric(self.clean, cut + [("ln_final.hook_in", lambda a, hook: a + delta)])
        layer = int(name[1:].split(".")[0].split("<")[0])
        if name.startswith("m"):
            return self.plain_metric(self.clean, cut + [(f"blocks.{layer}.ln2.hook_in", lambda a, hook: a + delta)])
        letter = name[-2]
        index = int(name.split(".")[1][1:].split("<")[0])  # head (q) or group (k, v)
        point = f"blocks.{layer}.attn.hook_{letter}"
        moved = {}
        self.bridge.run_with_hooks(
            self.clean, prepend_bos=False,
            fwd_hooks=cut + [(f"blocks.{layer}.hook_resid_pre", lambda a, hook: a + delta),
                             (point, lambda a, hook: moved.__setitem__("x", a[:, :, index]))])

        def carry(a, hook):
            a = a.clone()
            a[:, :, index] = moved["x"]
            return a
        return self.plain_metric(self.clean, cut + [(point, carry)])

    def clean_values(self, names):
        kept = {}
        with torch.no_grad():
            self.bridge.run_with_hooks(self.clean, prepend_bos=False,
                                       fwd_hooks=[(n, lambda a, hook, n=n: kept.__setitem__(n, a.detach().clone()))
                                                  for n in names])
        return kept


def pick_edges(graph: Graph):
    """One edge of each kind: into a query, a key, a value, an MLP and the logits."""
    L = graph.n_layers - 1
    head = graph.head_index(0, 1)
    return [(head, graph.input_slice(L, "q").start + 2), (0, graph.input_slice(L, "k").start + graph.n_kv_heads - 1),
            (graph.mlp_index(0), graph.input_slice(L, "v").start), (head, graph.input_slice(L, "m").start),
            (graph.head_index(L, 0), graph.logits_index), (0, graph.input_slice(0, "m").start)]


def run_circuit(s: Setup, kept):
    mask = s.graph.edge_mask()
    with s.model.split_inputs(), torch.no_grad():
        off = s.model.run(s.corrupted, Pass(s.rows)).outputs
        return s.model.run(s.clean, Pass(s.rows, off=off, complement=(mask & ~kept).float())).metric


@pytest.mark.parametrize("architecture", ARCHS)
def test_all_edges_kept_is_clean_and_none_kept_is_corrupted(architecture):
    s = Setup(architecture)
    mask = s.graph.edge_mask()
    with torch.no_grad():
        clean, corrupted = s.plain_metric(s.clean), s.plain_metric(s.corrupted)
    assert (clean - corrupted).abs().max() > 1e-2  # the corruption matters, so the checks can fail
    full, empty = run_circuit(s, mask), run_circuit(s, torch.zeros_like(mask))
    torch.testing.assert_close(full, clean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(empty, corrupted, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("architecture", ARCHS)
def test_one_edge_removed_equals_an_explicit_computation(architecture):
    s = Setup(architecture)
    mask = s.graph.edge_mask()
    for source, target in pick_edges(s.graph):
        kept = mask.clone()
        kept[source, target] = False
        with torch.no_grad():
            expected = s.explicit_metric(source, target)
        assert (expected - s.plain_metric(s.clean).detach()).abs().max() > 1e-6, s.graph.edge_name(source, target)
        torch.testing.assert_close(run_circuit(s, kept), expected, rtol=1e-4, atol=1e-5,
                                   msg=lambda m, source=source, target=target:
                                       f"{s.graph.edge_name(source, target)}: {m}")


@pytest.mark.parametrize("architecture", ARCHS)
def test_eap_scores_equal_independent_autograd(architecture):
    s = Setup(architecture)
    result = score_edges(s.model, s.clean, s.corrupted, "eap", batch_size=3)
    assert result.forwards == 4 and result.backwards == 2  # two batches: a corrupted forward, a clean one + backward
    for source, target in pick_edges(s.graph):
        eps = torch.zeros((), requires_grad=True)
        s.explicit_metric(source, target, eps).mean().backward()
        torch.testing.assert_close(result.scores[source, target], eps.grad, rtol=1e-3, atol=1e-6,
                                   msg=lambda m, source=source, target=target:
                                       f"{s.graph.edge_name(source, target)}: {m}")
    # nothing outside the graph; inside, only edges whose difference cannot reach the final
    # position through the last layer are exactly 0 (input -> last-layer q/MLP/logits)
    assert (result.scores != 0).sum() >= 0.85 * s.graph.n_edges
    assert not result.scores[~s.graph.edge_mask()].any()


@pytest.mark.parametrize("architecture", ARCHS[:2])
def test_exact_scores_are_one_patched_forward_per_edge(architecture):
    s = Setup(architecture)
    result = score_edges(s.model, s.clean, s.corrupted, "exact", batch_size=4)
    with torch.no_grad():
        base = s.plain_metric(s.clean)
        for source, target in pick_edges(s.graph):
            expected = (s.explicit_metric(source, target) - base).mean()
            torch.testing.assert_close(result.scores[source, target], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["eap_ig_inputs", "eap_ig_activations", "eap_ig_pinned_inputs"])
def test_eap_ig_converges_as_steps_grow(method):
    s = Setup("gemma3")
    runs = {n: score_edges(s.model, s.clean, s.corrupted, method, steps=n, batch_size=4).scores for n in (2, 8, 32)}
    coarse, fine = (runs[2] - runs[8]).norm(), (runs[8] - runs[32]).norm()
    assert fine < 0.5 * coarse
    eap = score_edges(s.model, s.clean, s.corrupted, "eap", batch_size=4).scores
    assert (runs[32] - eap).norm() > 10 * fine  # it is not EAP under another name


def test_clean_corrupted_is_the_mean_of_eap_and_one_published_eap_ig_inputs_step():
    """EAP-IG-inputs with one step as published takes its gradient at a = 0: the corrupted embeddings,
    i.e. the corrupted run; clean-corrupted averages that and the clean run's. Midpoints would not."""
    s = Setup("llama")
    eap = score_edges(s.model, s.clean, s.corrupted, "eap", batch_size=3).scores
    at_corrupted = score_edges(s.model, s.clean, s.corrupted, "eap_ig_inputs", steps=1, batch_size=3).scores
    both = score_edges(s.model, s.clean, s.corrupted, "clean_corrupted", batch_size=3).scores
    torch.testing.assert_close(both, (eap + at_corrupted) / 2, rtol=1e-4, atol=1e-6)
    midpoint = score_edges(s.model, s.clean, s.corrupted, "eap_ig_inputs", steps=1, ig_points="midpoint").scores
    assert (midpoint - at_corrupted).abs().max() > 1e-3


@pytest.mark.parametrize("architecture", ["gemma3", "gpt2"])
def test_eap_ig_activations_cuts_the_gradient_at_one_layer_output_at_a_time(architecture):
    """One step as published (a = 1): every pass is the clean run with one layer output fixed to its clean
    value, a constant; the score averages over the 2L + 1 outputs the gradient each cut leaves."""
    s = Setup(architecture)
    result = score_edges(s.model, s.clean, s.corrupted, "eap_ig_activations", steps=1, batch_size=4)
    g = s.graph
    outputs = [f"blocks.{l}.attn.hook_z" for l in range(g.n_layers)] + [f"blocks.{l}.hook_mlp_out"
                                                                          for l in range(g.n_layers)]
    clean = s.clean_values(outputs)
    for source, target in pick_edges(g):
        total = torch.zeros(())
        for cut in [[]] + [[(n, lambda a, hook, n=n: clean[n])] for n in outputs]:  # [] : the embeddings' cut
            eps = torch.zeros((), requires_grad=True)
            s.explicit_metric(source, target, eps, cut).mean().backward()
            total = total + (eps.grad if eps.grad is not None else 0.0)
        expected = total / (2 * g.n_layers + 1)
        torch.testing.assert_close(result.scores[source, target], expected, rtol=1e-3, atol=1e-6,
                                   msg=lambda m, source=source, target=target: f"{g.edge_name(source, target)}: {m}")
    eap = score_edges(s.model, s.clean, s.corrupted, "eap", batch_size=4).scores
    assert (result.scores - eap).abs().max() > 1e-3  # the cuts matter


def test_pinned_inputs_with_one_step_at_the_midpoint_is_not_clean_gradient():
    s = Setup("gemma3")
    one = score_edges(s.model, s.clean, s.corrupted, "eap_ig_pinned_inputs", steps=1).scores
    eap = score_edges(s.model, s.clean, s.corrupted, "eap").scores
    assert not torch.allclose(one, eap)


@pytest.mark.parametrize("by", ["abs", "signed", "greedy"])
def test_pruning_never_changes_a_circuits_metric(by):
    s = Setup("gemma3")
    scores = score_edges(s.model, s.clean, s.corrupted, "eap").scores
    for n in (5, 15, 40):
        kept = top_edges(s.graph, scores, n, by)
        pruned = prune(s.graph, kept)
        assert pruned.sum() <= kept.sum()
        torch.testing.assert_close(run_circuit(s, pruned), run_circuit(s, kept), rtol=1e-5, atol=1e-5)


def test_faithfulness_curve_ends_at_one_and_has_a_random_baseline():
    s = Setup("gemma3")
    scores = score_edges(s.model, s.clean, s.corrupted, "eap").scores
    base = baselines(s.model, s.clean, s.corrupted)
    with torch.no_grad():
        assert base.full == pytest.approx(float(s.plain_metric(s.clean).mean()), abs=1e-5)
        assert base.empty == pytest.approx(float(s.plain_metric(s.corrupted).mean()), abs=1e-5)
    build = edge_builder(s.graph, scores, top_edges)
    gen = torch.Generator().manual_seed(0)
    random = edge_builder(s.graph, None, lambda g, _, n, by: top_edges(g, torch.rand(g.n_forward, g.n_backward,
                                                                                        generator=gen), n, "abs"))
    out = curve(s.model, s.clean, s.corrupted, build, s.graph.n_edges, base=base, random_build=random)
    signed, absolute = out["series"]["signed"], out["series"]["abs"]
    for series in (signed, absolute):
        assert series["faithfulness"][-1] == pytest.approx(1.0, abs=1e-5)
        assert series["x"][-1] == 1.0 and series["kept_edges"][-1] == s.graph.n_edges
    assert len(out["series"]["random"]["faithfulness"]) == len(out["levels_percent"]) == 10
    # MIB: x is the requested fraction; CPR from the signed ranking, CMD from the absolute one
    assert signed["x"] == [k / 100 for k in out["levels_percent"]]
    pts = list(zip(signed["x"], signed["faithfulness"]))
    by_hand = sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in zip(pts, pts[1:]))
    assert out["cpr"] == pytest.approx(by_hand) and out["cpr"] == signed["cpr"] and out["cmd"] == absolute["cmd"]
    # the curve's metric at a level is the metric of that circuit run on its own
    kept = prune(s.graph, top_edges(s.graph, scores, out["requested"][6], "abs"))
    assert circuit_metrics(s.model, s.clean, s.corrupted, [kept])[0] == pytest.approx(absolute["metric"][6], abs=1e-6)


def test_graph_counts_and_grouped_query_layout():
    g = Graph(n_layers=30, n_heads=9, n_kv_heads=3)      # SmolLM2-135M
    assert g.n_forward == 301 and g.n_backward == 30 * (9 + 3 + 3 + 1) + 1
    per_layer = [15 * (1 + 10 * l) + (1 + 10 * l + 9) for l in range(30)]
    assert g.n_edges == sum(per_layer) + 301
    assert g.backward_names[g.input_slice(4, "k").start + 2] == "a4.g2<k>"
    feeds = g.feeds()
    # heads 3, 4, 5 of a layer share key/value group 1
    k1 = g.input_slice(0, "k").start + 1
    assert feeds[k1].nonzero().flatten().tolist() == [g.head_index(0, h) for h in (3, 4, 5)]
    mha = Graph(n_layers=2, n_heads=4, n_kv_heads=4, parallel_attn_mlp=True)
    assert mha.backward_names[mha.input_slice(1, "v").start] == "a1.h0<v>"
    assert mha.n_upstream_of(1, "m") == mha.n_upstream_of(1, "q")  # parallel: no edge from a layer's heads to its MLP


def test_unequal_lengths_are_refused():
    s = Setup("gemma3")
    from mi_dsl.errors import RunError

    with pytest.raises(RunError, match="one token length"):
        score_edges(s.model, s.clean, s.corrupted[:, :-1], "eap")


def test_mean_ablation_of_one_prompt_is_patching_and_all_kept_is_clean_for_every_ablation():
    s = Setup("gemma3", n=1)
    mask = s.graph.edge_mask()
    empty, full = torch.zeros_like(mask), mask
    patched = circuit_metrics(s.model, s.clean, s.corrupted, [empty, full], ablation="patching")
    mean = circuit_metrics(s.model, s.clean, s.corrupted, [empty, full], ablation="mean")
    zero = circuit_metrics(s.model, s.clean, s.corrupted, [empty, full], ablation="zero")
    assert mean == pytest.approx(patched, abs=1e-5)
    assert zero[1] == pytest.approx(patched[1], abs=1e-5) and abs(zero[0] - patched[0]) > 1e-3


@pytest.mark.parametrize("architecture", ["llama", "gemma3"])
def test_greedy_and_abs_circuits_prune_without_changing_the_metric(architecture):
    s = Setup(architecture)
    scores = score_edges(s.model, s.clean, s.corrupted, "eap_ig_inputs", steps=2).scores
    for by in ("abs", "greedy"):
        kept = top_edges(s.graph, scores, 25, by)
        pruned = prune(s.graph, kept)
        torch.testing.assert_close(run_circuit(s, pruned), run_circuit(s, kept), rtol=1e-5, atol=1e-5)
        assert torch.equal(prune(s.graph, pruned), pruned)  # pruning is idempotent


def test_rank_correlation_overlap_and_resamples():
    from mi_dsl.analyses._circuit.compare import jaccard, ranks, resamples, spearman

    assert ranks(torch.tensor([3.0, 1.0, 3.0, 2.0])).tolist() == [2.5, 0.0, 2.5, 1.0]  # ties share their mean rank
    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    assert spearman(x, x ** 3) == pytest.approx(1.0)        # monotone, not linear
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert spearman(x, torch.tensor([2.0, 1.0, 4.0, 3.0, 5.0])) == pytest.approx(0.8)  # 1 - 6*4/(5*24)
    a, b = torch.tensor([True, True, False, False]), torch.tensor([True, False, True, False])
    assert jaccard(a, b) == pytest.approx(1 / 3) and jaccard(a & ~a, b & ~b) is None
    first, again = resamples(10, 3, seed=7), resamples(10, 3, seed=7)
    assert all(torch.equal(p, q) for p, q in zip(first, again)) and not torch.equal(first[0], first[1])


@pytest.mark.parametrize("architecture", ARCHS)
def test_sparse_ablation_equals_every_parent_read(architecture):
    """One complement for the batch reads only the edges that change an input (the ablated
    parents, or the running sum minus the kept ones); a per-row complement reads every parent
    of every input. Both must give the same metric at every circuit size, the parallel model
    too (its MLP inputs cannot use the running sum)."""
    s = Setup(architecture)
    mask = s.graph.edge_mask()
    gen = torch.Generator().manual_seed(3)
    with s.model.split_inputs(), torch.no_grad():
        off = s.model.run(s.corrupted, Pass(s.rows)).outputs
        clean_metric = s.model.run(s.clean, Pass(s.rows, capture_outputs=False)).metric
        for fraction in (0.0, 0.02, 0.3, 0.7, 0.98, 1.0):
            kept = mask & (torch.rand(mask.shape, generator=gen) < fraction)
            complement = (mask & ~kept).float()
            sparse = s.model.run(s.clean, Pass(s.rows, capture_outputs=False, off=off, complement=complement))
            per_row = s.model.run(s.clean, Pass(s.rows, capture_outputs=False, off=off,
                                                complement=complement.expand(len(s.rows), *complement.shape)))
            assert sparse._sparse is not None and per_row._sparse is None  # the two paths really ran
            if fraction < 1.0:
                assert (per_row.metric - clean_metric).abs().max() > 1e-3  # the ablation moves the metric
            torch.testing.assert_close(sparse.metric, per_row.metric, rtol=1e-5, atol=1e-5,
                                       msg=lambda m, f=fraction: f"{f:.0%} of edges kept: {m}")


def test_equal_circuits_run_once_and_get_the_same_number():
    s = Setup("gemma3")
    mask = s.graph.edge_mask()
    scores = score_edges(s.model, s.clean, s.corrupted, "eap").scores
    small, large = (prune(s.graph, top_edges(s.graph, scores, n, "abs")) for n in (10, s.graph.n_edges // 2))
    assert 0 < small.sum() < large.sum() < mask.sum()
    alone = circuit_metrics(s.model, s.clean, s.corrupted, [small, large])
    before = s.model.forwards
    values = circuit_metrics(s.model, s.clean, s.corrupted, [large, small, large.clone(), mask, small],
                             known=[(mask, 123.0)])
    assert s.model.forwards - before == 2  # one batch of 4 prompts: two distinct circuits (its corrupted run is kept)
    assert values == [alone[1], alone[0], alone[1], 123.0, alone[0]]


def test_an_attention_output_its_heads_do_not_explain_is_refused_after_the_pass():
    """The split check is judged once a pass ends (one device read, not one a layer); a layer whose
    heads' outputs do not add up to its attention output is still named."""
    s = Setup("gpt2")
    with s.model.split_inputs():
        s.model.run(s.clean, Pass(s.rows))                       # the real W_O: it splits
        s.model.W_O = s.model.W_O.clone()
        s.model.W_O[1, 0] += 0.5 * torch.randn_like(s.model.W_O[1, 0])
        with pytest.raises(RunError, match="layer 1's attention output does not split"):
            s.model.run(s.clean, Pass(s.rows))
