"""Attention for any prompt of the dataset, chosen in the report after the run.

The attention analysis names heads and a few prompts; a reader often wants another prompt
(the one a per-prompt table shows as odd). So the analysis also keeps its heads' patterns on
every final pair, within a size budget, quantised for display: each value stored as one byte
(round(p * 255)), the lower triangle only (causal attention is zero above the diagonal).
`browser_page` writes a standalone page (an HTML figure) with a prompt picker that redraws the
small multiples of the chosen prompt; the report embeds it. The exact values of the prompts
the spec names stay in the result's `prompts` and its table.
"""
from __future__ import annotations

import base64
import html
import json
from typing import Any, Dict, List, Optional, Sequence

BUDGET_BYTES = 4_000_000  # stored pattern bytes per analysis (about 5.3 MB as base64 in results.json)
ENCODING = ("one byte per value, round(p * 255) (so within 0.002 of the model's), the lower triangle "
            "(query q: keys 0..q) of each head in the heads' order, prompt by prompt, base64")


def browse_data(run, heads, names: Sequence[str], what: str = "capturing attention for the prompt browser"):
    """The heads' patterns on every final pair's clean prompt that fits the budget, quantised."""
    from ._attention import capture_patterns, token_labels

    pairs = run.pairs
    indices = run.used_pair_indices()
    chosen, size = [], 0
    for i, pair in enumerate(pairs):
        n = len(pair.clean.ids)
        cost = len(heads) * n * (n + 1) // 2
        if size + cost > BUDGET_BYTES:
            break
        chosen.append(i)
        size += cost
    patterns = capture_patterns(run, [pairs[i].clean.ids for i in chosen], heads, what)
    prompts = [{"pair": indices[i], "text": pairs[i].clean.text,
                "labels": token_labels(run.tokenizer.token_strs(pairs[i].clean.ids)),
                "patterns": _encode(pattern)} for i, pattern in zip(chosen, patterns)]
    left_out = len(pairs) - len(chosen)
    return {"heads": list(names), "prompts": prompts, "encoding": ENCODING, "bytes": size,
            "budget_bytes": BUDGET_BYTES,
            "note": (f"patterns of {len(chosen)} of {len(pairs)} final pairs' clean prompts ({_size(size)} of "
                     f"a {BUDGET_BYTES / 1e6:.0f} MB budget)" + (f"; the last {left_out} did not fit" if left_out
                                                                 else "") + "; values to 1/255")}


def _size(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 1e5 else f"{count / 1e3:.1f} kB"


def _encode(pattern) -> str:
    """[heads, q, k] probabilities -> base64 of the bytes round(p * 255) of each lower triangle."""
    import torch

    n = pattern.shape[-1]
    rows, cols = torch.tril_indices(n, n)
    values = (pattern[:, rows, cols].clamp(0, 1) * 255).round().to(torch.uint8)
    return base64.b64encode(values.numpy().tobytes()).decode("ascii")


def decode(text: str, heads: int) -> List[List[List[float]]]:
    """The inverse of _encode (what the page's script does), for tests and notebooks."""
    raw = base64.b64decode(text)
    per_head = len(raw) // heads
    n = int(((8 * per_head + 1) ** 0.5 - 1) / 2)
    out = []
    for h in range(heads):
        block = raw[h * per_head:(h + 1) * per_head]
        grid, at = [[0.0] * n for _ in range(n)], 0
        for q in range(n):
            for k in range(q + 1):
                grid[q][k] = block[at] / 255
                at += 1
        out.append(grid)
    return out


_SCRIPT = """
var browse = JSON.parse(document.getElementById('browse-data').textContent);
var fig = JSON.parse(document.getElementById('browse-figure').textContent);
var target = document.getElementById('browse-plot');
function patterns(prompt) {
  var raw = atob(prompt.patterns), heads = browse.heads.length, n = prompt.labels.length;
  var per = raw.length / heads, out = [];
  for (var h = 0; h < heads; h++) {
    var grid = [], at = h * per;
    for (var q = 0; q < n; q++) {
      var row = new Array(n).fill(0);
      for (var k = 0; k <= q; k++) row[k] = raw.charCodeAt(at++) / 255;
      grid.push(row);
    }
    out.push(grid);
  }
  return out;
}
function show(index) {
  var prompt = browse.prompts[index];
  miDslSetPanels(fig, prompt.labels, patterns(prompt));
  fig.layout.title = {text: TITLE + ', pair ' + prompt.pair};
  document.getElementById('browse-text').textContent = prompt.text;
  miDslFit(fig, target.clientWidth);
  Plotly.react(target, fig.data, fig.layout, {responsive: true, displaylogo: false});
}
document.getElementById('browse-pick').addEventListener('change', function (e) { show(+e.target.value); });
show(0);
miDslWatch(target, fig);
"""


def browser_page(data: Dict[str, Any], title: str) -> Optional[str]:
    """A standalone page: pick a prompt, see its heads' patterns (plotly.min.js beside it in figures/)."""
    from ._attention import REPORTS_HEIGHT, pattern_grid
    from ._figures import small_multiples_script

    if not data.get("prompts"):
        return None
    first = data["prompts"][0]
    template = pattern_grid(decode(first["patterns"], len(data["heads"])), data["heads"], ["?"] * len(first["labels"]),
                            title)
    options = "".join(f"<option value='{i}'>pair {p['pair']}: {html.escape(p['text'])}</option>"
                      for i, p in enumerate(data["prompts"]))

    def safe(text: str) -> str:
        return text.replace("</", "<\\/")

    return ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><script src='plotly.min.js'></script></head>"
            "<body style='font-family:system-ui,sans-serif;margin:8px'>"
            f"<p><label>Prompt: <select id='browse-pick' style='max-width:100%'>{options}</select></label></p>"
            f"<p id='browse-text' style='font-family:ui-monospace,monospace'></p><div id='browse-plot'></div>"
            f"<p style='color:#777;font-size:13px'>{html.escape(data['note'])}.</p>"
            f"<script type='application/json' id='browse-data'>{safe(json.dumps(data))}</script>"
            f"<script type='application/json' id='browse-figure'>{safe(template.to_json())}</script>"
            f"<script>{small_multiples_script()}var TITLE = {json.dumps(title)};{_SCRIPT}</script>"
            f"{REPORTS_HEIGHT}</body></html>")
