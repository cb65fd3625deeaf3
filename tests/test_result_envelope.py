"""The result envelope (core/result.py) the runtime fills and checks for every analysis: pairs as
{count, indices}, a stated convention, named key numbers, no envelope key inside an analysis's data.
An analysis that breaks it is refused by name (a bug in the analysis, not the user's spec)."""
from __future__ import annotations

import pytest

from mi_dsl.core.result import Result, check, pairs_record


def good(**changes):
    fields = dict(data={"per_head": [[0.5]]}, convention="direct logit attribution", key_numbers={"total": 0.5},
                  pairs=pairs_record([0, 1]))
    fields.update(changes)
    return Result(**fields)


def test_a_well_formed_result_passes_and_records_its_envelope():
    result = good()
    check(result, "toy")
    record = result.record()
    assert record["pairs"] == {"count": 2, "indices": [0, 1]} and record["convention"]
    assert Result.from_record(record, {}).data == result.data


@pytest.mark.parametrize("broken, says", [
    (dict(pairs=12), "pairs must be {count, indices}"),              # what the circuit analysis recorded
    (dict(pairs={"count": 3, "indices": [0]}), "count = len(indices)"),
    (dict(data={"pairs": 12}), "envelope's keys ['pairs']"),
    (dict(data={"convention": "x"}), "envelope's keys ['convention']"),
    (dict(convention=""), "states no convention"),
    (dict(key_numbers={"total": "big"}), "key number 'total'"),
])
def test_a_broken_envelope_is_refused_naming_the_analysis(broken, says):
    with pytest.raises(TypeError, match="analysis 'toy'") as info:
        check(good(**broken), "toy")
    assert says in str(info.value)


def test_a_non_finite_key_number_becomes_none():
    result = good(key_numbers={"ratio": float("nan")})
    check(result, "toy")
    assert result.key_numbers == {"ratio": None}
