"""A GGUF's one-time conversions (its tokenizer, its float32 model), run in a child process.

Converting reads the GGUF's metadata into Python objects (0.7 GB and 9 s for the embedded
Gemma's 262k-token vocabulary) and dequantises its tensors. Done in the run's own process, the
memory it freed stayed with the process (fragmented small objects the allocator keeps): about
1 GB more than a warm run before the model loaded, 0.3 GB more through the analyses. A child
process returns all of it when it exits, and the parent imports neither transformers nor torch
for it (so `mi-run validate` on a fresh machine stays torch-free).

One job does what a cold start needs in one read of the metadata: the tokenizer into the
caller's scratch directory, and, when the caller names it, the model's cache entry (made under
its own lock, `cache.ensure`, as the model loader would). The cache's entries, locks and
checksums stay the caller's business; the job only writes files.

MI_DSL_CONVERT_IN_PROCESS=1 converts in the calling process instead (to debug a conversion).

    python -m mi_dsl.models.gguf_job JOB_JSON      # what the parent runs
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional

from ..errors import EnvironmentFault, FileAccessError, Location, MiError, RunError

IN_PROCESS_ENV = "MI_DSL_CONVERT_IN_PROCESS"
_SAY, _FAULT, _MADE = "say ", "fault ", "made-model-entry"   # the child's lines: progress, then a fault or
#                                                                 whether it made the model's entry
_FAULTS = {cls.__name__: cls for cls in (RunError, FileAccessError, EnvironmentFault)}

Say = Callable[[str], None]


@dataclass(frozen=True)
class Job:
    gguf: Optional[str]                     # the GGUF file; None: the embedded Gemma (assembled here)
    tokenizer_scratch: Optional[str] = None  # write the tokenizer (tokenizer.json, its config) here
    model_scratch: Optional[str] = None      # write the model here (the caller holds its entry's lock)
    model_entry: Optional[str] = None        # make this model cache entry, under its own lock


# Set while a run prepares (model_too): a tokenizer's conversion makes the model's entry too.
_model_too: ContextVar[bool] = ContextVar("mi_dsl_model_too", default=False)
# Where a conversion's progress goes while a front end that has no progress lines of its own
# (prepare, resolving the tokenizer) runs: a run's printer, or validate's and plan's stderr.
_progress: ContextVar[Optional[Say]] = ContextVar("mi_dsl_conversion_progress", default=None)


@contextmanager
def model_too(progress: Optional[Say] = None) -> Iterator[None]:
    """While open, a tokenizer converted from a GGUF brings the model's entry with it (the same
    job, one read of the metadata): a run, which loads the model next, opens it; `validate` and
    `plan`, which need the tokenizer only, do not. `progress` also hears the jobs' progress."""
    token = _model_too.set(True)
    try:
        with conversion_progress(progress):
            yield
    finally:
        _model_too.reset(token)


@contextmanager
def conversion_progress(progress: Optional[Say]) -> Iterator[None]:
    """While open, `progress` hears what a GGUF conversion says (a first `mi-run validate` of the
    embedded model converts its tokenizer for ~20 s and should say so)."""
    token = _progress.set(progress or (lambda message: None))
    try:
        yield
    finally:
        _progress.reset(token)


def with_conversion_progress(say: Say) -> Say:
    """`say`, and the progress of the front end that is preparing (conversion_progress), when there is one."""
    also = _progress.get()
    if also is None or also is say:
        return say

    def both(message: str) -> None:
        say(message)
        also(message)
    return both


def tokenizer_job(gguf: Optional[Path], scratch: Path, model_entry: Optional[Path]) -> Job:
    """The job that converts a GGUF's tokenizer into `scratch`, and its model (`model_entry`; None:
    the spec loads another model) too when a run wants it."""
    from . import cache

    wanted = model_entry is not None and _model_too.get() and not cache.ready(model_entry)
    return Job(str(gguf) if gguf is not None else None, tokenizer_scratch=str(scratch),
               model_entry=str(model_entry) if wanted else None)


def run(job: Job, say: Say) -> None:
    """Do `job`, in a child process unless MI_DSL_CONVERT_IN_PROCESS=1. A model entry it made is
    noted (cache.note_built), so the load that reads it next reports a conversion, not a cache hit."""
    from . import cache

    made = do(job, say) if os.environ.get(IN_PROCESS_ENV) == "1" else _in_child(job, say)
    if made and job.model_entry:
        cache.note_built(Path(job.model_entry))


def do(job: Job, say: Say) -> bool:
    """Do `job` in this process (the child's body); True when it made `job.model_entry` (another
    process may have made it meanwhile)."""
    from . import cache
    from .convert import convert_gguf, convert_gguf_tokenizer
    from .environment import quiet
    from .gguf_reader import release, shared

    try:
        with quiet(), shared(), _gguf_file(job, say) as gguf:
            if job.tokenizer_scratch:
                convert_gguf_tokenizer(gguf, Path(job.tokenizer_scratch), say)
            if job.model_scratch:
                convert_gguf(gguf, Path(job.model_scratch), say)
            if job.model_entry:
                return not cache.ensure(Path(job.model_entry), lambda scratch: convert_gguf(gguf, scratch, say),
                                        say)
            return False
    finally:
        release()


@contextmanager
def _gguf_file(job: Job, say: Say) -> Iterator[Path]:
    if job.gguf is not None:
        yield Path(job.gguf)
        return
    from .embedded import assembled_embedded, embedded_package

    with assembled_embedded(embedded_package(), say) as gguf:
        yield gguf


def _in_child(job: Job, say: Say) -> bool:
    """Run `job` in `python -m mi_dsl.models.gguf_job`, relaying its progress lines to `say` and
    raising here the fault it reports (the same class, message and hint)."""
    package_root = str(Path(__file__).resolve().parents[2])  # mi_dsl importable however we were
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [package_root, *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]))
    fault: Optional[dict] = None
    made = False
    other: List[str] = []  # what the libraries printed (the last lines name a crash)
    with subprocess.Popen([sys.executable, "-m", "mi_dsl.models.gguf_job", json.dumps(asdict(job))],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as child:
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith(_SAY):
                say(line[len(_SAY):].rstrip("\n"))
            elif line.startswith(_FAULT):
                fault = json.loads(line[len(_FAULT):])
            elif line.strip() == _MADE:
                made = True
            elif line.strip():
                other = [*other[-19:], line.rstrip()]
        code = child.wait()
    if code == 0:
        return made
    if fault is not None:
        _raise(fault)
    if code < 0:  # a signal: the kernel's out-of-memory killer, most often
        raise EnvironmentFault(f"converting the GGUF was stopped by signal {-code} (out of memory?)",
                               Location("<memory>"), hint="free memory and run again; the conversion "
                               "needs about 2 GB for the embedded Gemma")
    raise RuntimeError(f"converting the GGUF failed in its child process: {other[-1] if other else code}")


def _raise(fault: dict) -> None:
    if fault["class"] == "OSError":
        raise OSError(fault["errno"], fault["message"], fault.get("filename"))
    if fault["class"] == "MemoryError":
        raise MemoryError(fault["message"])
    raise _FAULTS.get(fault["class"], RunError)(fault["message"], hint=fault.get("hint", ""))


def _report(err: BaseException) -> dict:
    """A fault as the line the parent turns back into the same exception. Anything else is raised
    again: a bug, whose traceback ends the child and whose last line the parent names."""
    if isinstance(err, MiError):
        return {"class": type(err).__name__ if type(err).__name__ in _FAULTS else "RunError",
                "message": err.message, "hint": err.hint}
    if isinstance(err, OSError) and err.errno is not None:
        return {"class": "OSError", "errno": err.errno, "message": err.strerror or str(err),
                "filename": str(err.filename) if err.filename else None}
    if isinstance(err, MemoryError):
        return {"class": "MemoryError", "message": str(err)}
    raise err


def main(argv=None) -> int:
    job = Job(**json.loads((argv if argv is not None else sys.argv[1:])[0]))

    def say(message: str) -> None:
        print(_SAY + message.replace("\n", " "), flush=True)
    try:
        made = do(job, say)
    except (MiError, OSError, MemoryError) as err:
        print(_FAULT + json.dumps(_report(err)), flush=True)
        return 2
    if made:
        print(_MADE, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
