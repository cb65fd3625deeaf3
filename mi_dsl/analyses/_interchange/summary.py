"""The interchange result: IIA grids by variable and site, every score as a table row, the convention,
the training curves and the saved subspaces."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from .saved import encode, file_name
from .settings import Settings

# which split a grid shows: what a featurizer never saw when there is one
_MAIN_SPLIT = {False: "all", True: "test"}


def summarise(settings: Settings, sites, cols, records: List[Dict[str, Any]], variables: Sequence[str],
              extra: Dict[str, Any], run):
    jobs = extra.pop("jobs", [])
    split = _MAIN_SPLIT[settings.featurized]
    rows = [{**{k: v for k, v in r.items() if k != "site"}, **r["site"].to_json(cols)} for r in records]
    own = [r for r in records if r["split"] == split and r["featurizer_for"] in (None, r["variable"])]
    grids = {v: _grids(settings, sites, cols, [r for r in own if r["variable"] == v]) for v in settings.variables}
    data: Dict[str, Any] = {
        "variables": list(settings.variables), "causal_variables": list(variables),
        "featurizer": "saved subspace" if settings.subspace else settings.featurizer,
        "dims": _dims(settings, extra), "iia_over": settings.iia_over, "components": list(settings.components),
        "layers": sorted({s.layer for s in sites}), "positions": [c.label for c in cols],
        "sites": [s.to_json(cols) for s in sites], "examples": extra["counts"]["kept"], "grid_split": split,
        "iia": {v: g["iia"] for v, g in grids.items()}, "logit_diff": {v: g["logit_diff"] for v, g in grids.items()},
        "grid_axes": {c: {"layers": g["layers"], "columns": g["columns"]} for c, g in next(iter(grids.values())).items()
                      if c not in ("iia", "logit_diff")},
        "best": _best(own, cols, settings.variables),
        "convention": convention(settings, extra),
        **extra,
    }
    if settings.featurizer == "das" and not settings.subspace:
        data["by_featurizer"] = _by_featurizer(records, cols)
        data["subspaces"], data["subspace_files"] = _saved(settings, jobs, cols, records, run, extra)
    return data, rows, _summary(data)


def _grids(settings, sites, cols, records) -> Dict[str, Any]:
    """component -> {iia, logit_diff: [layer][column], layers, columns}; z's columns are head @ position."""
    out: Dict[str, Any] = {"iia": {}, "logit_diff": {}}
    for component in settings.components:
        chosen = [r for r in records if r["site"].component == component]
        layers = sorted({r["site"].layer for r in chosen})
        keys = list(dict.fromkeys((r["site"].column, r["site"].head) for r in chosen))
        labels = [(f"H{h} @ " if h >= 0 else "") + cols[c].label for c, h in keys]
        for name in ("iia", "logit_diff"):
            grid: List[List[Optional[float]]] = [[None] * len(keys) for _ in layers]
            for r in chosen:
                grid[layers.index(r["site"].layer)][keys.index((r["site"].column, r["site"].head))] = r[name]
            out[name][component] = grid
        out[component] = {"layers": layers, "columns": labels}
    return out


def _best(records, cols, variables) -> Dict[str, Any]:
    out = {}
    for variable in variables:
        mine = [r for r in records if r["variable"] == variable and r["iia"] is not None]
        if mine:
            top = max(mine, key=lambda r: (r["iia"], r["logit_diff"] or 0.0))
            out[variable] = {"site": top["site"].label(cols), "iia": top["iia"], "iia_low": top["iia_low"],
                             "iia_high": top["iia_high"], "n": top["n"], "logit_diff": top["logit_diff"]}
    return out


def _by_featurizer(records, cols) -> Dict[str, Any]:
    """trained for -> scored against -> site -> test IIA (all, changed, unchanged): does the subspace
    learned for one variable move another's labels (RAVEL's isolation question)?"""
    out: Dict[str, Any] = {}
    for r in records:
        if r["split"] == "test" and r["featurizer_for"] is not None:
            out.setdefault(r["featurizer_for"], {}).setdefault(r["variable"], {})[r["site"].label(cols)] = {
                k: r[k] for k in ("iia", "iia_low", "iia_high", "iia_changed", "iia_unchanged", "n", "n_changed")}
    return out


def _dims(settings: Settings, extra) -> Optional[int]:
    if settings.subspace:
        return int(extra["loaded_subspace"]["provenance"].get("dims", 0)) or None
    return settings.dims if settings.featurized else None


def convention(settings: Settings, extra) -> str:
    what = ("the whole activation vector" if not settings.featurized else
            "the subspace W (orthonormal columns, k = dims): h <- h + ((h_source - h) W) W^T")
    read = ("the label is the top candidate (candidates: every output the causal model gives on the example)"
            if settings.iia_over == "candidates" else "the label is the top token of the whole vocabulary")
    split = ("" if not settings.featurized else
             f"; grids are test-split IIA ({extra['split']['test']} examples never trained on)")
    return (f"interchange: at each site the base run's activation is replaced in {what} by the source run's "
            f"({extra['source']}); IIA = share of examples where {read}; logit_diff = mean of the label's logit "
            f"minus the largest other candidate's, at the base prompt's final position{split}; a variable's label "
            "is the causal model's output with that variable taken from the source; iia_low..iia_high: the Wilson "
            "95% interval of each IIA over its n examples")


def _saved(settings, jobs, cols, records, run, extra):
    from ..._version import __version__

    found = {(r["site"], r["featurizer_for"], r["split"]): r for r in records if r["variable"] == r["featurizer_for"]}
    listing, blobs = [], {}
    for job in jobs:
        path = file_name(settings.id, job.trained_for, job.site.label(cols))
        iia = {s: (found.get((job.site, job.trained_for, s)) or {}).get("iia") for s in ("train", "test")}
        provenance = {"featurizer": "das", "variable": job.trained_for, "site": job.site.to_json(cols),
                      "hook": job.site.hook, "d": int(job.W.shape[0]), "dims": int(job.W.shape[1]),
                      "seed": settings.training.seed, "model": run.plan.model.identity(), "spec": run.spec.file,
                      "spec_hash": run.spec.hash(), "analysis": settings.id, "split": extra["split"],
                      "iia": iia, "mi_dsl": __version__}
        blobs[path] = encode(job.W, provenance)
        listing.append({"file": path, "variable": job.trained_for, "site": job.site.label(cols), "iia": iia})
    return listing, blobs


def _summary(data) -> str:
    parts = [f"{v}: best {b['site']} IIA {b['iia']:.3f} (95% interval {b['iia_low']:.2f}-{b['iia_high']:.2f} "
             f"over {b['n']} examples)" for v, b in data["best"].items()]
    base = "; ".join(f"{v} {s['iia']:.2f}" for v, s in data["unintervened"].items() if v in data["variables"])
    return (f"{data['featurizer']} interchange, {data['examples']} examples, {len(data['sites'])} sites; "
            + "; ".join(parts) + f" (no intervention: {base})")
