"""The golden comparison's tolerances (tests/golden_compare.py): float32 noise from another CPU
passes, a change of the science fails, and a circuit's near-tied cut is accepted either way."""
from __future__ import annotations

from tests.golden_compare import circuit_exemptions, differences, near_tie


def test_a_near_zero_entry_carries_the_rounding_of_its_list():
    golden = {"values": [3.1, -2.9, 1e-7, 2.5]}
    moved = {"values": [3.1 * (1 + 2e-5), -2.9, 2.1e-5, 2.5]}   # Intel vs AMD: ~2e-5 moves, one near 0
    assert differences(golden, moved) == []
    # the old fixed tolerance (REL 1e-5, ABS 1e-6) refused both moves
    assert abs(moved["values"][2] - 1e-7) > 1e-6 + 1e-5 * 1e-7


def test_a_change_of_the_science_fails():
    golden = {"baselines": {"clean": 3.4044}, "values": [3.1, 0.5]}
    assert differences(golden, {"baselines": {"clean": 3.4044 * 1.001}, "values": [3.1, 0.5]})
    assert differences(golden, {"baselines": {"clean": 3.4044}, "values": [3.1, 0.5 + 3.1 * 1e-3]})
    assert differences(golden, {"baselines": {"clean": 3.4044}, "values": [3.1]})  # a lost entry


def circuit(scores, faithfulness):
    return {"kind": "circuit", "select": "abs", "keep_requested": 2,
            "methods": {"eap": {"scores": dict(zip("abcd", scores)), "circuit_edges": 2,
                                "curve": {"requested": [1, 2], "cpr": sum(faithfulness) / 2,
                                          "series": {"abs": {"faithfulness": faithfulness,
                                                             "cpr": sum(faithfulness) / 2}}}}}}


def test_a_near_tied_cut_accepts_either_edge_and_says_which_numbers():
    assert near_tie([0.9, 0.50000001, -0.5, 0.1], 2) and not near_tie([0.9, 0.5, 0.4, 0.1], 2)
    golden = circuit([0.9, 0.50000001, -0.5, 0.1], [0.6, 0.8])
    actual = circuit([0.9, 0.49999999, -0.50000002, 0.1], [0.6, 0.83])   # the tie at edge 2 swapped
    exempt = circuit_exemptions(".c", golden, actual)
    assert ".c.methods.eap.curve.series.abs.faithfulness[1]" in exempt
    assert ".c.methods.eap.curve.series.abs.faithfulness[0]" not in exempt
    assert differences({"c": golden}, {"c": actual}, exempt=sorted(exempt)) == []
    assert differences({"c": golden}, {"c": actual})                      # without the margin it fails


def test_an_untied_cut_is_compared_exactly_as_any_number():
    golden = circuit([0.9, 0.6, -0.4, 0.1], [0.6, 0.8])
    actual = circuit([0.9, 0.6, -0.4, 0.1], [0.6, 0.83])
    assert differences({"c": golden}, {"c": actual}, exempt=sorted(circuit_exemptions(".c", golden, actual)))
