"""Schema validation with located, kind messages.

jsonschema finds what is wrong; this module decides which single fault to tell the
user first and words it: the key that is unknown (with "did you mean"), the key that
is missing, the value of the wrong type, each at its own line and column.
"""
from __future__ import annotations

import difflib
from functools import lru_cache
from typing import Any, List, Optional, Tuple

import jsonschema

from ..errors import Location, SchemaError
from .indentation import misindented
from .loader import Document
from ..suggest import did_you_mean, unknown

_TYPE_NAMES = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "true or false", "null": "null"}


# Integers are Python ints: JSON Schema would take 1.0e+308 as an integer, and `top_k: 1.0e+308`
# then failed as a float deep in a run.
_STRICT_TYPES = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda checker, value: isinstance(value, int) and not isinstance(value, bool))
_Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=_STRICT_TYPES)
# Every number of a spec fits a signed 64-bit integer (seeds reach torch and numpy as such): a
# seed of 101 digits failed only after the model loaded.
MAX_INTEGER = 2 ** 63 - 1


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    from .schema import build_schema

    schema = build_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return _Validator(schema)


def _check_numbers(data: Any, doc: Document, path: Tuple = ()) -> None:
    """No integer beyond 64 bits and no float that is not finite, anywhere in the spec."""
    import math

    stack = [(data, path)]
    while stack:
        value, where = stack.pop()
        if isinstance(value, dict):
            stack.extend((v, where + (k,)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, where + (i,)) for i, v in enumerate(value))
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int) and abs(value) > MAX_INTEGER:
            raise SchemaError(f"{_describe(where)}: {value} does not fit in 64 bits (at most {MAX_INTEGER:,})",
                              doc.source.value(where))
        elif isinstance(value, float) and not math.isfinite(value):
            raise SchemaError(f"{_describe(where)}: {value} is not a finite number", doc.source.value(where))


def validate_document(doc: Document) -> None:
    """Raise the most useful SchemaError for `doc`, or return when it fits the schema."""
    if not isinstance(doc.data, dict):
        where = doc.source.value(())
        if where.line is None:  # an empty document has no node to point at
            where = Location(doc.source.file, 1, 1)
        found = "the file is empty" if doc.data is None else f"found {_type_name(doc.data)}"
        raise SchemaError(f"a spec must be a YAML mapping with keys such as version, model, prompts; {found}",
                          where)
    _check_numbers(doc.data, doc)
    errors = list(_validator().iter_errors(doc.data))
    if errors:
        error = _most_specific(errors)
        raise _as_misindented(error, doc) or _explain(error, doc)


def _error_paths(data: Any) -> List[Tuple]:
    return [tuple(e.absolute_path) for e in _validator().iter_errors(data)]


def _as_misindented(error: jsonschema.ValidationError, doc: Document) -> Optional[SchemaError]:
    """The fault told as a mis-indented key, when moving one key in or out repairs it."""
    path = tuple(error.absolute_path)
    if error.validator == "required":
        missing = error.message.split("'")[1]
        key_path = path[:-1] + (missing,) if path else None
    elif error.validator == "additionalProperties":
        allowed = error.schema.get("properties", {})
        extra = sorted(set(error.instance) - set(allowed), key=lambda k: doc.source.key(path + (k,)).line or 0)
        # A misspelling of a key this mapping lacks (`fil` for a missing `foil`) is a typo, not a key that
        # belongs in a mapping which takes any name (prompts.slots)
        if extra and difflib.get_close_matches(str(extra[0]), [k for k in allowed if k not in error.instance],
                                               n=1, cutoff=0.6):
            return None
        key_path = path + (extra[0],) if extra else None
    else:
        key_path = path if path and isinstance(path[-1], str) else None
    message = misindented(doc, key_path, _error_paths) if key_path else None
    if message is None:
        return None
    as_written = _explain(error, doc)
    return SchemaError(message, doc.source.key(key_path), hint=f"as written: {as_written.message}")


def _most_specific(errors: List[jsonschema.ValidationError]) -> jsonschema.ValidationError:
    # The deepest fault first; where two share a place, a misspelt key before the "missing"
    # key it meant (`prepend_boss` explains why `prepend_bos` is missing). Ties keep the
    # schema's order, which follows a spec's order from top to bottom.
    return min(errors, key=lambda e: (len(e.absolute_path) == 0, -len(e.absolute_path),
                                      e.validator != "additionalProperties"))


_JSON_TYPES = {dict: ("object",), list: ("array",), str: ("string",), bool: ("boolean",),
               int: ("integer", "number"), float: ("number",), type(None): ("null",)}


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "nothing (null)"}.get(type(value), type(value).__name__)


def _describe(path: Tuple) -> str:
    if path and isinstance(path[-1], int):
        return f"item {path[-1] + 1} of {_describe(path[:-1])}"
    return f"'{path[-1]}'" if path else "the spec"


def _explain(error: jsonschema.ValidationError, doc: Document) -> SchemaError:
    path = tuple(error.absolute_path)
    smap = doc.source
    validator = error.validator
    if validator in ("oneOf", "anyOf") and error.context:
        return _explain_alternatives(error, doc)
    if validator == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed), key=lambda k: smap.key(path + (k,)).line or 0)
        key = extra[0]
        hint = ("this looks like the end of a value that a comma split inside { }: quote the whole value, "
                "e.g. heads: 'top(head_attr, 3)'" if ")" in str(key) or "]" in str(key) else "")
        return SchemaError(unknown("key", str(key), allowed, f"in {_describe(path)}"), smap.key(path + (key,)),
                           hint=hint)
    if validator == "required":
        missing = error.message.split("'")[1]
        desc = error.schema.get("properties", {}).get(missing, {}).get("description", "")
        return SchemaError(f"{_describe(path)} is missing the required key '{missing}'", smap.value(path),
                           hint=desc)
    if validator == "type":
        wanted = error.validator_value
        wanted = " or ".join(_TYPE_NAMES.get(w, w) for w in (wanted if isinstance(wanted, list) else [wanted]))
        return SchemaError(f"{_describe(path)} must be {wanted}, not {_type_name(error.instance)}",
                           smap.value(path))
    if validator == "enum":
        choices = [str(c) for c in error.validator_value]
        return SchemaError(unknown("value", str(error.instance), choices, f"for {_describe(path)}"),
                           smap.value(path))
    if validator == "const":
        if path == ("version",):
            return SchemaError(f"unsupported spec language version {error.instance!r}; this mi-dsl reads "
                               f"version {error.validator_value}", smap.value(path))
        return SchemaError(f"{_describe(path)} must be {error.validator_value!r}", smap.value(path))
    if validator == "pattern" and "propertyNames" in error.schema_path:  # a vocabulary's or a slot's name
        return SchemaError(f"{error.instance!r} in {_describe(path)} is not a valid name (letters, digits and _, "
                           "not starting with a digit)", smap.key(path + (error.instance,)))
    if validator == "pattern":
        if "A-Za-z" not in error.validator_value:  # a choice written as a pattern, e.g. model.device
            return SchemaError(f"{_describe(path)} value {error.instance!r} is not allowed (pattern "
                               f"{error.validator_value})", smap.value(path),
                               hint=error.schema.get("description", ""))
        return SchemaError(f"{_describe(path)} value {error.instance!r} is not a valid name "
                           f"(letters, digits and _; pattern {error.validator_value})", smap.value(path))
    if validator == "dependentRequired":
        key = next(k for k, needs in error.validator_value.items() if k in error.instance
                   and any(n not in error.instance for n in needs))
        needed = next(n for n in error.validator_value[key] if n not in error.instance)
        return SchemaError(f"'{key}' in {_describe(path)} needs '{needed}' beside it", smap.key(path + (key,)),
                           hint=error.schema.get("properties", {}).get(key, {}).get("description", ""))
    if validator == "minProperties" and not error.instance:
        return SchemaError(f"{_describe(path)} is empty; " + error.schema.get("description", ""), smap.value(path))
    if validator in ("minimum", "exclusiveMinimum", "maximum", "minItems", "maxItems"):
        return SchemaError(f"{_describe(path)}: {error.message}", smap.value(path))
    return SchemaError(f"{_describe(path)}: {error.message}", smap.value(path))


def _explain_alternatives(error: jsonschema.ValidationError, doc: Document) -> SchemaError:
    """A value matching none of several shapes: explain against the shape it meant."""
    path = tuple(error.absolute_path)
    instance = error.instance
    branches = error.schema.get(error.validator, [])
    if isinstance(instance, dict):
        given = [k for b in branches for k in b.get("required", [])[:1] if k in instance]
        if len(given) > 1:  # e.g. corrupt: {swap: x, resample: y}
            keys = [k for b in branches for k in b.get("required", [])[:1]]
            return SchemaError(f"{_describe(path)} takes exactly one of the keys " + ", ".join(f"'{k}'" for k in keys)
                               + f"; found both '{given[0]}' and '{given[1]}'",
                               doc.source.key(path + (given[1],)), hint=f"keep '{given[0]}' or '{given[1]}', not both")
        # The branch whose required keys the user wrote is the one they meant.
        for index, branch in enumerate(branches):
            required = branch.get("required", [])
            if required and all(k in instance for k in required):
                sub = [e for e in error.context if e.schema_path and e.schema_path[0] == index]
                if sub:
                    return _explain(_most_specific(sub), doc)
        keys = sorted({k for b in branches for k in b.get("required", [])})
        if keys:
            first = next(iter(instance), None)
            hint = did_you_mean(str(first), keys) if first is not None else ""
            return SchemaError(f"{_describe(path)} needs exactly one of the keys "
                               + ", ".join(f"'{k}'" for k in keys)
                               + (f"; found '{first}'" if first is not None else ""),
                               doc.source.key(path + (first,)) if first is not None else doc.source.value(path),
                               hint=hint)
    # A name from a list or a pattern (the metric: a name, or an expression): the list explains better.
    enums = [e for e in error.context if e.validator == "enum"]
    if enums and not isinstance(instance, (dict, list)):
        return _explain(enums[0], doc)
    # The branch of the value's own type is the one meant: explain what is wrong inside it.
    typed = [i for i, b in enumerate(branches) if b.get("type") in _JSON_TYPES.get(type(instance), ())]
    sub = [e for e in error.context if len(typed) == 1 and e.schema_path and e.schema_path[0] == typed[0]]
    if sub:
        return _explain(_most_specific(sub), doc)
    kinds = sorted({b.get("type", "") for b in branches if b.get("type")} |
                   {repr(b["const"]) for b in branches if "const" in b})
    return SchemaError(f"{_describe(path)} must be " + " or ".join(_TYPE_NAMES.get(k, k) for k in kinds)
                       + f", not {_type_name(instance)}", doc.source.value(path))
