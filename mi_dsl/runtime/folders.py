"""Where a run writes: the runs directory and <runs>/<name>/.store, made before the model loads.

--out DIR, else the spec's `output.dir` (confined to its tree, spec/paths.py), else ./runs under
the current directory. Below it, <name> and .store are created without following links, and
the folder is written to once, so a planted link, a file in the way or a read-only folder
stops a run before its compute; the report (report/html.py) is then written atomically.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import Location


def default_runs_root() -> Path:
    return Path.cwd() / "runs"


def runs_root_of(spec, out_dir: Optional[str] = None) -> Path:
    """Where runs go: --out DIR, else the spec's output.dir, else ./runs under the current directory."""
    if out_dir:
        return Path(out_dir).expanduser().resolve()
    return spec.output_dir if spec.output_dir is not None else default_runs_root()


def runs_location(spec, out_dir: Optional[str] = None) -> Location:
    """Where a fault of the runs directory points: --out, the spec's output.dir, or ./runs."""
    if out_dir:
        return Location(f"--out {out_dir}")
    if spec.output_dir is not None:
        return spec.loc("output", "dir")
    return Location(str(default_runs_root()))


def prepare_folders(spec, out_dir: Optional[str] = None) -> Path:
    """<runs>/<name>/.store, created before the model loads, none of them through a link, and the
    folder written to once: a planted link, a file in the way or a read-only folder stops the run
    here, not after the compute (spec/paths.py). ./runs itself must not be a link either."""
    from ..spec.paths import make_folder, probe_writable

    where = runs_location(spec, out_dir)
    if not out_dir and spec.output_dir is None:
        make_folder(Path.cwd(), ["runs"], where, "runs directory")
    store = make_folder(runs_root_of(spec, out_dir), [spec.name, ".store"], where)
    probe_writable(store, where)
    return store
