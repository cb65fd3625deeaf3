"""Prompt templates: `All {category} are {descriptor}. {noun} are {category}. Therefore, {lower(noun)} are`.

A template is literal text and placeholders; each placeholder is an expression over
exactly one slot (`{noun}`, `{lower(noun)}`, `{country.capital}`) and belongs to that
slot (its span is one of the slot's occurrences). `{{` and `}}` are literal braces.
Rendering records the character span of every placeholder so the compiler can map
slots to token positions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Tuple, Union

from ..errors import Location, SpecMeaningError
from ..expr import Env, Scope, compile_expression, expect_type


_ONE_SLOT_HINT = ("a placeholder's tokens are the positions named after its slot (`noun`, `noun[-1]`), so it "
                  "reads one slot; put what depends on another slot into the vocabulary instead: records with "
                  "a field per variant, e.g. {form: keys, stem: key, number: pl}, one slot bound to them, and "
                  "`{noun.form}` in the template")


@dataclass(frozen=True)
class Placeholder:
    slot: str
    occurrence: int   # 1 for the slot's first placeholder, 2 for its second, ...
    expr: object      # compiled expression
    source: str       # the text between the braces


Piece = Union[str, Placeholder]


@dataclass(frozen=True)
class Template:
    text: str
    pieces: Tuple[Piece, ...]

    @property
    def slots(self) -> List[str]:
        """Slots in order of first appearance."""
        seen: Dict[str, None] = {}
        for piece in self.pieces:
            if isinstance(piece, Placeholder):
                seen.setdefault(piece.slot)
        return list(seen)

    def render(self, values: Mapping[str, str], env: Env) -> Tuple[str, List[Tuple[str, int, int, int]]]:
        """The prompt text and, per placeholder, (slot, occurrence, char start, char end)."""
        out: List[str] = []
        spans = []
        length = 0
        env.values = values
        for piece in self.pieces:
            if isinstance(piece, str):
                text = piece
            else:
                text = str.__str__(piece.expr.evaluate(env))
                spans.append((piece.slot, piece.occurrence, length, length + len(text)))
            out.append(text)
            length += len(text)
        return "".join(out), spans


def parse_template(text: str, scope: Scope, where: Callable[[int], Location]) -> Template:
    """Split `text` into literals and compiled placeholders; unknown slots are located errors."""
    pieces: List[Piece] = []
    literal: List[str] = []
    counts: Dict[str, int] = {}
    i = 0
    while i < len(text):
        ch = text[i]
        if text.startswith("{{", i) or text.startswith("}}", i):
            literal.append(ch)
            i += 2
            continue
        if ch == "}":
            raise SpecMeaningError("unmatched '}' in template; write '}}' for a literal brace", where(i))
        if ch != "{":
            literal.append(ch)
            i += 1
            continue
        close = text.find("}", i + 1)
        if close < 0 or "{" in text[i + 1:close]:  # `{size. Are the {animal}`: the first never closes
            raise SpecMeaningError("unclosed '{' in template; write '{{' for a literal brace", where(i))
        source = text[i + 1:close]
        if not source.strip():
            raise SpecMeaningError("empty placeholder '{}' in template; name a slot, e.g. {noun}", where(i))
        start = i + 1
        compiled = compile_expression(source, scope, where=lambda off, s=start: where(s + off))
        expect_type(compiled, "str", lambda off, s=start: where(s + off), "a placeholder")
        used = sorted(compiled.names_used())
        if len(used) != 1:
            raise SpecMeaningError(f"a placeholder must use exactly one slot; '{{{source}}}' uses "
                                   f"{len(used)}" + (f" ({', '.join(used)})" if used else ""), where(i),
                                   hint=_ONE_SLOT_HINT if used else "write constant text into the template itself")
        if literal:
            pieces.append("".join(literal))
            literal = []
        counts[used[0]] = counts.get(used[0], 0) + 1
        pieces.append(Placeholder(used[0], counts[used[0]], compiled, source))
        i = close + 1
    if literal:
        pieces.append("".join(literal))
    return Template(text, tuple(pieces))

