"""Previous-token, duplicate-token and induction heads (seed: "Early Heads are Induction Heads").

The model reads `batch` sequences of `seq_len` random tokens, each repeated once. A head's
score is the mean of one diagonal of its pattern (the reference notebook's hooks): offset 1 (attention to
the previous token), seq_len (to the first copy of the current token) and seq_len - 1 (to
the token after that copy: induction). With BOS prepended the scores are read from the
pattern without BOS's row and column, so the offsets mean the same token pairs as in the
reference notebook's BOS-free run (the model still attends to BOS; that attention just counts for no
score). Only the attention patterns are captured, reduced to scores inside the hook; the
forward stops after the last layer's pattern, so no logits are computed.

`definition: transformer_lens` scores as transformer_lens.head_detector.detect_head does
(its "mul" measure): the attention on the query-key pairs of a 0/1 detection pattern,
divided by the head's total attention (after zeroing the BOS column and/or the diagonal
when excluded), per sequence, averaged. Its duplicate and induction patterns come from
the tokens (a key counts at any earlier copy of the query's token, or just after one), so
on two-copy sequences, where the first copy has no earlier copy, they are about half of
the diagonal scores.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from ..core.result import pairs_record
from ..core.typed import AnalysisParams, SelectorValue, param
from ..errors import RunError, SpecMeaningError
from ._attention import HEADS, PATTERN_HOOK, capture_patterns, head_names, literal_ids, pattern_figures
from .base import Result, head_grid_rows, head_label, step
from ._figures import layer_head_heatmap
from .registry import analysis

KINDS = ("previous_token", "duplicate_token", "induction")
DEFINITIONS = ("diagonal", "transformer_lens")
TL_ONLY = ("exclude_bos", "exclude_current_token")
TITLES = {"previous_token": "Previous Token Scores", "duplicate_token": "Duplicate Token Scores",
          "induction": "Induction Head Scores"}
VIEW_HEADS = 4


@dataclass(frozen=True, kw_only=True)
class HeadDetectionParams(AnalysisParams):
    seq_len: int = param(100, "Random tokens per sequence before repetition (default 100).", minimum=2, maximum=4096)
    batch: int = param(2, "How many random sequences (default 2, as the reference notebook).", minimum=1, maximum=4096)
    seed: Optional[int] = param(None, "Seed of the random tokens (default: the spec's seed).")
    low: int = param(100, "Smallest random token id (default 100, as the reference notebook).", minimum=0)
    high: int = param(20000, "Random token ids stay below this (default 20000, as the reference notebook; clipped "
                             "to the vocabulary size).", minimum=1)
    rank_by: Literal["previous_token", "duplicate_token", "induction"] = param(
        "induction", "Which score is this result's per-head table for top()/bottom() in later analyses "
                     "(default induction).")
    heads: SelectorValue = param(None, "Heads to show in the attention view, e.g. [L1H4, L2H3] (default: the "
                                       f"{VIEW_HEADS} highest by `rank_by`, when `text` is given).", schema=HEADS)
    text: Optional[str] = param(None, "Text for the attention view (default: the first random sequence, when "
                                      "`heads` is given).")
    repeat: int = param(2, "Repeat `text` this many times, joined as written (default 2).", minimum=1, maximum=16)
    definition: Literal["diagonal", "transformer_lens"] = param(
        "diagonal", "diagonal (default, the reference notebook's): the mean of one diagonal of the pattern, BOS "
                    "row and column left out; transformer_lens: transformer_lens.head_detector.detect_head's score "
                    "(attention on the detection pattern / total attention, duplicates at any earlier copy).")
    exclude_bos: bool = param(False, "definition: transformer_lens only: zero the attention to position 0 before "
                                     "scoring (detect_head's exclude_bos; default false).")
    exclude_current_token: bool = param(False, "definition: transformer_lens only: zero the attention to the "
                                               "current token (detect_head's exclude_current_token; default false).")


@analysis("head_detection", "Previous-token, duplicate-token and induction scores of every head on repeated "
                            "random tokens (the reference notebook's Early Heads are Induction Heads), and optionally "
                            "the attention view of chosen heads on a repeated text.", HeadDetectionParams,
          needs_dataset=False, answers="none", metrics="none", per_head=True)
class HeadDetection:
    def compile(self, params: HeadDetectionParams, ctx):
        ctx.heads(params)
        if ctx.written("repeat") and params.text is None:
            raise SpecMeaningError("`repeat` repeats `text`, which is not given", ctx.where("repeat"))
        if params.low >= params.high:
            raise SpecMeaningError(f"low ({params.low}) must be below high ({params.high})",
                                   ctx.where("low" if ctx.written("low") else "high"))
        if params.definition == "diagonal":
            for key in TL_ONLY:
                if ctx.written(key):
                    raise SpecMeaningError(f"`{key}` applies to definition: transformer_lens only",
                                           ctx.where(key), hint="add definition: transformer_lens or remove it")
        if params.seed is None:
            params = params.replace(seed=ctx.spec.seed)  # the random tokens' seed: the spec's unless given
        return step(ctx, params, f"{params.batch} sequences of {params.seq_len} random tokens, repeated; attention "
                                 f"patterns reduced to three {params.definition} scores per head in the hook",
                    hooks=("blocks.{L}.attn.hook_pattern",), positions="all")

    def cost(self, params, inputs):
        """`batch` rows of 2 x seq_len random tokens (and BOS), stopped after the last layer's pattern; the
        attention view is one more row."""
        from ..compile.cost import Cost

        view = 1 if (params.heads is not None or params.text is not None) else 0
        return Cost(cells=3 * inputs.layers * inputs.heads, forward_rows=params.batch + view,
                    tokens_per_row=2 * params.seq_len + 1)

    def compute(self, params: HeadDetectionParams, run) -> Result:
        import torch

        seq_len, bos = params.seq_len, run.plan.model.prepend_bos
        tokens = random_repeated_tokens(run, params)
        definition = params.definition
        score = _score_function(params, seq_len, bos)
        scores = _scores(run, tokens, score)  # [3, L, H]
        rank_by = params.rank_by
        data = {kind: scores[i].tolist() for i, kind in enumerate(KINDS)}
        data.update({"per_head": data[rank_by], "rank_by": rank_by, "seq_len": seq_len,
                     "batch": tokens.shape[0], "bos": bos, "definition": definition,
                     "token_range": token_range(run, params)})
        flat = scores[KINDS.index(rank_by)].flatten()
        n_heads = run.cfg.n_heads
        top = [head_label(i // n_heads, i % n_heads) for i in torch.argsort(flat, descending=True)[:5].tolist()]
        rows = head_grid_rows(data["previous_token"], "previous_token")
        for kind in KINDS[1:]:
            for row, value in zip(rows, (v for r in data[kind] for v in r)):
                row[kind] = float(value)
        if params.heads is not None or params.text is not None:
            data["view"] = _view(params, run, tokens[0], scores[KINDS.index(rank_by)])
        return Result(data, tables={"head_detection": rows},
                      summary=f"top {rank_by} heads ({definition}): {', '.join(top)}",
                      convention=_convention(params, bos),
                      key_numbers={f"top_{rank_by}_score": float(flat.max())},
                      pairs=pairs_record([], "runs on its own inputs (repeated random tokens), not the "
                                             "dataset's pairs"))

    def figures(self, result, run):
        d = result.data
        figures = [(kind, layer_head_heatmap(d[kind], TITLES[kind], signed=False, colorbar="score"))
                   for kind in KINDS]
        if "view" in d:
            figures += [(name if name == "view" else f"pattern_{name}", fig) for name, fig in
                        pattern_figures([d["view"]], d["view"]["heads"], run, "Attention on repeated text")]
        return figures


def detection_scores(pattern, seq_len: int, bos: bool):
    """pattern [B, H, Q, K] of [BOS] + t + t (t: seq_len tokens) -> [B, 3, H]: the means of the
    diagonals at offsets 1, seq_len and seq_len - 1 (previous, duplicate, induction), BOS left out."""
    import torch

    if bos:
        pattern = pattern[..., 1:, 1:]
    if pattern.shape[-1] != 2 * seq_len:
        raise ValueError(f"expected a pattern over {2 * seq_len} tokens, got {pattern.shape[-1]}")
    diagonals = [pattern.diagonal(offset=o, dim1=-1, dim2=-2).mean(-1) for o in (1, seq_len, seq_len - 1)]
    return torch.stack(diagonals, dim=1)


def transformer_lens_scores(pattern, tokens, exclude_bos: bool = False, exclude_current_token: bool = False):
    """pattern [B, H, Q, K], tokens [B, Q] -> [B, 3, H]: previous-token, duplicate-token and induction
    scores as detect_head's "mul" measure: attention on the detection pattern's 1s / total attention."""
    import torch

    n, device = tokens.shape[-1], pattern.device
    below = torch.ones(n, n, dtype=torch.bool, device=device).tril(-1)        # key strictly before query
    tokens = tokens.to(device)
    duplicate = (tokens[:, :, None] == tokens[:, None, :]) & below           # [B, Q, K] an earlier copy
    induction = torch.zeros_like(duplicate)
    induction[:, :, 1:] = duplicate[:, :, :-1]                               # the key just after one
    previous = torch.eye(n, dtype=torch.bool, device=device).roll(-1, dims=1).tril(-1).expand_as(duplicate)
    if exclude_bos or exclude_current_token:
        pattern = pattern.clone()
        if exclude_bos:
            pattern[..., 0] = 0
        if exclude_current_token:
            pattern.diagonal(dim1=-2, dim2=-1).zero_()
    total = pattern.sum((-1, -2))  # [B, H]
    scores = [(pattern * d[:, None].to(pattern.dtype)).sum((-1, -2)) / total
              for d in (previous, duplicate, induction)]
    return torch.stack(scores, dim=1)


def _score_function(params, seq_len: int, bos: bool):
    """fn(pattern [B, H, Q, K] float, tokens [B, Q]) -> [B, 3, H] under the chosen definition."""
    if params.definition == "diagonal":
        return lambda pattern, tokens: detection_scores(pattern, seq_len, bos)
    flags = {key: getattr(params, key) for key in TL_ONLY}
    return lambda pattern, tokens: transformer_lens_scores(pattern, tokens, **flags)


def _convention(params, bos: bool) -> str:
    if params.definition == "diagonal":
        return ("definition: diagonal (the reference notebook's): mean over query positions of the attention on "
                "one diagonal (offset 1: previous token; seq_len: the same token's first copy; seq_len - 1: the "
                "token after it, induction)" + ("; BOS row and column left out, not renormalised" if bos else ""))
    excluded = [k for k in TL_ONLY if getattr(params, k)]
    return ("definition: transformer_lens (detect_head, \"mul\"): attention on the query-key pairs of the "
            "detection pattern / the head's total attention, per sequence, averaged; duplicate and induction "
            "pairs at any earlier copy of the token; BOS " + ("excluded and the rest renormalised"
                                                             if "exclude_bos" in excluded else "included")
            + ("; current token excluded" if "exclude_current_token" in excluded else ""))


def token_range(run, params):
    """[low, high): the random token ids, high clipped to the vocabulary."""
    return [params.low, min(params.high, run.cfg.d_vocab)]


def random_repeated_tokens(run, params):
    """[batch, (1 +) 2 seq_len]: random ids in [low, min(high, vocab)), repeated, BOS first if wanted."""
    import torch

    low, high = token_range(run, params)
    if low >= high:
        raise RunError(f"no token ids in [{low}, {high}): the model's vocabulary has {run.cfg.d_vocab} tokens",
                       run.where("low"))
    generator = torch.Generator().manual_seed(params.seed)
    tokens = torch.randint(low, high, (params.batch, params.seq_len), generator=generator)
    tokens = torch.cat([tokens, tokens], dim=1)
    if run.plan.model.prepend_bos:
        if run.tokenizer.bos_id is None:
            raise RunError("model.prepend_bos is true but the tokenizer has no BOS token", run.where())
        tokens = torch.cat([torch.full((tokens.shape[0], 1), run.tokenizer.bos_id), tokens], dim=1)
    return tokens


def _scores(run, tokens, score):
    import torch

    n_layers = run.cfg.n_layers
    names = [PATTERN_HOOK.format(l) for l in range(n_layers)]

    def one_batch(rows: slice):
        keep = {name: (lambda a, t=tokens[rows]: score(a.float(), t)) for name in names}
        return run.executor.capture(tokens[rows], keep, stop_after=names[-1])[1]

    parts = run.executor.map_batches(tokens.shape[0], tokens.shape[1], one_batch, "head detection")
    per_layer = [torch.cat([p[name] for p in parts]).mean(0) for name in names]  # [3, H] each
    return torch.stack(per_layer, dim=1).cpu()  # [3, L, H]


def _view(params, run, first_sequence, ranking):
    """The attention of chosen heads on the repeated text (or the first random sequence)."""
    import torch

    if params.heads is not None:
        heads = run.select_heads(params)
    else:
        order = torch.argsort(ranking.flatten(), descending=True)[:VIEW_HEADS].tolist()
        heads = [(i // run.cfg.n_heads, i % run.cfg.n_heads) for i in order]
    if params.text is not None:
        text = params.text * params.repeat
        ids = literal_ids(run, text)
    else:
        ids = first_sequence.tolist()
        text = "random tokens, repeated"
    pattern = capture_patterns(run, [ids], heads)[0]
    return {"label": "repeated text" if params.text is not None else "random tokens", "text": text,
            "tokens": run.tokenizer.token_strs(ids), "heads": head_names(heads), "patterns": pattern.tolist()}
