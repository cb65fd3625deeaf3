"""The circuit's pass counts and `mi-run plan`'s time/memory estimate (torch-free, _circuit/sizes.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from mi_dsl.analyses._circuit import sizes
from mi_dsl.analyses.circuit import CircuitParams
from mi_dsl.models.shapes import GEMMA3_270M as G

GEMMA = dict(hidden=G.d_model, layers=G.n_layers, heads=G.n_heads, kv_heads=G.n_kv_heads, head_dim=G.d_head,
             intermediate=G.d_mlp, gated=G.gated)
PARAMS = CircuitParams(kind="circuit", steps=5, methods=("eap",), curve=True, random_baseline=False)


def test_pass_counts_follow_the_published_estimators():
    assert sizes.passes("eap", 5) == (2, 1)
    assert sizes.passes("eap_ig_inputs", 5) == (7, 5)
    assert sizes.passes("eap_ig_activations", 5, n_layers=18) == (3 + 37 * 5, 37 * 5)  # 2L + 1 outputs x steps
    assert sizes.passes("clean_corrupted", 5) == (4, 2)


def test_estimate_grows_with_the_work_it_counts():
    one = sizes.estimate(GEMMA, PARAMS, 8, 16)
    assert sizes.estimate(GEMMA, PARAMS, 16, 16)["flops"] == 2 * one["flops"]      # linear in pairs
    methods = {m: sizes.estimate(GEMMA, PARAMS.replace(methods=(m,), curve=False), 8, 16)["flops"]
               for m in ("eap", "eap_ig_inputs", "eap_ig_activations", "exact")}
    assert methods["eap"] < methods["eap_ig_inputs"] < methods["eap_ig_activations"] < methods["exact"]
    assert sizes.estimate(GEMMA, PARAMS.replace(rankings="select"), 8, 16)["flops"] < one["flops"]  # one curve, not two
    assert one["seconds"] == pytest.approx(one["flops"] / sizes.CPU_FLOPS)
    assert 0 < one["activation_bytes"] < 2 ** 31


def test_plan_shows_the_estimate():
    import mi_dsl

    spec = Path(__file__).resolve().parents[2] / "specs" / "ioi_circuit.yaml"
    summary = mi_dsl.plan(spec)
    line = next(r["note"] for r in summary["cost"]["analyses"] if r["id"] == "ioi_circuit")
    assert "s on one CPU thread" in line and "MiB" in line and "16 pairs" in line
