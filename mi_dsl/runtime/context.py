"""What an analysis sees while it computes: the model, the final dataset, earlier results.

`RunContext` also owns the shared arithmetic of attribution: logit-difference
directions, the final normalisation applied to a stack of residual components, and
each head's output at a position (post-attention norms such as Gemma's included).
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch

from ..core.plan import Plan
from ..core.result import Result
from ..dataset.build import PromptPair
from ..dataset.tokenizer import Tokenizer
from ..spec.resolve import Spec
from ..errors import RunError
from .executor import Executor, token_sets
from ..metrics import METRICS, Metric, compute_metrics
from .unembed import UNEMBED_INPUT, Unembed
from . import kv, pass_kv, patterns
from .patterns import PATTERN_HOOK
from ..compile.fusion import PATTERNS


@dataclass
class RunContext:
    executor: Executor
    unembed: Unembed
    spec: Spec
    plan: Plan
    tokenizer: Tokenizer
    pairs: Sequence[PromptPair]         # the final pairs (a tuple)
    results: Mapping[str, Result] = field(default_factory=dict)   # analysis id -> Result (read-only)
    baselines: Mapping[str, float] = field(default_factory=dict)
    analysis_index: int = 0
    pair_indices: Optional[List[int]] = None  # which final pairs `pairs` are (None: all, in order)
    fuse: bool = True                   # serve capture_final from the plan's shared passes
    shared: Dict[Any, Dict[str, torch.Tensor]] = field(default_factory=dict)  # pass key -> captures
    pass_forwards: Dict[str, int] = field(default_factory=dict)  # pass id -> forwards it ran

    # ------------------------------------------------------------------ data

    @property
    def model(self):
        return self.executor.model

    @property
    def cfg(self):
        return self.executor.cfg

    @property
    def device(self):
        return self.executor.device

    @property
    def metric(self) -> str:
        """The spec's metric's name (its text, for an expression)."""
        return self.plan.metric

    @property
    def main_metric(self) -> Metric:
        """The spec's metric, compiled and bound to the run's tokenizer (Plan.metrics)."""
        return self.plan.main_metric

    def where(self, *keys):
        return self.spec.loc("analyses", self.analysis_index, *keys)

    def tokens(self, which: str = "clean") -> torch.Tensor:
        rows = [getattr(p, which).ids for p in self.pairs]
        if len({len(r) for r in rows}) > 1:
            raise RunError("this analysis needs prompts of one token length; set prompts.equal_lengths: true "
                           "to keep the most common length (or filter the vocabularies)", self.where())
        return torch.tensor(rows, dtype=torch.long)

    def answers(self) -> torch.Tensor:
        """[N] answer tokens, or [N, K] answer token sets padded with -1."""
        return token_sets([p.answers for p in self.pairs])

    def foils(self) -> torch.Tensor:
        return token_sets([p.foils for p in self.pairs])

    def used_pair_indices(self) -> List[int]:
        """Indices into the final dataset of the pairs this analysis runs on."""
        return list(self.pair_indices) if self.pair_indices is not None else list(range(len(self.pairs)))

    def result(self, analysis_id: str):
        return self.results[analysis_id]

    # ------------------------------------------------------------------ selectors

    def select_heads(self, params, key: str = "heads") -> List[tuple]:
        """(layer, head) pairs named by the compiled head selector(s) `params.<key>`, in order, no
        repeats. top()/bottom()/top_abs() rank by an earlier result's `per_head` [layer][head] table."""
        from ..expr import Env

        env = Env(n_layers=self.cfg.n_layers, n_heads=self.cfg.n_heads, result=self._per_head_scores)
        heads: List[tuple] = []
        for selector in _selection(params, key, "heads"):
            heads += [h for h in selector.compiled.evaluate(env) if h not in heads]
        return heads

    def _per_head_scores(self, analysis_id: str):
        from ..expr.env import Fault

        result = self.results.get(analysis_id)
        table = None if result is None else result.data.get("per_head")
        if table is None:
            raise Fault(f"analysis '{analysis_id}' gives no per-head scores to rank heads by")
        return table

    def select_positions(self, params, key: str, prompts):
        """Per prompt (a dataset Prompt: ids and slot spans), the positions the compiled selector
        `params.<key>` names (its default when the spec left it out, compiled by the compiler)."""
        from ..expr import Env

        (selector,) = _selection(params, key, "positions").selectors
        return [sorted(set(selector.compiled.evaluate(Env(n_tokens=len(p.ids), slot_spans=p.spans))))
                for p in prompts]

    # ------------------------------------------------------------------ attribution arithmetic

    def require_processing(self, what: str) -> None:
        if not self.plan.model.processing.fold_ln:
            raise RunError(f"{what} reads components in HookedTransformer's processed coordinates; "
                           "set model.processing: true (fold_ln)", self.where())

    def logit_diff_directions(self) -> torch.Tensor:
        """[N, d_model]: W_U[:, answer] - W_U[:, foil] per prompt (for token sets, the mean
        column of each set, so the direction reads the set-mean logit difference exactly)."""
        a, f = self.answers().to(self.device), self.foils().to(self.device)
        return self.unembed.set_directions(a) - self.unembed.set_directions(f)

    def bias_diff(self) -> torch.Tensor:
        a, f = self.answers().to(self.device), self.foils().to(self.device)
        return self.unembed.set_bias(a) - self.unembed.set_bias(f)

    def apply_final_ln(self, stack: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """The seed's apply_ln_to_stack: centre (LayerNorm only) and divide by the final scale.

        stack [..., N, d_model]; scale [N, 1] from ln_final.hook_scale at the final position.
        """
        if self.cfg.normalization_type in ("LN", "LNPre"):
            stack = stack - stack.mean(-1, keepdim=True)
        return stack / scale

    def own_final_scale(self, stack: torch.Tensor) -> torch.Tensor:
        """[..., N, 1]: the scale the final norm would divide each residual of `stack` by, were it
        the final one (per-layer logit lens), with the final norm's epsilon."""
        x = stack.float()
        if self.cfg.normalization_type in ("LN", "LNPre"):
            x = x - x.mean(-1, keepdim=True)
        return (x.pow(2).mean(-1, keepdim=True) + self.cfg.eps).sqrt().to(stack.dtype)

    def attribute(self, stack: torch.Tensor, scale: torch.Tensor, per_prompt: bool = False) -> torch.Tensor:
        """Mean over prompts of each component's logit difference: [..., N, d] -> [...], in float32
        (half-precision models included: the captures are upcast before the arithmetic);
        `per_prompt`: each prompt's, [..., N] (their mean is the default's, to the last bit)."""
        scaled = self.apply_final_ln(stack.float(), scale.float())
        each = (scaled * self.logit_diff_directions().float()).sum(-1)
        return each if per_prompt else each.mean(-1)

    def head_outputs(self, z: torch.Tensor, layer: int, post_scale: Optional[torch.Tensor]) -> torch.Tensor:
        """Each head's write into the residual stream: z [N, H, d_head] -> [N, H, d_model].

        Models with a post-attention norm (Gemma) scale the layer's summed output by one
        per-position factor and a per-dimension weight, so the split into heads stays exact.
        """
        W_O = self.W_O()[layer]  # [H, d_head, d_model]
        out = torch.einsum("nhd,hdm->nhm", z.to(W_O.dtype), W_O)
        if post_scale is not None:
            out = out * self.post_attn_weight(layer) / post_scale[:, None, :]
        return out

    def W_O(self) -> torch.Tensor:
        if not hasattr(self, "_W_O"):
            self._W_O = self.model.W_O.detach()
        return self._W_O

    def has_post_attn_norm(self) -> bool:
        return hasattr(self.model.blocks[0], "ln1_post")

    def post_attn_weight(self, layer: int) -> torch.Tensor:
        norm = self.model.blocks[layer].ln1_post
        weight = dict(norm.named_parameters())
        w = next(iter(weight.values())).detach()
        return (1.0 + w) if getattr(self.cfg, "rmsnorm_uses_offset", False) else w

    def measured(self, kept: Dict[str, torch.Tensor]) -> float:
        """The metric of the clean run, from a captured unembedding input."""
        m = compute_metrics(kept[UNEMBED_INPUT], self.answers().to(self.device), self.foils().to(self.device),
                            [METRICS["logit_diff"]], self.unembed)
        return float(m["logit_diff"].mean())

    def capture_final(self, hooks: List[str], which: str = "clean", extra: Optional[Dict] = None,
                      interventions=(), first: Optional[Sequence[int]] = None):
        """Capture hooks at the final position over the final dataset, batched; concatenated.

        Prompts of different lengths share right-padded batches (executor.pad_right), each
        read at its own final position, so final-position analyses work without
        equal_lengths. `interventions` are (hook name, fn(act, hook, rows, first)) pairs; `rows`
        indexes the dataset's prompts of the batch, `first` is the position of the activation's
        first column (positions stay those of the unpadded prompt: padding is on the right).
        `first` (here): per prompt, the earliest position an intervention changes; when this
        analysis's shared pass kept its keys and values (runtime/pass_kv.py) the forwards run
        only from there on, and `first` of the interventions says where they start.
        """
        if not interventions and not extra and self.fuse:
            shared = self._from_shared_pass(hooks, which)
            if shared is not None:
                return shared
        past = self._pass_keys_values(which) if interventions and first is not None and self.fuse else None
        return self._capture_final(hooks, which, extra, interventions, continued=(past, first) if past else None)

    def _from_shared_pass(self, hooks: List[str], which: str) -> Optional[Dict[str, torch.Tensor]]:
        """The hooks from this analysis's shared pass (run it if it has not run on these prompts)."""
        from ..compile.fusion import expand_hooks

        step, shared = self._shared_pass(which)
        if shared is None:
            return None
        key = self._pass_key(shared)
        if key not in self.shared:
            names = expand_hooks([h for h in shared.hooks if h != PATTERNS], self.cfg.n_layers, self._has_hook)
            names = list(dict.fromkeys(names + [h for h in hooks if h != UNEMBED_INPUT]))
            counted = self.executor.forwards
            record = self._keys_values_recorder(shared, which)
            self.shared[key] = self._capture_final(names, which, fill=self._patterns_to_keep(shared, which),
                                                   record=record)
            self.pass_forwards[shared.id] = self.pass_forwards.get(shared.id, 0) + self.executor.forwards - counted
            stacked = record.stacked(len(self.pairs)) if record is not None else None
            if stacked is not None:
                self.shared[self._pass_key(shared, "keys and values")] = stacked
        # the pass's last analysis takes the captures with it: nothing later needs them (its keys and
        # values stay while that analysis may still continue the pass)
        if step.id == shared.analyses[-1] and not step.continues_pass:
            self.shared.pop(self._pass_key(shared, "keys and values"), None)
        kept = self.shared.pop(key) if step.id == shared.analyses[-1] else self.shared[key]
        if any(h not in kept for h in hooks):
            return None  # the pass does not hold them all (an undeclared hook): capture as usual
        return {name: kept[name] for name in list(hooks) + [UNEMBED_INPUT]}

    def _after_prefixes(self, prompts, with_patterns: bool):
        """((the prompts' keys and values before their shared prefix's end, that end per prompt), (the
        prefixes' pattern rows per layer, each prompt's prefix)) when the run's pipeline ran these prompts'
        prefixes once (runtime/shared_prefix.py `covering`) and the patterns asked for are there; else None."""
        from .shared_prefix import covering

        found = covering(self.executor, prompts) if self.executor.kv_rest else None
        if found is None or (with_patterns and found[0].patterns is None):
            return None
        shared, groups = found
        return (kv.take(shared.past, groups, shared.length), [shared.length] * len(prompts)), (shared.patterns, groups)

    def _patterns_to_keep(self, shared, which: str):
        """The run's pattern cache when this pass fills it: its plan says an analysis reads the patterns,
        and some of its prompts are not cached yet but fit the budget; else None."""
        if not shared.patterns:
            return None
        cache = patterns.pattern_cache(self.shared)
        prompts = [getattr(p, which).ids for p in self.pairs]
        missing = patterns.missing_within_budget(cache, prompts, self.cfg.n_layers, self.cfg.n_heads)
        return cache if missing else None

    def _keys_values_recorder(self, shared, which: str) -> Optional[pass_kv.Recorder]:
        """A recorder of the pass's keys and values when a member continues the pass, the model can
        continue a forward (kv.exact_rest) and they fit pass_kv.KV_BYTES; else None."""
        from .shared_prefix import continuable

        prompts = [getattr(p, which).ids for p in self.pairs]
        if not shared.keys_values or not pass_kv.fits(self.cfg, prompts) or min(map(len, prompts)) < 2:
            return None
        return pass_kv.Recorder(self.cfg.n_layers) if continuable(self.executor, prompts) else None

    def _pass_keys_values(self, which: str) -> Optional[kv.KV]:
        """The keys and values this analysis's shared pass kept of these prompts (the pass's last
        analysis takes them with it), or None."""
        step, shared = self._shared_pass(which)
        if shared is None or not step.continues_pass:
            return None
        key = self._pass_key(shared, "keys and values")
        return self.shared.pop(key, None) if step.id == shared.analyses[-1] else self.shared.get(key)

    def _shared_pass(self, which: str):
        """(this analysis's step, the shared pass serving it on `which` prompts, or None)."""
        step = self.plan.analyses[self.analysis_index] if self.analysis_index < len(self.plan.analyses) else None
        shared = self.plan.pass_of(step.id) if step is not None else None
        return step, (shared if shared is not None and which == shared.prompts else None)

    def _pass_key(self, shared, *what: str) -> tuple:
        """Where the run keeps what `shared` captured of these pairs (`what`: a kind of it besides the hooks)."""
        return what + (shared.id, tuple(id(p) for p in self.pairs))

    def _has_hook(self, name: str) -> bool:
        try:
            return name in self.model.hook_dict
        except AttributeError:
            return True

    def _capture_final(self, hooks: List[str], which: str = "clean", extra: Optional[Dict] = None,
                       interventions=(), fill: Optional[patterns.Cache] = None,
                       record: Optional[pass_kv.Recorder] = None, continued=None):
        """`fill`: the run's pattern cache, which this sweep fills with every head's patterns of
        the prompts it lacks (every position: a pattern row is one query). `record`: keeps each
        batch's keys and values. `continued`: (the prompts' keys and values, per prompt the earliest
        intervened position): each batch runs from pass_kv.start on, after those keys and values."""
        from .executor import ALL, at_final, by_length, pad_right

        prompts = [getattr(p, which).ids for p in self.pairs]
        order = by_length(prompts)
        index = torch.tensor(order)
        pattern_hooks = [PATTERN_HOOK.format(l) for l in range(self.cfg.n_layers)] if fill is not None else []
        before = None  # the prefixes' pattern rows and each prompt's prefix, when continuing after them
        if continued is None and not interventions and not extra:
            after = self._after_prefixes(prompts, fill is not None)
            if after is not None:
                continued, before = after

        def one_batch(part: slice):
            tokens, final = pad_right([prompts[i] for i in order[part]])
            p = pass_kv.start([continued[1][i] for i in order[part]], final.tolist(), self.executor.kv_rest) \
                if continued is not None else 0
            select = at_final(None if bool((final == tokens.shape[1] - 1).all()) else final - p)
            keep = {name: select for name in list(hooks) + [UNEMBED_INPUT]}
            keep.update(extra or {})
            keep.update({name: ALL for name in pattern_hooks})
            bound = [(name, _bind(fn, index[part], p)) for name, fn in interventions]
            store: kv.KV = {}
            resumed = kv.continuing(self.model, kv.take(continued[0], index[part], p)) if p else nullcontext()
            recording = kv.recording(self.model, store) if record is not None else nullcontext()
            options = {"position_ids": kv.positions(p, tokens.shape[1], len(tokens), self.device)} if p else None
            with resumed, recording:
                kept = self.executor.capture(tokens[:, p:], keep, stop_after=UNEMBED_INPUT, interventions=bound,
                                             forward_kwargs=options)[1]
            if record is not None:
                record.done(order[part], store)
            if fill is not None:
                found = [kept.pop(name) for name in pattern_hooks]
                if p:  # the query rows before p are the prefixes' (the keys after them are masked: zero)
                    found = [patterns.with_rows_before(rows[before[1][index[part]]], late, p)
                             for rows, late in zip(before[0], found)]
                for row, i in enumerate(order[part]):
                    if tuple(prompts[i]) not in fill:
                        patterns.keep(fill, prompts[i], [p[row] for p in found])
            return kept

        parts = self.executor.map_batches(len(order), max(len(p) for p in prompts), one_batch,
                                          "capturing activations")
        out: Dict[str, torch.Tensor] = {}
        for name in parts[0]:
            values = torch.cat([p[name] for p in parts])
            out[name] = values.new_empty(values.shape)
            out[name][index.to(values.device)] = values
        return out


def _bind(fn, rows: torch.Tensor, first: int):
    return lambda act, hook=None: fn(act, hook, rows, first)


def _selection(params, key: str, kind: str):
    """The compiled Selection of the field `key` (core/params.py); the compiler makes one for every
    selector an analysis's `compile` declares through its context."""
    from ..core.params import Selection

    value = getattr(params, key)
    if not isinstance(value, Selection) or value.kind != kind:
        raise TypeError(f"parameter '{key}' was not compiled as a {kind} selector: declare it in the "
                        f"analysis's compile() (ctx.{kind}(params, ...))")
    return value
