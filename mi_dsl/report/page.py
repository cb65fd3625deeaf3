"""index.html: the report page, from the run log's plain data.

A sidebar lists every section. The dataset section shows example pairs token by token,
slots, answer and foil highlighted. Each analysis shows its summary line, its key
numbers, its convention (when the result states one) and its figures, each collapsible.
Plotly figures are inlined as JSON and drawn, fitted to the column, when their section is
opened (the first of each analysis is open), with the plotly.min.js written beside the
standalone figures, so the page works offline; HTML views (circuitsvis, the attention
browser) load in an iframe when opened and take their content's height (page.js). Per-prompt
tables (the dataset's, and an analysis's table named `per_prompt`) are shown inline and sort.
"""
from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any, Dict, List

from ..analyses._figures import small_multiples_script
from .per_prompt import candidate_rows, final_pair_rows, sortable_table

e = html.escape

_STYLE = """
*{box-sizing:border-box}body{font-family:system-ui,sans-serif;margin:0;color:#222;line-height:1.45}
nav{position:fixed;top:0;left:0;bottom:0;width:230px;overflow-y:auto;background:#f6f7f9;border-right:1px solid #ddd;
padding:1em .8em;font-size:14px}nav a{display:block;color:#234;text-decoration:none;\
padding:.15em .3em;border-radius:3px}
nav a:hover{background:#e4e9f0}nav .sub{padding-left:1em;font-size:13px}nav h2{font-size:15px;margin:.2em 0 .6em}
main{margin-left:250px;padding:1em 2em 4em;max-width:1400px}section{margin-bottom:2.2em}
table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left;\
font-size:14px}
th{background:#f0f2f5}code{background:#f4f4f4;padding:0 .2em}.muted{color:#777}.warn{color:#a05a00}
.summary{font-size:1.05em;overflow-wrap:anywhere}.convention{background:#f3f6fb;border-left:3px solid #7a9cc6;
padding:.3em .7em;font-size:14px}details{border:1px solid #ddd;border-radius:4px;margin:.5em 0;padding:.3em .6em}
summary{cursor:pointer;font-weight:600}.plot{width:100%}iframe{display:block;width:100%;height:240px;border:0}
.tok{display:inline-block;border:1px solid #ddd;border-radius:3px;margin:1px;
padding:0 3px;font-family:ui-monospace,monospace;font-size:13px;white-space:pre}.bos{color:#999}
.pair{margin:.6em 0 1.1em}.pair .label{display:inline-block;width:6.5em;color:#555;font-size:13px}
.answer{background:#d8f5d0;border-color:#5a5;margin-left:4px}.foil{background:#fbd9d3;border-color:#c66}
.table-wrap{max-height:460px;overflow:auto;border:1px solid #e3e3e3;margin:.4em 0}.table-wrap table{margin:0}
.table-wrap thead th{position:sticky;top:0;cursor:pointer;white-space:nowrap}
.table-wrap th[data-sorted=asc]::after{content:' \\25B2'}.table-wrap th[data-sorted=desc]::after{content:' \\25BC'}
td.num{text-align:right;font-variant-numeric:tabular-nums}td.text{min-width:16em;max-width:40em}
"""
# How every layer grid reads (analyses/_figures.py draws them all so), said once on the page.
GRID_NOTE = ("<p class='muted'>Every layer grid reads the same way: layer 0 on top, every layer labelled, heads "
             "numbered from 0; a signed value is white at no effect (0; for patching, the unpatched run), blue where "
             "the answer gains and red where it loses; a score in 0..1 runs from white to blue. Hover a cell for its "
             "value; a figure's <i>standalone</i> link opens it alone.</p>")
_SLOT_COLOURS = ["#ffe9a8", "#cfe3ff", "#e7d4ff", "#c9f0ec", "#ffd6ea", "#e0e0e0"]
_SCRIPT = Path(__file__).with_name("page.js")


def index_page(r: Dict[str, Any], tables: Dict[str, List[str]], figures: Dict[str, list],
               static: Dict[str, Any], run_dir: Path) -> str:
    name = r["spec"]["name"]
    figure_store: List[str] = []
    body = [_overview(r), _dataset(r, tables.get("dataset", []), figures.get("dataset", []), figure_store, run_dir),
            _baselines(r)]
    if r["analyses"]:
        body.append("<h2 id='analyses' class='muted'>Analyses</h2>" + GRID_NOTE)
    for analysis_id, a in r["analyses"].items():
        body.append(_analysis(analysis_id, a, figures.get(analysis_id, []), tables.get(analysis_id, []),
                              figure_store, run_dir, (r.get("tables") or {}).get(analysis_id) or {}))
    body += [_warnings(r), _timings(r), _static(static)]
    has_plotly = any(kind == "plotly" for figs in figures.values() for _, kind, _ in figs)
    script = small_multiples_script() + _SCRIPT.read_text(encoding="utf-8")
    scripts = ("<script src='figures/plotly.min.js'></script>" if has_plotly else "") + f"<script>{script}</script>"
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width'><title>{e(name)}</title><style>{_STYLE}</style>"
            f"</head><body>{_toc(r)}<main>{''.join(body)}</main>{''.join(figure_store)}{scripts}</body></html>")


def _anchor(analysis_id: str) -> str:
    return "a-" + re.sub(r"[^A-Za-z0-9_-]", "-", analysis_id)


def _toc(r) -> str:
    links = ["<a href='#overview'>Overview</a>", "<a href='#dataset'>Dataset</a>"]
    if r["baselines"]:
        links.append("<a href='#baselines'>Baselines</a>")
    if r["analyses"]:
        links.append("<a href='#analyses'>Analyses</a>")
        links += [f"<a class='sub' href='#{_anchor(i)}'>{e(i)} <span class='muted'>{e(a['kind'])}</span></a>"
                  for i, a in r["analyses"].items()]
    if r["warnings"]:
        links.append(f"<a href='#warnings'>Warnings ({len(r['warnings'])})</a>")
    links += ["<a href='#timings'>Timings</a>", "<a href='#static'>Static figures</a>"]
    return f"<nav><h2>{e(r['spec']['name'])}</h2>{''.join(links)}</nav>"


def _overview(r) -> str:
    p = r["provenance"]
    return (f"<section id='overview'><h1>{e(r['spec']['name'])}</h1>"
            f"<p>{e(r['spec'].get('description') or '')}</p>"
            f"<p class='muted'>spec {e(r['spec']['file'])} (hash {e(r['spec']['hash'])}); model "
            f"{e(str(p['model'].get('id')))}; device {e(p['device'])}; seed {p['seed']}; "
            f"run-log format {r['format_version']}, {e(r['status'])}; "
            "<a href='results.json'>results.json</a>; <a href='spec.resolved.yaml'>resolved spec</a></p></section>")


def _dataset(r, table_links, figures, figure_store: List[str], run_dir: Path) -> str:
    d = r["dataset"]
    vocab = "".join(f"<tr><td>{e(n)}</td><td>{v['before']}</td><td>{v['after']}</td></tr>"
                    for n, v in d["vocab"].items())
    stages = "".join(f"<tr><td>{e(s['description'])}</td><td>{s['before']}</td><td>{s['after']}</td></tr>"
                     for s in d["stages"])
    parts = ["<section id='dataset'><h2>Dataset</h2>",
             f"<p>{d['candidates']} candidate prompts; {d['final_pairs']} prompt pairs after the pipeline; "
             f"token lengths {d['token_lengths']}.</p>"]
    if vocab:
        parts.append(f"<table><tr><th>vocabulary</th><th>before filter</th><th>after</th></tr>{vocab}</table>")
    if stages:
        parts.append(f"<h3>Pipeline</h3><table><tr><th>step</th><th>prompts before</th><th>after</th></tr>{stages}"
                     "</table>")
    if d.get("examples"):
        parts.append(_examples(d["examples"]))
    parts += _per_prompt(r, figures, figure_store, run_dir)
    parts.append(_links(table_links) + "</section>")
    return "".join(parts)


def _per_prompt(r, figures, figure_store: List[str], run_dir: Path) -> List[str]:
    """The final pairs' metrics (a distribution, a sortable table) and the keep-condition's candidates."""
    shown = dict((name, (kind, path)) for name, kind, path in figures)
    parts = []
    pairs = final_pair_rows(r)
    if pairs:
        parts.append("<h3>Per prompt</h3>")
        if "per_prompt_metric" in shown:
            parts.append(_figure("per_prompt_metric", *shown["per_prompt_metric"], figure_store, run_dir, True))
        parts.append(sortable_table(pairs, f"Every final pair with its {r.get('metric')} on the clean and the "
                                           "corrupted prompt.", "tables/per_prompt.csv"))
    candidates = candidate_rows(r)
    if candidates:
        rejected = [c for c in candidates if c.get("kept") == "no"]
        parts.append(f"<h3>Keep-condition</h3><p>{len(candidates)} candidates judged by the last keep step; "
                     f"{len(rejected) if candidates[0].get('kept') else 'an unknown number of'} rejected.</p>")
        if "keep_candidates" in shown:
            parts.append(_figure("keep_candidates", *shown["keep_candidates"], figure_store, run_dir, True))
        if rejected:
            parts.append(sortable_table(rejected, "The rejected candidates with their metrics.",
                                        "tables/candidates.csv"))
        elif "kept" not in candidates[0]:
            parts.append(sortable_table(candidates, "The candidates' metrics (this run log does not say which "
                                                    "were kept).", "tables/candidates.csv"))
    return parts


def _examples(examples) -> str:
    slots = list(dict.fromkeys(s for ex in examples for which in ("clean", "corrupted")
                               for s in ex[which]["slots"] if s))
    colour = {s: _SLOT_COLOURS[i % len(_SLOT_COLOURS)] for i, s in enumerate(slots)}
    legend = " ".join(f"<span class='tok' style='background:{colour[s]}'>{e(s)}</span>" for s in slots)
    out = ["<h3>Example pairs, token by token</h3>",
           f"<p class='muted'>Each box is one token (BOS included). Slots: {legend} "
           "<span class='tok answer'>answer</span> <span class='tok foil'>foil</span>: the tokens the metric "
           "compares after the prompt.</p>"]
    for number, ex in enumerate(examples, start=1):
        out.append(f"<div class='pair'><b>pair {number}</b>")
        for which in ("clean", "corrupted"):
            p = ex[which]
            toks = "".join(_token(t, s, i, colour) for i, (t, s) in enumerate(zip(p["tokens"], p["slots"])))
            answer, foil = (ex["answer"], ex["foil"]) if which == "clean" else (ex["foil"], ex["answer"])
            # a continuation reads as its text (ids space-separated), a set as '|'-separated alternatives
            sep, id_sep = ("", " ") if ex.get("continuation") else ("|", "|")
            out.append(f"<div><span class='label'>{which}</span>{toks} &rarr; "
                       f"<span class='tok answer' title='answer, id {_joined(answer[0], id_sep)}'>"
                       f"{e(_joined(answer[1], sep))}</span>"
                       f"<span class='tok foil' title='foil, id {_joined(foil[0], id_sep)}'>"
                       f"{e(_joined(foil[1], sep))}</span></div>")
        out.append("</div>")
    return "".join(out)


def _joined(value, sep: str = "|") -> str:
    """A token (id or text) as is; a token set as its members, '|'-separated (a continuation: `sep`)."""
    return sep.join(map(str, value)) if isinstance(value, list) else str(value)


def _token(text: str, slot, position: int, colour) -> str:
    style = f" style='background:{colour[slot]}'" if slot else ""
    title = f"position {position}" + (f", slot {slot}" if slot else "")
    cls = "tok bos" if position == 0 and not slot else "tok"
    return f"<span class='{cls}'{style} title='{e(title)}'>{e(text)}</span>"


def _baselines(r) -> str:
    if not r["baselines"]:
        return ""
    return ("<section id='baselines'><h2>Baselines</h2>"
            f"<p>Mean {e(r['metric'])} over the final pairs: clean <b>{r['baselines']['clean']:.4f}</b>, "
            f"corrupted <b>{r['baselines']['corrupted']:.4f}</b>.</p></section>")


def key_numbers(a: Dict[str, Any], limit: int = 10) -> Dict[str, Any]:
    """The analysis's named key numbers (its result envelope's `key_numbers`, each traced to (analysis id,
    key) in results.json); for a record without them, its data's top-level ints and floats."""
    if a.get("key_numbers"):
        return dict(list(a["key_numbers"].items())[:limit])
    skip = {"pairs_used", "seconds"}
    out = {k: v for k, v in a.items() if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)}
    return dict(list(out.items())[:limit])


def _analysis(analysis_id: str, a, figures, table_links, figure_store: List[str], run_dir: Path,
              rows: Dict[str, list]) -> str:
    parts = [f"<section id='{_anchor(analysis_id)}'><h2>{e(analysis_id)} "
             f"<span class='muted'>({e(a['kind'])})</span></h2>"]
    if a.get("summary"):
        parts.append(f"<p class='summary'>{e(a['summary'])}</p>")
    if a.get("convention"):
        parts.append(f"<p class='convention'><b>Convention.</b> {_convention(a['convention'])}</p>")
    numbers = key_numbers(a)
    cells = "".join(f"<tr><th>{e(k)}</th><td>{_number(v)}</td></tr>" for k, v in numbers.items())
    parts.append(f"<table><tr><th>pairs used</th><td>{a.get('pairs_used', '')}</td></tr>{cells}</table>")
    for index, (name, kind, path) in enumerate(figures):
        parts.append(_figure(name, kind, path, figure_store, run_dir, index == 0))
    per_prompt = rows.get("per_prompt")
    if per_prompt:
        link = next((p for p in table_links if p.endswith("__per_prompt.csv")), None)
        parts.append(sortable_table(per_prompt, "Per prompt.", link))
    parts.append(_links(table_links) + "</section>")
    return "".join(parts)


def _figure(name: str, kind: str, path: str, figure_store: List[str], run_dir: Path, open_: bool) -> str:
    """A collapsible figure: plotly JSON drawn when opened, or an HTML view loaded when opened."""
    state = " open" if open_ else ""
    summary = f"<summary>{e(name)} <a href='{path}' class='muted'>(standalone)</a></summary>"
    if kind == "plotly":
        fig_id = f"fig-{len(figure_store)}"
        figure_store.append(f"<script type='application/json' id='{fig_id}'>{_figure_json(run_dir, path)}</script>")
        return f"<details data-fig='{fig_id}'{state}>{summary}<div class='plot'></div></details>"
    return f"<details{state}>{summary}<iframe data-src='{path}' title='{e(name)}'></iframe></details>"


def _figure_json(run_dir: Path, path: str) -> str:
    text = (run_dir / path).with_suffix(".json").read_text()
    return text.replace("</", "<\\/")  # no </script> inside the script element


def _convention(value) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{e(str(k))}: {e(str(v))}" for k, v in value.items())
    return e(str(value))


def _number(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _warnings(r) -> str:
    if not r["warnings"]:
        return ""
    items = "".join(f"<li class='warn'><code>{e(w)}</code></li>" for w in r["warnings"])
    return f"<section id='warnings'><h2>Warnings</h2><ul>{items}</ul></section>"


def _timings(r) -> str:
    rows = "".join(f"<tr><td>{e(k)}</td><td>{v:.2f} s</td></tr>" for k, v in r["timings"].items())
    store = r["store"]
    return ("<section id='timings'><h2>Timings</h2>"
            f"<p>{r['forward_passes']} forward passes; step store: {store['reused']} steps reused, "
            f"{store['computed']} computed.</p><table><tr><th>step</th><th>wall-clock</th></tr>{rows}</table>"
            "</section>")


def _static(static) -> str:
    links = ", ".join(f"<a href='{f}'>{e(Path(f).name)}</a>" for f in static["files"][:200])
    return (f"<section id='static'><h2>Static figures</h2><p>{e(static['note'])}</p>"
            + (f"<p>{links}</p>" if links else "") + "</section>")


def _links(paths) -> str:
    if not paths:
        return ""
    return "<p>tables: " + ", ".join(f"<a href='{p}'>{html.escape(p)}</a>" for p in paths) + "</p>"

