"""Schema validation with located, kind messages.

jsonschema finds what is wrong; this module decides which single fault to tell the
user first and words it: the key that is unknown (with "did you mean"), the key that
is missing, the value of the wrong type, each at its own line and column.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, List, Tuple

import jsonschema

from .errors import SchemaError
from .loader import Document
from .suggest import did_you_mean, unknown

_TYPE_NAMES = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "true or false", "null": "null"}


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    from .schema import build_schema

    schema = build_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate_document(doc: Document) -> None:
    """Raise the most useful SchemaError for `doc`, or return when it fits the schema."""
    if not isinstance(doc.data, dict):
        raise SchemaError("a spec must be a YAML mapping with keys such as version, model, prompts",
                          doc.source.value(()))
    errors = list(_validator().iter_errors(doc.data))
    if errors:
        raise _explain(_most_specific(errors), doc)


def _most_specific(errors: List[jsonschema.ValidationError]) -> jsonschema.ValidationError:
    # Earliest in the file first, then the deepest: users fix specs top to bottom.
    return min(errors, key=lambda e: (len(e.absolute_path) == 0, -len(e.absolute_path)))


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
        return SchemaError(unknown("key", key, allowed, f"in {_describe(path)}"), smap.key(path + (key,)))
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
    if validator == "pattern":
        return SchemaError(f"{_describe(path)} value {error.instance!r} is not a valid name "
                           f"(letters, digits and _; pattern {error.validator_value})", smap.value(path))
    if validator in ("minimum", "exclusiveMinimum", "maximum", "minItems", "maxItems"):
        return SchemaError(f"{_describe(path)}: {error.message}", smap.value(path))
    return SchemaError(f"{_describe(path)}: {error.message}", smap.value(path))


def _explain_alternatives(error: jsonschema.ValidationError, doc: Document) -> SchemaError:
    """A value matching none of several shapes: explain against the shape it meant."""
    path = tuple(error.absolute_path)
    instance = error.instance
    branches = error.schema.get(error.validator, [])
    if isinstance(instance, dict):
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
    kinds = sorted({b.get("type", "") for b in branches if b.get("type")} |
                   {repr(b["const"]) for b in branches if "const" in b})
    return SchemaError(f"{_describe(path)} must be " + " or ".join(_TYPE_NAMES.get(k, k) for k in kinds)
                       + f", not {_type_name(instance)}", doc.source.value(path))
