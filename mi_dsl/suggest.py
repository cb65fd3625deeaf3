"""'Did you mean ...?' for misspelled names."""
from __future__ import annotations

import difflib
from typing import Iterable


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A hint naming the closest choice, or listing the choices when none is close. A choice is
    suggested only when each word of the name (split at '_' and '.') is close to one of its words:
    'path_patching' is another technique than 'activation_patching', not a typo of it."""
    choices = sorted(set(choices))
    close = [c for c in difflib.get_close_matches(name, choices, n=3, cutoff=0.6) if _same_words(name, c)]
    if close:
        return f"did you mean '{close[0]}'?"
    if choices and len(choices) <= 12:
        return "expected one of: " + ", ".join(f"'{c}'" for c in choices)
    return ""


def unknown(what: str, name: str, choices: Iterable[str], context: str = "") -> str:
    """`unknown slot 'nuon' in prompts.template; did you mean 'noun'?`"""
    hint = did_you_mean(name, choices)
    return f"unknown {what} '{name}'" + (f" {context}" if context else "") + (f"; {hint}" if hint else "")


def _words(text: str):
    return [w for w in text.lower().replace(".", "_").split("_") if w]


def _same_words(name: str, choice: str) -> bool:
    theirs = _words(choice)
    if difflib.SequenceMatcher(None, "".join(_words(name)), "".join(theirs)).ratio() >= 0.85:
        return True  # the same words run together or split differently: logitlens
    return all(any(abs(len(word) - len(other)) <= 2 and difflib.SequenceMatcher(None, word, other).ratio() >= 0.6
                   for other in theirs) for word in _words(name))
