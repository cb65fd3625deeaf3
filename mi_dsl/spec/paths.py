"""Where a spec may read and write: one rule for every path a spec names.

The rule (README, "Trust and safety"):

  A path a spec names is read relative to the spec file that wrote it and resolved with
  every symbolic link followed; the result must lie inside that file's own directory tree,
  or inside a path the command line allows (`--allow-path PATH`: a directory allows its
  tree, a file that file; `MI_DSL_ALLOW_PATH`, paths separated by ':', is the same from the
  environment the command runs in, which a spec cannot set). A value given on the command line itself (`--set KEY=PATH`,
  `--out DIR`) is the user's and is not confined. A base spec (`extends:`) is a path its
  child names, so it obeys the rule in the child's tree; the base's own paths are confined
  to the base's tree, so a base never widens what its child may touch, nor the child what
  its base may.

It covers `extends`, vocabulary and dataset files, `model.path`, `model.tokenizer`,
`output.dir` and the run's `name` (one folder name, never `.` or `..`). Files are read only
when they are regular files (a FIFO or a device is refused, never opened for blocking
reads), and run folders below the runs directory are created without following links.

`SpecPaths` applies the rule for one composed spec: `resolve(key, what)` for a path value,
`read(key, what)` for the text of a file value. Nothing here imports torch.
"""
from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import FrozenSet, Iterable, Optional, Sequence, Tuple

from ..errors import EnvironmentFault, FileAccessError, Location, MiError, SchemaError

# A file a spec reads (the spec itself, a base, a vocabulary or dataset file) is at most this large.
MAX_FILE_BYTES = 2_000_000
# A run's name is one folder name: letters, digits, _ . -, not starting with a dot (no `..`,
# no hidden folder that could be `.store`), short enough for every file system.
RUN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
RUN_NAME_PATTERN = RUN_NAME.pattern

ALLOW_ENV = "MI_DSL_ALLOW_PATH"

_HINT = ("a spec reads and writes only inside its own directory tree; to allow another place, give it on "
         "the command line: --allow-path PATH (or the value itself with --set KEY=PATH)")


def allowed_paths(given: Iterable = ()) -> Tuple[Path, ...]:
    """The paths the user allows: `--allow-path` (given) and MI_DSL_ALLOW_PATH, resolved."""
    from_env = [p for p in os.environ.get(ALLOW_ENV, "").split(os.pathsep) if p.strip()]
    return tuple(dict.fromkeys(Path(p).expanduser().resolve() for p in [*given, *from_env]))


def inside(path: Path, roots: Iterable[Path]) -> bool:
    """Whether `path` is one of `roots` or lies under one (all resolved)."""
    return any(path == root or root in path.parents for root in roots)


def tree_of(spec_file) -> Path:
    """The directory tree a spec file may read and write in: its own folder, links resolved."""
    return Path(spec_file).resolve().parent


def confine(raw: str, spec_file, allowed: Sequence[Path], where: Location, what: str) -> Path:
    """`raw`, a path written in `spec_file`, resolved (links followed) and checked against the
    rule: inside the spec file's tree or an allowed path, else a located FileAccessError."""
    if not isinstance(raw, str) or not raw.strip() or "\x00" in raw:
        raise SchemaError(f"{what} must be a path (a non-empty string)", where)
    try:
        path = (tree_of(spec_file) / raw).resolve()
    except (OSError, RuntimeError) as err:  # a link loop, a name too long
        raise FileAccessError(f"{what} '{raw}' cannot be resolved: {getattr(err, 'strerror', None) or err}",
                              where) from None
    if not inside(path, (tree_of(spec_file), *allowed)):
        raise FileAccessError(f"{what} '{raw}' is outside the spec's directory tree (it resolves to {path}, "
                              f"not under {tree_of(spec_file)})", where, hint=_HINT)
    return path


def confine_folder_entries(folder: Path, spec_file, allowed: Sequence[Path], where: Location, what: str) -> None:
    """A model or tokenizer folder's own entries must not lead out of the allowed trees either
    (a shipped folder with `config.json -> /etc/passwd`)."""
    roots = (tree_of(spec_file), *allowed)
    try:
        entries = sorted(folder.iterdir()) if folder.is_dir() else []
    except OSError:
        return  # the loader says what is wrong with the folder
    for entry in entries:
        if entry.is_symlink() and not inside(entry.resolve(), roots):
            raise FileAccessError(f"{what} '{folder}' holds '{entry.name}', a link to {entry.resolve()} outside "
                                  "the spec's directory tree", where, hint=_HINT)


def read_regular(path: Path, what: str, where: Optional[Location] = None, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes. A FIFO, socket or device is refused
    without blocking (opened non-blocking, checked with fstat before any read)."""
    where = where or Location(str(path), 1, 1)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise FileAccessError(f"{what} '{path}' does not exist", where) from None
    except IsADirectoryError:
        raise FileAccessError(f"{what} '{path}' is a directory, not a file", where) from None
    except OSError as err:
        raise FileAccessError(f"cannot read {what} '{path}': {err.strerror}", where) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise FileAccessError(f"{what} '{path}' is a directory, not a file", where)
        if not stat.S_ISREG(info.st_mode):
            raise FileAccessError(f"{what} '{path}' is not a regular file (a pipe, socket or device); only "
                                  "regular files are read", where)
        os.set_blocking(fd, True)
        data = os.read(fd, limit + 1)
        chunks = [data]
        while data and sum(map(len, chunks)) <= limit:
            data = os.read(fd, limit + 1)
            chunks.append(data)
        data = b"".join(chunks)
    except OSError as err:
        raise FileAccessError(f"cannot read {what} '{path}': {err.strerror}", where) from None
    finally:
        os.close(fd)
    if len(data) > limit:
        line = data.count(b"\n", 0, limit) + 1
        column = limit - (data.rfind(b"\n", 0, limit) + 1) + 1
        raise FileAccessError(f"{what} '{path}' is larger than {limit:,} bytes (the limit is passed on this "
                              "line)", Location(where.file, line, column, where.path) if where.file == str(path)
                              else where, hint="split it, or keep large data in vocabulary files")
    return data


def line_col(text, offset: int) -> Tuple[int, int]:
    """1-based line and column of character (or byte) `offset` of `text`."""
    newline = "\n" if isinstance(text, str) else b"\n"
    return text.count(newline, 0, offset) + 1, offset - (text.rfind(newline, 0, offset) + 1) + 1


def decode_text(data: bytes, path: Path, what: str, location: Location | None = None) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line, _ = line_col(data, err.start)
        col = len(data[data.rfind(b"\n", 0, err.start) + 1:err.start].decode("utf-8", "replace")) + 1
        raise FileAccessError(f"{what} '{path}' is not UTF-8 text (byte 0x{data[err.start]:02x} on line "
                              f"{line}, column {col})", location or Location(str(path), line, col),
                              hint="save the file as UTF-8") from None


def check_run_name(name: str, where: Location) -> None:
    """A run's name becomes one folder under the runs directory: never a path, `.`, `..` or hidden."""
    if not isinstance(name, str) or not RUN_NAME.match(name):
        raise SchemaError(f"the run name {name!r} cannot name a folder: use 1 to 100 letters, digits, _ . or -, "
                          "not starting with a dot", where,
                          hint="set `name:` in the spec (the default is the spec file's name)")


def make_folder(root: Path, parts: Sequence[str], where: Location, what: str = "run folder") -> Path:
    """root/parts[0]/parts[1]/..., each part created when missing and opened without following a
    link: a link (or a file) planted at <runs>/<name> or <runs>/<name>/.store is refused, never
    written through. `root` itself is the runs directory: the spec's confined `output.dir`, the
    user's `--out`, or ./runs."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except (FileExistsError, NotADirectoryError):
        raise FileAccessError(f"the runs directory '{root}' is a file, not a folder", where,
                              hint="point output.dir (or --out) at a folder") from None
    except OSError as err:
        raise os_fault(err, f"create the runs directory '{root}'", where) from None
    path = root
    try:
        for part in parts:
            path = path / part
            try:
                os.mkdir(part, 0o777, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as err:
                if err.errno in (errno.ELOOP, errno.ENOTDIR):
                    link = os.path.islink(path)
                    raise FileAccessError(f"{what} '{path}' is {'a link' if link else 'a file'}, not a folder; "
                                          "mi-dsl never writes through links it did not make", where,
                                          hint=f"remove or rename '{path}'") from None
                raise
            os.close(fd)
            fd = inner
    except MiError:
        raise
    except OSError as err:
        raise os_fault(err, f"create the {what} '{path}'", where) from None
    finally:
        os.close(fd)
    return path


def probe_writable(folder: Path, where: Location) -> None:
    """Create and remove one file in `folder`: a read-only or full file system stops a run before
    its compute, not when the report is written."""
    try:
        fd, name = tempfile.mkstemp(prefix=".probe-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        raise os_fault(err, f"write in '{folder}'", where) from None


def os_fault(err: OSError, doing: str, where: Location) -> MiError:
    """An OS error while writing, as what the user can act on: the environment's (exit 3) unless a
    spec value caused it."""
    reasons = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
               errno.EACCES: "permission denied", errno.EPERM: "permission denied",
               errno.ENOMEM: "out of memory"}
    if getattr(errno, "EDQUOT", None) is not None:
        reasons[errno.EDQUOT] = "the disk quota is exceeded"
    if err.errno == errno.ENAMETOOLONG:
        return FileAccessError(f"cannot {doing}: the name is too long for the file system", where)
    reason = reasons.get(err.errno, err.strerror or str(err))
    return EnvironmentFault(f"cannot {doing}: {reason}", where,
                            hint="free space or choose another folder (output.dir, or --out DIR)")


@dataclass(frozen=True)
class SpecPaths:
    """The rule applied to one composed spec: `doc` knows which file wrote each value; `cli_keys`
    are the keys `--set` gave (the user's, resolved from the working directory, not confined)."""

    doc: object                          # loader.Document
    allowed: Tuple[Path, ...] = ()       # --allow-path, resolved
    cli_keys: FrozenSet[Tuple] = frozenset()

    def file_of(self, key) -> Path:
        return Path(self.doc.source.file_of(tuple(key)))

    def resolve(self, key, what: str, raw: Optional[str] = None) -> Path:
        """The path the value at `key` names (or `raw`, written at `key`), confined unless `--set` gave it."""
        key = tuple(key)
        value = raw if raw is not None else _get(self.doc.data, key)
        where = self.doc.source.value(key)
        if key in self.cli_keys:
            return Path(str(value)).expanduser().resolve()
        return confine(value, self.file_of(key), self.allowed, where, what)

    def read(self, key, what: str) -> Tuple[Path, str]:
        """(path, UTF-8 text) of the file the value at `key` names: confined, regular, bounded."""
        path = self.resolve(key, what)
        where = self.doc.source.value(tuple(key))
        return path, decode_text(read_regular(path, what, where), path, what, where)

    def folder_entries(self, key, folder: Path, what: str) -> None:
        if tuple(key) not in self.cli_keys:
            confine_folder_entries(folder, self.file_of(key), self.allowed, self.doc.source.value(tuple(key)), what)


def _get(data, key):
    for part in key:
        data = data[part]
    return data
