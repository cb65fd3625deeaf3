"""Answers and foils: a token, a token set, or a multi-token continuation.

`answer`/`foil` are expressions in the answer scope. Their type decides what the metric
compares:
  token         first_token(" Paris")            one next token at the final position
  tokens        first_tokens(" she| her")         a SET of alternative next tokens (so is
                                                 tokens("..."): its ids as a set, not in order)
  continuation  continuation(" Buenos Aires")    the tokens in order, read teacher-forced after
                                                 the prompt by the continuation_* metrics
Answer and foil are both continuations or neither (a metric compares like with like). No
torch; the type is known without a tokenizer, so the compiler can check metrics and
analyses against it before anything loads.
"""
from __future__ import annotations

from ..errors import SpecMeaningError, SpecWarning
from ..expr import compile_expression, expect_type

CONTINUATION = "continuation"
ANSWER_TYPES = ("token", "tokens", CONTINUATION)


def compile_answer(spec, key: str, types):
    """The checked `prompts.answer` or `prompts.foil` expression (`types`: the dataset's SlotTypes)."""
    path = ("prompts", key)
    compiled = compile_expression(spec.prompts[key], types.answer_scope(),
                                  where=lambda off: spec.source.inside(path, off))
    expect_type(compiled, ANSWER_TYPES, lambda off: spec.source.inside(path, off))
    return compiled


def answers_are_continuations(spec, answer, foil) -> bool:
    """True when answer and foil are continuations; refuses one of each, at the foil."""
    kinds = [c.type == CONTINUATION for c in (answer, foil)]
    if kinds[0] != kinds[1]:
        said = ["a continuation (continuation(...))" if k else "a token or token set" for k in kinds]
        raise SpecMeaningError(
            f"the answer is {said[0]} but the foil is {said[1]}; a metric compares like with like",
            spec.source.inside(("prompts", "foil"), foil.offset),
            hint="write both as continuation(...) (teacher-forced log-probabilities of token sequences), or "
                 "both as tokens, e.g. first_token(...)")
    return kinds[0]


def set_warning(spec, compiled, key: str):
    """A located warning when an answer is a token list made by tokens(...): read as a set of
    alternatives at the final position, which a multi-token answer written so is not."""
    if compiled.type != "tokens" or "tokens" not in compiled.functions_used():
        return None
    return SpecWarning(f"prompts.{key} uses tokens(...), whose token ids are read as a SET of alternative next "
                       "tokens at the final position, not as a sequence; write continuation(...) for a "
                       "multi-token answer, or first_tokens(...) for a set",
                       spec.source.inside(("prompts", key), compiled.offset))


def check_continuations(spec, tokenizer, pair) -> None:
    """Answer and foil continuations that are the same tokens measure nothing."""
    if pair.answers != pair.foils:
        return
    shown = [tokenizer.token_str(t) for t in pair.answers]
    raise SpecMeaningError(
        f"answer and foil are the same continuation, tokens {shown}, for the prompt "
        f"'{pair.clean.text}', so their log-probability difference is always 0", spec.loc("prompts", "foil"),
        hint="make the foil another continuation, e.g. the corrupted prompt's answer")
