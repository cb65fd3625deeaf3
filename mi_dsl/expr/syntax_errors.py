"""Turn lark's parse failures into kind messages that say what to write instead.

Messages name what was expected after the last thing that parsed ("expected an
operator or the end of the expression after 'item'") and point at the offending
character; selectors add a hint listing the forms they accept.
"""
from __future__ import annotations

from typing import Optional, Set, Tuple

from lark import Token, Tree

from ..errors import ExpressionError

NOUNS = {"expression": "expression", "heads": "head selector", "positions": "position selector"}
FORMS = {"expression": "an expression", "heads": "a head selector", "positions": "a position selector"}
FORM_HINTS = {
    "expression": "",
    "heads": "a head selector is one of: L8H2, L10H* (every head of layer 10), L*H3 (head 3 of "
    "every layer), top(analysis, n), bottom(analysis, n), top_abs(analysis, n)",
    "positions": "a position selector is one of: final (or last), a token index such as 16 or -1, "
    "a slot such as noun, noun[0], noun[-1], noun#2 (second occurrence), noun#2[-1]",
}

_OPERAND_STARTS = {"NAME", "INT", "FLOAT", "STRING", "TRUE", "FALSE", "NOT", "HEAD", "FINAL", "LAST"}
_OPERATORS = {"OR", "AND", "COMP_OP", "PLUS", "STAR", "SLASH", "DOUBLE_SLASH", "PERCENT", "IN", "IF", "ELSE"}
_PUNCTUATION = {"COMMA": "','", "RPAR": "')'", "RSQB": "']'", "COLON": "':'", "HASH": "'#'", "LSQB": "'['",
                "LPAR": "'('"}
_CLOSING = {"RPAR": "LPAR", "RSQB": "LSQB"}
# Keywords the contextual lexer reads as names where only a name fits (`1 < not x`).
KEYWORDS_READ_AS_NAMES = frozenset({"and", "or", "not"})
_CHARACTER_ADVICE = {
    "=": "'=' is not an operator; write '==' to compare",
    "&": "write 'and' instead of '&'",
    "&&": "write 'and' instead of '&&'",
    "|": "write 'or' instead of '|'",
    "||": "write 'or' instead of '||'",
    "!": "write 'not' instead of '!' ('!=' compares)",
}


def character_error(text: str, exc, start: str, where) -> ExpressionError:
    """No token can start at this character."""
    offset = exc.pos_in_stream
    char = text[offset]
    if char in "\"'":
        return ExpressionError(
            f"unexpected end of {NOUNS[start]}: a string literal is missing its closing quote",
            where(offset),
            hint=f"end the string with {char} (write \\{char} for a quote inside it)",
        )
    doubled = text[offset:offset + 2] in ("&&", "||")
    message = _CHARACTER_ADVICE.get(text[offset:offset + 2] if doubled else char)
    message = message or f"unexpected character {_show_char(char)}"
    return ExpressionError(message, where(offset), hint=FORM_HINTS[start])


def token_error(text: str, exc, start: str, where) -> ExpressionError:
    """A token that cannot follow what came before it (or the text ended too early)."""
    message, offset = _token_message(text, exc, start)
    return ExpressionError(message, where(offset), hint=FORM_HINTS[start])


def _token_message(text: str, exc, start: str) -> Tuple[str, int]:
    token = getattr(exc, "token", None)
    at_end = token is None or token.type == "$END"
    offset = len(text.rstrip()) if at_end else token.start_pos  # just past the last character written
    stack, expected = _value_stack(exc), _accepted(exc)
    misused = _misused_keyword(stack)
    if misused is not None:
        return keyword_misuse(misused.value), misused.start_pos
    if start == "heads" and expected == {"LPAR"} and _is_lone_name(stack):
        return f"'{stack[0].value}' is not a head selector", stack[0].start_pos
    ending = f"unexpected end of {NOUNS[start]}: " if at_end else ""
    if at_end and expected & {"RPAR", "RSQB"} and not expected & _OPERAND_STARTS:
        return ending + f"a closing {_PUNCTUATION['RPAR' if 'RPAR' in expected else 'RSQB']} is missing", offset
    if not at_end and token.type == "COMP_OP" and not expected & _OPERAND_STARTS:
        return "comparisons cannot be chained; join them with 'and', e.g. a < b and b < c", offset
    previous = _previous(text, stack)
    wanted = FORMS[start] if previous is None else f"{_wanted(expected, start)} after {previous}"
    found = "" if at_end else f", but found {_quote(token.value)}"
    return f"{ending}expected {wanted}{found}", offset


def keyword_misuse(word: str) -> str:
    """Why a keyword cannot stand where it was read as a name (`1 < not x`, `lower(and)`)."""
    if word == "not":
        return "'not' cannot follow an operator directly; put it in parentheses, e.g. a == (not b)"
    return f"'{word}' is not a value: it joins two conditions, e.g. a > 1 {word} b < 2"


def _misused_keyword(stack: list) -> Optional[Token]:
    # The keyword was read as a NAME, so the parse failed one token later.
    last = stack[-1] if stack else None
    if isinstance(last, Token) and last.type == "NAME" and last.value in KEYWORDS_READ_AS_NAMES:
        return last
    return None


def _wanted(expected: Set[str], start: str) -> str:
    """What may come next, in words: "an operator, ',' or ')'"."""
    if "IN" in expected:  # after a value, `not` can only start `not in`: an operator
        expected = expected - {"NOT"}
    if expected & _OPERAND_STARTS:
        if expected <= {"INT", "MINUS"}:
            return "a number"
        if expected == {"NAME"}:
            return "a name"
        return "a value (a name, number, string or '(')"
    options = []
    if expected & _OPERATORS - {"ELSE"}:
        options.append("an operator")
    if "ELSE" in expected:  # `a if c` without its `else b`
        options.append("'else'")
    options += [words for name, words in _PUNCTUATION.items()
                if name in expected and (name not in ("LPAR", "LSQB") or not options)]
    if "$END" in expected:
        options.append(f"the end of the {NOUNS[start]}")
    if not options:
        options = sorted(expected) or ["something else"]
    return options[0] if len(options) == 1 else ", ".join(options[:-1]) + " or " + options[-1]


def _accepted(exc) -> Set[str]:
    # The interactive parser knows exactly which tokens fit; `expected` may list extras
    # because LALR states are shared between contexts.
    try:
        accepts = exc.accepts
    except Exception:  # noqa: BLE001 - any trouble: fall back to lark's coarser answer
        accepts = None
    return set(accepts or getattr(exc, "expected", None) or ())


def _value_stack(exc) -> list:
    return list(getattr(getattr(exc, "state", None), "value_stack", None) or [])


def _previous(text: str, stack: list) -> Optional[str]:
    """The last thing that parsed, quoted, or None at the start of the text."""
    if not stack:
        return None
    last = stack[-1]
    if isinstance(last, Tree) and not last.meta.empty:
        return _quote(text[last.meta.start_pos:last.meta.end_pos])
    if not isinstance(last, Token):
        return None
    return _quote(text[_opening(stack):last.end_pos] if last.type in _CLOSING else last.value)


def _opening(stack: list) -> int:
    """Where the bracket group ending the stack opens (with its function name): 'lower(item)'."""
    depth = 0
    for index in range(len(stack) - 1, -1, -1):
        item = stack[index]
        kind = item.type if isinstance(item, Token) else ""
        depth += (kind in _CLOSING) - (kind in _CLOSING.values())
        if depth == 0:
            before = stack[index - 1] if index else None
            is_call = isinstance(before, Token) and before.type == "NAME" and kind == "LPAR"
            return before.start_pos if is_call else item.start_pos
    return stack[-1].start_pos


def _is_lone_name(stack: list) -> bool:
    return len(stack) == 1 and isinstance(stack[0], Token) and stack[0].type == "NAME"


def _quote(snippet: str) -> str:
    snippet = " ".join(snippet.split())
    if len(snippet) > 30:
        snippet = "..." + snippet[-27:]
    return f"'{snippet}'"


def _show_char(char: str) -> str:
    return f"'{char}'" if char.isprintable() else f"U+{ord(char):04X}"
