"""The `causal_model:` block: a high-level model of the task, as data (no torch).

    causal_model:
      variables:                       # in order; each an expression over the prompt's slots
        io_first: 's == b'             # and the variables above it
        io: 'a if io_first else b'
      output: 'first_token(" " + io)'  # an expression over the variables: one token

A variable is computed from a prompt's slot values (records read as `slot.field`) and the
variables written before it; the output from the variables only, so the label of a
counterfactual is the output recomputed after an interchange: the interchanged variable takes
the source prompt's value, every variable below it is recomputed from the base prompt's slots
and the new value (the causal model's own semantics), and the output is read from the result.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Dict, Mapping, Optional, Tuple

from ..errors import SpecMeaningError
from ..expr import Env, Scope, compile_expression, expect_type
from ..expr.compiled import Compiled
from ..suggest import unknown

BLOCK = "causal_model"


@dataclass(frozen=True)
class Variable:
    name: str
    compiled: Compiled
    path: Tuple[Any, ...]

    @property
    def type(self) -> str:
        return self.compiled.type


@dataclass(frozen=True)
class CausalModel:
    variables: Tuple[Variable, ...]
    output: Compiled
    slot_types: Mapping[str, str]

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(v.name for v in self.variables)

    def variable(self, name: str) -> Variable:
        return next(v for v in self.variables if v.name == name)

    def evaluate(self, slots: Mapping[str, Any], env: Env, fixed: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """Every variable's value on a prompt's slot values; `fixed` variables take the given value
        instead (an interchange), and the variables below them read it."""
        fixed = fixed or {}
        values: Dict[str, Any] = {}
        for variable in self.variables:
            if variable.name in fixed:
                values[variable.name] = fixed[variable.name]
                continue
            env.values = {**slots, **values}
            values[variable.name] = variable.compiled.evaluate(env)
        return values

    def output_of(self, values: Mapping[str, Any], env: Env) -> int:
        env.values = dict(values)
        return int(self.output.evaluate(env))


def has_causal_model(spec) -> bool:
    return BLOCK in spec.data


def compile_causal_model(spec, slot_types: Mapping[str, str], paired=(), records=None) -> CausalModel:
    """The checked block: every variable types against the slots and the variables above it, the
    output against the variables and gives one token (what the final-position metric reads)."""
    block = spec.data[BLOCK]
    records = dict(records or {})
    if "prompts" not in spec.data:
        raise SpecMeaningError("a causal model computes its variables from the prompts' slots, but this spec "
                               "has no `prompts:`", spec.loc(BLOCK))
    types: Dict[str, str] = dict(slot_types)
    variables = []
    for name, text in block["variables"].items():
        path = (BLOCK, "variables", name)
        where = lambda off, p=path: spec.source.inside(p, off)  # noqa: E731
        scope = Scope.answer(types, paired, records)
        compiled = compile_expression(str(text), scope, where=where)
        variables.append(Variable(name, compiled, path))
        types[name] = compiled.type
    known = {v.name: v.type for v in variables}
    path = (BLOCK, "output")
    where = lambda off: spec.source.inside(path, off)  # noqa: E731
    scope = replace(Scope.answer(known, (), records), name_kind="causal variable", context="the causal model's output")
    output = compile_expression(str(block["output"]), scope, where=where)
    if output.type == "continuation":
        raise SpecMeaningError("the causal model's output is a continuation; interchange interventions read one "
                               "token at the final position (IIA compares the intervened prediction with the "
                               "label)", spec.loc(*path), hint="write the output with first_token(...)")
    expect_type(output, "token", where, "the causal model's output")
    unused = [v.name for i, v in enumerate(variables) if not _reaches_output(v.name, variables[i + 1:], output)]
    if unused:
        raise SpecMeaningError(f"variable '{unused[0]}' never reaches the output, so interchanging it cannot "
                               "change a label", spec.loc(BLOCK, "variables", unused[0]),
                               hint="use it in the output (or in a variable the output reads), or remove it")
    return CausalModel(tuple(variables), output, dict(slot_types))


def _reaches_output(name: str, below, output: Compiled) -> bool:
    """Whether the output reads `name`, directly or through the variables `below` it."""
    readers = {name}
    for variable in below:
        if readers & set(variable.compiled.names_used()):
            readers.add(variable.name)
    return bool(readers & set(output.names_used()))


def check_variable_names(spec, model: CausalModel, names, where_of) -> None:
    """Names an analysis lists must be variables of the causal model (`where_of(i)`: its location)."""
    for i, name in enumerate(names):
        if name not in model.names:
            raise SpecMeaningError(unknown("causal variable", name, model.names), where_of(i))
