"""Bounds a spec cannot lift: only the command line (`--limit NAME=N`) or the Python API
(`limits={...}`) raises them. A spec may ask for less (`prompts.max_prompts`), never more.

They keep `mi-run validate` and `mi-run plan` linear in the spec's size and finished in
seconds on any input: every generator checks its count before it allocates, and building
the dataset is metered (dataset/budget.py). README "Trust and safety" lists them as here.
Standard library only: every stage may import it.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, fields, replace
from typing import Iterator, Mapping, Optional, Sequence, Union

from .errors import Location, SchemaError, SpecMeaningError


@dataclass(frozen=True)
class Limits:
    # Candidate prompts: the product of the slots' vocabularies, checked before any prompt is built.
    prompts: int = 100_000
    # Tokens of one prompt, clean or corrupted (BOS included); its text is refused unread past 32x that.
    prompt_tokens: int = 1_024
    # Work of building the dataset: every character the tokenizer reads counts 1, every tokenizer call
    # and every placeholder filled 20. Measured on the shared 2-core machine: ~0.35 us of CPU a unit
    # (90,000 four-slot prompts are ~30M units), so the bound is about ten seconds of validate.
    dataset_work: int = 25_000_000
    # Elements of one value an expression or a function makes (number_tokens' numbers, a token set's
    # alternatives, a joined string's characters, a string handed to the tokenizer).
    elements: int = 100_000
    # Depth of nested mappings and lists in a spec file.
    nesting: int = 64

    def describe(self) -> str:
        return ", ".join(f"{f.name}={getattr(self, f.name):,}" for f in fields(self))


DEFAULT = Limits()
_CURRENT: ContextVar[Limits] = ContextVar("mi_dsl_limits", default=DEFAULT)
LimitsGiven = Union[None, Limits, Mapping[str, int], Sequence[str]]


def current() -> Limits:
    return _CURRENT.get()


def parse(given: LimitsGiven) -> Limits:
    """`--limit NAME=N` strings, a {name: n} mapping or a Limits, over the defaults."""
    if given is None:
        return DEFAULT
    if isinstance(given, Limits):
        return given
    pairs = list(given.items()) if isinstance(given, Mapping) else [_split(text) for text in given]
    names = {f.name for f in fields(Limits)}
    values = {}
    for name, value in pairs:
        where = Location(f"--limit {name}={value}")
        if name not in names:
            from .suggest import unknown

            raise SchemaError(unknown("limit", str(name), sorted(names)), where)
        try:
            number = int(str(value).replace("_", "").replace(",", ""))
        except ValueError:
            number = 0
        if number < 1:
            raise SchemaError(f"--limit {name} expects a whole number >= 1, got {value!r}", where)
        values[name] = number
    return replace(DEFAULT, **values)


def _split(text: str):
    if "=" not in text:
        raise SchemaError(f"--limit expects NAME=N, e.g. prompts=500000; got '{text}'", Location("--limit"))
    name, value = text.split("=", 1)
    return name.strip(), value.strip()


@contextmanager
def using(given: LimitsGiven) -> Iterator[Limits]:
    """The limits in force for what runs inside (prepare() wraps the front end in it)."""
    token = _CURRENT.set(parse(given) if given is not None else current())
    try:
        yield _CURRENT.get()
    finally:
        _CURRENT.reset(token)


def hint(name: str) -> str:
    return f"if you mean it, raise the bound on the command line: --limit {name}=N (now {getattr(current(), name):,})"


def check_elements(count: int, what: str, fault) -> None:
    """Raise fault(message) when a value would have more than `elements` elements; call before allocating."""
    bound = current().elements
    if count > bound:
        raise fault(f"{what} would have {count:,} elements, more than the {bound:,} an expression may make "
                    f"(--limit elements=N raises it)")


class WorkExceeded(SpecMeaningError):
    """Building the dataset passed `dataset_work`; the builder locates it at the prompts."""


_METER: ContextVar[Optional[list]] = ContextVar("mi_dsl_meter", default=None)


@contextmanager
def metered() -> Iterator[list]:
    """Count the work done inside (charge()); past `dataset_work`, WorkExceeded."""
    meter = [0]
    token = _METER.set(meter)
    try:
        yield meter
    finally:
        _METER.reset(token)


def charge(units: int) -> None:
    """Add `units` (~1 us each) to the running meter, if one runs; refuse once it passes the bound."""
    meter = _METER.get()
    if meter is None:
        return
    meter[0] += units
    bound = current().dataset_work
    if meter[0] > bound:
        raise WorkExceeded(f"building the prompts passes the work bound of {bound:,} units (each character "
                           "tokenized counts 1, each tokenizer call and each placeholder filled 20; the default "
                           "is about ten seconds of validate)", hint="make fewer or shorter prompts; "
                           + hint("dataset_work"))


def limit_of(name: str, asked: Optional[int] = None) -> int:
    """The bound in force: the command line's, or less when the spec asks for less."""
    bound = getattr(current(), name)
    return bound if asked is None else min(bound, asked)
