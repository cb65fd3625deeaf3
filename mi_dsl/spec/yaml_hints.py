"""Hints for YAML syntax errors: what PyYAML's terse problem usually means in a spec.

PyYAML says "mapping values are not allowed here" both for an unquoted colon inside a
value (`name: pythia: 160m`) and for a key indented deeper than the key above it; the
text of the line and of the lines above tells the two apart.
"""
from __future__ import annotations

import re
from typing import List, Optional

QUOTE = "'"
_KEY = re.compile(r"^(\s*)(?:-\s+)?([^\s#'\"][^:#]*?):(\s|$)")


def syntax_hint(text: str, problem: str, line: Optional[int], column: Optional[int]) -> str:
    """A hint for PyYAML's `problem` at 1-based `line`/`column` of `text` ('' when none fits)."""
    lines = text.splitlines()
    if line is None or not 0 < line <= len(lines):
        return ""
    here = lines[line - 1]
    if "'\\t'" in problem:
        return ("YAML indents with spaces, never tabs; replace the tab on this line with spaces"
                if "\t" in here[:len(here) - len(here.lstrip())] else
                "a tab cannot start a YAML token: YAML indents with spaces, never tabs; "
                "replace the tab with a space")
    if "mapping values are not allowed" in problem:
        return _colon_hint(lines, line, column)
    if "expected <block end>" in problem or "did not find expected" in problem:
        return _quoted_value_hint(here) or _indentation_hint(lines, line) or _trailing_text_hint(here, column)
    return ""


def _colon_hint(lines: List[str], line: int, column: Optional[int]) -> str:
    here = lines[line - 1]
    key = _KEY.match(here)
    if key and column and key.end() < column:  # the colon comes after the line's own key: inside the value
        name, value = key.group(2).strip(), here[key.end():].strip()
        return (f"the value of '{name}' contains ': ', which YAML reads as another key; quote the value: "
                f"{name}: \"{value}\"")
    above = _previous_key_line(lines, line)
    if above is not None:
        indent_here = len(here) - len(here.lstrip(" -"))
        indent_above = len(lines[above - 1]) - len(lines[above - 1].lstrip(" -"))
        if indent_here > indent_above:
            return (f"this line is indented more than the line above it (line {above}, column "
                    f"{indent_above + 1}): keys of one mapping start at the same column; indent it to "
                    f"column {indent_above + 1} (or, if it is a value, quote it: it contains ': ')")
    return "a key is probably mis-indented, or a value contains ': ' and needs quotes"


def _quoted_value_hint(here: str) -> str:
    """A value that starts with a quote ends at the matching quote: text after it on the line
    (`template: "So {x if a == "b" else c}"`) is what YAML cannot read."""
    key = _KEY.match(here)
    value = here[key.end():].lstrip() if key else ""
    if key is None or not value or value[0] not in "'\"":
        return ""
    quote, other = value[0], "'" if value[0] == '"' else '"'
    close = value.find(quote, 1)
    if close < 0 or not value[close + 1:].strip() or value[close + 1:].lstrip().startswith("#"):
        return ""
    name = key.group(2).strip()
    rest = value.rstrip()
    inner = rest[1:-1] if rest.endswith(quote) else rest[1:]
    suggestion = f"{name}: {other}{inner}{other}" if other not in inner else \
        f"{name}: '{inner.replace(QUOTE, QUOTE * 2)}'"
    doubled = " (inside single quotes, a single quote is written twice)" if suggestion.endswith("'") else ""
    return (f"the value of '{name}' starts with {quote} so YAML ends it at the next {quote}, and the text "
            f"after that quote is not YAML; quote the whole value with the other quote mark{doubled}: "
            f"{suggestion}")


def _indentation_hint(lines: List[str], line: int) -> str:
    here = lines[line - 1]
    indent = len(here) - len(here.lstrip(" "))
    columns = sorted({len(t) - len(t.lstrip(" ")) + 1 for t in lines[:line - 1]
                      if t.strip() and not t.lstrip().startswith("#")})
    if indent + 1 in columns:  # it does line up: the fault is elsewhere on the line, so no guess
        return ""
    where = ", ".join(str(c) for c in columns)
    return (f"this line starts at column {indent + 1}, which lines up with no mapping or list above it "
            f"(they start at columns {where}); items of one mapping or list start at the same column: "
            "the line is probably mis-indented")


def _trailing_text_hint(here: str, column: Optional[int]) -> str:
    if not column or column > len(here):
        return ""
    return (f"the value on this line ends before column {column} (at a closing quote or bracket) and YAML "
            f"cannot read the text from there, '{here[column - 1:].strip()}'; quote the whole value, or move "
            "that text inside the brackets")


def _previous_key_line(lines: List[str], line: int) -> Optional[int]:
    for number in range(line - 1, 0, -1):
        text = lines[number - 1]
        if text.strip() and not text.lstrip().startswith("#"):
            return number
    return None
