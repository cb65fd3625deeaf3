"""One error hierarchy for everything a user can get wrong.

Every error a user caused derives from `MiError` and carries where it happened
(file, line, column, and the dotted path inside the spec). The CLI prints
`FILE:LINE:COL: message` and exits with the error's `exit_code`: 2 for the user's input,
3 for the environment (a full disk, a read-only folder, memory); only `--debug` shows a
traceback.
Lines and columns are 1-based, as editors count them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Location:
    file: Optional[str] = None
    line: Optional[int] = None
    column: Optional[int] = None
    path: str = ""  # dotted spec path, e.g. "vocabularies.nouns.filter"

    def shifted(self, columns: int) -> "Location":
        """The location `columns` characters to the right (inside a scalar)."""
        if self.column is None:
            return self
        return Location(self.file, self.line, self.column + columns, self.path)

    def seen_from(self, here: "Location") -> str:
        """This location as a message at `here` quotes it: "line 3" in the same file, else "base.yaml:3"
        (under `extends:` an inherited value lives in another file)."""
        if self.line is None:
            return "the spec"
        if self.file == here.file:
            return f"line {self.line}"
        from pathlib import Path

        return f"{Path(self.file).name if self.file else '<spec>'}:{self.line}"

    def prefix(self) -> str:
        parts = [self.file or "<spec>"]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)


class MiError(Exception):
    """Root of every error mi-dsl reports to a user."""

    kind = "error"
    exit_code = 2  # the user's input; EnvironmentFault: 3

    def __init__(self, message: str, location: Optional[Location] = None, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.location = location or Location()
        self.hint = hint

    def at(self, location: Location) -> "MiError":
        """Attach a location when the raiser did not know it."""
        if self.location.line is None:
            self.location = location
        return self

    def format(self) -> str:
        text = f"{self.location.prefix()}: {self.kind}: {self.message}"
        if self.location.path:
            text += f" (at {self.location.path})"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text

    def __str__(self) -> str:  # so pytest and logs show the located message
        return self.format()


class SpecSyntaxError(MiError):
    """The file is not valid (safe) YAML, or repeats a key."""

    kind = "yaml error"


class SchemaError(MiError):
    """The spec's shape does not match the JSON Schema."""

    kind = "schema error"


class SpecMeaningError(MiError):
    """The spec is well formed but does not make sense (unknown slot, empty vocabulary...)."""

    kind = "spec error"


class ExpressionError(MiError):
    """An expression inside the spec does not parse or type-check."""

    kind = "expression error"


class FileAccessError(MiError):
    """A file the spec names is missing, unreadable or outside the allowed tree."""

    kind = "file error"


class RunError(MiError):
    """A fault while running: model cannot load offline, NaN in a metric, ..."""

    kind = "run error"


class NoPromptsLeft(RunError):
    """A pipeline step left no prompt pairs. Carries the pipeline's outcome so far (the candidates'
    metrics of its last keep step), so the run can still write them for the user to pick
    thresholds from; `log` is the failed run's log once the runtime has built it."""

    def __init__(self, message: str, location: Optional[Location], hint: str, outcome):
        super().__init__(message, location, hint)
        self.outcome = outcome
        self.log = None


class EnvironmentFault(MiError):
    """The machine, not the spec: a full disk, a read-only or missing folder, out of memory.
    Exit code 3, so scripts can tell it from a mistake in the spec (2)."""

    kind = "environment error"
    exit_code = 3


@dataclass(frozen=True)
class SpecWarning:
    """Something a user should know that does not stop the run, located like an error.

    Printed, stored in the run log and shown in the report as
    `FILE:LINE:COL: warning: message (at path)`: never as a Python warning with a
    source path inside mi-dsl."""

    message: str
    location: Location = Location()
    hint: str = ""

    def format(self) -> str:
        text = f"{self.location.prefix()}: warning: {self.message}"
        if self.location.path:
            text += f" (at {self.location.path})"
        return text + (f"\n  hint: {self.hint}" if self.hint else "")

    def __str__(self) -> str:
        return self.format()


def first_line(err: BaseException) -> str:
    """The first line of a library's exception (its message without the stack of detail after it)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
