"""The rows of a pair file: CSV, JSONL or Parquet -> one located `RawPair` per row (no tokenizer).

A layout says which columns hold the clean prompt, the corrupted prompt, the answer and the
foil (docs/datasets.md): `columns` (named after their role, or renamed by `columns:`),
`eap_ig` (EAP-IG's CSV: clean, corrupted, correct_idx, incorrect_idx) and `mib` (a MIB
dataset's rows: `prompt`, a counterfactual object holding the corrupted `prompt`, and the
task's answer fields, read as MIB's own loader reads them). Every fault names the file and
the row's line (CSV, JSONL) or row number (Parquet).
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..errors import FileAccessError, Location, SchemaError
from ..spec.loader import read_text

SUFFIX_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}
CONTEXT = "dataset.file"

# layout -> role -> column (a dotted path reads inside a JSON object)
LAYOUT_COLUMNS: Dict[str, Dict[str, str]] = {
    "columns": {"clean": "clean", "corrupted": "corrupted", "answer": "answer", "foil": "foil",
                "clean_spans": "clean_spans", "corrupted_spans": "corrupted_spans"},
    "eap_ig": {"clean": "clean", "corrupted": "corrupted", "answer": "correct_idx", "foil": "incorrect_idx",
               "clean_spans": "clean_spans", "corrupted_spans": "corrupted_spans"},
}
ANSWER_DEFAULTS = {"columns": "token", "eap_ig": "token_id", "mib": "first_token"}
# MIB: the counterfactual column each task's loader reads by default (MIB-circuit-track's dataset.py)
MIB_COUNTERFACTUALS = {"ioi": "s2_io_flip_counterfactual", "mcqa": "symbol_counterfactual",
                       "arc": "symbol_counterfactual", "arithmetic": "random_counterfactual"}


@dataclass(frozen=True)
class RawPair:
    clean: str
    corrupted: str
    answer: Any           # text, a token id, or a list of them, as the file holds it
    foil: Any
    clean_spans: Any      # offsets as the file holds them (spans: offsets), else None
    corrupted_spans: Any
    where: Location       # the row


def file_format(spec) -> str:
    raw = spec.data["dataset"]
    fmt = raw.get("format") or SUFFIX_FORMATS.get(spec.dataset_file.suffix.lower())
    if fmt is None:
        raise SchemaError(f"cannot tell the format of '{spec.dataset_file.name}' from its suffix",
                          spec.loc("dataset", "file"), hint="name it .csv, .jsonl or .parquet, or add `format:`")
    return fmt


def read_pair_rows(spec) -> Tuple[RawPair, ...]:
    """Every row of the spec's pair file, its parts picked by the layout."""
    raw = spec.data["dataset"]
    layout = raw.get("layout", "columns")
    _check_options(spec, raw, layout)
    rows = _read_rows(spec, file_format(spec))
    if not rows:
        raise SchemaError(f"the pair file '{spec.dataset_file.name}' has no rows", spec.loc("dataset", "file"))
    if layout == "mib":
        return tuple(_mib_pair(spec, raw, row, where) for row, where in rows)
    columns = {**LAYOUT_COLUMNS[layout], **raw.get("columns", {})}
    spans = raw.get("spans", "none") == "offsets"
    _check_columns(spec, layout, columns, rows[0][0], spans)
    return tuple(RawPair(_text(spec, row, columns["clean"], where), _text(spec, row, columns["corrupted"], where),
                         _get(row, columns["answer"]), _get(row, columns["foil"]),
                         _get(row, columns["clean_spans"]) if spans else None,
                         _get(row, columns["corrupted_spans"]) if spans else None, where)
                 for row, where in rows)


def _check_options(spec, raw, layout: str) -> None:
    for key in ("task", "counterfactual"):
        if key in raw and layout != "mib":
            raise SchemaError(f"`dataset.{key}` is for layout mib (MIB's datasets); this layout is {layout}",
                              spec.source.key(("dataset", key)))
    if "columns" in raw and layout == "mib":
        raise SchemaError("layout mib reads MIB's own fields; `columns:` renames the columns of layout columns "
                          "or eap_ig", spec.source.key(("dataset", "columns")))


# ----------------------------------------------------------------------------- reading the file

def _read_rows(spec, fmt: str) -> List[Tuple[Dict[str, Any], Location]]:
    file, where = spec.dataset_file, spec.loc("dataset", "file")
    if fmt == "parquet":
        return _read_parquet(file, where)
    text = read_text(file, "dataset", where)
    return _read_csv(text, str(file)) if fmt == "csv" else _read_jsonl(text, str(file))


def _read_csv(text: str, file: str):
    """A header row names the columns; values are kept as written (a leading space is part of ' Mary')."""
    reader = csv.reader(io.StringIO(text))
    rows: List[Tuple[Dict[str, Any], Location]] = []
    header: Optional[List[str]] = None
    line = 1
    for values in reader:
        here = Location(file, line, 1, CONTEXT)
        line = reader.line_num + 1
        if not values:
            continue
        if header is None:
            header = [h.strip() for h in values]
            continue
        if len(values) != len(header):
            raise SchemaError(f"this CSV row has {len(values)} values but the header names {len(header)} "
                              f"columns: {', '.join(header)}", here,
                              hint="quote a value that holds a comma, e.g. \"When Mary, John and ...\"")
        rows.append((dict(zip(header, values)), here))
    return rows


def _read_jsonl(text: str, file: str):
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        here = Location(file, number, 1, CONTEXT)
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise SchemaError(f"invalid JSON: {err.msg}", Location(file, number, err.colno, CONTEXT)) from None
        if not isinstance(value, dict):
            raise SchemaError(f"each line of a JSONL pair file is an object, not {type(value).__name__}", here)
        rows.append((value, here))
    return rows


def _read_parquet(file: Path, where: Location):
    import pyarrow.parquet as pq  # a project dependency; imported only for Parquet files

    if not file.is_file():
        raise FileAccessError(f"dataset file '{file}' does not exist", where)
    try:
        records = pq.read_table(file).to_pylist()
    except Exception as err:  # pyarrow raises its own types for a file that is not Parquet
        raise FileAccessError(f"cannot read the Parquet file '{file}': {err}", where) from None
    return [(row, Location(str(file), None, None, f"{CONTEXT} row {i + 1}")) for i, row in enumerate(records)]


# ----------------------------------------------------------------------------- columns

_MISSING = object()


def _get(row: Dict[str, Any], column: str, default=_MISSING):
    """A column's value; a dotted path reads inside JSON objects (a flat column of that name wins)."""
    if column in row:
        return row[column]
    value: Any = row
    for part in column.split("."):
        if not isinstance(value, dict) or part not in value:
            if default is _MISSING:
                raise KeyError(column)
            return default
        value = value[part]
    return value


def _text(spec, row, column: str, where: Location) -> str:
    value = _get(row, column)
    if not isinstance(value, str) or not value:
        raise SchemaError(f"column '{column}' must hold the prompt's text, not {value!r}", where)
    return value


def _check_columns(spec, layout: str, columns: Dict[str, str], first: Dict[str, Any], spans: bool) -> None:
    roles = ["clean", "corrupted", "answer", "foil"] + (["clean_spans", "corrupted_spans"] if spans else [])
    for role in roles:
        if _get(first, columns[role], None) is not None or columns[role] in first:
            continue
        present = ", ".join(first) or "none"
        hint = f"name the column that holds the {role.replace('_', ' ')} with `columns: {{{role}: COLUMN}}`"
        if layout == "columns" and {"correct_idx", "incorrect_idx"} <= set(first):
            hint = "this is EAP-IG's layout (answers as token ids): add `layout: eap_ig`"
        elif layout == "columns" and "prompt" in first and any(k.endswith("_counterfactual") for k in first):
            hint = "this is a MIB dataset: add `layout: mib` and `task:`"
        raise SchemaError(f"the pair file has no column '{columns[role]}' for the {role.replace('_', ' ')} "
                          f"(its columns: {present})", spec.loc("dataset", "file"), hint=hint)


# ----------------------------------------------------------------------------- MIB

def _mib_pair(spec, raw, row: Dict[str, Any], where: Location) -> RawPair:
    """A MIB row read as MIB-circuit-track's loader reads it: the clean `prompt`, the counterfactual's
    `prompt`, and the task's answer fields (ioi: ' ' + metadata.indirect_object vs ' ' + metadata.subject;
    mcqa/arc: choices.label[answerKey] of the row and of the counterfactual; arithmetic: label)."""
    task = raw["task"]
    column = raw.get("counterfactual", MIB_COUNTERFACTUALS[task])
    try:
        counterfactual = _get(row, column)
        if not isinstance(counterfactual, dict):
            raise KeyError(column)
        if task == "ioi":
            answer, foil = " " + str(_get(row, "metadata.indirect_object")), " " + str(_get(row, "metadata.subject"))
        elif task in ("mcqa", "arc"):
            answer, foil = _choice(row), _choice(counterfactual)
        else:
            answer, foil = str(_get(row, "label")), str(_get(counterfactual, "label"))
        clean, corrupted = _get(row, "prompt"), _get(counterfactual, "prompt")
    except (KeyError, IndexError, TypeError) as err:
        missing = err.args[0] if isinstance(err, KeyError) else "choices.label[answerKey]"
        raise SchemaError(f"this row has no '{missing}', which MIB's {task} rows hold (its fields: "
                          f"{', '.join(row)})", where,
                          hint="check `task:` and `counterfactual:` against the dataset's columns") from None
    for name, text in (("prompt", clean), (f"{column}.prompt", corrupted)):
        if not isinstance(text, str) or not text:
            raise SchemaError(f"'{name}' must hold the prompt's text, not {text!r}", where)
    return RawPair(clean, corrupted, answer, foil, None, None, where)


def _choice(row: Dict[str, Any]) -> str:
    return str(row["choices"]["label"][row["answerKey"]])
