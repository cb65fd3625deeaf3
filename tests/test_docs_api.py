"""Every `mi_dsl.<function>(...)` call the docs show binds to the function's real signature.

docs/architecture.md once documented `mi_dsl.run(..., threads=N)` while `run` took no `threads`
(a TypeError for anyone who tried it). Here every call in the README, docs/api.md and
docs/architecture.md — in Python code blocks and in inline code — is parsed and bound to the
signature of the function it names; the cheap ones (validate, plan) also run on the shipped
tutorial spec.
"""
from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

import mi_dsl

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "docs" / "api.md", ROOT / "docs" / "architecture.md"]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
INLINE = re.compile(r"`(mi_dsl\.\w+\([^`]*\))`")


def _snippets(text: str) -> Iterator[str]:
    for block in BLOCK.findall(text):
        try:
            ast.parse(block)
            yield block
        except SyntaxError:  # a notebook output line: parse statement by statement
            yield from (line for line in block.splitlines() if _parses(line))
    yield from (call for call in INLINE.findall(text) if _parses(call))  # a signature is not a call


def _parses(line: str) -> bool:
    try:
        ast.parse(line.strip())
        return True
    except SyntaxError:
        return False


def documented_calls() -> List[Tuple[str, str, ast.Call]]:
    """(doc, source text, call) of every call of an attribute of `mi_dsl` the docs show."""
    out = []
    for doc in DOCS:
        for snippet in _snippets(doc.read_text()):
            for node in ast.walk(ast.parse(snippet.strip())):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and isinstance(node.func.value, ast.Name) and node.func.value.id == "mi_dsl"):
                    out.append((doc.name, ast.unparse(node), node))
    return out


CALLS = documented_calls()


def test_the_docs_show_calls_of_the_api():
    names = {call.func.attr for _, _, call in CALLS}
    assert {"run", "validate", "plan"} <= names
    assert any("threads" in text for _, text, _ in CALLS)  # the call that raised TypeError


@pytest.mark.parametrize("doc, text, call", CALLS, ids=[f"{d}:{t[:50]}" for d, t, _ in CALLS])
def test_each_documented_call_binds_to_the_signature(doc, text, call):
    function = getattr(mi_dsl, call.func.attr, None)
    assert callable(function), f"{doc}: mi_dsl.{call.func.attr} does not exist"
    signature = inspect.signature(function)
    args = [object()] * len(call.args)
    kwargs = {k.arg: object() for k in call.keywords if k.arg is not None}
    try:
        signature.bind(*args, **kwargs)
    except TypeError as err:
        pytest.fail(f"{doc}: `{text}` does not fit mi_dsl.{call.func.attr}{signature}: {err}")


def test_the_cheap_documented_calls_run():
    assert mi_dsl.validate(str(ROOT / "specs" / "tutorial.yaml")) == []
    plan = mi_dsl.plan(str(ROOT / "specs" / "tutorial.yaml"))
    assert plan["dataset"]["candidates"] > 0 and plan["analyses"]
