"""'Did you mean ...?' for misspelled names."""
from __future__ import annotations

import difflib
from typing import Iterable


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A hint naming the closest choice, or listing the choices when none is close."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    if choices and len(choices) <= 12:
        return "expected one of: " + ", ".join(f"'{c}'" for c in choices)
    return ""


def unknown(what: str, name: str, choices: Iterable[str], context: str = "") -> str:
    """`unknown slot 'nuon' in prompts.template; did you mean 'noun'?`"""
    hint = did_you_mean(name, choices)
    return f"unknown {what} '{name}'" + (f" {context}" if context else "") + (f"; {hint}" if hint else "")
