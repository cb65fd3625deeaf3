"""What `mi-run validate` checks of a `causal_model:` block (no torch).

Without a tokenizer: every expression types (variables against the slots and the variables above
them, the output against the variables, one token), and every variable reaches the output.
With the dataset: every variable computes on every prompt, clean and corrupted (a fault is located
in the expression), and the output gives a token id of the vocabulary on each; the spec's metric
reads the final position (IIA compares a next-token prediction with the label). When the output
on a clean prompt is not the prompt's own answer a warning says so: the causal model then
describes another task than the one the pipeline kept prompts for.
"""
from __future__ import annotations

from typing import Optional, Tuple

from ..errors import SpecMeaningError, SpecWarning
from ..metrics import METRICS
from .model import BLOCK, CausalModel, compile_causal_model, has_causal_model
from .slots import SlotReader, slot_reader


def load_causal_model(spec) -> Tuple[CausalModel, SlotReader]:
    reader = slot_reader(spec)
    return compile_causal_model(spec, reader.types, reader.paired, reader.records), reader


def check_causal_model(spec, dataset=None, tokenizer=None) -> Optional[CausalModel]:
    if not has_causal_model(spec):
        return None
    model, reader = load_causal_model(spec)
    metric = METRICS.get(spec.metric)  # an expression metric registers later, and reads the final position
    if metric is not None and metric.reads_continuation:
        where = spec.loc("metric") if "metric" in spec.data else spec.loc(BLOCK)
        raise SpecMeaningError(f"the metric '{spec.metric}' reads continuations, but interchange interventions "
                               "compare the next token at the final position with the causal model's label",
                               where, hint="write answer and foil with first_token(...) and use a final-position "
                                           "metric such as logit_diff")
    if dataset is None or tokenizer is None:
        return model
    env = reader.env(tokenizer)
    size = tokenizer.vocab_size if hasattr(tokenizer, "vocab_size") else None
    mismatch = None
    for pair in dataset.pairs:
        for plain, text in ((pair.values, pair.clean.text), (pair.corrupted_values, pair.corrupted.text)):
            values = model.evaluate(reader.values(plain), env)
            token = model.output_of(values, env)
            if token < 0 or (size is not None and token >= size):
                raise SpecMeaningError(f"the causal model's output on '{text}' is {token}, not a token id of the "
                                       "tokenizer", spec.loc(BLOCK, "output"))
        if mismatch is None and len(pair.answers) == 1 and not pair.continuation:
            token = model.output_of(model.evaluate(reader.values(pair.values), env), env)
            if token != pair.answers[0]:
                mismatch = (pair, token)
    if mismatch is not None:
        pair, token = mismatch
        dataset.warnings.append(SpecWarning(
            f"the causal model's output on '{pair.clean.text}' is token {token} "
            f"({tokenizer.token_str(token)!r}), but the prompt's answer is {pair.answers[0]} "
            f"({tokenizer.token_str(pair.answers[0])!r}): the model describes another task than the answer",
            spec.loc(BLOCK, "output")))
    return model
