"""The golden comparison's tolerances (tests/golden_compare.py): float32 noise from another CPU
passes, a change of the science fails, and a circuit's near-tied cut is accepted either way."""
from __future__ import annotations

import pytest

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


def test_a_small_edge_score_carries_the_rounding_of_the_largest_score():
    golden = {"scores": {"a0.h3->m8": 1.080618e-05, "a1.h0->a6.h3<q>": -1.083247e-04, "m0->logits": 0.31}}
    moved = {"scores": {"a0.h3->m8": 1.081021e-05, "a1.h0->a6.h3<q>": -1.083532e-04, "m0->logits": 0.31}}
    assert differences(golden, moved) == []                       # another CPU's sum order
    assert differences(golden, {"scores": {**moved["scores"], "a0.h3->m8": 1.080618e-05 + 0.31e-3}})


def test_a_record_field_is_measured_with_its_column():
    golden = {"top": [{"label": "L3H1", "normalized": 0.98, "cells": 4}, {"label": "L0H2", "normalized": 2.0e-06}]}
    moved = {"top": [{"label": "L3H1", "normalized": 0.98, "cells": 4}, {"label": "L0H2", "normalized": -9e-08}]}
    assert differences(golden, moved) == []
    assert differences(golden, {"top": [moved["top"][0], {"label": "L0H2", "normalized": 0.98e-3}]})
    assert differences(golden, {"top": [{**moved["top"][0], "cells": 5}, moved["top"][1]]})  # a count is exact


def test_a_largest_difference_carries_the_rounding_of_its_operands():
    golden = {"comparison": {"attribution": [0.9, -0.4], "exact": [0.8972, -0.4], "max_abs_difference": 0.0027894}}
    assert differences(golden, {"comparison": {**golden["comparison"], "max_abs_difference": 0.0027882}}) == []
    assert differences(golden, {"comparison": {**golden["comparison"], "max_abs_difference": 0.0037}})


def das(iia, train_loss, unintervened=0.71):
    return {"analyses": {"d": {"kind": "interchange", "featurizer": "das", "unintervened": {"iia": unintervened},
                               "iia": {"x": {"resid_pre": [[iia]]}}, "best": {"x": {"iia": iia}},
                               "training": [{"epochs_run": len(train_loss), "train_loss": train_loss,
                                             "val_loss": train_loss}]}}}


def test_a_das_result_is_checked_for_what_training_guarantees_not_for_its_path(tmp_path, monkeypatch):
    import json

    import tests.golden_compare as compare

    monkeypatch.setattr(compare, "GOLDEN", tmp_path)
    monkeypatch.setattr("tests.golden.record.golden_numbers", lambda results: results)
    (tmp_path / "s.json").write_text(json.dumps(das(0.6, [2.5, 1.0, 0.45])))
    assert compare.check_golden("s", das(0.4, [2.5, 1.05, 0.22])) == []   # another path, same guarantees
    grid_only = das(0.6, [2.5, 1.0])
    grid_only["analyses"]["d"]["iia"]["x"]["resid_pre"] = [[1.2]]           # one grid cell, not the best
    for broken in (das(1.4, [2.5, 1.0]), grid_only, das(0.6, [2.5, float("nan")]), das(0.6, [2.5, 2.6, 2.7]),
                   das(0.6, [2.5, 1.0], unintervened=0.5)):                # untrained numbers stay exact
        with pytest.raises(AssertionError):
            compare.check_golden("s", broken)
