"""Prompt pairs token by token, for the report's dataset section and the run log.

Each prompt is its tokens as text with, per token, the slot it belongs to (from the
pair's slot spans), so a reader sees exactly what the model was given; the answer and
foil are the tokens the metric compares at the final position."""
from __future__ import annotations

from typing import Any, Dict, List, Sequence


def pair_examples(pairs: Sequence[Any], tokenizer) -> List[Dict[str, Any]]:
    return [{"clean": _prompt(p.clean, tokenizer), "corrupted": _prompt(p.corrupted, tokenizer),
             "answer": [token_ids(p.answers), token_texts(tokenizer, p.answers)],
             "foil": [token_ids(p.foils), token_texts(tokenizer, p.foils)],
             "continuation": p.continuation}  # answer and foil are ordered tokens, not sets
            for p in pairs]  # no slot values: a swapped pair keeps its original's (PromptPair.swapped)


def _prompt(prompt, tokenizer) -> Dict[str, Any]:
    slots: List[Any] = [None] * len(prompt.ids)
    for slot, spans in prompt.spans.items():
        for start, end in spans:
            for i in range(start, min(end, len(slots))):
                slots[i] = slot
    return {"text": prompt.text, "tokens": tokenizer.token_strs(prompt.ids), "slots": slots,
            "spans": {slot: [list(s) for s in spans] for slot, spans in prompt.spans.items()}}


def token_ids(tokens: Sequence[int]):
    """An answer or foil for display: one token as its id (as before token sets), a set as a list."""
    return tokens[0] if len(tokens) == 1 else list(tokens)


def token_texts(tokenizer, tokens: Sequence[int]):
    return tokenizer.token_str(tokens[0]) if len(tokens) == 1 else [tokenizer.token_str(t) for t in tokens]


def pair_rows(pairs: Sequence[Any], tokenizer, kept: Sequence[bool] = ()) -> List[Dict[str, Any]]:
    """One row per pair for tables (pairs.csv, candidates.csv): the texts, the answer and foil as ids
    and as token text (a set or a continuation: the list of each), and `kept` when given."""
    rows = []
    for i, p in enumerate(pairs):
        row = {"clean": p.clean.text, "corrupted": p.corrupted.text,
               "answer": token_ids(p.answers), "answer_text": token_texts(tokenizer, p.answers),
               "foil": token_ids(p.foils), "foil_text": token_texts(tokenizer, p.foils)}
        if kept:
            row["kept"] = bool(kept[i])
        rows.append(row)
    return rows
