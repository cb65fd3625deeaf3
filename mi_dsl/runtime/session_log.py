"""A session's frozen record (RunLog): what `execute` returns and the report and `Results` read.

Everything is read from the Session after its steps ran; the model is read only if a step loaded it
(a rerun whose every step was stored records the weights' id and fingerprint instead).
"""
from __future__ import annotations

from ..core.log import RUN_LOG_VERSION, RunLog
from ..errors import SpecWarning
from .store import StepStore


def session_log(session, store: StepStore) -> RunLog:
    """`session`: runtime/run.py's Session, once its steps ran (or the pipeline left nothing)."""
    from ..compile.summary import plan_steps
    from .provenance import provenance
    from ..dataset.examples import pair_examples, pair_rows

    warnings_ = (list(session.dataset.warnings) + session.load_warnings + session.executor.warnings
                 + getattr(session, "library_warnings_caught", []))
    model = session.spec.model
    return RunLog.build(
        figures=session.figures,
        files=session.files,
        format_version=RUN_LOG_VERSION,
        status=getattr(session, "status", "complete"),
        spec={"file": session.spec.file, "name": session.spec.name, "hash": session.spec.hash(),
              "description": session.spec.data.get("description", ""), "resolved": session.spec.data},
        plan={"model": {"source": model.source, "name": model.name, "path": model.path,
                        "prepend_bos": model.prepend_bos},
              "tokenizer": session.tokenizer.origin, **plan_steps(session.plan, len(session.dataset.pairs))},
        dataset={
            "candidates": len(session.dataset.pairs),
            "vocab": {n: {"before": r.before, "after": r.after, "dropped": r.dropped}
                      for n, r in session.dataset.vocab.items()},
            "stages": session.stages,
            "final_pairs": len(session.pairs),
            "token_lengths": sorted({len(p.clean.ids) for p in session.pairs}),
            "pairs": pair_rows(session.pairs, session.tokenizer),
            # the pairs the last keep-condition read, their metrics in candidate_metrics (same order)
            "candidate_pairs": pair_rows(session.candidates[0], session.tokenizer, session.candidates[1]),
            "examples": pair_examples(session.pairs[:4], session.tokenizer),
        },
        metric=session.plan.metric,
        baselines=session.baselines,
        per_prompt=session.final,
        candidate_metrics=session.candidate_metrics,
        analyses=session.summaries,
        tables={k: r.tables for k, r in session.results.items()},
        timings=session.timings,
        forward_passes=session.executor.forwards,
        store={"reused": store.hits, "computed": store.computed, "distrusted": list(store.distrusted)},
        provenance=provenance(session.spec, session.plan, session.loaded if session.model_loaded else None,
                              session.tokenizer),
        # located SpecWarnings and plain runtime messages (str.format would read a brace in them)
        warnings=[w.format() if isinstance(w, SpecWarning) else str(w) for w in warnings_],
        threads=session.thread_policy.record() or {"threads": None, "reason": "nothing computed: every step "
                                                                          "came from the store"},
        shared_passes=session.plan.pass_log(session.pass_forwards),
    )
