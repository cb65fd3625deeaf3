"""CPR and CMD by hand on a made-up curve: MIB's areas (MIB-circuit-track,
MIB_circuit_track/evaluation.py `evaluate_area_under_curve`) integrate over the requested
fractions k/100; `area: kept` integrates over the edges actually kept after pruning."""
from __future__ import annotations

import pytest

from mi_dsl.analyses._circuit.faithfulness import Baselines, areas, requested_sizes
from mi_dsl.analyses._circuit.sizes import LEVELS

MIB_PERCENTAGES = (.001, .002, .005, .01, .02, .05, .1, .2, .5, 1)  # evaluation.py's tuple
BASE = Baselines(full=3.0, empty=-1.0)  # f = (m + 1) / 4
F = [0.0, 0.1, 0.1, 0.3, 0.5, 0.9, 1.2, 1.1, 0.95, 1.0]
METRICS = [4 * f - 1 for f in F]
KEPT = [0, 1, 2, 5, 12, 30, 60, 150, 400, 1000]  # after pruning, of 1,000 edges


def trapezoids(xs, ys):
    return sum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(len(xs) - 1))


def test_mib_areas_run_over_the_requested_fractions():
    out = areas(KEPT, METRICS, BASE, 1000, LEVELS, "requested")
    assert out["faithfulness"] == pytest.approx(F)
    assert out["x"] == pytest.approx(list(MIB_PERCENTAGES))
    # by hand, written out: the first trapezoid is (0.002 - 0.001) * (0.0 + 0.1) / 2
    cpr = (0.001 * 0.05 + 0.003 * 0.1 + 0.005 * 0.2 + 0.01 * 0.4 + 0.03 * 0.7 + 0.05 * 1.05 + 0.1 * 1.15
           + 0.3 * 1.025 + 0.5 * 0.975)
    cmd = (0.001 * 0.95 + 0.003 * 0.9 + 0.005 * 0.8 + 0.01 * 0.6 + 0.03 * 0.3 + 0.05 * 0.15 + 0.1 * 0.15
           + 0.3 * 0.075 + 0.5 * 0.025)
    assert out["cpr"] == pytest.approx(cpr, rel=1e-12)
    assert out["cmd"] == pytest.approx(cmd, rel=1e-12)
    assert out["cpr"] == pytest.approx(trapezoids(MIB_PERCENTAGES, F))


def test_kept_area_runs_over_the_edges_left_after_pruning():
    out = areas(KEPT, METRICS, BASE, 1000, LEVELS, "kept")
    xs = [k / 1000 for k in KEPT]
    assert out["x"] == xs
    assert out["cpr"] == pytest.approx(trapezoids(xs, F))
    assert out["cmd"] == pytest.approx(trapezoids(xs, [abs(1 - f) for f in F]))
    assert abs(out["cpr"] - areas(KEPT, METRICS, BASE, 1000, LEVELS, "requested")["cpr"]) > 1e-3


def test_requested_sizes_are_mibs_int_of_pct_times_n():
    for n in (68, 110, 479, 5644, 70651):
        assert requested_sizes(n, LEVELS) == [int(p * n) for p in MIB_PERCENTAGES]


def test_no_faithfulness_when_the_baselines_agree():
    out = areas(KEPT[:3], [1.0, 1.0, 1.0], Baselines(1.0, 1.0), 1000, LEVELS[:3], "requested")
    assert out["faithfulness"] == [None] * 3 and out["cpr"] is None
