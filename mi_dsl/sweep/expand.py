"""A sweep file -> its points, each written as a spec file that `extends:` the base spec.

    version: 1
    spec: ../specs/tutorial.yaml      # the base spec, relative to this file
    name: tutorial-sweep              # default: this file's stem
    output: sweeps                    # default: sweeps/ beside this file; runs go to <output>/<name>/
    set: {model.device: cpu}          # dotted path -> value, for every point
    axes:                             # dotted path -> values; the points are their product
      seed: [0, 1]
      vocabularies.nouns.items:       # a mapping names each value (the label in tables)
        pets: [Dogs, Cats]
        farm: [Cows, Pigs]
    resources: {cpus: 1, gpus: 0, memory_gb: 4}   # what one run asks of a Ray cluster

Each point is a real spec file (`points/pNNN.yaml`): `mi-run` runs it alone, and a fault
in it is located in it, then pointed back at the axis value in the sweep file.
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

from ..errors import FileAccessError, Location, MiError, SchemaError
from ..spec.loader import Document, dotted, load_file

KEYS = ("version", "spec", "name", "output", "set", "axes", "resources")
RESOURCES = {"cpus": (int, float), "gpus": (int, float), "memory_gb": (int, float)}
MAX_POINTS = 10_000


@dataclass(frozen=True)
class Axis:
    path: Tuple[Any, ...]              # spec path, list indices as ints
    name: str                          # the dotted path as written (a column of every table)
    values: Tuple[Any, ...]
    labels: Tuple[str, ...]            # how each value is named in tables and point labels
    locations: Tuple[Location, ...]    # where each value stands in the sweep file


@dataclass(frozen=True)
class Point:
    index: int
    id: str                            # pNNN
    values: Tuple[Any, ...]            # one per axis
    labels: Dict[str, str]             # axis name -> value label

    def describe(self) -> str:
        return f"point {self.id} (" + ", ".join(f"{k}={v}" for k, v in self.labels.items()) + ")"


@dataclass
class Sweep:
    file: Path
    doc: Document
    spec: Path
    name: str
    out_dir: Path
    common: Dict[Tuple[Any, ...], Any]
    axes: List[Axis]
    resources: Dict[str, float]
    points: List[Point] = field(default_factory=list)
    contents: Dict[str, str] = field(default_factory=dict)  # point id -> what its numbers depend on (inert.py)
    warnings: List[Any] = field(default_factory=list)       # SpecWarnings shown in the output and the report

    def point_file(self, point: Point) -> Path:
        return self.out_dir / "points" / f"{point.id}.yaml"


def load_sweep(path, out_dir: Optional[str] = None, overrides=()) -> Sweep:
    """The sweep file's points; `overrides` (`mi-run sweep --set KEY=VALUE`) join its `set:`, after it."""
    file = Path(path).resolve()
    doc = load_file(file)
    data = doc.data
    where = doc.source.value
    if not isinstance(data, dict):
        raise SchemaError("a sweep file is a mapping with `spec:` and `axes:`", Location(str(path), 1, 1))
    for key in data:
        if key not in KEYS:
            raise SchemaError(f"unknown key '{key}' in a sweep file; expected: {', '.join(KEYS)}",
                              doc.source.key((key,)))
    if data.get("version", 1) != 1:
        raise SchemaError("sweep files are version 1", where(("version",)))
    if not isinstance(data.get("spec"), str):
        raise SchemaError("a sweep needs `spec:` naming the base spec file", where(("spec",)))
    spec = (file.parent / data["spec"]).resolve()
    if not spec.is_file():
        raise FileAccessError(f"base spec '{data['spec']}' does not exist (looked for {spec})", where(("spec",)))
    name = str(data.get("name", file.stem))
    root = Path(out_dir).resolve() if out_dir else (file.parent / str(data.get("output", "sweeps"))).resolve()
    common = {**_common(doc), **_overrides(overrides)}
    sweep = Sweep(file, doc, spec, name, root / name, common, _axes(doc), _resources(doc))
    sweep.points = _points(sweep)
    return sweep


def _common(doc: Document) -> Dict[Tuple[Any, ...], Any]:
    raw = doc.data.get("set", {})
    if not isinstance(raw, dict):
        raise SchemaError("`set:` maps dotted spec paths to values", doc.source.value(("set",)))
    return {_path(k, doc.source.key(("set", k))): v for k, v in raw.items()}


def _overrides(overrides) -> Dict[Tuple[Any, ...], Any]:
    from ..spec.resolve import parse_override

    out = {}
    for text in overrides:
        parts, value = parse_override(text)
        out[_path(".".join(map(str, parts)), Location("--set", None, None, text))] = value
    return out


def _axes(doc: Document) -> List[Axis]:
    raw = doc.data.get("axes")
    if not isinstance(raw, dict) or not raw:
        raise SchemaError("a sweep needs `axes:`, a mapping of dotted spec paths to lists of values",
                          doc.source.value(("axes",)))
    axes = []
    for key, values in raw.items():
        here = ("axes", key)
        path = _path(key, doc.source.key(here))
        if isinstance(values, dict) and values:
            labels = tuple(str(k) for k in values)
            locs = tuple(doc.source.value(here + (k,)) for k in values)
            values = tuple(values.values())
        elif isinstance(values, list) and values:
            labels = tuple(_label(v, i) for i, v in enumerate(values))
            locs = tuple(doc.source.value(here + (i,)) for i in range(len(values)))
            values = tuple(values)
        else:
            raise SchemaError(f"axis '{key}' needs a non-empty list of values (or a mapping label: value)",
                              doc.source.value(here))
        if len(set(labels)) != len(labels):
            raise SchemaError(f"axis '{key}' names two values alike ({', '.join(labels)}); give them labels "
                              "as a mapping, e.g. {{small: [...], large: [...]}}", doc.source.value(here))
        axes.append(Axis(path, str(key), values, labels, locs))
    return axes


def _label(value: Any, index: int) -> str:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return str(value)
    return f"v{index}"


def _path(key: Any, where: Location) -> Tuple[Any, ...]:
    parts = tuple(int(p) if p.isdigit() else p for p in str(key).split("."))
    if any(p == "" for p in parts):
        raise SchemaError(f"'{key}' is not a dotted spec path such as model.name", where)
    if parts[0] in ("extends", "name"):
        raise SchemaError(f"a sweep cannot vary `{parts[0]}`: every point extends the same spec and shares "
                          "its name (and so its step store)", where)
    return parts


def _resources(doc: Document) -> Dict[str, float]:
    raw = doc.data.get("resources", {})
    if not isinstance(raw, dict):
        raise SchemaError("`resources:` is a mapping: cpus, gpus, memory_gb", doc.source.value(("resources",)))
    out: Dict[str, float] = {"cpus": 1, "gpus": 0}
    for key, value in raw.items():
        if key not in RESOURCES:
            raise SchemaError(f"unknown resource '{key}'; expected: {', '.join(RESOURCES)}",
                              doc.source.key(("resources", key)))
        if isinstance(value, bool) or not isinstance(value, RESOURCES[key]) or value < 0:
            raise SchemaError(f"resource '{key}' must be a non-negative number", doc.source.value(("resources", key)))
        out[key] = value
    return out


def _points(sweep: Sweep) -> List[Point]:
    count = 1
    for axis in sweep.axes:
        count *= len(axis.values)
    if count > MAX_POINTS:
        raise SchemaError(f"the axes make {count} points; at most {MAX_POINTS}", sweep.doc.source.value(("axes",)))
    points = []
    for index, choice in enumerate(itertools.product(*(range(len(a.values)) for a in sweep.axes))):
        points.append(Point(index, f"p{index:03d}", tuple(a.values[j] for a, j in zip(sweep.axes, choice)),
                            {a.name: a.labels[j] for a, j in zip(sweep.axes, choice)}))
    return points


# --------------------------------------------------------------------------- point files


def write_point_files(sweep: Sweep, base_data: Dict[str, Any], base_name: str) -> None:
    """points/pNNN.yaml: `extends:` the base spec, with the common and axis values set."""
    folder = sweep.out_dir / "points"
    folder.mkdir(parents=True, exist_ok=True)
    for point in sweep.points:
        body: Dict[str, Any] = {}
        settings = list(sweep.common.items()) + [(a.path, v) for a, v in zip(sweep.axes, point.values)]
        for path, value in settings:
            _set(body, base_data, path, value, sweep, point)
        text = (f"# {point.describe()} of sweep {sweep.file} (written by mi-run sweep; edits are overwritten)\n"
                + yaml.safe_dump({"extends": _relative(sweep.spec, folder), "name": base_name, **body},
                                 sort_keys=False, allow_unicode=True))
        file = sweep.point_file(point)
        if not file.is_file() or file.read_text() != text:
            file.write_text(text)


def _set(body: Dict[str, Any], base: Any, path: Tuple[Any, ...], value: Any, sweep: Sweep, point: Point) -> None:
    """Set `path` in the point's body. `extends:` replaces lists whole, so a path through a
    list copies that list from the base spec and sets the item inside the copy."""
    node, source = body, base
    for i, part in enumerate(path[:-1]):
        source = source.get(part) if isinstance(source, dict) else None
        nxt = path[i + 1]
        if isinstance(nxt, int):  # the list itself is replaced: copy it from the base
            if part not in node:
                if not isinstance(source, list):
                    raise SchemaError(f"'{dotted(path[:i + 1])}' is not a list in the base spec",
                                      _axis_location(sweep, path, point))
                node[part] = copy.deepcopy(source)
            _set_in_list(node[part], path[i + 1:], value, sweep, path, point)
            return
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SchemaError(f"'{dotted(path[:i + 1])}' is set to a value and also used as a mapping",
                              _axis_location(sweep, path, point))
    node[path[-1]] = copy.deepcopy(value)


def _set_in_list(items: list, rest: Tuple[Any, ...], value: Any, sweep: Sweep, path, point) -> None:
    index = rest[0]
    if index >= len(items):
        raise SchemaError(f"the base spec's list '{dotted(path[:len(path) - len(rest)])}' has no item {index}",
                          _axis_location(sweep, path, point))
    if len(rest) == 1:
        items[index] = copy.deepcopy(value)
        return
    inner = items[index]
    for part in rest[1:-1]:
        if isinstance(inner, list) and isinstance(part, int) and part < len(inner):
            inner = inner[part]
        elif isinstance(inner, dict):
            inner = inner.setdefault(part, {})
        else:
            raise SchemaError(f"'{dotted(path)}' does not lead anywhere in the base spec",
                              _axis_location(sweep, path, point))
    if isinstance(inner, list) and not (isinstance(rest[-1], int) and rest[-1] < len(inner)):
        raise SchemaError(f"'{dotted(path)}' names no item of a list in the base spec",
                          _axis_location(sweep, path, point))
    if not isinstance(inner, (dict, list)):
        raise SchemaError(f"'{dotted(path)}' goes through a scalar of the base spec",
                          _axis_location(sweep, path, point))
    inner[rest[-1]] = copy.deepcopy(value)


def _relative(target: Path, folder: Path) -> str:
    import os

    return os.path.relpath(target, folder)


# --------------------------------------------------------------------------- errors


def _axis_location(sweep: Sweep, path: Tuple[Any, ...], point: Point) -> Location:
    """The sweep-file location of the value this point gives `path` (or of the `set:` entry)."""
    for axis, value in zip(sweep.axes, point.values):
        if axis.path == path:
            return axis.locations[axis.values.index(value)]
    for key in (sweep.doc.data.get("set") or {}):
        if _path(key, Location()) == path:
            return sweep.doc.source.value(("set", key))
    return sweep.doc.source.value(("axes",))


def locate_point_error(err: MiError, sweep: Sweep, point: Point) -> MiError:
    """A fault of a point, named by the point and, when it lies in a value the sweep set,
    located at that value in the sweep file."""
    where = err.location
    file = sweep.point_file(point)
    if where.file and Path(where.file).resolve() == file.resolve():
        spec_path = _spec_path(where.path)
        for path in [a.path for a in sweep.axes] + list(sweep.common):
            if spec_path[:len(path)] == path:
                err.location = Location(str(sweep.file), *_line_col(_axis_location(sweep, path, point)),
                                        where.path)
                break
    err.message = f"{point.describe()}: {err.message}"
    return err


def _line_col(location: Location) -> Tuple[Optional[int], Optional[int]]:
    return location.line, location.column


def _spec_path(text: str) -> Tuple[Any, ...]:
    """'vocabularies.nouns.items[2]' -> ('vocabularies', 'nouns', 'items', 2)."""
    parts: List[Any] = []
    for chunk in text.replace("]", "").split("."):
        head, *indices = chunk.split("[")
        if head:
            parts.append(int(head) if head.isdigit() else head)
        parts.extend(int(i) for i in indices if i.isdigit())
    return tuple(parts)

