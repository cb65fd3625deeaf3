"""From a spec file to a typed, located `Spec` (no torch, no tokenizer yet).

Stages: read YAML (located) -> apply `--set` overrides -> JSON Schema -> resolve
shorthands into one standard form (defaults, paths made absolute and confined to the
spec's tree). Meaning checks that need the vocabularies or a tokenizer happen in
`dataset.py` and `compiler.py`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import FileAccessError, Location, SchemaError, SpecMeaningError
from .compose import load_composed
from .loader import Document, PathKey, parse_yaml
from ..suggest import unknown
from ..models.model_spec import EMBEDDED_MODELS, ModelSpec, Processing
from ..models.sources import SOURCES
from .validate import validate_document
from .vocab import VocabSpec, read_vocabulary

# Keys whose values are paths; when given with --set they are relative to the working directory.
PATH_KEYS = {("model", "path"), ("model", "tokenizer"), ("output", "dir")}


@dataclass(frozen=True)
class Spec:
    file: str
    name: str
    data: Dict[str, Any]       # the validated, overridden document (resolved spec)
    doc: Document
    model: ModelSpec
    bos_token: Optional[str]
    vocabularies: Dict[str, VocabSpec]
    seed: int
    metric: str
    output_dir: Optional[Path]   # None: the spec names none (runs go to ./runs)
    overrides: Tuple[str, ...] = ()
    allowed_roots: Tuple[Path, ...] = ()

    @property
    def source(self):
        return self.doc.source

    @property
    def prompts(self) -> Dict[str, Any]:
        return self.data["prompts"]

    @property
    def pipeline(self) -> List[Dict[str, Any]]:
        return self.data.get("pipeline", [])

    @property
    def analyses(self) -> List[Dict[str, Any]]:
        return self.data.get("analyses", [])

    @property
    def run_options(self) -> Dict[str, Any]:
        return self.data.get("run", {})

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.data, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def loc(self, *path) -> Location:
        return self.doc.source.value(tuple(path))


def load_spec(path, overrides: Sequence[str] = (), allowed_roots: Sequence[Path] = ()) -> Spec:
    file = Path(path)
    doc = load_composed(file)
    cli_paths = _apply_overrides(doc, overrides)
    validate_document(doc)
    return _resolve(doc, file, tuple(overrides), cli_paths, tuple(Path(r).resolve() for r in allowed_roots))


def _apply_overrides(doc: Document, overrides: Sequence[str]) -> set:
    """`--set a.b=VALUE`: VALUE is read as a YAML scalar; returns the paths set this way."""
    touched = set()
    if not isinstance(doc.data, dict):
        return touched  # nothing to override; validation says what the document is instead
    for text in overrides:
        where = Location("--set", None, None, text)
        if "=" not in text:
            raise SchemaError(f"--set expects KEY=VALUE, got '{text}'", where)
        key, raw = text.split("=", 1)
        parts = tuple(int(p) if p.isdigit() else p for p in key.strip().split("."))
        if any(p == "" for p in parts):
            raise SchemaError(f"--set: '{key}' is not a dotted path such as model.tokenizer", where)
        value = parse_yaml(raw, "--set").data if raw.strip() else ""
        if isinstance(value, (dict, list)):
            raise SchemaError(f"--set overrides scalars only; '{raw}' is a {type(value).__name__}", where)
        _set_path(doc, parts, value, where, text)
        touched.add(parts)
    return touched


def _set_path(doc: Document, parts: PathKey, value: Any, where: Location, text: str) -> None:
    node = doc.data
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            if not isinstance(part, int) or part >= len(node):
                raise SchemaError(f"--set: '{'.'.join(map(str, parts[:i + 1]))}' is not an item of the list", where)
            node = node[part]
        else:
            if part not in node:  # a mapping --set creates: its faults point at the --set
                doc.source.origins[parts[:i + 1]] = text
            node = node.setdefault(part, {})
        if not isinstance(node, (dict, list)):
            raise SchemaError(f"--set: '{'.'.join(map(str, parts[:i + 1]))}' is a scalar, not a mapping", where)
    last = parts[-1]
    if isinstance(node, list):
        if not isinstance(last, int) or last >= len(node):
            raise SchemaError(f"--set: no item {last} in that list", where)
    node[last] = value
    doc.source.origins[parts] = text  # faults in it point at the --set


def _resolve(doc: Document, file: Path, overrides, cli_paths: set, allowed_roots) -> Spec:
    data = doc.data
    base = file.resolve().parent
    # Each spec of an `extends` chain may read and write inside its own tree.
    spec_dirs = {Path(f).resolve().parent for f in doc.source.files.values()} - {base}
    roots = (base, *sorted(spec_dirs), *allowed_roots)

    def dir_of(key: PathKey) -> Path:
        """Paths are relative to the spec file that wrote them (a base spec's, if inherited)."""
        return Path(doc.source.file_of(key)).resolve().parent

    def spec_path(key: PathKey, value: Optional[str]) -> Optional[str]:
        if value is None:
            return None
        if key in cli_paths:
            return str(Path(value).expanduser().resolve()) if _looks_like_path(value) else value
        return str((dir_of(key) / value).resolve()) if _looks_like_path(value, dir_of(key)) else value

    m = data["model"]
    processing = m.get("processing", True)
    if isinstance(processing, bool):
        processing = Processing(enabled=processing, fold_ln=processing,
                                center_writing_weights=processing, center_unembed=processing)
    else:
        processing = Processing(enabled=True, **processing)
    model = ModelSpec(
        source=m["source"], name=m.get("name"),
        path=spec_path(("model", "path"), m.get("path")),
        tokenizer=spec_path(("model", "tokenizer"), m.get("tokenizer")),
        architecture=m.get("architecture"), size=m.get("size"), seed=m.get("seed", 0),
        prepend_bos=m["prepend_bos"], device=m.get("device", "auto"), dtype=m.get("dtype", "float32"),
        processing=processing, device_map=_device_map(m.get("device_map")), n_devices=m.get("n_devices", 1),
    )
    _check_model_fields(doc, model)
    out_key = ("output", "dir")
    out_raw = data.get("output", {}).get("dir")
    output_dir = None  # not named by the spec: ./runs under the current directory (runtime.run.runs_root_of)
    if out_raw is not None:
        output_dir = Path(spec_path(out_key, out_raw) if out_key in cli_paths else (dir_of(out_key) / out_raw).resolve())
        if out_key not in cli_paths:
            _confine(output_dir, roots, doc.source.value(out_key), "output directory")
    confine = lambda path, where, what: _confine(path, roots, where, what)  # noqa: E731
    vocabularies = {name: read_vocabulary(doc, name, dir_of(("vocabularies", name, "file")), confine)
                    for name in data.get("vocabularies", {})}
    return Spec(file=str(file), name=data.get("name", file.stem), data=data, doc=doc, model=model,
                bos_token=m.get("bos_token"), vocabularies=vocabularies, seed=data.get("seed", 0),
                metric=data.get("metric", "logit_diff"), output_dir=output_dir, overrides=overrides,
                allowed_roots=allowed_roots)


def _looks_like_path(value: str, base: Path = Path(".")) -> bool:
    """Paths start with . / ~, end in a file suffix, or exist; hub ids (org/name) do not."""
    return value.startswith((".", "/", "~")) or value.endswith((".json", ".gguf", ".txt", ".csv", ".jsonl")) or (
        (base / value).exists())


def _confine(path: Path, roots, where: Location, what: str) -> None:
    if not any(path == r or r in path.parents for r in roots):
        raise FileAccessError(
            f"{what} '{path}' is outside the spec's directory tree",
            where, hint="a spec may only read and write inside its own directory; pass the path with "
                        "--set (or --allow-path DIR) on the command line to allow it")


def _device_map(raw):
    """A mapping becomes sorted (module, device) pairs, so the frozen ModelSpec can hold it."""
    return tuple(sorted((str(k), v) for k, v in raw.items())) if isinstance(raw, dict) else raw


def _check_placement(doc: Document, model: ModelSpec) -> None:
    """device, device_map and n_devices each place the model: one at a time, and a map
    with cpu entries only without weight processing (TransformerBridge refuses it)."""
    spread = model.device_map is not None or model.n_devices > 1
    if spread and "device" in doc.data["model"] and model.device != "auto":
        raise SpecMeaningError("`model.device` and `model.device_map`/`n_devices` both place the model; give one",
                               doc.source.value(("model", "device")),
                               hint="remove `device`, or remove `device_map` and `n_devices`")
    if model.device_map is not None and model.n_devices > 1:
        raise SpecMeaningError("`model.n_devices` is a shorthand for a balanced device_map; give one of them",
                               doc.source.value(("model", "n_devices")))
    if isinstance(model.device_map, tuple) and model.processing.enabled and any(
            str(d) == "cpu" for _, d in model.device_map):
        raise SpecMeaningError("a device_map with cpu entries cannot have weight processing: TransformerLens "
                               "folds and centers weights outside accelerate's hooks",
                               doc.source.value(("model", "device_map")),
                               hint="set `model.processing: false`, or map every module to a GPU")


def _check_model_fields(doc: Document, model: ModelSpec) -> None:
    _check_placement(doc, model)
    if model.source == "embedded" and model.name is not None and model.name not in EMBEDDED_MODELS:
        raise SchemaError(unknown("embedded model", model.name, EMBEDDED_MODELS), doc.source.value(("model", "name")))
    for key in SOURCES[model.source].needed_fields(model):
        if getattr(model, key) is None:
            raise SchemaError(f"a model with source '{model.source}' needs 'model.{key}'",
                              doc.source.value(("model", "source")))
