"""Run a spec end to end: compile, load the model, run the pipeline and analyses, report.

    spec file --load/validate--> Spec --dataset--> Dataset --compile--> Plan
      --models--> LoadedModel --pipeline--> final pairs + baselines
      --analyses--> Results --report--> runs/<name>/<timestamp>/
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..errors import MiError
from .store import StepStore, digest


@dataclass
class RunOutcome:
    results: Dict[str, Any]
    run_dir: Path
    report_path: Path


def _say(progress: bool):
    def say(message: str) -> None:
        if progress:
            print(f"[mi-run] {message}", file=sys.stderr, flush=True)
    return say


def run_spec(spec_path, overrides: Sequence[str] = (), allow_paths: Sequence[str] = (), fresh: bool = False,
             out_dir: Optional[str] = None, progress: bool = True) -> RunOutcome:
    from ..compile import prepare

    started = time.perf_counter()
    prepared = prepare(spec_path, list(overrides), list(allow_paths))
    return run_prepared(prepared, started=started, fresh=fresh, out_dir=out_dir, progress=progress)


def run_prepared(prepared, *, started: Optional[float] = None, fresh: bool = False, out_dir: Optional[str] = None,
                 progress: bool = True) -> RunOutcome:
    """Run a prepared spec (`compile.prepare`) and write its report."""
    from ..report.html import write_report

    started = time.perf_counter() if started is None else started
    say = _say(progress)
    spec, dataset = prepared.spec, prepared.dataset
    for warning in dataset.warnings:
        say(f"warning: {warning}")
    say(f"{len(dataset.pairs)} candidate prompts; loading model ({spec.model.source})")
    runs_root = Path(out_dir).resolve() if out_dir else spec.output_dir
    session = Session(spec, prepared.plan, dataset, prepared.tokenizer, progress=progress, say=say, fresh=fresh,
                      runs_root=runs_root)
    results = session.run(started)
    run_dir = write_report(session, results, runs_root)
    return RunOutcome(results, run_dir, run_dir / "index.html")


@dataclass
class Session:
    """The state of one run, shared by the pipeline, the analyses and the report."""

    spec: Any
    plan: Any
    dataset: Any
    tokenizer: Any
    progress: bool = True
    say: Any = print
    fresh: bool = False
    runs_root: Optional[Path] = None
    timings: Dict[str, float] = field(default_factory=dict)
    figures: Dict[str, List] = field(default_factory=dict)   # analysis id -> [(name, fig)]
    context: Any = None
    outcome: Any = None
    loaded: Any = None

    def run(self, started: float) -> Dict[str, Any]:
        import torch

        from .context import RunContext
        from .executor import Executor
        from .unembed import Unembed
        from .models import load_model

        torch.manual_seed(self.spec.seed)
        with torch.no_grad():
            t = time.perf_counter()
            try:
                self.loaded = load_model(self.plan.model, progress=self.say if self.progress else None)
            except MiError as err:  # the loader knows what failed, the spec knows where it was asked for
                raise err.at(_model_location(self.spec)) from None
            self.timings["model_load"] = time.perf_counter() - t
            self.timings["launch_to_model_ready"] = time.perf_counter() - started
            self.say(f"model ready in {self.timings['model_load']:.1f}s ({self.loaded.info.get('id')})")
            _check_token_ids(self)
            executor = Executor(self.loaded, self.plan.batch_size, self.plan.memory_gb, self.progress)
            unembed = Unembed.of(self.loaded.bridge)
            store = StepStore((self.runs_root or self.spec.output_dir) / self.spec.name / ".store",
                              enabled=not self.fresh)
            key = digest("dataset", self.plan.model.identity(), self.loaded.info.get("id"), self.tokenizer.origin,
                         [(p.clean.ids, p.corrupted.ids, p.answer, p.foil) for p in self.dataset.pairs],
                         self.plan.metrics_needed, self.plan.metric, [s.params for s in self.plan.pipeline])
            t = time.perf_counter()
            final = self._dataset_step(store, key, executor, unembed)
            self.timings["pipeline"] = time.perf_counter() - t
            pairs = self.outcome.pairs
            baselines = {r: float(sum(final[r][self.plan.metric]) / len(pairs))
                         for r in ("clean", "corrupted")} if pairs else {}
            if pairs:
                self.say(f"dataset: {len(pairs)} prompt pairs after the pipeline; baselines ({self.plan.metric}): "
                         f"clean {baselines['clean']:.4f}, corrupted {baselines['corrupted']:.4f}")
            self.context = RunContext(executor, unembed, self.spec, self.plan, self.tokenizer, pairs,
                                      baselines=baselines)
            self.final = final
            analyses = self._run_analyses(store, key)
        self.timings["total"] = time.perf_counter() - started
        self.store = store
        return self._results(final, baselines, analyses, executor)

    def _dataset_step(self, store: "StepStore", key: str, executor, unembed) -> Dict[str, Dict[str, list]]:
        """The pipeline and the final pairs' metrics, from the store when this exact step ran before."""
        from .pipeline import PipelineOutcome, pair_metrics, run_pipeline

        stored = store.get("dataset", key)
        if stored is not None:
            self.say("dataset step: reusing the stored result")
            pairs = [self.dataset.pairs[i].swapped() if swapped else self.dataset.pairs[i]
                     for i, swapped in stored["pairs"]]
            self.outcome = PipelineOutcome(pairs, stored["stages"], stored["candidate_metrics"])
            return stored["final"]
        self.outcome = run_pipeline(self.plan, self.spec, self.dataset, executor, unembed)
        if not self.outcome.pairs:
            return {"clean": {}, "corrupted": {}}
        metrics = pair_metrics(executor, unembed, self.outcome.pairs, self.plan.metrics_needed, "baselines")
        final = {r: {k: v.tolist() for k, v in m.items()} for r, m in metrics.items()}
        store.put("dataset", key, {"pairs": _pair_references(self.dataset.pairs, self.outcome.pairs),
                                   "stages": self.outcome.stages,
                                   "candidate_metrics": self.outcome.candidate_metrics, "final": final})
        return final

    def _run_analyses(self, store: "StepStore", key: str) -> Dict[str, Any]:
        from ..analyses.base import Result
        from ..analyses.registry import REGISTRY

        out = {}
        all_pairs, all_baselines = self.context.pairs, self.context.baselines
        for index, (step, params) in enumerate(zip(self.plan.analyses, self.spec.analyses)):
            self.context.analysis_index = index
            self.context.pairs, self.context.baselines = all_pairs, all_baselines
            if params.get("max_pairs") and params["max_pairs"] < len(all_pairs):
                self._restrict(params["max_pairs"])
            impl = REGISTRY[step.kind].implementation()
            # Chained: earlier results feed later ones. The spec's seed is part of the key because
            # an analysis may draw from it (head_detection's random tokens): a seed sweep must
            # never reuse another seed's result.
            key = digest("analysis", key, step.kind, params, self.spec.seed)
            t = time.perf_counter()
            stored = store.get("analysis", key)
            if stored is not None:
                self.say(f"analysis {step.id} ({step.kind}): reusing the stored result")
                result = Result(stored["data"], stored["tables"], stored["summary"])
            else:
                self.say(f"analysis {step.id} ({step.kind})")
                result = _json_roundtrip(impl.compute(params, self.context))
                store.put("analysis", key, {"data": result.data, "tables": result.tables,
                                            "summary": result.summary})
            self.context.results[step.id] = result
            self.figures[step.id] = impl.figures(result, self.context)
            self.timings[f"analysis:{step.id}"] = time.perf_counter() - t
            out[step.id] = {"kind": step.kind, "summary": result.summary, "pairs_used": len(self.context.pairs),
                            **result.data}
            if result.summary:
                self.say(f"  {result.summary}")
        self.context.pairs, self.context.baselines = all_pairs, all_baselines
        return out

    def _restrict(self, n: int) -> None:
        """The first n pairs, with their own baselines (patching normalises against them)."""
        metric = self.plan.metric
        self.context.pairs = self.context.pairs[:n]
        self.context.baselines = {r: float(sum(self.final[r][metric][:n]) / n) for r in ("clean", "corrupted")}

    def _results(self, final, baselines, analyses, executor) -> Dict[str, Any]:
        from ..report.provenance import provenance

        pairs = self.outcome.pairs
        return {
            "spec": {"file": self.spec.file, "name": self.spec.name, "hash": self.spec.hash()},
            "provenance": provenance(self),
            "dataset": {
                "candidates": len(self.dataset.pairs),
                "vocab": {n: {"before": r.before, "after": r.after, "dropped": r.dropped}
                          for n, r in self.dataset.vocab.items()},
                "stages": self.outcome.stages,
                "final_pairs": len(pairs),
                "token_lengths": sorted({len(p.clean.ids) for p in pairs}),
            },
            "metric": self.plan.metric,
            "baselines": baselines,
            "per_prompt": final,
            "candidate_metrics": self.outcome.candidate_metrics,
            "analyses": analyses,
            "timings": self.timings,
            "forward_passes": executor.forwards,
            "store": {"reused": self.store.hits, "computed": self.store.computed},
            "warnings": list(self.dataset.warnings) + executor.warnings,
        }


def _model_location(spec):
    """The spec field a model-loading fault is about."""
    from ..spec.model import SOURCES

    source = SOURCES.get(spec.model.source)
    field = source.fault_field if source else None
    return spec.loc("model", field) if field and field in spec.data["model"] else spec.loc("model", "source")


def _pair_references(candidates, pairs) -> List[List[Any]]:
    """Each final pair as [candidate index, swapped?], so a stored dataset step rebuilds exactly."""
    by_text = {}
    for i, pair in enumerate(candidates):
        by_text.setdefault((pair.clean.text, pair.corrupted.text), [i, False])
        by_text.setdefault((pair.corrupted.text, pair.clean.text), [i, True])
    return [by_text[(p.clean.text, p.corrupted.text)] for p in pairs]


def _json_roundtrip(result):
    """A result exactly as the store would give it back, so first runs and reruns agree."""
    import json

    from ..analyses.base import Result

    data = json.loads(json.dumps({"data": result.data, "tables": result.tables}))
    return Result(data["data"], data["tables"], result.summary)


def _check_token_ids(session: "Session") -> None:
    """The compiler's tokenizer and the model's must agree, or every position is off."""
    from ..errors import RunError

    if not session.dataset.pairs:
        return
    pair = session.dataset.pairs[0]
    bridge = session.loaded.bridge
    ids = bridge.to_tokens(pair.clean.text, prepend_bos=session.plan.model.prepend_bos)[0].tolist()
    if ids != list(pair.clean.ids):
        raise RunError("the model's tokenizer splits the prompts differently from the spec's tokenizer "
                       f"({len(ids)} vs {len(pair.clean.ids)} tokens for '{pair.clean.text}')",
                       session.spec.loc("model", "tokenizer") if session.spec.model.tokenizer else
                       session.spec.loc("model"), hint="point model.tokenizer at the model's own tokenizer")
