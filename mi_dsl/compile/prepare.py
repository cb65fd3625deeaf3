"""The prepare stage: a spec file -> Spec, tokenizer, Dataset and Plan (no torch).

The CLI's subcommands, `mi_dsl.run` and the benchmarks all start here, so every way of
running a spec validates and compiles it the same way, loading its tokenizer once.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from ..errors import RunError, SpecMeaningError

if TYPE_CHECKING:  # names only: prepare imports these stages when it runs them
    from ..core.plan import Plan
    from ..dataset.build import Dataset
    from ..dataset.tokenizer import Tokenizer
    from ..spec.resolve import Spec


@dataclass(frozen=True)
class Prepared:
    spec: "Spec"
    plan: "Plan"
    dataset: Optional["Dataset"]      # None when no tokenizer is available (validate only)
    tokenizer: Optional["Tokenizer"]
    skipped: Optional[str] = None  # why tokenizer checks were skipped


def prepare(spec_path, overrides: Sequence[str] = (), allow_paths: Sequence[str] = (),
            need_tokenizer: bool = True, limits=None) -> Prepared:
    """Load, validate and compile a spec, with its dataset when its tokenizer is available; `limits`:
    bounds raised from the command line (mi_dsl/limits.py: --limit NAME=N strings or a mapping)."""
    from ..limits import using

    with using(limits):
        return _prepare(spec_path, overrides, allow_paths, need_tokenizer)


def _prepare(spec_path, overrides, allow_paths, need_tokenizer: bool) -> Prepared:
    from ..causal import check_causal_model
    from ..dataset import build_dataset, check_without_tokenizer
    from ..dataset.tokenizer import TokenizerUnavailable, load_tokenizer
    from ..spec import load_spec
    from .alignment import check_alignment
    from ..models.sources import model_shape
    from .shapes import check_model_shape, check_positions, check_prompt_indices
    from .compiler import compile_plan

    spec = load_spec(str(spec_path), list(overrides), [Path(p) for p in allow_paths])
    check_without_tokenizer(spec)  # prompts before analyses: faults reported in file order
    _check_custom_code(spec)
    check_causal_model(spec)       # the causal_model: block's expressions (issue 23)
    plan = compile_plan(spec)
    check_model_shape(spec, plan, model_shape(spec.model))
    try:
        tokenizer = load_tokenizer(spec.model, spec.bos_token, tokenizer_location(spec))
    except TokenizerUnavailable as why:
        if need_tokenizer:
            raise RunError(f"{why}; pass one with --set model.tokenizer=PATH", spec.loc("model")) from None
        return Prepared(spec, plan, None, None, str(why))
    _check_bos(spec, tokenizer)
    plan = plan.bound(tokenizer)  # an expression metric's strings become this tokenizer's ids (located)
    dataset = build_dataset(spec, tokenizer)
    _warn_without_corruption(spec, plan, dataset)
    check_causal_model(spec, dataset, tokenizer)  # every variable computes on every prompt
    check_positions(spec, plan, dataset)
    check_prompt_indices(spec, plan, dataset)
    check_alignment(spec, plan, dataset)
    tokenizer.remember()  # the next run of this spec may not need to parse it (dataset/token_memo.py)
    return Prepared(spec, plan, dataset, tokenizer)


def tokenizer_location(spec):
    """Where tokenizer faults point: `model.tokenizer` when the spec names one, else `model`."""
    return spec.loc("model", "tokenizer") if "tokenizer" in spec.data["model"] else spec.loc("model")


def _warn_without_corruption(spec, plan, dataset) -> None:
    """Without `corrupt:` every corrupted prompt is its clean prompt: say so when something reads them."""
    from ..core.registry import REGISTRY
    from ..errors import SpecWarning

    if "prompts" not in spec.data or "corrupt" in spec.prompts or not dataset.pairs:
        return
    readers = [step.id for step in plan.analyses if REGISTRY[step.kind].needs_pairs]
    readers += [f"pipeline[{i}]" for i, step in enumerate(spec.pipeline)
                if "corrupted" in str(step.get("keep", "")) or step.get("symmetric")]
    if readers:
        dataset.warnings.append(SpecWarning(
            "prompts has no `corrupt:`, so every corrupted prompt equals its clean prompt; "
            f"{', '.join(readers)} compare(s) each prompt with itself", spec.source.key(("prompts",)),
            hint="add corrupt: {swap: SLOT}, {resample: SLOT} or {set: {SLOT: EXPRESSION}}"))


def _check_custom_code(spec) -> None:
    """A model whose config names its own code (auto_map) is refused before anything loads: a spec
    is data, and mi-dsl never runs code from a model folder (trust_remote_code)."""
    from ..models.sources import custom_code

    code = custom_code(spec.model)
    if code:
        field = "path" if spec.model.source == "local" else "name"
        raise SpecMeaningError(f"this model needs its own Python code ({code}), which mi-dsl never runs "
                               "(transformers' trust_remote_code)", spec.loc("model", field),
                               hint="use a model whose architecture transformers supports natively")


def _check_bos(spec, tokenizer) -> None:
    if spec.model.prepend_bos and tokenizer.bos_id is None:
        raise SpecMeaningError("prepend_bos is true but the tokenizer names no BOS token",
                               spec.loc("model", "prepend_bos"),
                               hint="set model.bos_token to the BOS token's text, e.g. <|endoftext|>")
