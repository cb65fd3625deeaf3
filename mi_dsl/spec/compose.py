"""Spec composition: `extends: base.yaml` deep-merges a spec over a base spec.

Rules: mappings merge key by key (recursively); any other value, lists included, is
replaced whole by the extending spec's (so a list never mixes items of two files).
Paths inside a spec (vocabulary files, model paths) stay relative to the file that
wrote them. Every merged value keeps the file, line and column it came from, so an
error in an inherited value points into the base spec. Chains are followed; a cycle
or a missing base is a located error. A base is a path its child names, so it must lie in
the child's tree unless the command line allows it (spec/paths.py: the one rule).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Sequence

from ..errors import FileAccessError, SpecMeaningError
from .loader import Document, PathKey, SourceMap, load_file
from .paths import confine

MAX_DEPTH = 16


def load_composed(file: Path, allowed: Sequence[Path] = ()) -> Document:
    """`file` and its chain of bases; `allowed`: the paths the command line allows (--allow-path)."""
    return _load(file.resolve(), [], tuple(allowed))


def _load(file: Path, chain: List[Path], allowed) -> Document:
    doc = load_file(file)
    if not isinstance(doc.data, dict) or "extends" not in doc.data:
        return doc
    where = doc.source.value(("extends",))
    ref = doc.data["extends"]
    if not isinstance(ref, str) or not ref.strip() or "\x00" in ref:
        raise SpecMeaningError("`extends` must name a base spec file, e.g. extends: base.yaml", where)
    base_file = confine(ref, file, allowed, where, "base spec (extends)")
    if base_file == file or base_file in chain:
        names = " -> ".join(p.name for p in [*chain, file, base_file])
        raise SpecMeaningError(f"`extends` makes a cycle: {names}", where,
                               hint="a spec cannot extend itself, directly or through its bases")
    if len(chain) >= MAX_DEPTH:
        raise SpecMeaningError(f"`extends` chains more than {MAX_DEPTH} specs", where)
    if not base_file.exists():
        raise FileAccessError(f"base spec '{ref}' does not exist (looked for {base_file})", where)
    base = _load(base_file, [*chain, file], allowed)
    return merge(base, doc)


def merge(base: Document, child: Document) -> Document:
    """`child` over `base`; the result's SourceMap names the file of every value."""
    source = SourceMap(child.source.file)
    data = _merge(base.data, child.data, (), base.source, child.source, source)
    data.pop("extends", None)
    return Document(data, source, child.text)


def _merge(base: Any, child: Any, path: PathKey, bmap: SourceMap, cmap: SourceMap, out: SourceMap) -> Any:
    if isinstance(base, dict) and isinstance(child, dict):
        _copy(cmap, path, out, exact=True)
        merged = {}
        for key in list(base) + [k for k in child if k not in base]:
            sub = path + (key,)
            if key in child and key in base:
                merged[key] = _merge(base[key], child[key], sub, bmap, cmap, out)
            elif key in child:
                merged[key] = child[key]
                _copy(cmap, sub, out)
            else:
                merged[key] = base[key]
                _copy(bmap, sub, out)
        return merged
    _copy(cmap, path, out)
    return child


def _copy(src: SourceMap, prefix: PathKey, out: SourceMap, exact: bool = False) -> None:
    """Copy the locations of `prefix` (and, unless exact, everything under it) from src."""
    def under(path: PathKey) -> bool:
        return path == prefix if exact else path[:len(prefix)] == prefix

    for table, target in ((src.values, out.values), (src.keys, out.keys)):
        for path, where in table.items():
            if under(path):
                target[path] = where
                out.files[path] = src.file_of(path)
    for path, origin in src.origins.items():
        if under(path):
            out.origins[path] = origin
