"""`mi-run SPEC`: run a spec and print its report's path."""
from __future__ import annotations

from ._echo import echo


def run_command(args) -> int:
    from ..running import run_spec

    outcome = run_spec(args.spec, overrides=args.overrides, allow_paths=args.allow_path, fresh=args.fresh,
                       out_dir=args.out, progress=not args.quiet, threads=args.threads)
    echo(f"report: {outcome.report_path}")
    return 0
