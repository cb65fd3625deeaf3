"""Spec (+ dataset) -> Plan: plain frozen data listing every step of a run.

No torch and no side effects: the plan says which forward passes run, which hooks
each captures, at which positions, in what batch sizes, and which analyses depend on
which. `mi-run plan` prints it; the runtime executes it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..core.registry import REGISTRY, load_all
from ..dataset.source import answer_location, answers_are_continuation, slot_names
from ..errors import ExpressionError, Location, SpecMeaningError
from ..expr import Scope, compile_expression, expect_type
from .fusion import fuse
from ..core.params import Selection, Selector
from ..core.typed import AnalysisParams, KeepParams, SampleParams, SymmetricParams
from ..core.plan import Plan, Step
from ..metrics import METRICS, Metric
from ..spec.resolve import Spec
from ..suggest import unknown


def compile_plan(spec: Spec) -> Plan:
    if spec.pipeline and not spec.has_dataset:
        raise SpecMeaningError("a pipeline filters prompts, but this spec has no `prompts:` or `dataset:`",
                               spec.loc("pipeline"))
    main = compile_metric(spec)
    continuation = answers_are_continuation(spec)
    _check_metric_reads(spec, main, continuation, spec.loc("metric") if "metric" in spec.data else None)
    metrics_needed = {spec.metric}
    pipeline = tuple(_pipeline_step(spec, i, step, metrics_needed, continuation)
                     for i, step in enumerate(spec.pipeline))
    analyses = compile_analyses(spec, continuation, main)
    run = spec.run_options
    needed = tuple(sorted(metrics_needed))
    metrics = tuple(main if name == spec.metric else METRICS[name] for name in needed)
    return Plan(spec.file, spec.hash(), spec.name, spec.model, spec.metric, needed,
                pipeline, analyses, run.get("batch_size", "auto"), run.get("memory_gb"), fuse(analyses), metrics)


def compile_metric(spec: Spec) -> Metric:
    """The spec's metric: a registered metric's name, or an expression over logit()/prob()/logprob()
    compiled for this plan alone (compile.prepare binds it to the spec's tokenizer)."""
    from ..metric_expr import compile_metric as compile_expression_metric, is_expression
    from ..suggest import did_you_mean

    if is_expression(spec.metric):
        return compile_expression_metric(spec.metric, lambda off: spec.source.inside(("metric",), off))
    if spec.metric not in METRICS:
        hint = did_you_mean(spec.metric, list(METRICS))
        raise SpecMeaningError(f"unknown value '{spec.metric}' for 'metric'" + (f"; {hint}" if hint else ""),
                               spec.loc("metric"),
                               hint="a metric's name (mi-run list) or an expression such as prob(answer) - prob(foil)")
    return METRICS[spec.metric]


def compile_keep(spec: Spec, index: int):
    path = ("pipeline", index, "keep")
    compiled = compile_expression(spec.pipeline[index]["keep"], Scope.keep(list(METRICS)),
                            where=lambda off: spec.source.inside(path, off))
    expect_type(compiled, "bool", lambda off: spec.source.inside(path, off))
    return compiled


def _check_metric_reads(spec: Spec, metric: Metric, continuation: bool, where) -> None:
    """Continuation answers take continuation metrics only, token answers the others: a metric of
    one token at the final position never silently reads a continuation's first token."""
    name = metric.name
    if metric.reads_continuation == continuation:
        return
    answer_at = answer_location(spec)
    said = answer_at.seen_from(where or answer_at)
    others = ", ".join(n for n, m in METRICS.items() if m.reads_continuation == continuation)
    if continuation:
        raise SpecMeaningError(
            f"the answer is a continuation (continuation(...), {said}), but the metric '{name}' "
            "reads one token at the final position", where or answer_at,
            hint=f"use a continuation metric ({others}); or, to compare the first tokens only, write "
                 "first_token(...) for answer and foil")
    raise SpecMeaningError(
        f"the metric '{name}' reads multi-token continuations, but the answer ({said}) is a "
        "token or token set", where or answer_at,
        hint=f"write answer and foil as continuation(...), or use a final-position metric ({others})")


def _check_answers_fit(spec: Spec, index: Optional[int], kind, continuation: bool) -> None:
    """An analysis that reads answers as tokens at the final position cannot measure a continuation
    (`index` None: an analysis the spec does not list, located at `analyses`)."""
    if not continuation or kind.answers != "final":
        return
    able = ", ".join(sorted(k for k, a in REGISTRY.items() if a.answers == "any"))
    reads = f" ({kind.reads_final})" if kind.reads_final else ""
    instead = f"{kind.continuation_instead}; or " if kind.continuation_instead else ""
    raise SpecMeaningError(
        f"{kind.kind} reads the answer and foil as tokens at the final position{reads}, so it cannot measure "
        f"the continuation metric '{spec.metric}' (the answer is continuation(...))",
        spec.loc("analyses", index, "kind") if index is not None else spec.loc("analyses"),
        hint=f"{instead}analyses that measure continuations: {able}; or write answer and foil with "
             "first_token(...) to study the first tokens only")


def _pipeline_step(spec: Spec, index: int, step: Dict[str, Any], metrics_needed: set,
                   continuation: bool = False) -> Step:
    if "keep" in step:
        compiled = compile_keep(spec, index)
        used = sorted({metric for _record, metric in compiled.metrics_used()})
        for name in used:
            _check_metric_reads(spec, METRICS[name], continuation, spec.loc("pipeline", index, "keep"))
        metrics_needed.update(used)
        return Step(f"keep_{index}", "keep", f"keep prompts where {step['keep']}",
                    hooks=("ln_final.hook_normalized",), positions="final",
                    params=KeepParams(condition=compiled, metrics=tuple(used)))
    if "sample" in step:
        n, seed = step["sample"]["n"], step["sample"].get("seed", spec.seed)
        return Step(f"sample_{index}", "sample", f"sample {n} prompts (seed {seed})",
                    params=SampleParams(n=n, seed=seed))
    return Step(f"symmetric_{index}", "symmetric",
                "symmetric pairing: each corrupted prompt joins the clean set, answer and foil swapped",
                params=SymmetricParams(enabled=step["symmetric"]))


def compile_analyses(spec: Spec, continuation: bool = False, metric: Optional[Metric] = None) -> Tuple[Step, ...]:
    metric = metric if metric is not None else compile_metric(spec)
    load_all()
    ids: Dict[str, int] = {}
    compiled: List[Tuple[int, Any, AnalysisParams]] = []
    for index, params in enumerate(spec.analyses):
        kind = REGISTRY[params["kind"]]
        if kind.needs_dataset and not spec.has_dataset:
            raise SpecMeaningError(f"analysis '{params['kind']}' needs a prompt set; add `prompts:` "
                                   "(template, answer, foil) or `dataset:` (pairs from a file)",
                                   spec.loc("analyses", index, "kind"))
        analysis_id = params.get("id", params["kind"])
        if analysis_id in ids:
            key = "id" if "id" in params else "kind"
            first = spec.loc("analyses", ids[analysis_id], key if key in spec.analyses[ids[analysis_id]] else "kind")
            here = spec.loc("analyses", index, key)
            raise SpecMeaningError(f"two analyses are named '{analysis_id}' (the first on "
                                   f"{first.seen_from(here)}); give one an `id:`", here)
        ids[analysis_id] = index
        typed = kind.params.from_spec(params)  # checked by the schema: every key is a field
        _check_answers_fit(spec, index, kind, continuation)
        _check_metric_fits(spec, index, kind, typed, metric)
        compiled.append((index, kind, typed))
    steps = []
    refs_of: Dict[str, List[Tuple[str, Location]]] = {}
    for index, kind, params in compiled:
        context = AnalysisContext(spec, index, dict(ids), metric)
        impl = kind.implementation()
        step = impl.compile(params, context)
        refs_of[step.id] = context.references
        referred = tuple(ref for ref, _ in context.references)
        steps.append(replace(step, depends_on=tuple(dict.fromkeys(step.depends_on + referred))))
    _check_references(spec, [s.id for s in steps], refs_of, ids)
    return tuple(steps)


def compile_analysis(spec: Spec, params: Dict[str, Any], known: Sequence[str] = ()) -> Step:
    """The plan step of an analysis the spec need not list (the Python API and tests compute extra
    analyses on a finished run): parameters checked against the analysis's schema, selectors
    compiled, defaults filled, as the compiler does for the spec's own. `known`: ids of results
    (besides the spec's analyses) its head selectors may rank by. Faults point at `analyses`."""
    import jsonschema

    load_all()
    if params.get("kind") not in REGISTRY:
        raise SpecMeaningError(unknown("analysis kind", params.get("kind"), REGISTRY), spec.loc("analyses"))
    kind = REGISTRY[params["kind"]]
    fault = next(iter(jsonschema.Draft202012Validator(kind.schema()).iter_errors(params)), None)
    if fault is not None:
        where = ".".join(str(p) for p in fault.absolute_path) or params["kind"]
        raise SpecMeaningError(f"{where}: {fault.message}", spec.loc("analyses"))
    _check_answers_fit(spec, None, kind, answers_are_continuation(spec))
    ids = {p.get("id", p["kind"]): i for i, p in enumerate(spec.analyses)}
    ids.update({name: len(spec.analyses) for name in known if name not in ids})
    return kind.implementation().compile(kind.params.from_spec(params),
                                         AnalysisContext(spec, len(spec.analyses), ids, compile_metric(spec)))


def _check_metric_fits(spec: Spec, index: int, kind, params: AnalysisParams, metric: Metric) -> None:
    """The spec's metric against the analysis's declared rule (core/registry.METRIC_RULES: which metrics
    it reads and why); the refusal quotes the rule's reason."""
    rule = kind.metric_rule
    if rule.readout and getattr(params, "direction", None) is not None:
        return
    if rule.needs_linear and not metric.linear:
        fault = "is not linear in the final residual"
    elif rule.needs_gradient and not metric.differentiable:
        fault = "has no gradient"
    else:
        return
    metric_at = spec.loc("metric") if "metric" in spec.data else None
    here = spec.loc("analyses", index, "kind")
    stated = f" ({metric_at.seen_from(here)})" if metric_at is not None and metric_at.line else ""
    linear = ", ".join(sorted(n for n, m in METRICS.items() if m.linear))
    hint = "activation_patching measures any metric exactly"
    if rule.readout:
        hint = (f"add `direction: logit_diff` to this analysis to read the answer-minus-foil logit difference "
                f"instead, or use a linear metric ({linear}); {hint}")
    raise SpecMeaningError(f"{kind.kind} reads {rule.accepts}: {rule.why}. The spec's metric "
                           f"'{spec.metric}'{stated} {fault}", here, hint=hint)


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
    metric: Metric                      # the spec's metric, compiled
    references: List[Tuple[str, Location]] = field(default_factory=list)  # (analysis id, where in the spec)
    selections: Dict[str, Selection] = field(default_factory=dict)  # compiled selector parameters

    def path(self, *keys) -> Tuple:
        return ("analyses", self.index, *keys)

    def where(self, *keys):
        return self.spec.source.value(self.path(*keys))

    def heads(self, params: AnalysisParams, field: str = "heads") -> Optional[Selection]:
        """Compile the head selector `params.<field>` (a string or a list of strings) into the step's
        parameters; records the analyses it ranks by. Returns the Selection (None when absent)."""
        from ..expr import parse_heads

        value, key = getattr(params, field), params.spec_key(field)
        if value is None:
            return None
        selectors = []
        for path, text in self._items(key, value):
            compiled = parse_heads(str(text), list(self.ids),
                                   where=lambda off, p=path: self.spec.source.inside(p, off))
            for ref, offset in compiled.references():
                where = self.spec.source.inside(path, offset)
                if ref not in self.ids:
                    raise ExpressionError(unknown("analysis", ref, self.ids, "in head selector"), where)
                self.references.append((ref, where))
            selectors.append(Selector(text, path, compiled))
        self.selections[field] = Selection("heads", tuple(selectors), isinstance(value, tuple))
        return self.selections[field]

    def positions(self, params: AnalysisParams, field: str, slots) -> Optional[Selection]:
        """Compile the position selector `params.<field>` (or a list of them) into the step's parameters;
        a default the spec left out (the field's own) is compiled too, located at the analysis. None
        when absent."""
        from ..expr import parse_positions

        value, key = getattr(params, field), params.spec_key(field)
        if value is None:
            return None
        if self.index < len(self.spec.analyses) and not self.written(key):  # the field's default
            analysis = self.spec.loc(*self.path())
            items = value if isinstance(value, tuple) else (value,)
            selectors = tuple(Selector(item, self.path(), parse_positions(str(item), list(slots),
                                                                          where=lambda off: analysis))
                              for item in items)
            self.selections[field] = Selection("positions", selectors, isinstance(value, tuple), True)
            return self.selections[field]
        selectors = tuple(
            Selector(item, path, parse_positions(str(item), list(slots),
                                                 where=lambda off, p=path: self.spec.source.inside(p, off)))
            for path, item in self._items(key, value))
        self.selections[field] = Selection("positions", selectors, isinstance(value, tuple))
        return self.selections[field]

    def _items(self, key: str, value):
        """(spec path, item) of a parameter written as one value or a list of them."""
        if isinstance(value, tuple):
            return [(self.path(key, i), item) for i, item in enumerate(value)]
        return [(self.path(key), value)]

    def written(self, key: str) -> bool:
        """Whether the spec wrote the parameter (rather than its default standing in)."""
        return self.index < len(self.spec.analyses) and key in self.spec.analyses[self.index]

    def compiled_params(self, params: AnalysisParams) -> AnalysisParams:
        """The step's frozen parameters: the spec's, the defaults, the selectors compiled."""
        return params.replace(**self.selections)

    def params_of(self, index: int) -> AnalysisParams:
        """The typed parameters of the spec's analysis `index` (as written, defaults filled)."""
        raw = self.spec.analyses[index]
        return REGISTRY[raw["kind"]].params.from_spec(raw)

    def slots(self):
        return slot_names(self.spec)
