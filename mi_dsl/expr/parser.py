"""Text -> lark tree, with the limits checked and every failure an ExpressionError.

One LALR parser serves three start rules ("expression", "heads", "positions"); it is
built on first use so importing mi_dsl.expr stays cheap.
"""
from __future__ import annotations

import functools
from typing import Any, Union

from lark import Lark, Token, Tree
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput

from ..errors import ExpressionError
from .syntax_errors import FORMS, NOUNS, character_error, token_error

MAX_LENGTH = 2000
MAX_DEPTH = 100  # tree levels; keeps checking and evaluation far from Python's recursion limit

# Words the grammar reserves: a slot or record with one of these names cannot be written.
RESERVED_WORDS = frozenset({"and", "or", "not", "true", "false", "if", "else", "in"})
POSITION_WORDS = frozenset({"final", "last"})

Node = Union[Tree, Token]


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark.open(
        "grammar.lark",
        rel_to=__file__,
        parser="lalr",
        start=["expression", "heads", "positions"],
        propagate_positions=True,
        maybe_placeholders=True,
    )


def parse(text: Any, start: str, where) -> Tree:
    """Parse `text` from the start rule `start`; `where` maps offsets to Locations."""
    text = _as_text(text, start, where)
    try:
        tree = _parser().parse(text, start=start)
    except UnexpectedCharacters as exc:
        raise character_error(text, exc, start, where) from None
    except UnexpectedInput as exc:
        raise token_error(text, exc, start, where) from None
    except LarkError as exc:  # should not happen; still, never leak a lark exception
        raise ExpressionError(f"could not parse {FORMS[start]}: {exc}", where(0)) from None
    _check_depth(tree, where)
    return tree


def offset_of(node: Node) -> int:
    """0-based offset of the first character of a token or tree."""
    if isinstance(node, Token):
        return node.start_pos or 0
    if not node.meta.empty:
        return node.meta.start_pos
    children = [child for child in node.children if child is not None]
    return offset_of(children[0]) if children else 0


def _as_text(text: Any, start: str, where) -> str:
    # YAML reads `positions: [16, -1]` as ints; they are valid selectors.
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    if not isinstance(text, str):
        raise ExpressionError(f"expected {FORMS[start]} written as text, got {type(text).__name__}", where(0))
    if not text.strip():
        raise ExpressionError(f"empty {NOUNS[start]}: write {FORMS[start]} here", where(0))
    if len(text) > MAX_LENGTH:
        raise ExpressionError(
            f"this {NOUNS[start]} is {len(text):,} characters long; the limit is {MAX_LENGTH:,}",
            where(MAX_LENGTH),
            hint="split it into shorter pieces (a long list of words belongs in a vocabulary)",
        )
    return text


def _check_depth(tree: Tree, where) -> None:
    # Iterative, so even a pathological tree cannot hit the recursion limit here.
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ExpressionError(
                f"this expression is nested too deeply (more than {MAX_DEPTH} levels)",
                where(offset_of(node)),
                hint="remove extra parentheses or repeated 'not'/'-', or split the expression",
            )
        stack.extend((child, depth + 1) for child in node.children if isinstance(child, Tree))
