"""Vocabularies: words, opposite pairs or records, inline or read from a file.

A record is an item with named fields (`{country: France, capital: Paris}`); its text
(what `{country}` renders) is the field named by the vocabulary's `text:`, by default
the first field. Every record of a vocabulary has the same fields, and each field one
type, so expressions over them are checked once, before any prompt is built. Records
come inline (`items:` of mappings) or from a CSV (header row = fields), JSONL (one JSON
object per line) or YAML (a list of mappings) file inside the spec's tree; every fault
is located at the file's line (and column where the format gives one).
"""
from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..errors import Location, SchemaError
from .loader import Document, PathKey, parse_yaml

_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED = {"and", "or", "not", "true", "false", "if", "else", "in"}
_FIELD_TYPES = {bool: "bool", int: "int", float: "float", str: "str"}


@dataclass(frozen=True)
class VocabSpec:
    name: str
    items: Tuple[str, ...]     # the words (for records, their texts)
    pairs: Optional[Tuple[Tuple[str, str], ...]]  # None unless a vocabulary of opposite pairs
    filter: Optional[str]
    dedupe: bool
    path: PathKey              # where in the spec it was defined
    item_locations: Tuple[Location, ...]
    records: Optional[Tuple[Dict[str, Any], ...]] = None  # field -> value, parallel to items
    field_types: Tuple[Tuple[str, str], ...] = ()  # (field, type) in the order written
    text_field: Optional[str] = None

    @property
    def fields(self) -> Dict[str, str]:
        return dict(self.field_types)

    def content(self) -> Tuple[Any, ...]:
        """What a step computed from it depends on (for stored results' keys): the words, their records'
        fields (a causal model reads them), the opposite pairs, the filter."""
        return self.items, self.records, self.pairs, self.filter, self.dedupe, self.text_field


# fn(text, file, context) -> (entries, locations, field_at(i, field) -> Location): one file's records
Reader = Callable[[str, str, str], Tuple[List[Any], List[Location], Callable[[int, str], Location]]]


@dataclass(frozen=True)
class RecordFormat:
    """A vocabulary file format of records: its `format:` name, the suffixes that imply it, its reader."""

    name: str
    suffixes: Tuple[str, ...]
    read: Reader
    description: str


# The record formats, by name; `format: items` and `format: pairs` (plain lines) are built in. A new
# format is one `@record_format(...)` reader (the schema's `format` enum and the suffix table follow).
RECORD_FORMATS: Dict[str, RecordFormat] = {}
LINE_FORMATS = ("items", "pairs")


def record_format(name: str, suffixes: Tuple[str, ...] = (), description: str = "") -> Callable[[Reader], Reader]:
    def register(read: Reader) -> Reader:
        if name in RECORD_FORMATS or name in LINE_FORMATS:
            raise ValueError(f"vocabulary file format '{name}' is registered twice")
        RECORD_FORMATS[name] = RecordFormat(name, tuple(s.lower() for s in suffixes), read, description)
        return read
    return register


def format_of(suffix: str) -> str:
    """The format a file's suffix implies (plain lines of items when none claims it)."""
    return next((f.name for f in RECORD_FORMATS.values() if suffix.lower() in f.suffixes), "items")


def read_vocabulary(doc: Document, name: str, paths) -> VocabSpec:
    """`paths`: spec/paths.SpecPaths, the confinement rule for this spec's files."""
    raw = doc.data["vocabularies"][name]
    path: PathKey = ("vocabularies", name)
    given = [k for k in ("items", "pairs", "file") if k in raw]
    if len(given) != 1:
        raise SchemaError(f"vocabulary '{name}' needs exactly one of 'items', 'pairs' or 'file'"
                          + (f" (found {', '.join(given)})" if given else ""), doc.source.key(path))
    smap = doc.source
    pairs = None
    if "items" in raw:
        entries = list(raw["items"])
        locs = [smap.value(path + ("items", i)) for i in range(len(entries))]
        field_at = lambda i, f: smap.value(path + ("items", i, f))  # noqa: E731
    elif "pairs" in raw:
        pairs = tuple(tuple(p) for p in raw["pairs"])
        entries = [w for p in pairs for w in p]
        locs = [smap.value(path + ("pairs", i, j)) for i in range(len(pairs)) for j in range(2)]
        field_at = None
    else:
        entries, locs, field_at, pairs = _read_file(doc, name, raw, paths)
    if "text" in raw and not any(isinstance(e, dict) for e in entries):
        raise SchemaError(f"vocabulary '{name}' has `text:` but its items are plain words, not records",
                          smap.key(path + ("text",)), hint="`text:` names the field a record stands for")
    if entries and any(isinstance(e, dict) for e in entries):
        return _record_vocabulary(doc, name, raw, entries, locs, field_at)
    for word, loc in zip(entries, locs):
        if not isinstance(word, str):
            raise SchemaError(f"vocabulary items must be strings; got {word!r} (quote it)", loc)
    return VocabSpec(name, tuple(entries), pairs, raw.get("filter"), raw.get("dedupe", False), path, tuple(locs))


def _record_vocabulary(doc: Document, name: str, raw, entries, locs, field_at) -> VocabSpec:
    path: PathKey = ("vocabularies", name)
    first = entries[0]
    for entry, loc in zip(entries, locs):
        if not isinstance(entry, dict):
            raise SchemaError(f"vocabulary '{name}' mixes records and plain words: this item is "
                              f"{type(entry).__name__ if not isinstance(entry, str) else repr(entry)}", loc,
                              hint="write every item as a mapping with the same fields, e.g. "
                                   "{name: Mary, gender: female}")
    fields = list(first)
    for field in fields:
        if not isinstance(field, str) or not _FIELD_NAME.match(field) or field in _RESERVED:
            raise SchemaError(f"{field!r} cannot name a field (letters, digits and _, not starting with a digit, "
                              "and not one of " + ", ".join(sorted(_RESERVED)) + ")", field_at(0, field))
    text_field = raw.get("text", fields[0])
    if text_field not in fields:
        from ..suggest import unknown

        raise SchemaError(unknown("field", str(text_field), fields, f"for `text:` of vocabulary '{name}'"),
                          doc.source.value(path + ("text",)))
    types: Dict[str, str] = {}
    for index, (entry, loc) in enumerate(zip(entries, locs)):
        _check_fields(name, entry, fields, index, loc, field_at)
        for field in fields:
            _check_value(name, field, entry[field], types, text_field, field_at(index, field))
    records = tuple(dict(e) for e in entries)
    texts = tuple(r[text_field] for r in records)
    return VocabSpec(name, texts, None, raw.get("filter"), raw.get("dedupe", False), path, tuple(locs),
                     records=records, field_types=tuple((f, types[f]) for f in fields), text_field=text_field)


def _check_fields(name: str, entry: Dict[str, Any], fields: List[str], index: int, loc: Location, field_at) -> None:
    extra = [f for f in entry if f not in fields]
    if extra:
        raise SchemaError(f"record {index + 1} of vocabulary '{name}' has the field '{extra[0]}' that the first "
                          f"record does not have (fields: {', '.join(fields)})", field_at(index, extra[0]),
                          hint="every record of a vocabulary has the same fields")
    missing = [f for f in fields if f not in entry]
    if missing:
        raise SchemaError(f"record {index + 1} of vocabulary '{name}' is missing the field '{missing[0]}' "
                          f"(fields: {', '.join(fields)})", loc,
                          hint="every record of a vocabulary has the same fields")


def _check_value(name: str, field: str, value: Any, types: Dict[str, str], text_field: str, where: Location) -> None:
    kind = _FIELD_TYPES.get(type(value))
    if kind is None:
        raise SchemaError(f"field '{field}' of vocabulary '{name}' must be a string, number or true/false, "
                          f"not {type(value).__name__}", where)
    if field == text_field and kind != "str":
        raise SchemaError(f"field '{field}' is the text of vocabulary '{name}''s records, so it must be a "
                          f"string; {value!r} is {kind}", where,
                          hint="quote it (YAML reads 01 as the number 1: write '01')")
    known = types.setdefault(field, kind)
    if known != kind and {known, kind} == {"int", "float"}:
        types[field] = "float"
    elif known != kind:
        raise SchemaError(f"field '{field}' of vocabulary '{name}' is {known} in the first record but {kind} "
                          f"here ({value!r})", where, hint="give a field the same type in every record")


# ----------------------------------------------------------------------------- files

def _read_file(doc: Document, name: str, raw: Dict[str, Any], paths):
    where = doc.source.value(("vocabularies", name, "file"))
    file, text = paths.read(("vocabularies", name, "file"), "vocabulary file")
    fmt = raw.get("format") or format_of(file.suffix)
    context = f"vocabularies.{name}.file"
    if fmt in RECORD_FORMATS:
        entries, locs, field_at = RECORD_FORMATS[fmt].read(text, str(file), context)
    else:
        entries, locs, pairs = _read_lines(text, str(file), context, fmt == "pairs")
        if not entries:
            raise SchemaError(f"vocabulary file '{raw['file']}' has no items", where)
        return entries, locs, None, pairs
    if not entries:
        raise SchemaError(f"vocabulary file '{raw['file']}' has no records", where)
    return entries, locs, field_at, None


def _read_lines(text: str, file: str, context: str, pairs_format: bool):
    items: List[str] = []
    pairs: List[Tuple[str, str]] = []
    locs: List[Location] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        here = Location(file, number, line.index(stripped[0]) + 1, context)
        if pairs_format:
            parts = [p.strip() for p in (stripped.split("\t") if "\t" in stripped else stripped.split(","))]
            if len(parts) != 2 or not all(parts):
                raise SchemaError("a pairs file needs two words per line separated by a comma or a tab", here)
            pairs.append((parts[0], parts[1]))
            items.extend(parts)
            locs.extend([here, here])
        else:
            items.append(stripped)
            locs.append(here)
    return items, locs, (tuple(pairs) if pairs_format else None)


@record_format("csv", (".csv",), "CSV with a header row (values are strings)")
def _read_csv(text: str, file: str, context: str):
    """A header row names the fields; every value is a string (convert with int(...))."""
    rows = list(csv.reader(io.StringIO(text)))
    numbered = [(n, row) for n, row in enumerate(rows, start=1) if row and not row[0].lstrip().startswith("#")]
    if not numbered:
        return [], [], None
    header_line, header = numbered[0]
    header = [h.strip() for h in header]
    entries, locs, lines = [], [], []
    for number, row in numbered[1:]:
        here = Location(file, number, 1, context)
        if len(row) != len(header):
            raise SchemaError(f"this CSV row has {len(row)} values but the header (line {header_line}) names "
                              f"{len(header)} fields: {', '.join(header)}", here)
        entries.append({h: v.strip() for h, v in zip(header, row)})
        locs.append(here)
        lines.append(number)
    field_at = lambda i, f: Location(file, lines[i], 1, context)  # noqa: E731
    header_at = {h: Location(file, header_line, 1, context) for h in header}
    for h in header:  # a bad field name points at the header
        if not _FIELD_NAME.match(h) or h in _RESERVED:
            raise SchemaError(f"{h!r} cannot name a field (letters, digits and _, not starting with a digit)",
                              header_at[h])
    return entries, locs, field_at


@record_format("jsonl", (".jsonl",), "JSONL (one object per line)")
def _read_jsonl(text: str, file: str, context: str):
    entries, locs = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        here = Location(file, number, line.index(line.strip()[0]) + 1, context)
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise SchemaError(f"invalid JSON: {err.msg}", Location(file, number, err.colno, context)) from None
        if not isinstance(value, (dict, str)):
            raise SchemaError(f"each line of a JSONL vocabulary is an object (a record) or a string, "
                              f"not {type(value).__name__}", here)
        entries.append(value)
        locs.append(here)
    return entries, locs, lambda i, f: locs[i]


@record_format("yaml", (".yaml", ".yml"), "YAML (a list of mappings)")
def _read_yaml(text: str, file: str, context: str):
    sub = parse_yaml(text, file)
    data = sub.data
    if not isinstance(data, list):
        where = sub.source.value(())
        raise SchemaError("a YAML vocabulary file holds a list of records (mappings) or words",
                          Location(file, where.line or 1, where.column or 1, context))
    locs = [_in(sub, (i,), context) for i in range(len(data))]
    return data, locs, lambda i, f: _in(sub, (i, f), context)


def _in(sub: Document, path, context: str) -> Location:
    loc = sub.source.value(path)
    return Location(loc.file, loc.line, loc.column, context)
