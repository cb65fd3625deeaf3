"""The ways of doing each item's work; each method(b, pairs) returns (seconds, numbers or None).

seed: the seed notebook's imperative style; tl: TransformerLens itself; mi: mi-dsl through
its Session (the product's code path); bare_*: plain transformers forwards, the lower bound.
"""
from __future__ import annotations

from .bench import Bench, bare_forwards, bare_metric, batched, logit_diff


# --------------------------------------------------------------------------- filter


def filter_seed(b: Bench, pairs):
    """One prompt at a time, full activation cache, clean then corrupted (seed_baseline.py)."""
    import torch

    def work():
        out = torch.empty(2, len(pairs))
        for i, p in enumerate(pairs):
            a, f = b.answers([p])
            for r, which in enumerate(("clean", "corrupted")):
                logits, _cache = b.model.run_with_cache(b.tokens([p], which))
                out[r, i] = logit_diff(logits, a, f)[0].cpu()
        return out
    return b.meter.timed(work)


def filter_tl(b: Bench, pairs):
    """Batched TransformerBridge forwards, no cache, full logits."""
    import torch

    def work():
        a, f = b.answers(pairs)
        out = []
        for which in ("clean", "corrupted"):
            toks = b.tokens(pairs, which)
            size = b.rows_per_batch(toks.shape[1], full_logits=True)
            out.append(torch.cat([logit_diff(b.model(toks[s]), a[s], f[s]) for s in batched(len(pairs), size)]))
        return torch.stack(out).cpu()
    return b.meter.timed(work)


def filter_mi(b: Bench, pairs):
    """mi-dsl's pipeline stage (Session.run_pipeline) with the spec's keep-condition."""
    import torch
    from mi_dsl.errors import MiError

    def work():
        try:
            outcome = b.session.run_pipeline(pairs)
        except MiError:  # "no prompts are left": only a one-pair warm-up should see it
            return None, 0
        m = outcome.candidate_metrics
        return torch.tensor([m["clean"][b.plan.metric], m["corrupted"][b.plan.metric]]), len(outcome.pairs)

    seconds, (numbers, kept) = b.meter.timed(work)
    b.filter_kept = kept
    return seconds, numbers


def filter_bare(last_only: bool):
    def method(b: Bench, pairs):
        import torch

        return b.meter.timed(lambda: torch.stack([bare_metric(b, pairs, w, last_only)
                                                  for w in ("clean", "corrupted")]).cpu())
    return method


# --------------------------------------------------------------------------- head attribution


def head_attr_seed(b: Bench, pairs):
    """A full activation cache of the clean batch, then TransformerLens's cache arithmetic
    (stack_head_results, apply_ln_to_stack) on the logit-difference directions, as the seed.
    Gemma's post-attention norm is applied to each head's result (stack_head_results leaves it out)."""
    model = b.model
    cfg = model.cfg

    def work():
        toks = b.tokens(pairs, "clean")
        a, f = b.answers(pairs)
        _, cache = model.run_with_cache(toks)
        stack = cache.stack_head_results(layer=-1, pos_slice=-1)  # [L*H, N, d]
        if hasattr(model.blocks[0], "ln1_post"):
            stack = stack.view(cfg.n_layers, cfg.n_heads, *stack.shape[1:]).clone()
            for l in range(cfg.n_layers):
                w = next(iter(model.blocks[l].ln1_post.parameters())).detach()
                w = (1.0 + w) if getattr(cfg, "rmsnorm_uses_offset", False) else w
                stack[l] = stack[l] * w / cache[f"blocks.{l}.ln1_post.hook_scale"][:, -1][None]
            stack = stack.flatten(0, 1)
        scaled = cache.apply_ln_to_stack(stack, layer=-1, pos_slice=-1)
        dirs = model.tokens_to_residual_directions(a) - model.tokens_to_residual_directions(f)
        return (scaled * dirs).sum(-1).mean(-1).view(cfg.n_layers, cfg.n_heads).cpu()
    return b.meter.timed(work)


def analysis_mi(analysis_id: str, key: str):
    """The spec's analysis through Session.compute_analysis on a context over the pairs."""
    def method(b: Bench, pairs):
        import torch

        ctx = b.context(pairs)
        seconds, result = b.meter.timed(lambda: b.session.compute_analysis(analysis_id, ctx))
        b.mi_results[analysis_id] = result.data
        return seconds, torch.tensor(result.data[key], dtype=torch.float32)
    return method


def forwards_bare(rows_per_pair, which: str = "clean"):
    """rows_per_pair(b, tokens) x n bare forward rows of `which` prompts."""
    def bound(last_only: bool):
        def method(b: Bench, pairs):
            toks = b.tokens(pairs, which)
            rows = rows_per_pair(b, toks) * len(pairs)
            return b.meter.timed(lambda: (bare_forwards(b, toks, rows, last_only), None)[1])
        return method
    return bound


head_attr_bare = forwards_bare(lambda b, toks: 1)


# --------------------------------------------------------------------------- patching


def _z(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def patch_seed(by_position: bool):
    """A full clean cache; one run_with_hooks forward of the corrupted batch per patched cell.
    Only the first k layers' cells may be timed (see loop_layers)."""
    def method(b: Bench, pairs):
        import torch

        model, cfg = b.model, b.model.cfg
        H, L = cfg.n_heads, loop_layers(b, by_position)

        def work():
            clean, corr = b.tokens(pairs, "clean"), b.tokens(pairs, "corrupted")
            a, f = b.answers(pairs)
            _, cache = model.run_with_cache(clean)
            P = clean.shape[1]
            out = torch.empty(L, H, P) if by_position else torch.empty(L, H)
            for l in range(L):
                source = cache[_z(l)]
                for h in range(H):
                    for p in (range(P) if by_position else [None]):
                        def hook(z, hook, h=h, p=p, source=source):
                            if p is None:
                                z[:, :, h] = source[:, :, h]
                            else:
                                z[:, p, h] = source[:, p, h]
                            return z
                        value = logit_diff(model.run_with_hooks(corr, fwd_hooks=[(_z(l), hook)]), a, f).mean()
                        out[(l, h) if p is None else (l, h, p)] = value.item()
            return out
        return b.meter.timed(work)
    return method


def loop_layers(b: Bench, by_position: bool) -> int:
    """Layers a per-cell loop (seed, TL) is timed on; sets the scale (n_layers / k) and its note."""
    n_layers = b.model.cfg.n_layers
    k = min(b.loop_layers.get("patch_z_pos" if by_position else "patch_z") or n_layers, n_layers)
    if k < n_layers:
        b.pending_scale = (n_layers / k, f"timed on the first {k} of {n_layers} layers' cells, "
                                         f"scaled x{n_layers / k:.2f}")
    return k


def patch_tl(by_position: bool):
    """transformer_lens.patching.get_act_patch_attn_head_out_all_pos / _by_pos (as peer_patching.py).
    On fewer layers (loop_layers): the same function given an index_df of those layers' cells."""
    def method(b: Bench, pairs):
        import transformer_lens.patching as tlp

        fn = tlp.get_act_patch_attn_head_out_by_pos if by_position else tlp.get_act_patch_attn_head_out_all_pos
        k, H = loop_layers(b, by_position), b.model.cfg.n_heads
        P = len(pairs[0].clean.ids)
        kw = {}
        if k < b.model.cfg.n_layers:
            import itertools

            import pandas as pd

            axes = (range(k), range(P), range(H)) if by_position else (range(k), range(H))
            kw = {"index_axis_names": None, "index_df": pd.DataFrame(
                list(itertools.product(*axes)), columns=["layer", "pos", "head"][:len(axes)] if by_position
                else ["layer", "head"])}

        def work():
            clean, corr = b.tokens(pairs, "clean"), b.tokens(pairs, "corrupted")
            a, f = b.answers(pairs)
            _, cache = b.model.run_with_cache(clean, names_filter=lambda n: n.endswith("attn.hook_z"))
            out = fn(b.model, corr, cache, lambda logits: logit_diff(logits, a, f).mean(), **kw)
            out = out.view(k, P, H).permute(0, 2, 1) if by_position else out.view(k, H)  # -> [L, H(, P)]
            return out.float().cpu()
        return b.meter.timed(work)
    return method


def _head_cells(by_position: bool):
    """(cells + 1) rows per pair: every patched run plus the clean source run."""
    def rows(b, toks):
        cfg = b.model.cfg
        return cfg.n_layers * cfg.n_heads * (toks.shape[1] if by_position else 1) + 1
    return rows


patch_bare = {False: forwards_bare(_head_cells(False), "corrupted"),
              True: forwards_bare(_head_cells(True), "corrupted")}
resid_bare = forwards_bare(lambda b, toks: b.model.cfg.n_layers * toks.shape[1] + 1, "corrupted")


METHOD_TABLE = {
    "filter": {"seed": filter_seed, "tl": filter_tl, "mi": filter_mi, "bare_last": filter_bare(True),
               "bare_full": filter_bare(False)},
    "head_attr": {"seed": head_attr_seed, "mi": analysis_mi("head_attr", "per_head"),
                  "bare_last": head_attr_bare(True), "bare_full": head_attr_bare(False)},
    "patch_z": {"seed": patch_seed(False), "tl": patch_tl(False), "mi": analysis_mi("patch_z", "values"),
                "bare_last": patch_bare[False](True), "bare_full": patch_bare[False](False)},
    "patch_z_pos": {"seed": patch_seed(True), "tl": patch_tl(True), "mi": analysis_mi("patch_z_pos", "values"),
                    "bare_last": patch_bare[True](True), "bare_full": patch_bare[True](False)},
    # mi: prefix reuse (the default); mi_full: the same analysis with prefix_reuse: false
    "patch_resid": {"mi": analysis_mi("patch_resid", "values"),
                    "mi_full": analysis_mi("patch_resid_full", "values"), "bare_last": resid_bare(True)},
    "attrib": {"mi": analysis_mi("attrib_z", "normalized")},
}

# Per-cell loops run tens to hundreds of forwards of shapes earlier items already ran: no warm-up.
NO_WARMUP = {("patch_z", "seed"), ("patch_z", "tl"), ("patch_z_pos", "seed"), ("patch_z_pos", "tl")}
