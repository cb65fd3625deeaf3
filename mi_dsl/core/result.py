"""One result envelope for every analysis: what the runtime always fills and checks.

An analysis's `compute` returns a `Result`: its own numbers (`data`, JSON-able), its tables,
a summary line, its `convention` (what it linearises, which scale it uses: every analysis
states one) and its `key_numbers` (the named headline numbers the report shows, each traced
to (analysis id, key)). `pairs` says which final prompt pairs it used, {count, indices}: the
runtime fills it from the analysis's context, unless the analysis read fewer (one prompt, a
literal text) and says so itself. `check` refuses an envelope broken by an analysis (a
programming fault, not a user's): a missing convention, a number where `pairs` belongs, an
envelope key inside `data`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

# Keys the envelope owns in results.json's per-analysis record; an analysis's data may not use them.
ENVELOPE_KEYS = ("kind", "summary", "convention", "key_numbers", "pairs", "pairs_used", "figures")

Convention = Union[str, Dict[str, str]]
Table = List[Dict[str, Any]]


@dataclass
class Result:
    data: Dict[str, Any]                                   # the analysis's own numbers, JSON-able
    tables: Dict[str, Table] = field(default_factory=dict)  # name -> rows (written as CSV)
    summary: str = ""                                      # one line for the report
    convention: Convention = ""                            # what it linearises, which scale it uses
    key_numbers: Dict[str, Optional[float]] = field(default_factory=dict)  # name -> headline number
    pairs: Optional[Dict[str, Any]] = None                 # {count, indices[, note]}; None: the runtime fills it

    def record(self) -> Dict[str, Any]:
        """The envelope and the data as one JSON-able record (results.json's `analyses[id]`, the store)."""
        return {"summary": self.summary, "convention": self.convention, "key_numbers": dict(self.key_numbers),
                "pairs": self.pairs, **self.data}

    @classmethod
    def from_record(cls, record: Dict[str, Any], tables: Dict[str, Table]) -> "Result":
        data = {k: v for k, v in record.items() if k not in ENVELOPE_KEYS}
        return cls(data, tables, record.get("summary", ""), record.get("convention", ""),
                   dict(record.get("key_numbers") or {}), record.get("pairs"))


def pairs_record(indices: List[int], note: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {"count": len(indices), "indices": list(indices)}
    if note:
        out["note"] = note
    return out


def check(result: Result, kind: str) -> None:
    """The envelope as every reader expects it; a fault names the analysis (TypeError: a bug in it)."""
    where = f"analysis '{kind}'"
    if not isinstance(result, Result):
        raise TypeError(f"{where}: compute returned {type(result).__name__}, not a Result")
    clash = sorted(set(result.data) & set(ENVELOPE_KEYS))
    if clash:
        raise TypeError(f"{where}: data uses the envelope's keys {clash}; set Result.{clash[0]} instead")
    if not result.convention:
        raise TypeError(f"{where}: states no convention (what it linearises, which scale it uses)")
    pairs = result.pairs
    if not (isinstance(pairs, dict) and isinstance(pairs.get("count"), int) and isinstance(pairs.get("indices"), list)
            and pairs["count"] == len(pairs["indices"]) and all(isinstance(i, int) for i in pairs["indices"])):
        raise TypeError(f"{where}: pairs must be {{count, indices}} with count = len(indices), got {pairs!r}")
    for name, value in result.key_numbers.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise TypeError(f"{where}: key number '{name}' is {value!r}, not a number")
        if isinstance(value, float) and not math.isfinite(value):
            result.key_numbers[name] = None  # JSON holds no NaN: shown as n/a
