"""Spec (+ dataset) -> Plan: plain frozen data listing every step of a run.

No torch and no side effects: the plan says which forward passes run, which hooks
each captures, at which positions, in what batch sizes, and which analyses depend on
which. `mi-run plan` prints it; the runtime executes it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Tuple

from ..analyses.registry import REGISTRY, load_all
from ..errors import ExpressionError, Location, SpecMeaningError
from ..expr import Scope, compile_expression, expect_type
from .fusion import fuse
from .plan import Plan, Step
from ..metrics import METRICS
from ..spec.resolve import Spec
from ..suggest import unknown


def compile_plan(spec: Spec) -> Plan:
    if spec.pipeline and "prompts" not in spec.data:
        raise SpecMeaningError("a pipeline filters prompts, but this spec has no `prompts:`",
                               spec.loc("pipeline"))
    check_metric(spec)
    metrics_needed = {spec.metric}
    pipeline = tuple(_pipeline_step(spec, i, step, metrics_needed) for i, step in enumerate(spec.pipeline))
    analyses = compile_analyses(spec)
    run = spec.run_options
    return Plan(spec.file, spec.hash(), spec.name, spec.model, spec.metric, tuple(sorted(metrics_needed)),
                pipeline, analyses, run.get("batch_size", "auto"), run.get("memory_gb"), fuse(analyses))


def check_metric(spec: Spec, tokenizer=None) -> None:
    """A registered metric's name, or an expression over logit()/prob()/logprob() (registered
    under its own text; with a tokenizer, its string literals become token ids)."""
    from ..metric_expr import is_expression, register_expression
    from ..suggest import did_you_mean

    if is_expression(spec.metric):
        register_expression(spec.metric, lambda off: spec.source.inside(("metric",), off), tokenizer)
    elif spec.metric not in METRICS:
        hint = did_you_mean(spec.metric, [n for n in METRICS if "(" not in n])
        raise SpecMeaningError(f"unknown value '{spec.metric}' for 'metric'" + (f"; {hint}" if hint else ""),
                               spec.loc("metric"),
                               hint="a metric's name (mi-run list) or an expression such as prob(answer) - prob(foil)")


def compile_keep(spec: Spec, index: int):
    path = ("pipeline", index, "keep")
    compiled = compile_expression(spec.pipeline[index]["keep"], Scope.keep([n for n in METRICS if "(" not in n]),
                            where=lambda off: spec.source.inside(path, off))
    expect_type(compiled, "bool", lambda off: spec.source.inside(path, off))
    return compiled


def _pipeline_step(spec: Spec, index: int, step: Dict[str, Any], metrics_needed: set) -> Step:
    if "keep" in step:
        compiled = compile_keep(spec, index)
        used = sorted({metric for _record, metric in compiled.metrics_used()})
        metrics_needed.update(used)
        return Step(f"keep_{index}", "keep", f"keep prompts where {step['keep']}",
                    hooks=("ln_final.hook_normalized",), positions="final",
                    params=(("condition", step["keep"]), ("metrics", tuple(used))))
    if "sample" in step:
        n, seed = step["sample"]["n"], step["sample"].get("seed", spec.seed)
        return Step(f"sample_{index}", "sample", f"sample {n} prompts (seed {seed})",
                    params=(("n", n), ("seed", seed)))
    return Step(f"symmetric_{index}", "symmetric",
                "symmetric pairing: each corrupted prompt joins the clean set, answer and foil swapped",
                params=(("enabled", step["symmetric"]),))


def compile_analyses(spec: Spec) -> Tuple[Step, ...]:
    load_all()
    ids: Dict[str, int] = {}
    compiled: List[Tuple[int, Any, Dict[str, Any]]] = []
    for index, params in enumerate(spec.analyses):
        kind = REGISTRY[params["kind"]]
        if kind.needs_dataset and "prompts" not in spec.data:
            raise SpecMeaningError(f"analysis '{params['kind']}' needs a prompt set; add `prompts:` "
                                   "(template, answer, foil)", spec.loc("analyses", index, "kind"))
        analysis_id = params.get("id", params["kind"])
        if analysis_id in ids:
            key = "id" if "id" in params else "kind"
            first = spec.loc("analyses", ids[analysis_id], key if key in spec.analyses[ids[analysis_id]] else "kind")
            raise SpecMeaningError(f"two analyses are named '{analysis_id}' (the first on line {first.line}); "
                                   "give one an `id:`", spec.loc("analyses", index, key))
        ids[analysis_id] = index
        _check_metric_fits(spec, index, kind, params)
        compiled.append((index, kind, params))
    steps = []
    refs_of: Dict[str, List[Tuple[str, Location]]] = {}
    for index, kind, params in compiled:
        context = AnalysisContext(spec, index, dict(ids))
        impl = kind.implementation()
        step = impl.compile(params, context)
        refs_of[step.id] = context.references
        referred = tuple(ref for ref, _ in context.references)
        steps.append(replace(step, depends_on=tuple(dict.fromkeys(step.depends_on + referred))))
    _check_references(spec, [s.id for s in steps], refs_of, ids)
    return tuple(steps)


def _check_metric_fits(spec: Spec, index: int, kind, params: Dict[str, Any]) -> None:
    """Decompositions are exact only for a metric linear in the final residual; refuse others
    unless the analysis names the linear direction it reads instead (`direction: logit_diff`)."""
    metric = METRICS[spec.metric]
    patching = kind.kind == "attribution_patching"  # its `direction` is denoising/noising, not a read-out
    if not kind.decomposes or metric.linear or (not patching and "direction" in params):
        return
    metric_at = spec.loc("metric") if "metric" in spec.data else None
    stated = f" (line {metric_at.line})" if metric_at is not None and metric_at.line else ""
    linear = ", ".join(sorted(n for n, m in METRICS.items() if m.linear and "(" not in n))
    if patching:
        hint = f"use a linear metric ({linear}), or activation_patching, which patches exactly for any metric"
    else:
        hint = (f"add `direction: logit_diff` to this analysis to read the answer-minus-foil logit difference "
                f"instead (the parts then add up to it), or use a linear metric ({linear})")
    raise SpecMeaningError(f"{params['kind']} decomposes the metric into parts that add up to it, which holds "
                           f"only for a metric linear in the final residual; the spec's metric "
                           f"'{spec.metric}'{stated} is not linear", spec.loc("analyses", index, "kind"), hint=hint)


def _check_references(spec: Spec, order: List[str], refs_of, ids) -> None:
    position = {name: i for i, name in enumerate(order)}
    for name in order:  # cycles first: their message says more than "comes later"
        for ref, where in refs_of[name]:
            if ref == name:
                raise SpecMeaningError(f"analysis '{name}' refers to itself", where,
                                       hint="rank heads by an analysis that comes before it")
            if _reaches(refs_of, ref, name):
                raise SpecMeaningError(f"analyses '{name}' and '{ref}' refer to each other (a cycle)",
                                       where, hint="one of them must not depend on the other")
    for name in order:
        for ref, where in refs_of[name]:
            if position[ref] > position[name]:
                raise SpecMeaningError(f"analysis '{name}' refers to '{ref}', which comes later",
                                       where, hint=f"move '{ref}' above '{name}'")


def _reaches(refs_of, start: str, target: str) -> bool:
    seen, stack = set(), [start]
    while stack:
        node = stack.pop()
        if node == target:
            return True
        if node in seen:
            continue
        seen.add(node)
        stack.extend(ref for ref, _ in refs_of.get(node, []))
    return False


@dataclass
class AnalysisContext:
    """What an analysis's compile step may ask about the spec."""

    spec: Spec
    index: int
    ids: Dict[str, int]
    references: List[Tuple[str, Location]] = field(default_factory=list)  # (analysis id, where in the spec)

    def path(self, *keys) -> Tuple:
        return ("analyses", self.index, *keys)

    def where(self, *keys):
        return self.spec.source.value(self.path(*keys))

    def heads(self, params: Dict[str, Any], key: str = "heads"):
        """Compile a head selector (a string or a list of strings); records references."""
        value = params.get(key)
        if value is None:
            return None
        items = value if isinstance(value, list) else [value]
        out = []
        for i, text in enumerate(items):
            path = self.path(key, i) if isinstance(value, list) else self.path(key)
            from ..expr import parse_heads

            compiled = parse_heads(str(text), list(self.ids),
                                   where=lambda off, p=path: self.spec.source.inside(p, off))
            for ref, offset in compiled.references():
                where = self.spec.source.inside(path, offset)
                if ref not in self.ids:
                    raise ExpressionError(unknown("analysis", ref, self.ids, "in head selector"), where)
                self.references.append((ref, where))
            out.append(compiled)
        return out

    def positions(self, params: Dict[str, Any], key: str, slots):
        from ..expr import parse_positions

        value = params.get(key)
        if value is None:
            return None
        path = self.path(key)
        return parse_positions(str(value), list(slots), where=lambda off: self.spec.source.inside(path, off))

    def slots(self):
        from ..dataset.build import slot_vocabularies

        return list(slot_vocabularies(self.spec, self.spec.prompts["template"]))
