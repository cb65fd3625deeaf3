"""Safe YAML loading that remembers where every node came from.

The spec is read into plain Python data (dicts, lists, scalars) plus a `SourceMap`
from each node's path to its file/line/column, so every later stage can point a
user at the exact place. Duplicate keys and non-standard tags (`!!python/...`,
`!function`) are refused: a spec is data, never code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Tuple, Union

import yaml

from .errors import FileAccessError, Location, SpecSyntaxError

PathKey = Tuple[Union[str, int], ...]

# Tags a spec may use: the YAML core schema, nothing that constructs objects.
_SAFE_TAGS = {
    "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null", "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
}
MAX_SPEC_BYTES = 2_000_000


def dotted(path: PathKey) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass
class SourceMap:
    """Where each value (and each mapping key) of a loaded document stands."""

    file: str
    values: Dict[PathKey, Tuple[int, int, int]] = field(default_factory=dict)  # line, col, quote width
    keys: Dict[PathKey, Tuple[int, int]] = field(default_factory=dict)

    def value(self, path: PathKey) -> Location:
        """Location of the value at `path`, or of its nearest located parent."""
        probe = tuple(path)
        while probe not in self.values and probe:
            probe = probe[:-1]
        line, col, _ = self.values.get(probe, (None, None, 0))
        return Location(self.file, line, col, dotted(path))

    def key(self, path: PathKey) -> Location:
        """Location of the mapping key that ends `path` (falls back to the value)."""
        if tuple(path) in self.keys:
            line, col = self.keys[tuple(path)]
            return Location(self.file, line, col, dotted(path))
        return self.value(path)

    def inside(self, path: PathKey, offset: int) -> Location:
        """Location of character `offset` inside the scalar string at `path`."""
        loc = self.value(path)
        quote = self.values.get(tuple(path), (0, 0, 0))[2]
        return loc.shifted(quote + offset)


@dataclass
class Document:
    data: Any
    source: SourceMap
    text: str


class _Composer(yaml.SafeLoader):
    """SafeLoader whose only job is composing nodes; we construct values ourselves."""


def _build(node: yaml.Node, path: PathKey, smap: SourceMap) -> Any:
    mark = node.start_mark
    quote = 1 if isinstance(node, yaml.ScalarNode) and node.style in ("'", '"') else 0
    smap.values[path] = (mark.line + 1, mark.column + 1, quote)
    if node.tag not in _SAFE_TAGS:
        raise SpecSyntaxError(
            f"the tag '{node.tag}' is not allowed: specs are plain data",
            Location(smap.file, mark.line + 1, mark.column + 1, dotted(path)),
            hint="remove the tag; mi-dsl never constructs objects or runs code named in a spec",
        )
    if isinstance(node, yaml.MappingNode):
        return _build_mapping(node, path, smap)
    if isinstance(node, yaml.SequenceNode):
        return [_build(child, path + (i,), smap) for i, child in enumerate(node.value)]
    return _Composer.construct_scalar_value(node)


def _build_mapping(node: yaml.MappingNode, path: PathKey, smap: SourceMap) -> dict:
    out: dict = {}
    for key_node, value_node in node.value:
        kmark = key_node.start_mark
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            raise SpecSyntaxError(
                "mapping keys must be plain names (no merge keys or complex keys)",
                Location(smap.file, kmark.line + 1, kmark.column + 1, dotted(path)),
            )
        key = _Composer.construct_scalar_value(key_node)
        key = key if isinstance(key, (str, int)) else str(key)
        if key in out:
            first_line = smap.keys[path + (key,)][0]
            raise SpecSyntaxError(
                f"duplicate key '{key}' (first defined on line {first_line})",
                Location(smap.file, kmark.line + 1, kmark.column + 1, dotted(path + (key,))),
                hint="YAML keeps only one of them; remove or rename the other",
            )
        smap.keys[path + (key,)] = (kmark.line + 1, kmark.column + 1)
        out[key] = _build(value_node, path + (key,), smap)
    return out


def _construct_scalar_value(node: yaml.ScalarNode) -> Any:
    loader = _Composer("")
    return loader.construct_object(node, deep=True)


_Composer.construct_scalar_value = staticmethod(_construct_scalar_value)


def parse_yaml(text: str, file: str) -> Document:
    """Parse YAML text into located plain data (raises SpecSyntaxError)."""
    smap = SourceMap(file)
    try:
        loader = _Composer(text)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = err.problem or err.context or "invalid YAML"
        raise SpecSyntaxError(f"invalid YAML: {problem}", Location(file, line, col)) from None
    except yaml.YAMLError as err:
        raise SpecSyntaxError(f"invalid YAML: {err}", Location(file, 1, 1)) from None
    if root is None:
        return Document(None, smap, text)
    return Document(_build(root, (), smap), smap, text)


def read_text(path: Path, what: str = "spec", location: Location | None = None) -> str:
    """Read a UTF-8 text file, turning OS errors into located FileAccessErrors."""
    try:
        if path.stat().st_size > MAX_SPEC_BYTES:
            raise FileAccessError(f"{what} file '{path}' is larger than {MAX_SPEC_BYTES} bytes",
                                  location or Location(str(path)))
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileAccessError(f"{what} file '{path}' does not exist",
                              location or Location(str(path))) from None
    except IsADirectoryError:
        raise FileAccessError(f"{what} path '{path}' is a directory, not a file",
                              location or Location(str(path))) from None
    except UnicodeDecodeError:
        raise FileAccessError(f"{what} file '{path}' is not UTF-8 text",
                              location or Location(str(path))) from None
    except OSError as err:
        raise FileAccessError(f"cannot read {what} file '{path}': {err.strerror}",
                              location or Location(str(path))) from None


def load_file(path: Union[str, Path]) -> Document:
    path = Path(path)
    return parse_yaml(read_text(path), str(path))
