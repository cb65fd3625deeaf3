"""A compiled expression: its type, what it uses, and a closure that evaluates it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, FrozenSet, Iterable, List, Optional, Tuple, Union

from ..errors import ExpressionError, Location
from .functions import FUNCTIONS
from .scope import NUMBERS, as_text, describe_type

Where = Callable[[int], Location]  # 0-based offset in the expression text -> Location


def default_where(offset: int) -> Location:
    return Location(column=offset + 1)


@dataclass(frozen=True)
class Compiled:
    """`evaluate(env)` is the checked closure itself, so a call costs no extra dispatch."""

    text: str
    type: str
    evaluate: Callable[[Any], Any] = field(repr=False)
    where: Where = field(default=default_where, repr=False, compare=False)
    offset: int = 0  # where the expression's value starts (past leading blanks)
    names: FrozenSet[str] = frozenset()
    functions: FrozenSet[str] = frozenset()
    metrics: FrozenSet[Tuple[str, str]] = frozenset()  # (record, metric) pairs read
    analyses: Tuple[Tuple[str, int], ...] = ()  # (analysis, offset) a head selector ranks by

    def references(self) -> List[Tuple[str, int]]:
        """The analyses this selector reads, with their offsets in the text (for order checks)."""
        return list(self.analyses)

    def functions_used(self) -> FrozenSet[str]:
        return self.functions

    def names_used(self) -> FrozenSet[str]:
        return self.names

    def metrics_used(self) -> FrozenSet[Tuple[str, str]]:
        return self.metrics

    @property
    def needs_tokenizer(self) -> bool:
        return any(FUNCTIONS[name].service == "tokenizer" for name in self.functions)


def expect_type(
    compiled: Compiled,
    expected: Union[str, Iterable[str]],
    where: Optional[Where] = None,
    what: str = "this expression",
) -> Compiled:
    """Check the type of a whole expression ("num" accepts int and float); return it unchanged."""
    wanted = (expected,) if isinstance(expected, str) else tuple(expected)
    allowed = {t for want in wanted for t in (NUMBERS if want == "num" else (want,))}
    if compiled.type in allowed or as_text(compiled.type) in allowed:
        return compiled
    words = " or ".join(describe_type(t) for t in wanted)
    hint = ""
    if "bool" in wanted and compiled.type in NUMBERS:
        hint = f"compare it to make a condition, e.g. {compiled.text.strip()} == 1"
    location = (where or compiled.where)(compiled.offset)
    raise ExpressionError(f"{what} must give {words}, but it gives {describe_type(compiled.type)}", location, hint)
