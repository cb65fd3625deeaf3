"""The expression language's operators, read from grammar.lark's `//@` lines.

Each such line documents one operator form: `//@ FORM | MEANING | EXAMPLE | VALUE`, in
the grammar's order (loosest binding first). docs/spec-reference.md is generated from
them, and a test evaluates every EXAMPLE and compares it with VALUE, so the reference
cannot drift from the parser. The examples' names are EXAMPLE_VALUES.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List

GRAMMAR = Path(__file__).with_name("grammar.lark")

# The names the examples use, as the reference states them.
EXAMPLE_NAMES = "`country` is the record {country: France, capital: Paris} and `yy` is the string \"07\""


@dataclass(frozen=True)
class OperatorDoc:
    form: str
    meaning: str
    example: str
    value: str


def _unquote(cell: str) -> str:
    cell = cell.strip()
    return cell[1:-1] if cell.startswith("`") and cell.endswith("`") else cell


def operator_docs() -> List[OperatorDoc]:
    out = []
    for line in GRAMMAR.read_text(encoding="utf-8").splitlines():
        if line.startswith("//@ "):
            form, meaning, example, value = (cell.strip() for cell in line[4:].split(" | "))
            out.append(OperatorDoc(form, meaning, _unquote(example), _unquote(value)))
    return out


def example_scope_and_env():
    """The Scope and Env the examples are evaluated in (for the test of the reference)."""
    from .env import Env
    from .scope import Scope
    from .values import Record

    scope = Scope.template({"country": "rec:countries", "yy": "str"},
                           records={"rec:countries": {"country": "str", "capital": "str"}})
    env = Env(values={"country": Record("France", {"country": "France", "capital": "Paris"}), "yy": "07"})
    return scope, env


def reference_lines() -> List[str]:
    """The operator table of docs/spec-reference.md, loosest binding first."""
    lines = ["| form | meaning | example | value |", "|---|---|---|---|"]
    for doc in operator_docs():
        meaning = doc.meaning.replace("|", "\\|")
        lines.append(f"| {doc.form} | {meaning} | `{doc.example}` | `{doc.value}` |")
    return lines
