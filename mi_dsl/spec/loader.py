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

from ..limits import current, hint as limit_hint
from ..errors import Location, SpecSyntaxError
from .paths import MAX_FILE_BYTES, decode_text, line_col as _line_col
from .yaml_hints import syntax_hint

PathKey = Tuple[Union[str, int], ...]

# Tags a spec may use: the YAML core schema, nothing that constructs objects.
_SAFE_TAGS = {
    "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null", "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
}
MAX_SPEC_BYTES = MAX_FILE_BYTES  # one limit for every file a spec reads (spec/paths.py)
# Values a document may hold once its aliases are expanded: a spec has a few hundred, a
# "billion laughs" anchor bomb billions. Checked on the composed nodes, before expanding.
MAX_NODES = 100_000


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
    origins: Dict[PathKey, str] = field(default_factory=dict)  # path -> the `--set KEY=VALUE` that set it
    files: Dict[PathKey, str] = field(default_factory=dict)    # path -> another file it came from (extends)

    def file_of(self, path: PathKey) -> str:
        """The file the value at `path` was written in (a base spec's, for inherited values)."""
        probe = tuple(path)
        while probe and probe not in self.files and probe not in self.values:
            probe = probe[:-1]
        return self.files.get(probe, self.file)

    def value(self, path: PathKey) -> Location:
        """Location of the value at `path`, or of its nearest located parent."""
        probe = tuple(path)
        while probe not in self.values and probe not in self.origins and probe:
            probe = probe[:-1]
        if probe in self.origins:
            return Location(f"--set {self.origins[probe]}", None, None, dotted(path))
        line, col, _ = self.values.get(probe, (None, None, 0))
        return Location(self.files.get(probe, self.file), line, col, dotted(path))

    def key(self, path: PathKey) -> Location:
        """Location of the mapping key that ends `path` (falls back to the value)."""
        if tuple(path) in self.keys:
            line, col = self.keys[tuple(path)]
            return Location(self.files.get(tuple(path), self.file), line, col, dotted(path))
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

    def __init__(self, stream):
        super().__init__(stream)
        self.alias_uses: list = []  # (mark, anchor name, node) of every *alias, in document order
        self.depth = 0
        self.max_depth = current().nesting

    def compose_node(self, parent, index):
        if not self.check_event(yaml.AliasEvent):
            self.depth += 1
            try:
                if self.depth > self.max_depth:
                    mark = self.peek_event().start_mark
                    raise SpecSyntaxError(f"the YAML nests mappings and lists more than {self.max_depth} levels deep",
                                          Location(getattr(self, "file", self.name), mark.line + 1, mark.column + 1),
                                          hint="specs are shallow; " + limit_hint("nesting"))
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1
        event = self.peek_event()
        node = super().compose_node(parent, index)
        self.alias_uses.append((event.start_mark, event.anchor, node))
        return node


def _children(node: yaml.Node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _check_aliases(root: yaml.Node, alias_uses: list, file: str) -> None:
    """Refuse recursive aliases and documents whose aliases expand past MAX_NODES."""
    if not alias_uses:
        return
    sizes: Dict[int, Any] = {}  # id(node) -> expanded size; None while being counted

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            if sizes[id(node)] is None:
                raise _Recursive(node)
            return sizes[id(node)]
        sizes[id(node)] = None
        sizes[id(node)] = 1 + sum(size(child) for child in _children(node))
        return sizes[id(node)]

    def at(mark) -> Location:
        return Location(file, mark.line + 1, mark.column + 1)

    try:
        total = size(root)
    except _Recursive as cycle:
        mark, anchor, _ = next(use for use in alias_uses if use[2] is cycle.node)
        raise SpecSyntaxError(f"the alias *{anchor} refers to a node that contains it (a recursive "
                              "structure)", at(mark), hint="specs are trees; copy the values instead") from None
    if total > MAX_NODES:
        biggest = max(size(node) for _, _, node in alias_uses)
        mark, anchor, _ = next(use for use in alias_uses if size(use[2]) == biggest)
        raise SpecSyntaxError(
            f"the document's aliases expand it to {total:,} values, more than the {MAX_NODES:,} a spec may "
            f"hold (*{anchor} alone is {biggest:,}); refusing to expand it (a 'billion laughs' bomb?)",
            at(mark), hint="write the values out, or use fewer nested aliases")


class _Recursive(Exception):
    def __init__(self, node: yaml.Node):
        super().__init__("recursive alias")
        self.node = node


def _build(node: yaml.Node, path: PathKey, smap: SourceMap) -> Any:
    mark = node.start_mark
    quote = 1 if isinstance(node, yaml.ScalarNode) and node.style in ("'", '"') else 0
    smap.values[path] = (mark.line + 1, mark.column + 1, quote)
    if node.tag == "tag:yaml.org,2002:timestamp" and isinstance(node, yaml.ScalarNode):
        return node.value  # `description: 2024-05-01` stays the text written, not a datetime
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
        loader.file = file
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
        if root is None:
            return Document(None, smap, text)
        _check_aliases(root, loader.alias_uses, file)
        return Document(_build(root, (), smap), smap, text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = err.problem or err.context or "invalid YAML"
        hint = syntax_hint(text, problem, line, col)
        raise SpecSyntaxError(f"invalid YAML: {problem}", Location(file, line, col), hint=hint) from None
    except yaml.reader.ReaderError as err:  # a character YAML does not allow
        line, col = _line_col(text, err.position)
        raise SpecSyntaxError(f"invalid YAML: {err.reason} (character #x{err.character:04x})"
                              if isinstance(err.character, int) else f"invalid YAML: {err.reason}",
                              Location(file, line, col)) from None
    except yaml.YAMLError as err:
        raise SpecSyntaxError(f"invalid YAML: {err}", Location(file, 1, 1)) from None
    except RecursionError:
        raise SpecSyntaxError("the YAML is nested too deeply", Location(file, 1, 1)) from None


def read_text(path: Path, what: str = "spec", location: Location | None = None) -> str:
    """Read a regular UTF-8 text file of at most MAX_SPEC_BYTES (spec/paths.read_regular), turning
    OS errors into located FileAccessErrors."""
    from .paths import read_regular

    path = Path(path)
    return decode_text(read_regular(path, f"{what} file", location, MAX_SPEC_BYTES), path, f"{what} file", location)


def load_file(path: Union[str, Path]) -> Document:
    path = Path(path)
    return parse_yaml(read_text(path), str(path))
