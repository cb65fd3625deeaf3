"""What a sweep says and does where it could mislead (issue 24): an axis that changes nothing
warns (the tutorial's seed axis read 'stability 1.0' because nothing in it is random); a
--fresh sweep killed mid-way and rerun without --fresh recomputes the points it had not
reached instead of keeping their old results; `mi-run sweep --set` sets a value in every point."""
from __future__ import annotations

import json

from mi_dsl.sweep import run_sweep
from mi_dsl.sweep.command import _write_points, validate_points
from mi_dsl.sweep.expand import load_sweep
from mi_dsl.sweep.inert import inert_axes
from mi_dsl.sweep.records import fresh_pending, record_path, start_fresh

from tests.sweep.test_sweep import SPEC, SWEEP, write

NOT_RANDOM = SPEC.replace("  - {kind: head_detection, id: induction, seq_len: 6, batch: 1}\n", "")


def warnings_of(sweep_file, overrides=()):
    sweep = load_sweep(sweep_file, None, overrides)
    _write_points(sweep)
    validate_points(sweep, [])
    return sweep, inert_axes(sweep, sweep.contents)


def test_an_axis_that_changes_nothing_warns_at_the_axis(tmp_path):
    sweep_file = write(tmp_path, spec=NOT_RANDOM)
    sweep, warnings = warnings_of(sweep_file)
    assert [w.location.line for w in warnings] == [5], "the seed axis only: the nouns change the prompts"
    assert "axis 'seed' changes nothing" in warnings[0].message and "nothing in the spec reads the seed" in \
        warnings[0].message and warnings[0].location.file == str(sweep_file)
    # head detection draws random tokens from the spec's seed: the same axis then matters
    _, warnings = warnings_of(write(tmp_path / "random", spec=SPEC))
    assert warnings == []
    # so does a sample step without a seed of its own
    _, warnings = warnings_of(write(tmp_path / "sample", spec=NOT_RANDOM.replace("{n: 6, seed: 7}", "{n: 6}")))
    assert warnings == []


def test_sweep_set_reaches_every_point_and_its_key(tmp_path):
    sweep_file = write(tmp_path, spec=NOT_RANDOM)
    sweep, _ = warnings_of(sweep_file, ["analyses.0.top_k=3"])
    for point in sweep.points:
        assert "top_k: 3" in sweep.point_file(point).read_text()
    keys = dict(sweep.contents)
    plain, _ = warnings_of(sweep_file)
    assert all(keys[p] != plain.contents[p] for p in keys)


def test_an_interrupted_fresh_sweep_recomputes_the_points_it_had_not_reached(tmp_path):
    sweep_file = write(tmp_path, SWEEP.replace("seed: [0, 1]", "seed: [0]"))
    first = run_sweep(sweep_file, progress=False)
    assert first.ran == ["p000", "p001"]
    sweep = load_sweep(sweep_file)
    # `--fresh` marks every point before it runs any; killed after p000 finished (its record rewritten)
    p000 = record_path(sweep, sweep.points[0]).read_text()
    start_fresh(sweep, sweep.points)
    assert not record_path(sweep, sweep.points[1]).exists()
    from mi_dsl.sweep.records import fresh_done

    record_path(sweep, sweep.points[0]).write_text(p000)
    fresh_done(sweep, sweep.points[0])
    assert fresh_pending(sweep) == {"p001"}
    again = run_sweep(sweep_file, progress=False)  # no --fresh
    assert again.ran == ["p001"] and again.skipped == ["p000"]
    assert fresh_pending(sweep) == set() and not (sweep.out_dir / "points" / "fresh.json").exists()
    assert json.loads(record_path(sweep, sweep.points[1]).read_text())["point"] == "p001"
