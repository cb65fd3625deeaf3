"""Causal variables: a high-level causal model of the task, declared in the spec (no torch).

model.py           the `causal_model:` block compiled: variables over slots, the output over variables
slots.py           a prompt's slot values as the model reads them (records with their fields)
counterfactuals.py base + source prompts and each variable's recomputed label; train/test splits
check.py           what `mi-run validate` checks: every variable computable on every prompt, labels
                   one token each, a final-position metric
schema.py          the block's JSON Schema part (spec/schema.py adds it to the language)
cost.py            the plan's estimate of DAS training time and memory

The interchange analysis (analyses/interchange.py, engine in analyses/_interchange/) runs the
interventions these examples describe.
"""
from .check import check_causal_model, load_causal_model
from .counterfactuals import Builder, Example, SourceRule, compile_source, split
from .model import CausalModel, Variable, has_causal_model

__all__ = ["Builder", "CausalModel", "Example", "SourceRule", "Variable", "check_causal_model",
           "compile_source", "has_causal_model", "load_causal_model", "split"]
