"""Shared by the attention analyses: head-selector schema, pattern capture, pattern figures.

`capture_each` runs prompts of any lengths (grouped by length, batched, no padding) and
returns one dict of kept activations per prompt. `attention_view` writes circuitsvis's
interactive AttentionHeads view as one standalone HTML page: the JavaScript bundle that
ships inside the circuitsvis package is inlined, so the page opens offline (its few
namespace and documentation URLs are written with escaped slashes, which JavaScript
reads the same, so the page holds no http(s):// address at all).
"""
from __future__ import annotations

import html
import json
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import RunError
from ..runtime.patterns import PATTERN_HOOK
from .base import head_label

HEADS = {
    "oneOf": [
        {"type": "string", "description": "One head selector: L8H2, L10H*, L*H3, top(head_attr, 12), "
                                          "bottom(head_attr, 4), top_abs(head_attr, 6)."},
        {"type": "array", "minItems": 1, "items": {"type": "string"},
         "description": "Several head selectors; their heads in order, without repeats."},
    ],
}


def heads_param(description: str) -> Dict:
    return {**HEADS, "description": description}


# ------------------------------------------------------------------ capture


def capture_each(run, prompts: Sequence[Sequence[int]], keep: Dict, stop_after: Optional[str],
                 what: str = "capturing attention") -> List[Dict]:
    """Run each prompt once (batched by length); per prompt, {hook: kept slice without batch dim}.

    `keep` maps hook names to act -> kept tensor (batch first); results move to the CPU."""
    import torch

    out: List[Optional[Dict]] = [None] * len(prompts)
    groups: Dict[int, List[int]] = {}
    for i, ids in enumerate(prompts):
        groups.setdefault(len(ids), []).append(i)
    for length, rows in groups.items():
        tokens = torch.tensor([list(prompts[i]) for i in rows], dtype=torch.long)

        def one_batch(part: slice, tokens=tokens):
            kept = run.executor.capture(tokens[part], keep, stop_after=stop_after)[1]
            return {name: value.float().cpu() for name, value in kept.items()}

        start = 0
        for batch in run.executor.map_batches(len(rows), length, one_batch, what):
            size = next(iter(batch.values())).shape[0]
            for j in range(size):
                out[rows[start + j]] = {name: value[j] for name, value in batch.items()}
            start += size
    return out  # type: ignore[return-value]


def by_layer(heads: Sequence[Tuple[int, int]]) -> Dict[int, List[int]]:
    layers: Dict[int, List[int]] = {}
    for layer, head in heads:
        layers.setdefault(layer, []).append(head)
    return layers


def capture_patterns(run, prompts: Sequence[Sequence[int]], heads: Sequence[Tuple[int, int]],
                     what: str = "capturing attention patterns"):
    """Per prompt, [len(heads), query, key] patterns of the heads (in their order).

    The run's pattern cache (runtime/patterns.py) serves prompts already seen: a prompt's first
    capture keeps every head of every layer (one forward to the last layer's attention), within
    its budget. Past the budget only the selected heads' layers are hooked, and the forward stops
    at the last of them."""
    import torch

    cache = _cached_patterns(run, prompts, what)
    if cache is not None:
        return [torch.stack([cache[tuple(ids)][l][h] for l, h in heads]) for ids in prompts]
    layers = by_layer(heads)
    keep = {PATTERN_HOOK.format(l): (lambda a, hs=tuple(hs): a[:, list(hs)]) for l, hs in layers.items()}
    kept = capture_each(run, prompts, keep, PATTERN_HOOK.format(max(layers)), what)
    return [torch.stack([k[PATTERN_HOOK.format(l)][layers[l].index(h)] for l, h in heads]) for k in kept]


def _cached_patterns(run, prompts: Sequence[Sequence[int]], what: str) -> Optional[Dict]:
    """The run's cache {prompt ids: [layer][head, query, key]} holding every prompt, or None when the
    prompts not yet in it would pass the budget."""
    from ..runtime import patterns

    cache = patterns.pattern_cache(getattr(run, "shared", None))
    if cache is None:
        return None
    n_layers = run.cfg.n_layers
    missing = patterns.missing_within_budget(cache, prompts, n_layers, run.cfg.n_heads)
    if missing is None:
        return None
    if missing:
        keep = {PATTERN_HOOK.format(l): (lambda a: a) for l in range(n_layers)}
        kept = capture_each(run, missing, keep, PATTERN_HOOK.format(n_layers - 1), what)
        for ids, k in zip(missing, kept):
            patterns.keep(cache, ids, [k[PATTERN_HOOK.format(l)] for l in range(n_layers)])
    return cache


def literal_ids(run, text: str) -> List[int]:
    """A literal text's token ids, BOS first when model.prepend_bos says so."""
    ids = run.tokenizer.encode(text)
    if run.plan.model.prepend_bos:
        if run.tokenizer.bos_id is None:
            raise RunError("model.prepend_bos is true but the tokenizer has no BOS token", run.where())
        ids = [run.tokenizer.bos_id] + ids
    return ids


# ------------------------------------------------------------------ figures


def pattern_grid(patterns, names: Sequence[str], tokens: Sequence[str], title: str):
    """Small multiples: one query x key heatmap per head (one panel for one head), sharing one
    colour scale (0..1); they wrap to the page's width (_figures.small_multiples)."""
    from ._figures import small_multiples

    labels = token_labels(tokens)
    panels = [{"z": _plain(pattern), "customdata": _hover(labels),
               "hovertemplate": f"{name}<br>query %{{customdata[0]}}<br>key %{{customdata[1]}}<br>"
                                "attention %{z:.4f}<extra></extra>"} for name, pattern in zip(names, patterns)]
    single = len(names) == 1
    return small_multiples(panels, list(names), title, labels=labels, x_title="key (attended to)",
                           y_title="query (attending)", colorbar="attention", cell_min=260 if single else 170,
                           cell_max=560 if single else 420)


def token_labels(tokens: Sequence[str]) -> List[str]:
    """Axis labels of a prompt's tokens: position and text (numeric axes keep repeated tokens apart)."""
    return [f"{i} {t!r}" for i, t in enumerate(tokens)]


def _hover(labels: Sequence[str]) -> List:
    return [[[q, k] for k in labels] for q in labels]


def _plain(pattern) -> List:
    return pattern.tolist() if hasattr(pattern, "tolist") else [list(row) for row in pattern]


def _offline(text: str) -> str:
    """Escape slashes so neither a URL nor a closing </script> appears (JavaScript and JSON read
    `\\/` as `/`)."""
    return text.replace("://", ":\\/\\/").replace("</", "<\\/")


@lru_cache(maxsize=1)
def circuitsvis_bundle() -> Optional[str]:
    """The JavaScript bundle shipped in the installed circuitsvis package, made offline-safe."""
    from importlib.util import find_spec

    spec = find_spec("circuitsvis")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "dist" / "cdn" / "iife.js"
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    text = "\n".join(line for line in text.splitlines() if not line.startswith("//# sourceMappingURL"))
    return _offline(text)


def attention_view(sections: Sequence[Tuple[str, Sequence[str], object, Sequence[str]]],
                   title: str) -> Optional[str]:
    """A standalone page: per section (heading, tokens, patterns [heads, q, k], head names), one
    circuitsvis AttentionHeads view. None when circuitsvis is not installed."""
    bundle = circuitsvis_bundle()
    if bundle is None:
        return None
    divs, calls = [], []
    for i, (heading, tokens, patterns, names) in enumerate(sections):
        props = {"attention": _rounded(patterns), "tokens": list(tokens), "attentionHeadNames": list(names),
                 "maskUpperTri": True}
        divs.append(f"<h3>{html.escape(heading)}</h3><div id='view-{i}' style='margin:15px 0'></div>")
        calls.append(f"CircuitsVis.render('view-{i}', CircuitsVis.AttentionHeads, "
                     f"{json.dumps(props).replace('/', chr(92) + '/')});")
    return ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title></head><body style='font-family:system-ui,sans-serif'>"
            f"<h2>{html.escape(title)}</h2>" + "".join(divs)
            + f"<script>{bundle}</script><script>{''.join(calls)}</script>{REPORTS_HEIGHT}</body></html>")


# An embedded page tells the report its height (file:// pages cannot read each other's documents,
# but they can post messages), so its iframe shows it whole.
# The body's own height, not the document's (which is at least the frame's, so it could only grow).
REPORTS_HEIGHT = ("<script>(function(){function tell(){parent.postMessage({miDslFrameHeight:"
                  "document.body.getBoundingClientRect().bottom+window.scrollY+16},'*');}if(parent!==window){"
                  "new ResizeObserver(tell).observe(document.body);window.addEventListener('load',tell);}})();"
                  "</script>")


def _rounded(patterns) -> List:
    values = patterns.tolist() if hasattr(patterns, "tolist") else patterns
    return json.loads(json.dumps(values), parse_float=lambda s: round(float(s), 5))


def head_names(heads: Sequence[Tuple[int, int]]) -> List[str]:
    return [head_label(l, h) for l, h in heads]


def pattern_figures(prompts, names, run, title: str):
    """Per prompt, one figure of every head's pattern (small multiples; a single heatmap for one
    head), and one interactive view of every head on every prompt.

    prompts: [{"label", "text", "tokens", "patterns": [head][query][key]}]."""
    title = run.spec.analyses[run.analysis_index].get("title", title)
    figures = []
    for p in prompts:
        suffix = "" if len(prompts) == 1 else f"_{p['label'].replace(' ', '')}"
        name, what = (names[0], names[0]) if len(names) == 1 else ("heads", f"{len(names)} heads")
        figures.append((f"{name}{suffix}", pattern_grid(p["patterns"], names, p["tokens"],
                                                        f"{title}: {what}, {p['label']}")))
    view = attention_view([(f"{p['label']}: {p['text']}", p["tokens"], p["patterns"], names) for p in prompts], title)
    if view is None:
        run.executor.warn("circuitsvis is not installed, so the interactive attention view was not written "
                          "(the static heatmaps were)", run.where())
    else:
        figures.append(("view", view))
    return figures
