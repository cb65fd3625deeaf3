"""The Python API: `mi_dsl.run`, `mi_dsl.validate`, `mi_dsl.plan` (see docs/api.md).

Each takes a spec file path or a mapping (the spec as Python data) and optional
overrides (["key.path=value", ...] or {"key.path": value}). Faults raise the same
located `MiError`s the CLI prints (`FILE:LINE:COL: ...`). A mapping is written as YAML
to a hidden file in `base_dir` (default: the current directory) for the run, so its
relative paths mean what they would in a spec file there and its errors have lines.
"""
from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import yaml

SpecSource = Union[str, os.PathLike, Mapping[str, Any]]
Overrides = Union[None, Sequence[str], Mapping[str, Any]]


def override_list(overrides: Overrides) -> List[str]:
    """["a.b=1", ...] from a list of KEY=VALUE strings or a {key: value} mapping."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [f"{key}={_scalar(value)}" for key, value in overrides.items()]
    if isinstance(overrides, str):
        return [overrides]
    return list(overrides)


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


@contextmanager
def spec_file(source: SpecSource, base_dir: Optional[str] = None) -> Iterator[Path]:
    """A path to the spec: the file given, or a mapping written as YAML for the duration."""
    if not isinstance(source, Mapping):
        yield Path(source)
        return
    text = yaml.safe_dump(dict(source), sort_keys=False)
    name = str(source.get("name", "spec"))
    folder = Path(base_dir or ".").resolve()
    path = folder / f".{name}.{hashlib.sha256(text.encode()).hexdigest()[:8]}.mi-dsl.yaml"
    path.write_text(text)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def run(spec: SpecSource, overrides: Overrides = None, *, threads: Optional[int] = None,
        device: Optional[str] = None, out_dir: Optional[str] = None, fresh: bool = False, progress: bool = True,
        allow_paths: Sequence[str] = (), base_dir: Optional[str] = None):
    """Run a spec; returns `mi_dsl.Results` (tables as DataFrames, figures, the report's path).

    threads: torch's CPU threads (the CLI's --threads; default: runtime/threads.py's policy);
    device: the model's device (auto, cpu, cuda, cuda:N), as `--set model.device=...`;
    out_dir: where runs go (--out); fresh: recompute instead of reusing stored steps."""
    from .results import Results
    from .running import run_spec

    extra = override_list(overrides) + ([f"model.device={device}"] if device is not None else [])
    with spec_file(spec, base_dir) as path:
        outcome = run_spec(path, extra, allow_paths, fresh=fresh, out_dir=out_dir, progress=progress,
                           threads=threads)
    return Results(outcome.log, outcome.run_dir)


def validate(spec: SpecSource, overrides: Overrides = None, *, allow_paths: Sequence[str] = (),
             base_dir: Optional[str] = None) -> List[str]:
    """Check a spec's schema and meaning (and its prompts, when its tokenizer is at hand) without
    loading weights. Raises the located MiError; returns the warnings (located messages)."""
    from .compile import prepare

    with spec_file(spec, base_dir) as path:
        prepared = prepare(path, override_list(overrides), list(allow_paths), need_tokenizer=False)
    return [w.format() for w in prepared.dataset.warnings] if prepared.dataset is not None else []


def plan(spec: SpecSource, overrides: Overrides = None, *, allow_paths: Sequence[str] = (),
         base_dir: Optional[str] = None, examples: int = 3) -> Dict[str, Any]:
    """The compiled dataset and plan, as `mi-run plan --json` prints it. Raises the located MiError."""
    from .compile import prepare
    from .compile.summary import plan_summary

    with spec_file(spec, base_dir) as path:
        return plan_summary(prepare(path, override_list(overrides), list(allow_paths)), examples)
