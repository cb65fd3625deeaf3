"""The `causal_model:` block's JSON Schema part; spec/schema.py adds it to the language.

Plain data, no mi_dsl imports: the spec stage owns it, the causal package (a stage above) reads the block.
"""
from __future__ import annotations

NAME_PATTERN = "^[A-Za-z_][A-Za-z0-9_]*$"
_EXPR = "An expression of mi-dsl's expression language (see docs/spec-reference.md)."

CAUSAL_MODEL = {
    "type": "object",
    "description": "A high-level causal model of the task, tested by `interchange` analyses (docs/hypotheses.md): "
                   "variables computed from each prompt's slots, and the output computed from the variables. A "
                   "counterfactual's label is the output recomputed with one variable set to its value on the "
                   "source prompt.",
    "properties": {
        "variables": {
            "type": "object", "minProperties": 1,
            "description": "Variable name -> expression over the prompt's slots (records' fields as slot.field) "
                           "and the variables written above it, e.g. io: 'a if s == b else b'. In order: an "
                           "interchanged variable takes the source's value and the variables below it are "
                           "recomputed from it.",
            "propertyNames": {"pattern": NAME_PATTERN},
            "additionalProperties": {"type": "string",
                                     "description": "The variable's expression. " + _EXPR},
        },
        "output": {"type": "string",
                   "description": "The model's output as an expression over the variables only: one token, e.g. "
                                  "first_token(\" \" + io). The labels IIA compares the intervened prediction "
                                  "with. " + _EXPR},
    },
    "required": ["variables", "output"],
    "additionalProperties": False,
}
