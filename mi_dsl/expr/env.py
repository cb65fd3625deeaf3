"""What an evaluation may look at, and the short fact it raises when something is off.

Evaluation takes an `env`: any object with the attributes of `Env` will do, so the
runtime can pass its own. Only the attributes an expression needs must be set: a
filter needs `values` (and `tokenizer` for ntokens/first_token), a head selector
needs `n_layers`, `n_heads` (and `result` for top/bottom), a position selector
needs `n_tokens` and `slot_spans`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple


class Fault(Exception):
    """A short fact about a failed evaluation; the closure that catches it adds the column.

    `offset` names a more precise place than the catcher's own (e.g. the index in noun[5]).
    """

    def __init__(self, message: str, offset: Optional[int] = None):
        super().__init__(message)
        self.offset = offset


@dataclass(slots=True)
class Env:
    values: Mapping[str, Any] = field(default_factory=dict)  # name -> value (str, or a metric mapping for records)
    tokenizer: Any = None  # has encode(text) -> list[int], without special tokens
    opposite: Optional[Callable[[str, str], str]] = None  # (slot name, word) -> the paired word
    result: Optional[Callable[[str], Sequence[Sequence[float]]]] = None  # analysis -> [layer][head] scores
    n_layers: Optional[int] = None
    n_heads: Optional[int] = None
    n_tokens: Optional[int] = None  # tokens in the prompt, BOS included
    slot_spans: Mapping[str, Sequence[Tuple[int, int]]] = field(default_factory=dict)  # slot -> [(start, end)]


_SERVICE_WORDS = {
    "tokenizer": "a tokenizer",
    "opposite": "the opposite pairs of the paired slots",
    "result": "the results of earlier analyses",
    "n_layers": "the model's number of layers",
    "n_heads": "the model's number of heads per layer",
    "n_tokens": "the prompt's token count",
    "slot_spans": "where each slot sits in the prompt",
}


def need(env: Any, service: str, who: str) -> Any:
    """`env.<service>`, or a Fault saying that `who` cannot run without it."""
    value = getattr(env, service, None)
    if value is None:
        raise Fault(f"{who} needs {_SERVICE_WORDS[service]}, but none was given")
    return value
