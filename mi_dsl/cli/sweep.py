"""`mi-run sweep SWEEP.yaml [--backend local|ray] [--address ADDR] [--shard i/n]`."""
from __future__ import annotations

import sys

from ._echo import echo


def sweep_command(args) -> int:
    from ..sweep.command import run_sweep

    outcome = run_sweep(args.sweep, backend=args.backend, address=args.address, shard=args.shard,
                        out_dir=args.out, fresh=args.fresh, overrides=args.overrides, allow_paths=args.allow_path,
                        progress=not args.quiet, limits=args.limit, yes=args.yes)
    echo(f"report: {outcome.report_path}")
    if outcome.failed:
        print("\n".join(message for _, message in outcome.failed), file=sys.stderr)
        return 2
    return 0
