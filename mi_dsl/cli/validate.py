"""`mi-run validate SPEC...`: schema and meaning, without weights or network."""
from __future__ import annotations

import sys
import time
from typing import List

from ..compile import prepare
from ..errors import MiError
from ._echo import echo


def validate_specs(paths: List[str], overrides, allow_paths, debug: bool = False, limits=None) -> int:
    from ..models.gguf_job import conversion_progress
    from ..runtime.run import progress_printer

    failed = 0
    for path in paths:
        started = time.perf_counter()
        try:
            with conversion_progress(progress_printer(True)):  # a first use converts a GGUF's tokenizer
                prepared = prepare(path, overrides, allow_paths, need_tokenizer=False, limits=limits)
        except MiError as err:
            if debug:
                raise
            print(err.format(), file=sys.stderr)
            failed += 1
            continue
        took = time.perf_counter() - started
        plan, dataset, skipped = prepared.plan, prepared.dataset, prepared.skipped
        if dataset is None:
            echo(f"{path}: valid (schema and meaning); tokenizer checks skipped: {skipped} [{took:.1f}s]")
        else:
            for warning in dataset.warnings:
                echo(warning.format())
            prompts = (f"{len(dataset.pairs)} candidate prompts of {'/'.join(map(str, dataset.token_lengths))} "
                       "tokens" if dataset.pairs else "no prompt set")
            echo(f"{path}: valid; {prompts}, {len(plan.analyses)} analyses [{took:.1f}s]")
    return 2 if failed else 0
