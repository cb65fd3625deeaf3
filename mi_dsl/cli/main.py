"""`mi-run`: validate, plan and run specs.

  mi-run SPEC                     run a spec (same as `mi-run run SPEC`)
  mi-run validate SPEC...         check schema and meaning (no weights, no network)
  mi-run plan SPEC [--json]       show the compiled dataset and plan
  mi-run schema                   print the JSON Schema
  mi-run list [NAME]              list analyses, metrics and expression functions; or one
                                  of them with its parameters and an example
  mi-run sweep SWEEP.yaml         run a spec over the product of axes [--backend local|ray]

Options of a run may come before the spec: `mi-run --threads 1 --debug SPEC`.
User mistakes print `FILE:LINE:COL: message` and exit with code 2; faults of the machine (a
full disk, a read-only folder, out of memory) exit with code 3; `--debug` shows the traceback
too. Nothing else prints a traceback: an unexpected exception is one line naming it as a bug
of mi-dsl, exit code 1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

from .._version import LANGUAGE_VERSION, __version__
from ..errors import MiError

COMMANDS = ("run", "validate", "plan", "schema", "list", "sweep")
# options of `run` that take a value: `mi-run --threads 2 SPEC` skips the 2 to find the spec
_VALUED = {"--threads", "--out", "--set", "--allow-path"}
_SET_HELP = "override a scalar by dotted path, e.g. model.tokenizer=path/tokenizer.json"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mi-run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks")
    parser.add_argument("--version", action="version", version=f"mi-run {__version__} (spec language "
                                                                   f"version {LANGUAGE_VERSION})")
    sub = parser.add_subparsers(dest="command")

    def spec_options(p, many=False):
        p.add_argument("specs" if many else "spec", nargs="+" if many else None,
                       help="spec files" if many else "spec file")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=_SET_HELP)
        p.add_argument("--allow-path", action="append", default=[], metavar="DIR",
                       help="allow vocabulary files and outputs under DIR (outside the spec's tree)")
        _limit_option(p)
        # SUPPRESS: without --debug here, `mi-run --debug validate ...` keeps the top-level flag.
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show Python tracebacks")

    run = sub.add_parser("run", help="run a spec and write its report")
    spec_options(run)
    run.add_argument("--fresh", action="store_true",
                     help="ignore stored step results; recompute all (and store them for the next run)")
    run.add_argument("--out", metavar="DIR", help="runs directory (default: the spec's output.dir, else ./runs)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--yes", action="store_true", help="start even when the plan's estimate passes run.max_cost")
    run.add_argument("--threads", type=_positive_int, metavar="N",
                     help="CPU threads for torch (default: OMP_NUM_THREADS, else the cores the load leaves "
                          "free; see docs/architecture.md, 'Threads')")
    validate = sub.add_parser("validate", help="check specs without loading weights")
    spec_options(validate, many=True)
    plan = sub.add_parser("plan", help="show the compiled dataset and plan")
    spec_options(plan)
    plan.add_argument("--json", action="store_true", help="print one JSON object")
    plan.add_argument("--examples", type=int, default=3, help="example pairs to show")
    plan.add_argument("--metrics", action="store_true",
                      help="load the model and print every candidate's clean and corrupted metrics (quantiles, "
                           "histograms, what each keep-condition keeps), without running analyses")
    plan.add_argument("--csv", metavar="FILE", help="with --metrics: write every candidate's metrics to FILE")
    schema = sub.add_parser("schema", help="print the JSON Schema of specs")
    listing = sub.add_parser("list", help="list analyses, metrics and expression functions, or describe one")
    listing.add_argument("name", nargs="?", help="an analysis kind, metric or function: its parameters and an example")
    for p in (schema, listing):
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show Python tracebacks")
    _sweep_parser(sub)
    return parser


def _sweep_parser(sub) -> None:
    sweep = sub.add_parser("sweep", help="run a spec over the product of axes; resumes when rerun")
    sweep.add_argument("sweep", help="sweep file (spec: base spec, axes: dotted path -> values)")
    sweep.add_argument("--backend", default="local", help="local (one run after another) or ray")
    sweep.add_argument("--address", help="a Ray cluster's address (default: start a local Ray)")
    sweep.add_argument("--shard", metavar="i/n", help="run only the points with index %% n == i")
    sweep.add_argument("--out", metavar="DIR", help="sweeps directory (default: the sweep file's output:)")
    sweep.add_argument("--fresh", action="store_true", help="rerun every point and recompute every step")
    sweep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help=_SET_HELP + "; set in every point, after the sweep file's `set:`")
    sweep.add_argument("--allow-path", action="append", default=[], metavar="DIR",
                       help="allow vocabulary files and outputs under DIR (outside the spec's tree)")
    _limit_option(sweep)
    sweep.add_argument("--yes", action="store_true", help="start points whose estimate passes run.max_cost")
    sweep.add_argument("--quiet", action="store_true", help="no progress lines")
    sweep.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show Python tracebacks")


def _limit_option(p) -> None:
    p.add_argument("--limit", action="append", default=[], metavar="NAME=N",
                   help="raise a bound a spec cannot lift (prompts, prompt_tokens, dataset_work, elements, "
                        "nesting; see README 'Trust and safety')")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def parse_arguments(argv: List[str]) -> argparse.Namespace:
    """argv -> the parsed command; `mi-run [RUN OPTIONS] SPEC` is `mi-run run [RUN OPTIONS] SPEC`."""
    argv = list(argv)
    if _names_a_spec_first(argv):
        argv.insert(0, "run")
    return _parser().parse_args(argv)


def _names_a_spec_first(argv: List[str]) -> bool:
    """Whether the first argument that is not an option (nor an option's value) is a spec, not a command."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in COMMANDS or arg in ("-h", "--help", "--version"):
            return False
        if not arg.startswith("-"):
            return True
        i += 2 if arg in _VALUED else 1
    return False


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_arguments(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        _parser().print_help()
        return 2
    try:
        return _dispatch(args)
    except MiError as err:
        if args.debug:
            raise
        print(err.format(), file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:  # `mi-run plan SPEC | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("interrupted; finished steps are stored and a rerun resumes from them", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001  (the last line of defence: no traceback without --debug)
        if args.debug:
            raise
        fault = environment_fault(err)
        if fault is not None:
            print(fault.format(), file=sys.stderr)
            return fault.exit_code
        print(f"mi-run: internal error: {type(err).__name__}: {err} -- a bug in mi-dsl, not in the spec; please "
              "report it with the spec (--debug shows the traceback)", file=sys.stderr)
        return 1


def console() -> None:
    """The `mi-run` command (the console script and `python -m mi_dsl.cli`): `main`, then exit.

    Before exiting, every object still alive is frozen out of the cyclic collector (gc.freeze). The
    interpreter's teardown otherwise runs full collections over them while it unloads modules: after
    a run with the embedded Gemma loaded that took 1.4 s of a 46 s command (half a million objects:
    torch, transformers, the model, two tokenizers); frozen, the exit takes 0.2 s. Nothing is lost:
    every report, table and store file is written and closed before `main` returns, and atexit
    handlers (Ray's shutdown among them) and the flush of stdout and stderr still run. Only here,
    never in `main`: tests and notebooks call `main` in a process that goes on, where frozen cycles
    would never be collected. It also keeps freed memory for the next tensors (cli/allocator.py)."""
    import gc

    from .allocator import keep_freed_memory

    keep_freed_memory()
    code = main()
    gc.freeze()
    sys.exit(code)


def environment_fault(err: BaseException):
    """An exception the machine caused (memory, the file system) as a located EnvironmentFault, else None."""
    from ..errors import EnvironmentFault, Location
    from ..spec.paths import os_fault

    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError" or (
            isinstance(err, RuntimeError) and "out of memory" in str(err).lower()):
        return EnvironmentFault(f"out of memory ({type(err).__name__})", Location("<memory>"),
                                hint="lower run.memory_gb or run.batch_size, or use a smaller model")
    if isinstance(err, OSError) and err.errno is not None:
        where = Location(str(err.filename) if err.filename else "<file system>")
        return os_fault(err, f"use '{err.filename}'" if err.filename else "read or write a file", where)
    return None


def _dispatch(args) -> int:
    if args.command == "schema":
        from ..spec.schema import build_schema

        print(json.dumps(build_schema(), indent=2))
        return 0
    if args.command == "list":
        from .listing import describe, print_listing

        if args.name:
            return describe(args.name)
        print_listing()
        return 0
    if args.command == "validate":
        from .validate import validate_specs

        return validate_specs(args.specs, args.overrides, args.allow_path, debug=args.debug, limits=args.limit)
    if args.command == "plan":
        from .plan import show_plan

        return show_plan(args.spec, args.overrides, args.allow_path, as_json=args.json, examples=args.examples,
                         metrics=args.metrics, csv_path=args.csv, limits=args.limit)
    if args.command == "sweep":
        from .sweep import sweep_command

        return sweep_command(args)
    from .run import run_command

    return run_command(args)


if __name__ == "__main__":
    console()
