"""Interchange interventions: does the network compute the spec's causal model's variables?

For each counterfactual example (a base prompt, a source prompt; causal/counterfactuals.py) and
each site (a layer x a named position x a component: resid_pre, resid_mid, attn_out, mlp_out, or
one head's z), the base run's activation at the site is replaced by the source run's (the whole
vector), or only its part in a subspace (a featurizer: DAS's learned rotation, PCA, a random
one): h <- h + (W^T h_source - W^T h) W^T with W [d, k] orthonormal columns. Each variable's
label is the causal model's output recomputed with that variable taken from the source; IIA is
the share of examples whose intervened prediction is the label. The engine is
analyses/_interchange/ (sites, engine, featurizers, training, saved subspaces, figures).
"""
from __future__ import annotations

from ..errors import FileAccessError, SpecMeaningError
from ._interchange.settings import COMPONENTS, InterchangeParams
from .base import Result, step
from .registry import analysis


@analysis("interchange",
          "Interchange interventions testing the spec's causal_model: each variable's counterfactual label "
          "against the network's prediction with a site's activation (or a DAS, PCA or random subspace of it) "
          "taken from the source prompt; IIA and the logit difference toward the label per site.",
          InterchangeParams, needs_pairs=True, metrics="none")
class Interchange:
    def compile(self, params: InterchangeParams, ctx):
        from ..causal import compile_source, has_causal_model, load_causal_model
        from ..causal.model import check_variable_names

        spec = ctx.spec
        if not has_causal_model(spec):
            raise SpecMeaningError("interchange tests a causal model, but the spec has no `causal_model:` block",
                                   ctx.where("kind"), hint="add causal_model: {variables: {...}, output: ...} "
                                                           "(docs/hypotheses.md)")
        model, reader = load_causal_model(spec)
        check_variable_names(spec, model, params.variables, lambda i: ctx.where("variables", i))
        source = params.source
        rule = compile_source(spec, source if isinstance(source, str) else dict(source), model, reader,
                              ctx.path("source"), spec.seed)
        components = params.components
        if params.heads is not None and "z" not in components:
            raise SpecMeaningError("`heads` selects heads of component z, which this analysis does not "
                                   "interchange", ctx.where("heads"), hint="add z to components")
        ctx.heads(params)
        ctx.positions(params, "positions", ctx.slots())
        _check_featurizer(params, ctx)
        slot = params.training.get("split_slot") if params.training else None
        if slot is not None and slot not in ctx.slots():
            raise SpecMeaningError(f"split_slot '{slot}' is not a slot of the prompts",
                                   ctx.where("training", "split_slot"))
        compiled = params
        if params.subspace is not None:
            compiled = params.replace(subspace=_subspace_path(ctx, params.subspace))
        # the base run's residual entering each site's layer (prefix reuse) and the unembedding's input
        hooks = tuple(dict.fromkeys(tuple(COMPONENT_HOOKS[c] for c in components)
                                    + ("blocks.{L}.hook_resid_pre", "unembed.hook_in")))
        what = params.featurizer if params.subspace is None else "a saved subspace"
        description = (f"interchange {', '.join(params.variables)} ({rule.describe()}) at "
                       f"{'/'.join(components)} sites, {what}; IIA over {params.iia_over}")
        return step(ctx, compiled, description, hooks=hooks, positions="all")

    def files_read(self, params):
        """The saved subspace it reads (its content joins the stored result's key)."""
        return [params.subspace] if params.subspace else []

    def cost(self, params, inputs):
        """Each site (component x layer x position column, a head each for z) patched into every example
        once per variable, after the base and source runs; DAS's training forwards and backwards are its
        own estimate (`estimate`, the plan's training line)."""
        from ..compile.cost import Cost

        layers = len(set(params.layers)) if params.layers else inputs.layers
        columns = len(params.positions) if isinstance(params.positions, (tuple, list)) else 1
        per_layer = sum(inputs.heads if c == "z" else 1 for c in params.components)
        sites = layers * columns * per_layer
        patched = sites * len(params.variables) * inputs.pairs
        return Cost(cells=sites * len(params.variables), forward_rows=patched + 2 * inputs.pairs,
                    patched_rows=patched, tokens_per_row=inputs.width,
                    note="DAS training: see the training estimate" if params.featurizer == "das" else "")

    def estimate(self, params, prepared):
        """`mi-run plan`'s estimate of DAS training time and memory (None for other featurizers)."""
        from ._interchange.estimate import estimate

        return estimate(params, prepared)

    def compute(self, params, run) -> Result:
        from ._interchange.run import compute

        return compute(params, run)

    def figures(self, result, run):
        from ._interchange.figures import figures

        return figures(result.data)

    def files(self, result, run):
        """The learned subspaces as safetensors files (subspaces/<id>/...), with their provenance."""
        from ._interchange.saved import files

        return files(result.data)


COMPONENT_HOOKS = {c: ("blocks.{L}.attn.hook_z" if c == "z" else f"blocks.{{L}}.hook_{c}") for c in COMPONENTS}


def _check_featurizer(params, ctx) -> None:
    if params.subspace is not None and ctx.written("featurizer"):
        raise SpecMeaningError("`subspace` interchanges in a saved subspace, so it takes no `featurizer`",
                               ctx.where("featurizer"), hint="remove featurizer, or remove subspace to train one")
    featurized = params.featurizer != "full" or params.subspace is not None
    for key in ("dims", "training"):
        if ctx.written(key) and not featurized:
            raise SpecMeaningError(f"`{key}` applies to a featurizer (das, pca, random), but this analysis "
                                   "interchanges the full vector", ctx.where(key),
                                   hint="add featurizer: das (or pca, random)")
    if params.subspace is not None and ctx.written("dims"):
        raise SpecMeaningError("a saved subspace has its own dimensions", ctx.where("dims"), hint="remove dims")
    training = params.training or {}
    if training.get("split") == "slot" and "split_slot" not in training:
        raise SpecMeaningError("split: slot needs `split_slot`, the slot whose values are held out",
                               ctx.where("training", "split"))


def _subspace_path(ctx, written: str) -> str:
    """The saved subspace's absolute path: relative to the spec that names it, inside its tree (spec/paths.py's
    one confinement rule)."""
    from ..spec.paths import confine

    spec = ctx.spec
    key = ctx.path("subspace")
    path = confine(written, spec.source.file_of(key), spec.allowed_roots, ctx.where("subspace"), "subspace file")
    if not path.is_file():
        raise FileAccessError(f"subspace file '{path}' does not exist", ctx.where("subspace"),
                              hint="a run with featurizer: das writes subspaces/<id>/*.safetensors into its run "
                                   "directory; copy one next to the spec")
    return str(path)
