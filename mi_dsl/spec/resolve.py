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

from ..errors import Location, SchemaError, SpecMeaningError
from .compose import load_composed
from .paths import SpecPaths, allowed_paths, check_run_name
from .loader import Document, PathKey, parse_yaml
from ..suggest import unknown
from ..models.model_spec import EMBEDDED_MODELS, ModelSpec, Processing
from ..models.sources import SOURCES
from .validate import validate_document
from .vocab import VocabSpec, read_vocabulary


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
    dataset_file: Optional[Path] = None  # `dataset: {file: ...}`, resolved and confined

    @property
    def has_dataset(self) -> bool:
        """Whether the spec makes prompt pairs (from templates or from a pair file)."""
        return "prompts" in self.data or "dataset" in self.data

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
    allowed = allowed_paths(allowed_roots)
    doc = load_composed(file, allowed)
    cli_paths = _apply_overrides(doc, overrides)
    validate_document(doc)
    return _resolve(doc, file, tuple(overrides), cli_paths, allowed)


def _apply_overrides(doc: Document, overrides: Sequence[str]) -> set:
    """`--set a.b=VALUE`: VALUE is read as a YAML scalar; returns the paths set this way."""
    touched: set = set()
    if not isinstance(doc.data, dict):
        return touched  # nothing to override; validation says what the document is instead
    for text in overrides:
        parts, value = parse_override(text)
        _set_path(doc, parts, value, Location("--set", None, None, text), text)
        touched.add(parts)
    return touched


def parse_override(text: str) -> Tuple[PathKey, Any]:
    """`--set a.b=VALUE` -> (("a", "b"), VALUE read as a YAML scalar); `mi-run sweep --set` too."""
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
    return parts, value


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
    paths = SpecPaths(doc, allowed_roots, frozenset(cli_paths))

    def model_path(key: str, what: str) -> Optional[str]:
        """A model path or tokenizer: confined when it is a path (a hub id is not); a folder's own
        entries may not link out of the tree either."""
        value = data["model"].get(key)
        written_in = Path(".") if ("model", key) in paths.cli_keys else paths.file_of(("model", key)).resolve().parent
        if value is None or not _looks_like_path(value, written_in):
            return value
        resolved = paths.resolve(("model", key), what)
        paths.folder_entries(("model", key), resolved, what)
        return str(resolved)

    m = data["model"]
    processing = m.get("processing", True)
    if isinstance(processing, bool):
        processing = Processing(enabled=processing, fold_ln=processing,
                                center_writing_weights=processing, center_unembed=processing)
    else:
        processing = Processing(enabled=True, **processing)
    model = ModelSpec(
        source=m["source"], name=m.get("name"),
        path=model_path("path", "model path"),
        tokenizer=model_path("tokenizer", "tokenizer"),
        architecture=m.get("architecture"), size=m.get("size"), seed=m.get("seed", 0),
        prepend_bos=m["prepend_bos"], device=m.get("device", "auto"), dtype=m.get("dtype", "float32"),
        processing=processing, device_map=_device_map(m.get("device_map")), n_devices=m.get("n_devices", 1),
    )
    _check_model_fields(doc, model)
    output_dir = None  # not named by the spec: ./runs under the current directory (runtime.run.runs_root_of)
    if data.get("output", {}).get("dir") is not None:
        output_dir = paths.resolve(("output", "dir"), "output directory")
    name = data.get("name", file.stem)
    check_run_name(name, doc.source.value(("name",)) if "name" in data else Location(str(file), 1, 1))
    dataset_file = _dataset_file(doc, paths)
    vocabularies = {name_: read_vocabulary(doc, name_, paths) for name_ in data.get("vocabularies", {})}
    return Spec(file=str(file), name=name, data=data, doc=doc, model=model,
                bos_token=m.get("bos_token"), vocabularies=vocabularies, seed=data.get("seed", 0),
                metric=data.get("metric", "logit_diff"), output_dir=output_dir, overrides=overrides,
                allowed_roots=allowed_roots, dataset_file=dataset_file)


def _dataset_file(doc: Document, paths: SpecPaths) -> Optional[Path]:
    """The pair file of `dataset:`: relative to the spec that names it and inside its tree (or,
    given with --set, relative to the working directory): spec/paths.py's one rule. A spec gives
    prompts or a dataset."""
    if "dataset" not in doc.data:
        return None
    if "prompts" in doc.data:
        raise SpecMeaningError("the spec has both `prompts:` (pairs from a template) and `dataset:` (pairs from "
                               "a file); give one", doc.source.key(("dataset",)),
                               hint="remove `prompts:` to read the pairs from the file, or `dataset:` to build "
                                    "them from the template")
    return paths.resolve(("dataset", "file"), "dataset file")


def _looks_like_path(value: str, base: Path = Path(".")) -> bool:
    """Paths start with . / ~, end in a file suffix, or exist; hub ids (org/name) do not."""
    return value.startswith((".", "/", "~")) or value.endswith((".json", ".gguf", ".txt", ".csv", ".jsonl")) or (
        (base / value).exists())


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
