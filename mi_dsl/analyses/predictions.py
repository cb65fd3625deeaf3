"""Predictions (seed: utils.test_prompt): the top-k next tokens of a prompt and the answer's rank."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

from ..core.result import pairs_record
from ..core.typed import AnalysisParams, param
from .base import Result, step
from ._figures import hbar
from .registry import analysis


@dataclass(frozen=True, kw_only=True)
class PredictionsParams(AnalysisParams):
    prompt: Optional[str] = param(None, "The prompt (default: the first clean prompt of the dataset).")
    answer: Optional[str] = param(None, "The answer's text, e.g. ' angios' (default: the dataset prompt's "
                                        "answer token).")
    index: int = param(0, "Which dataset prompt when `prompt` is not given (default 0).", minimum=0)
    top_k: int = param(10, "How many top tokens to list (default 10).", minimum=1, maximum=1000)

    def prompt_indices(self) -> List[Tuple[Tuple[Any, ...], int]]:
        return [] if self.prompt is not None else [(("index",), self.index)]


@analysis("predictions", "Top-k next tokens with logit and probability for one prompt, and the rank of "
                         "its answer (the seed's test_prompt).", PredictionsParams,
          answers="none")  # no metric; a continuation answer is shown as its first token, and says so
class Predictions:
    def compile(self, params: PredictionsParams, ctx):
        return step(ctx, params, "one forward of the prompt; full logits at the final position only",
                    hooks=("unembed.hook_in",))

    def compute(self, params: PredictionsParams, run) -> Result:
        import torch

        from ..errors import RunError
        from ..runtime.unembed import UNEMBED_INPUT

        tok = run.tokenizer
        continuation = 0
        if params.prompt is not None:
            text = params.prompt
            ids = tok.encode(text)
            if run.plan.model.prepend_bos:
                ids = [tok.bos_id] + ids
            answer_ids = tok.encode(params.answer) if params.answer is not None else []
            candidates = answer_ids[:1]
        else:
            index = params.index
            if index >= len(run.pairs):
                raise RunError(f"predictions.index {index} is beyond the {len(run.pairs)} prompts of the dataset",
                               run.where("index"))
            pair = run.pairs[index]
            text, ids, candidates = pair.clean.text, list(pair.clean.ids), list(pair.answers)
            continuation = len(candidates) if pair.continuation else 0
            if continuation:  # the next token is the continuation's first: ranked as such, and labelled
                candidates = candidates[:1]
        tokens = torch.tensor([ids], dtype=torch.long)
        _, kept = run.executor.capture(tokens, {UNEMBED_INPUT: lambda a: a[:, -1]}, stop_after=UNEMBED_INPUT)
        logits = run.unembed.full(kept[UNEMBED_INPUT].to(run.unembed.W_U.dtype))[0].float()
        probs = logits.softmax(-1)
        # a token set's answer is its best-ranked member (the rank metric's convention)
        answer = max(candidates, key=lambda t: float(logits[t])) if candidates else None
        top = torch.topk(logits, params.top_k)
        rows = [{"rank": r, "token_id": int(i), "token": tok.token_str(int(i)), "logit": float(v),
                 "prob": float(probs[i])} for r, (v, i) in enumerate(zip(top.values, top.indices))]
        used = pairs_record([], "its own prompt") if params.prompt is not None else \
            pairs_record([run.used_pair_indices()[params.index]])
        data = {"prompt": text, "tokens": tok.token_strs(ids), "top": rows}
        key_numbers = {"top_token_prob": rows[0]["prob"]}
        summary = f"top token {rows[0]['token']!r} ({rows[0]['prob']:.1%})"
        if answer is not None:
            rank = int((logits > logits[answer]).sum())
            data["answer"] = {"token_id": answer, "token": tok.token_str(answer), "rank": rank,
                              "logit": float(logits[answer]), "prob": float(probs[answer]), "set_size": len(candidates),
                              "set_prob": float(probs[candidates].sum())}
            summary += f"; answer {tok.token_str(answer)!r} at rank {rank}"
            key_numbers.update(answer_rank=rank, answer_prob=float(probs[answer]))
            if continuation:
                data["answer"]["continuation_tokens"] = continuation
                data["answer"]["note"] = (f"the answer is a continuation of {continuation} tokens; this is its first "
                                          "token's next-token rank (the continuation metrics read all of them)")
                summary = summary.replace("; answer ", f"; the answer continuation's first token (of {continuation}) ")
        return Result(data, tables={"predictions": rows}, summary=summary, pairs=used, key_numbers=key_numbers,
                      convention="the model's own next-token logits at the prompt's last position (unembedding "
                                 "bias included) and their softmax over the whole vocabulary in float32")

    def figures(self, result, run):
        top = result.data["top"]
        return [("predictions", hbar([r["prob"] for r in top], [repr(r["token"]) for r in top],
                                     f"Top next tokens: {result.data['prompt'][-60:]}", "probability"))]
