"""Spot a key that YAML put in the wrong mapping because of its indentation.

A `filter:` indented one level too little is valid YAML: it becomes a sibling of the
vocabulary it meant to filter, i.e. a vocabulary named `filter`. The schema error
then talks about the wrong thing. Before reporting a schema fault about a key, we try
the two likely repairs (the key moved into the mapping just above it, or one level
out) and, when a repair removes the fault without adding one about that key, say so.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Optional, Tuple

from .loader import Document, dotted

PathKey = Tuple[Any, ...]


def misindented(doc: Document, key_path: PathKey, error_paths: Callable[[Any], set]) -> Optional[str]:
    """A message naming `key_path` as probably mis-indented, or None.

    `error_paths(data)` gives the set of schema-error paths of a document's data."""
    parent_path, key = key_path[:-1], key_path[-1]
    parent = _get(doc.data, parent_path)
    if not isinstance(parent, dict) or key not in parent:
        return None
    before = error_paths(doc.data)
    for target in _candidates(doc, parent_path, key):
        moved = copy.deepcopy(doc.data)
        value = _get(moved, parent_path).pop(key)
        _get(moved, target)[key] = value
        after = error_paths(moved)
        if len(after) < len(before) and not any(p[:len(target) + 1] == target + (key,) for p in after):
            return _say(doc, key_path, target)
    return None


def _candidates(doc: Document, parent_path: PathKey, key) -> list:
    """Mappings the key may have been meant for: the one just above it, then one level out."""
    out = []
    parent = _get(doc.data, parent_path)
    line = doc.source.key(parent_path + (key,)).line or 0
    above = [k for k in parent if k != key and isinstance(parent[k], dict) and key not in parent[k]
             and (doc.source.key(parent_path + (k,)).line or 0) < line]
    if above:
        out.append(parent_path + (max(above, key=lambda k: doc.source.key(parent_path + (k,)).line or 0),))
    if parent_path and isinstance(parent_path[-1], str):
        outer = _get(doc.data, parent_path[:-1])
        if isinstance(outer, dict) and key not in outer:
            out.append(parent_path[:-1])
    return out


def _say(doc: Document, key_path: PathKey, target: PathKey) -> str:
    key = key_path[-1]
    where = f"'{dotted(key_path[:-1])}'" if key_path[:-1] else "the top level"
    into = f"'{dotted(target)}'" if target else "the top level"
    line = doc.source.key(key_path).line
    if len(target) > len(key_path) - 1:
        column = _child_column(doc, target)
        how = f"indent it further, to column {column}" if column else "indent it further"
    else:
        column = doc.source.key(target + (key_path[-2],)).column if target or key_path[-2:-1] else None
        how = f"indent it less, to column {column}" if column else "indent it less"
    return (f"'{key}' (line {line}) is probably mis-indented: as written it is a key of {where}, but it "
            f"belongs in {into}; {how}")


def _child_column(doc: Document, path: PathKey) -> Optional[int]:
    mapping = _get(doc.data, path)
    for k in mapping:
        return doc.source.key(path + (k,)).column
    return None


def _get(data, path: PathKey):
    for part in path:
        data = data[part]
    return data
