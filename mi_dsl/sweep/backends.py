"""Where a sweep's points run: `local` (one after another, in this process) or `ray`
(one Ray task per point, with the sweep's declared resources, on a local Ray instance
or on the cluster at `--address`). Neither schedules anything itself: Ray places tasks
on whatever CPUs, GPUs and memory its cluster has.

Each point runs `mi_dsl.running.run_spec` on its point file, with the runs directory
(and so the step store) shared by all points.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from ..errors import Location, MiError, RunError

Job = Tuple[Any, Tuple[Any, ...]]   # (point, arguments of run_point)


def run_point(point_file: str, runs_root: str, allow_paths: Sequence[str], fresh: bool,
              limits: Sequence[str] = (), yes: bool = False) -> Dict[str, Any]:
    """One point, as a normal run. A user's fault comes back as data (Ray would otherwise
    wrap it in a traceback): {"run_dir": ...} or {"error": {...the MiError's fields}}."""
    from ..running import run_spec

    try:
        outcome = run_spec(point_file, allow_paths=list(allow_paths), fresh=fresh, out_dir=runs_root,
                           progress=False, limits=list(limits), yes=yes)
    except MiError as err:
        where = err.location
        return {"error": {"kind": type(err).__name__, "message": err.message, "hint": err.hint,
                          "file": where.file, "line": where.line, "column": where.column, "path": where.path}}
    return {"run_dir": str(outcome.run_dir)}


def error_of(result: Dict[str, Any]) -> MiError:
    """The MiError a point returned, rebuilt with its class and location."""
    import mi_dsl.errors as errors
    from ..errors import Location

    fields = result["error"]
    cls = getattr(errors, fields["kind"], MiError)
    cls = cls if isinstance(cls, type) and issubclass(cls, MiError) else MiError
    return cls(fields["message"], Location(fields["file"], fields["line"], fields["column"], fields["path"] or ""),
               fields["hint"] or "")


def local(jobs: List[Job], resources: Dict[str, float], address: Optional[str]) -> Iterator[Tuple[Any, Dict]]:
    if address:
        raise RunError("--address names a Ray cluster; it needs --backend ray")
    for point, args in jobs:
        yield point, run_point(*args)


def ray(jobs: List[Job], resources: Dict[str, float], address: Optional[str]) -> Iterator[Tuple[Any, Dict]]:
    """One task per point; results as they finish. A point that crashes (a bug, not a
    user's fault) comes back as {"crash": reason}; the others go on."""
    if not address:  # a Ray of our own, for this machine only: bind it to the loopback address
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray as ray_lib
    except ImportError:
        raise RunError("--backend ray needs Ray", hint='pip install -e ".[ray]"') from None
    if address:
        _check_reachable(address)  # Ray itself retries an unreachable address for minutes
    try:
        # "local": always a new instance of our own, never a stale one another `ray start` left.
        ray_lib.init(address=address or "local", include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                     ignore_reinit_error=True)
    except (ConnectionError, ValueError, RuntimeError) as err:
        raise RunError(f"cannot reach the Ray cluster at {address!r}: {str(err).strip().splitlines()[0]}"
                       if address else f"cannot start a local Ray instance: {err}",
                       hint="start one with `ray start --head` and pass its address, "
                            "e.g. --address 127.0.0.1:6379") from err
    try:
        task = ray_lib.remote(run_point).options(**_task_options(resources))
        pending = {task.remote(*args): point for point, args in jobs}
        while pending:
            [ready], _ = ray_lib.wait(list(pending), num_returns=1)
            point = pending.pop(ready)
            try:
                result = ray_lib.get(ready)
            except ray_lib.exceptions.RayError as err:  # the task died or raised: a bug, reported per point
                result = {"crash": _first_line(err)}
            yield point, result
    finally:
        ray_lib.shutdown()  # disconnects; stops the instance only if this process started it


def _check_reachable(address: str, timeout: float = 10) -> None:
    """HOST:PORT (or ray://HOST:PORT) must accept a connection; "auto" and the like are Ray's to resolve."""
    import socket

    host, _, port = address.split("://")[-1].rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise RunError(f"cannot reach the Ray cluster at {address!r}: {err.strerror or err}",
                       Location("--address"), hint="start one with `ray start --head` and pass the address it "
                       "prints, e.g. --address 127.0.0.1:6379") from None


def _task_options(resources: Dict[str, float]) -> Dict[str, Any]:
    options: Dict[str, Any] = {"num_cpus": resources.get("cpus", 1), "num_gpus": resources.get("gpus", 0),
                               "max_retries": 0}
    if resources.get("memory_gb"):
        options["memory"] = int(resources["memory_gb"] * 2 ** 30)
    return options


def _first_line(err: BaseException) -> str:
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


BACKENDS = {"local": local, "ray": ray}
