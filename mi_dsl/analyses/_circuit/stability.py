"""How stable the first method's circuit is: rescored on bootstrap resamples of the pairs and on
the pairs of each value of one slot (`by_slot`: with a slot of sentence frames, per template).

For each resample or group: its circuit's Jaccard overlap with the full-data circuit, the
Spearman correlation of its item scores with the full data's, and (with `curve`) its own CPR
and CMD measured on its own pairs; then the spread of CPR and CMD across them.
"""
from __future__ import annotations

import statistics
from typing import Any, Dict, List, Optional

import torch

from .compare import jaccard, pairwise_mean, resamples, spearman
from .faithfulness import baselines


def stability(setting, make_model, clean, corrupted, run, method: str, full_items, full_circuit, n_keep: int,
              base) -> Dict[str, Any]:
    params = setting.params.stability
    out: Dict[str, Any] = {"method": method, "circuit_edges": int(full_circuit.sum())}
    if params.get("bootstrap"):
        draws = resamples(len(clean), params["bootstrap"], setting.params.seed)
        rows = [_rescore(setting, make_model, clean, corrupted, index, method, full_items, full_circuit, n_keep,
                         ) for index in draws]
        for i, row in enumerate(rows):
            row["resample"] = i
        out.update(_summary(rows, full_circuit))
        out["bootstrap"] = len(draws)
    if params.get("by_slot"):
        slot = params["by_slot"]
        groups: Dict[str, List[int]] = {}
        for i, pair in enumerate(run.pairs):
            groups.setdefault(dict(pair.values).get(slot, ""), []).append(i)
        rows = []
        for value, members in sorted(groups.items()):
            index = torch.tensor(members)
            row = _rescore(setting, make_model, clean, corrupted, index, method, full_items, full_circuit, n_keep)
            rows.append(dict(row, group=value))
        summary = _summary(rows, full_circuit)
        summary["groups"] = summary.pop("resamples")
        out["by_slot"] = {"slot": slot, **summary}
    return out


def _rescore(setting, make_model, clean, corrupted, index: torch.Tensor, method: str, full_items, full_circuit,
             n_keep: int) -> Dict[str, Any]:
    model = make_model(index)
    result = setting.score(model, clean[index], corrupted[index], method)
    items = setting.items(result)
    kept, _ = setting.units.circuit(items, n_keep, setting.params.select)
    values, full = (items[setting.units.mask], full_items[setting.units.mask]) if items.shape == full_circuit.shape \
        else (items.flatten(), full_items.flatten())
    row = {"pairs": len(index), "jaccard_to_full": jaccard(kept, full_circuit),
           "spearman_to_full": spearman(values, full), "circuit_edges": int(kept.sum()), "_kept": kept}
    if setting.params.curve:
        own = baselines(model, clean[index], corrupted[index], ablation=setting.ablation, batch_size=setting.batch)
        if own.faithfulness(own.full) is not None:  # f is undefined when the group's clean and empty metrics agree
            c = setting.curve(model, clean[index], corrupted[index], items, own)
            row.update({"cpr": c["cpr"], "cmd": c["cmd"]})
    return row


def _summary(rows: List[Dict[str, Any]], full_circuit) -> Dict[str, Any]:
    circuits = [row.pop("_kept") for row in rows]
    to_full = [r["jaccard_to_full"] for r in rows if r["jaccard_to_full"] is not None]
    in_all = torch.stack(circuits).all(0) & full_circuit
    out = {"resamples": rows, "mean_jaccard_to_full": sum(to_full) / len(to_full) if to_full else None,
           "mean_pairwise_jaccard": pairwise_mean(circuits, jaccard), "edges_in_every_resample": int(in_all.sum())}
    for key in ("cpr", "cmd"):
        values = [r[key] for r in rows if r.get(key) is not None]
        out[f"{key}_spread"] = _spread(values)
    return out


def _spread(values: List[float]) -> Optional[Dict[str, float]]:
    if not values:
        return None
    return {"min": min(values), "max": max(values), "mean": statistics.fmean(values),
            "std": statistics.pstdev(values) if len(values) > 1 else 0.0}
