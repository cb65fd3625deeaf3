"""The mi-dsl expression language: small typed expressions inside YAML specs.

Compile first (parse + type-check against a Scope), evaluate many times:

    f = compile_expression('ntokens(" " + item) == 2', Scope.filter())
    expect_type(f, "bool", where)
    keep = [w for w in words if f.evaluate(Env(values={"item": w}, tokenizer=tok))]

Head and position selectors have their own entry points, `parse_heads` and
`parse_positions`. Nothing here is run through Python's eval, and only the
standard library and lark are imported. Every failure is an ExpressionError whose
location is `where(offset)` of the offending character.
"""
from .checker import compile_expression
from .compiled import Compiled, Where, default_where, expect_type
from .env import Env
from .functions import FUNCTIONS, Function, describe_functions
from .parser import MAX_DEPTH, MAX_LENGTH, POSITION_WORDS, RESERVED_WORDS
from .scope import TYPES, Scope
from .selectors import parse_heads, parse_positions

__all__ = [
    "compile_expression", "parse_heads", "parse_positions", "expect_type",
    "Compiled", "Scope", "Env", "Where", "default_where",
    "FUNCTIONS", "Function", "describe_functions",
    "TYPES", "MAX_LENGTH", "MAX_DEPTH", "RESERVED_WORDS", "POSITION_WORDS",
]
