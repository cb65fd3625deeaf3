"""The spec stage: YAML file -> located, validated, resolved `Spec` (no torch).

loader (safe YAML + source map) -> compose (`extends:`) -> overrides (`--set`) ->
validate (JSON Schema from `schema`) -> resolve (defaults, paths, `Spec`); `model` holds
`ModelSpec` and the table of model sources.
"""
from .resolve import Spec, VocabSpec, load_spec

__all__ = ["Spec", "VocabSpec", "load_spec"]
