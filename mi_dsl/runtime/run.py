"""Run a prepared spec: a function from (Spec, Plan, Dataset) to a frozen RunLog.

    spec file --compile.prepare--> Prepared(spec, plan, dataset, tokenizer)
      --execute--> RunLog (core/log.py) --report.write_report (running.py)--> runs/<name>/<timestamp>/

`execute` loads the model, runs the dataset step (pipeline + final metrics) and each
analysis through the step store, and returns the log; nothing it hands out is mutated
afterwards. Each analysis computes on its own `RunContext`: a tuple of its pairs (its
`max_pairs` prefix), its baselines and a read-only view of the results before it.
The front layer (mi_dsl/running.py: run_spec, run_prepared) executes and then writes the
report; the runtime never imports the report. `Session` holds the live side (model, executor) while `execute`
runs; its steps are public so the benchmarks time exactly what a run does.
"""
from __future__ import annotations

import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ..spec.model import fault_location
from ..errors import Location, MiError, NoPromptsLeft, SpecWarning
from ..core.log import RunLog
from .checks import check_token_ids as _check_token_ids, json_roundtrip as _json_roundtrip
from .folders import runs_root_of
from .store import StepStore, digest

if TYPE_CHECKING:
    import torch

    from ..dataset.build import PromptPair


def progress_printer(progress: bool) -> Callable[[str], None]:
    """Progress lines as `[mi-run] ...` on stderr (none when `progress` is False)."""
    def say(message: str) -> None:
        if progress:
            print(f"[mi-run] {message}", file=sys.stderr, flush=True)
    return say


def _print_warning(warning: SpecWarning) -> None:
    """Warnings print even without progress lines, as FILE:LINE:COL: warning: ... (editors jump there)."""
    print(warning.format(), file=sys.stderr, flush=True)




def execute(prepared, *, started: Optional[float] = None, fresh: bool = False, store_dir: Optional[Path] = None,
            progress: bool = True, threads: Optional[int] = None) -> RunLog:
    """Run the plan: model, dataset step, analyses. Returns the frozen run log."""
    started = time.perf_counter() if started is None else started
    from ..models.environment import collector_paused

    run = Session.of(prepared, progress, threads=threads)
    with run.library_warnings(), collector_paused() as loaded:
        run.open(started, load=False, on_load=loaded)  # loaded by the first step that is not stored
        loaded()
        store = StepStore(store_dir or runs_root_of(prepared.spec) / prepared.spec.name / ".store",
                          reuse=not fresh)
        try:
            run.dataset_step(store)
        except NoPromptsLeft as err:
            run.failed(err)
            err.log = run.log(store)
            raise
        run.analyses(store)
    run.timings["total"] = time.perf_counter() - started
    from ..compile.cost import record_rate

    if run.model_loaded:
        record_rate(prepared.plan.model, run.loaded.device.type, run.executor.forward_tokens,
                    run.executor.forward_seconds)
    else:
        run.say("every step came from the store: the model was not loaded (--fresh recomputes)")
    return run.log(store)


def run_context(prepared, progress: bool = False):
    """The RunContext of a finished run (all pairs, every analysis's result), for calling analyses
    by hand in tests and notebooks; nothing is stored or written."""
    import tempfile

    run = Session.of(prepared, progress)
    run.open()
    with tempfile.TemporaryDirectory() as scratch:  # the store writes every step it computes
        store = StepStore(Path(scratch), enabled=False)
        run.dataset_step(store)
        run.analyses(store)
    return run.context_for(run.pairs, run.baselines, len(prepared.spec.analyses), dict(run.results))


class Session:
    """The live side of one run: model, executor, results so far. `execute` drives it and turns
    it into the RunLog; the benchmarks call its steps (open, run_pipeline, context_for,
    compute_analysis) to time exactly what a run does. Nothing after the run receives it: the
    report and `Results` read the frozen log."""

    # (the pairs the last keep-condition read, whether each was kept)
    candidates: Tuple[Sequence[PromptPair], Sequence[bool]] = ((), ())

    def __init__(self, spec, plan, dataset, tokenizer, progress: bool = True,
                 say: Optional[Callable[[str], None]] = None, threads: Optional[int] = None):
        self.spec, self.plan, self.dataset, self.tokenizer = spec, plan, dataset, tokenizer
        # threads asked for (None: runtime/threads.py) and chosen; shared passes' captures and forwards
        self.threads = threads
        self.thread_choice: Dict[str, object] = {}
        self.shared: Dict[Any, Dict[str, torch.Tensor]] = {}
        self.pass_forwards: Dict[str, int] = {}
        self.say, self.progress = say or progress_printer(progress), progress
        self.timings: Dict[str, float] = {}
        self.load_warnings: List[SpecWarning] = []  # the model loader's (a rebuilt cache entry)
        self.results: Dict[str, Any] = {}     # analysis id -> Result
        self.figures: Dict[str, list] = {}
        self.files: Dict[str, Dict[str, str]] = {}  # analysis id -> {relative path: text} for the run directory
        self.summaries: Dict[str, Dict[str, Any]] = {}
        for warning in self.dataset.warnings:
            _print_warning(warning)

    @contextmanager
    def library_warnings(self):
        """A Python warning from a library during the run becomes a located warning at the spec
        file (no Python source path on the terminal), kept in the run log."""
        caught: List[SpecWarning] = []

        def show(message, category, filename, lineno, file=None, line=None):
            module = Path(filename).stem
            warning = SpecWarning(f"{category.__name__} from {module}: {message}", Location(self.spec.file))
            caught.append(warning)
            _print_warning(warning)

        with warnings.catch_warnings():
            warnings.showwarning = show
            yield
        self.library_warnings_caught = caught

    @classmethod
    def of(cls, prepared, progress: bool = True, say: Optional[Callable[[str], None]] = None,
           threads: Optional[int] = None) -> "Session":
        return cls(prepared.spec, prepared.plan, prepared.dataset, prepared.tokenizer, progress, say, threads)

    def open(self, started: Optional[float] = None, *, load: bool = True,
             on_load: Optional[Callable[[], None]] = None) -> None:
        """Set torch's threads and make the executor and unembedding over the model, loaded now, or
        (load=False) when a step first needs it: a rerun whose every step is stored never loads it.
        `on_load` runs after the load (the run freezes what it made for the collector)."""
        from ..models.environment import collector_paused

        with collector_paused():  # the imports and the load build objects that live for the run
            self._open(started, on_load)
            if load:
                self.loaded.deferred_value()

    def _open(self, started: Optional[float], on_load: Optional[Callable[[], None]]) -> None:
        import torch

        from .deferred import Deferred
        from .executor import Executor
        from .threads import ThreadPolicy, device_type_of
        from .unembed import Unembed

        # measured over the model's load (what other processes use meanwhile), then before each step
        self.thread_policy = ThreadPolicy(self.threads, device_type_of(self.plan.model.device))
        self.thread_policy.start()
        self.say(f"{len(self.dataset.pairs)} candidate prompts")
        torch.manual_seed(self.spec.seed)  # nothing draws from torch's generator before the load
        self._started, self._on_load = started, on_load
        self.loaded = Deferred(self._load, then=self._model_ready)
        self.executor = Executor(self.loaded, self.plan.batch_size, self.plan.memory_gb, self.progress,
                                 on_warning=_print_warning)
        self.unembed = Deferred(lambda: Unembed.of(self.loaded.bridge))

    def _load(self):
        import torch

        from ..models import load_model

        self.say(f"loading model ({self.spec.model.source})")
        self._load_started = time.perf_counter()
        try:
            with torch.enable_grad():  # as an eager load: a step may trigger it inside no_grad
                return load_model(self.plan.model, progress=self.say if self.progress else None)
        except MiError as err:  # the loader knows what failed, the spec knows where it was asked for
            raise err.at(fault_location(self.spec, err.location.path)) from None

    def _model_ready(self, loaded) -> None:
        for fault in loaded.info.get("cache_repairs", ()):  # rebuilt, but the user should know
            self.load_warnings.append(SpecWarning(f"a cached model file failed its checksum and was rebuilt: {fault}",
                                                  fault_location(self.spec)))
            _print_warning(self.load_warnings[-1])
        self.thread_choice = self.thread_policy.apply("model load")
        t = self._load_started
        self.timings["model_load"] = time.perf_counter() - t
        self.timings["launch_to_model_ready"] = time.perf_counter() - (t if self._started is None else self._started)
        self.say(f"model ready in {self.timings['model_load']:.1f}s ({loaded.info.get('id')})")
        _check_token_ids(self)
        if self._on_load is not None:
            self._on_load()

    @property
    def model_loaded(self) -> bool:
        return self.loaded.deferred_made()

    def dataset_step(self, store: StepStore) -> None:
        """The pipeline and the final pairs' metrics, from the store when this exact step ran before."""
        import torch

        from ..models.sources import source_of
        from .pipeline import pair_metrics, warn_unchanged

        try:  # what the loaded model's info says, read without loading it
            source = source_of(self.plan.model)
            weights = source.model_id(self.plan.model), source.fingerprint(self.plan.model)
        except MiError as err:  # a model file gone: located as the load would locate it
            raise err.at(fault_location(self.spec, err.location.path)) from None
        # Everything a later step reads besides its own parameters: the slot values and the vocabularies'
        # items with their fields and the causal model (an interchange's variables read them, not only the
        # token ids)
        self.key = digest("dataset", self.plan.model.identity(), *weights, self.tokenizer.origin,
                          self.tokenizer.content,
                          [(p.clean.ids, p.corrupted.ids, p.answers, p.foils, p.values, p.corrupted_values)
                           + (("continuation",) if p.continuation else ())
                           for p in self.dataset.pairs],
                          self.plan.metrics_needed, self.plan.metric, [s.params for s in self.plan.pipeline],
                          {name: v.content() for name, v in self.spec.vocabularies.items()},
                          self.spec.data.get("causal_model"))
        t = time.perf_counter()
        self.executor.where = self.spec.loc("pipeline") if "pipeline" in self.spec.data else Location(self.spec.file)
        stored = store.get("dataset", self.key, warn=self.executor.warn)
        if stored is not None:
            self.say("dataset step: reusing the stored result")
            pairs = [self.dataset.pairs[i].swapped() if swapped else self.dataset.pairs[i]
                     for i, swapped in stored["pairs"]]
            self.stages, self.candidate_metrics, self.final = (stored["stages"], stored["candidate_metrics"],
                                                               stored["final"])
            self.candidates = ([self.dataset.pairs[i].swapped() if swapped else self.dataset.pairs[i]
                                for i, swapped in stored.get("candidates", [])], stored.get("kept", []))
        else:
            self.loaded.deferred_value()  # the pipeline runs the model: loaded first, so its time is its own
            t = time.perf_counter()
            self.thread_policy.apply("pipeline")
            memo: Dict[tuple, Any] = {}  # the keep-condition's final residuals serve the final pairs' metrics
            with torch.no_grad():
                outcome = self.run_pipeline(memo=memo)
                pairs = outcome.pairs
                self.final = {"clean": {}, "corrupted": {}}
                if pairs:
                    metrics = pair_metrics(self.executor, self.unembed, pairs, self.plan.metrics, "baselines",
                                           memo)
                    self.final = {r: {k: v.tolist() for k, v in m.items()} for r, m in metrics.items()}
            self.stages, self.candidate_metrics = outcome.stages, outcome.candidate_metrics
            self.candidates = (outcome.candidate_pairs, outcome.candidate_kept)
            if pairs:
                store.put("dataset", self.key, {"pairs": _pair_references(self.dataset.pairs, pairs),
                                                "stages": self.stages, "candidate_metrics": self.candidate_metrics,
                                                "final": self.final, "kept": self.candidates[1],
                                                "candidates": _pair_references(self.dataset.pairs,
                                                                               self.candidates[0])})
        warn_unchanged(self.spec, self.stages, self.executor)
        self.pairs = tuple(pairs)
        self.baselines = self._baselines(len(self.pairs))
        self.timings["pipeline"] = time.perf_counter() - t
        if self.pairs:
            self.say(f"dataset: {len(self.pairs)} prompt pairs after the pipeline; baselines ({self.plan.metric}): "
                     f"clean {self.baselines['clean']:.4f}, corrupted {self.baselines['corrupted']:.4f}")

    def failed(self, err) -> None:
        """The pipeline left nothing: keep what it measured (the candidates of its last keep step)."""
        self.stages, self.candidate_metrics = err.outcome.stages, err.outcome.candidate_metrics
        self.candidates = (err.outcome.candidate_pairs, err.outcome.candidate_kept)
        self.pairs, self.final, self.baselines = (), {"clean": {}, "corrupted": {}}, {}
        self.status = f"failed: {err.message}"

    def _baselines(self, n: int) -> Dict[str, float]:
        """Mean metric of the first n final pairs (patching normalises against them)."""
        if not n:
            return {}
        return {r: float(sum(self.final[r][self.plan.metric][:n]) / n) for r in ("clean", "corrupted")}

    def run_pipeline(self, candidates=None, memo=None):
        """The plan's pipeline (keep, sample, symmetric) over the dataset's candidates or `candidates`."""
        import dataclasses

        from .pipeline import run_pipeline

        dataset = self.dataset if candidates is None else dataclasses.replace(self.dataset, pairs=list(candidates))
        return run_pipeline(self.plan, self.spec, dataset, self.executor, self.unembed, memo)

    def context_for(self, pairs, baselines: Optional[Mapping[str, float]] = None, index: int = 0,
                    earlier: Optional[Mapping[str, Any]] = None):
        """What an analysis computes with: `pairs` as a tuple, their baselines (measured unless
        given), the results before it."""
        from .context import RunContext
        from .pipeline import pair_metrics

        if baselines is None and pairs:
            import torch

            with torch.no_grad():
                metrics = pair_metrics(self.executor, self.unembed, pairs, [self.plan.main_metric], "baselines")
            baselines = {r: float(metrics[r][self.plan.metric].mean()) for r in ("clean", "corrupted")}
        return RunContext(self.executor, self.unembed, self.spec, self.plan, self.tokenizer, tuple(pairs),
                          results=earlier if earlier is not None else {}, baselines=baselines or {},
                          analysis_index=index, shared=self.shared, pass_forwards=self.pass_forwards)

    def compute_analysis(self, analysis_id: str, context):
        """One analysis of the plan on `context` as a run computes it."""
        import torch

        from ..core.registry import REGISTRY

        index = next(i for i, s in enumerate(self.plan.analyses) if s.id == analysis_id)
        context.analysis_index = index
        with torch.no_grad():
            step = self.plan.analyses[index]
            return REGISTRY[step.kind].implementation().compute(step.params, context)

    def analyses(self, store: StepStore) -> None:
        import torch

        from ..core.registry import REGISTRY
        from ..core.result import Result, check

        key = self.key
        for index, step in enumerate(self.plan.analyses):
            params = step.params  # compiled: compute never reads the spec's raw mapping
            n = min(params.max_pairs or len(self.pairs), len(self.pairs))
            # Its own view: a tuple of its pairs, its baselines, the earlier results read-only.
            run = self.context_for(self.pairs[:n], MappingProxyType(self._baselines(n) if n < len(self.pairs)
                                                                    else self.baselines),
                                   index, MappingProxyType(dict(self.results)))
            self.executor.where = self.spec.loc("analyses", index)
            run.pair_indices = list(range(n))
            impl = REGISTRY[step.kind].implementation()
            # Chained: earlier results feed later ones. The spec's seed is part of the key because
            # an analysis may draw from it (head_detection's random tokens): a seed sweep must
            # never reuse another seed's result.
            key = digest("analysis", key, step.kind, params, self.spec.seed, _files_read(impl, params))
            t = time.perf_counter()
            stored = store.get("analysis", key, warn=self.executor.warn)
            if stored is not None:
                self.say(f"analysis {step.id} ({step.kind}): reusing the stored result")
                result = Result.from_record(stored["record"], stored["tables"])
            else:
                self.say(f"analysis {step.id} ({step.kind})")
                self.thread_policy.apply(step.id)
                with torch.no_grad():
                    result = impl.compute(params, run)
                if isinstance(result, Result) and result.pairs is None:  # the envelope: which pairs it used
                    result.pairs = _pairs_record(REGISTRY[step.kind], run)
                check(result, step.kind)
                result = _json_roundtrip(result)
                store.put("analysis", key, {"record": result.record(), "tables": result.tables})
            self.results[step.id] = result
            self.figures[step.id] = impl.figures(result, run)
            if hasattr(impl, "files"):  # extra files an analysis writes into the run directory
                self.files[step.id] = impl.files(result, run)
            self.timings[f"analysis:{step.id}"] = time.perf_counter() - t
            self.summaries[step.id] = {"kind": step.kind, "pairs_used": n, **result.record(),
                                       "figures": [name for name, _ in self.figures[step.id]]}
            if result.summary:
                self.say(f"  {result.summary}")

    def log(self, store: StepStore) -> RunLog:
        """The frozen record of this run (runtime/session_log.py)."""
        from .session_log import session_log

        return session_log(self, store)


def _files_read(impl, params) -> List[str]:
    """The content of the files an analysis reads besides the model (`files_read(params)`, e.g. a saved
    subspace), for its stored result's key: a file saved again under the same name is read again."""
    from ..models.cache import file_fingerprint

    read = getattr(impl, "files_read", None)
    return [file_fingerprint(Path(path)) for path in read(params)] if read is not None else []


def _pairs_record(kind, context) -> Dict[str, Any]:
    """Which final prompt pairs a result used (indices into the run's final dataset), so two
    results are only ever compared on the same pairs. An analysis that reads fewer (one prompt,
    a literal text) records its own `pairs` in its Result."""
    from ..core.result import pairs_record

    if not kind.needs_dataset:
        return pairs_record([], "runs on its own inputs, not the dataset's pairs")
    return pairs_record(context.used_pair_indices())


def _pair_references(candidates, pairs) -> List[List[Any]]:
    """Each final pair as [candidate index, swapped?], so a stored dataset step rebuilds exactly."""
    by_text: Dict[Tuple[str, str], List[Any]] = {}
    for i, pair in enumerate(candidates):
        by_text.setdefault((pair.clean.text, pair.corrupted.text), [i, False])
        by_text.setdefault((pair.corrupted.text, pair.clean.text), [i, True])
    return [by_text[(p.clean.text, p.corrupted.text)] for p in pairs]
