"""The figure convention (analyses/_figures.py) and the attention browser's storage: checked on the
figures' data (the pixel test, tests/report/test_report_pixels.py, checks them drawn)."""
from __future__ import annotations

import pytest

from mi_dsl.analyses._figures import grid_heatmap, layer_head_heatmap, small_multiples


def test_a_layer_grid_labels_every_layer_with_layer_0_on_top():
    values = [[float(l - h) for h in range(4)] for l in range(18)]
    fig = layer_head_heatmap(values, "t", colorbar="logit diff")
    y, x = fig.layout.yaxis, fig.layout.xaxis
    assert y.autorange == "reversed" and list(y.tickvals) == list(range(18))
    assert list(y.ticktext) == [str(l) for l in range(18)] and list(x.ticktext) == ["0", "1", "2", "3"]
    heat = fig.data[0]
    assert heat.zmid == 0 and heat.colorscale[0][1] == "rgb(103,0,31)"  # red below the neutral value
    assert list(heat.customdata[3][2]) == ["3", "2"]  # hover names the layer and the head, not the grid index


def test_a_subset_of_layers_keeps_the_layers_numbers_and_an_unsigned_score_starts_white():
    fig = grid_heatmap([[0.2, 1.0], [0.0, 0.5]], "t", row_labels=[3, 7], column_labels=["a", "b"],
                       signed=False, column_title="Position")
    assert list(fig.layout.yaxis.ticktext) == ["3", "7"] and fig.data[0].zmin == 0
    assert fig.data[0].colorscale[0][1] in ("rgb(247,251,255)", "#f7fbff")


@pytest.mark.parametrize("count,columns", [(1, 1), (3, 3), (12, 4)])
def test_small_multiples_outside_a_page_use_up_to_four_columns(count, columns):
    panels = [{"z": [[1.0, 0.0], [0.5, 0.5]]} for _ in range(count)]
    fig = small_multiples(panels, [f"L0H{i}" for i in range(count)], "t", labels=["0 'a'", "1 'b'"],
                          x_title="key", y_title="query", colorbar="attention")
    used = {trace.xaxis for trace in fig.data}
    assert len(used) == columns and len({trace.yaxis for trace in fig.data}) == -(-count // columns)
    assert [a.text for a in fig.layout.annotations] == [f"L0H{i}" for i in range(count)]
    assert fig.layout.meta["small_multiples"]["count"] == count


def test_browser_patterns_round_trip_within_half_a_step():
    import torch

    from mi_dsl.analyses._attention_browser import _encode, decode

    torch.manual_seed(0)
    scores = torch.randn(3, 7, 7).masked_fill(torch.triu(torch.ones(7, 7, dtype=torch.bool), 1), float("-inf"))
    pattern = scores.softmax(-1)
    back = torch.tensor(decode(_encode(pattern), 3))
    assert (back - pattern).abs().max() <= 0.5 / 255 + 1e-7
    assert back[:, 0, 1:].abs().sum() == 0  # nothing above the diagonal
