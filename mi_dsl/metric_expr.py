"""Metrics written as expressions: `metric: 'prob(answer) - prob(foil)'` (no torch at import).

An expression over logit(...), prob(...) and logprob(...) at the final position, with
+ - * / and numbers. Each reads a token set:
  answer, foil                  the prompt's answer and foil (tokens or token sets)
  " she"                        a string: its first token
  first_tokens(" she| her")     the first token of each '|'-separated alternative
A set's logit is its members' mean logit, its prob the sum of their probabilities, its
logprob the log of that sum (as the named metrics). The expression is parsed with the
language's grammar and evaluated on whole batches (tensors), once per batch.

Expression metrics are not linear: a decomposition cannot know which direction they read,
so it must be told (`direction: logit_diff` decomposes the answer-minus-foil logit
difference); keep-conditions name the registered metrics only.

An expression metric is per-spec state, so it never enters the registry (metrics.METRICS):
the compiler compiles it into the spec's Plan (`compile_metric`), and the prepare stage binds
it to the spec's tokenizer (`ExpressionMetric.bound`), which turns its strings into that
tokenizer's ids. Two specs with the same expression on two tokenizers hold two objects.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

from lark import Token, Tree

from .errors import ExpressionError
from .metrics import Metric

READERS = ("logit", "prob", "logprob")
SET_FUNCTIONS = ("first_tokens", "first_token")


def is_expression(text: str) -> bool:
    return "(" in str(text)


@dataclass(frozen=True)
class ExpressionMetric(Metric):
    """A metric written as an expression; `tokenizer` is what its strings were read with (None:
    not bound yet, and it refuses to compute)."""

    where: Any = field(default=None, compare=False, repr=False)   # offset -> Location in the spec
    tokenizer: Optional[str] = None                                 # the bound tokenizer's origin

    def bound(self, tokenizer: Any, where: Any = None) -> "ExpressionMetric":
        """The metric with its strings read as `tokenizer`'s first tokens (faults located in the spec)."""
        compute, _ = _compile_text(self.name, self.where, tokenizer)
        return replace(self, compute=compute, tokenizer=getattr(tokenizer, "origin", str(tokenizer)))


def compile_metric(text: str, where) -> ExpressionMetric:
    """Check the expression and compile it, not yet bound to a tokenizer (the plan has none)."""
    compute, readers = _compile_text(text, where, None)
    return ExpressionMetric(text, f"the expression {text} at the final position", compute, linear=False,
                            needs_full_logits=bool(readers - {"logit"}), where=where)


def _compile_text(text: str, where, tokenizer):
    from .expr.parser import parse

    tree = parse(text, "expression", where)
    readers: set = set()
    compute = _compile(tree.children[0] if tree.data == "expression" else tree, where, tokenizer, readers)
    return compute, readers


def _compile(node, where, tokenizer, readers: set) -> Callable:
    from .expr.parser import offset_of

    if isinstance(node, Token):
        return _number(node, where)
    kind = node.data
    if kind in ("sum", "product"):
        parts = [_compile(c, where, tokenizer, readers) if not isinstance(c, Token) or c.type not in _OPS
                 else c for c in node.children]
        return _fold(parts)
    if kind == "negate":
        inner = _compile(node.children[-1], where, tokenizer, readers)
        return lambda r: -inner(r)
    if kind in ("int_literal", "float_literal"):
        value = float(node.children[0])
        return lambda r: value
    if kind == "call":
        return _call(node, where, tokenizer, readers)
    raise ExpressionError("a metric expression combines logit(...), prob(...) and logprob(...) with "
                          "+ - * / and numbers; this part is none of those", where(offset_of(node)),
                          hint="e.g. prob(answer) - prob(foil), or logit(\" she\") - logit(\" he\")")


_OPS = {"PLUS", "MINUS", "STAR", "SLASH"}


def _fold(parts) -> Callable:
    first, steps = parts[0], list(zip(parts[1::2], parts[2::2]))
    apply = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b}

    def run(readout):
        value = first(readout)
        for op, operand in steps:
            value = apply[str(op)](value, operand(readout))
        return value

    return run


def _number(token: Token, where) -> Callable:
    raise ExpressionError(f"unexpected '{token}' in a metric expression", where(token.start_pos or 0))


def _call(node: Tree, where, tokenizer, readers: set) -> Callable:
    from .expr.parser import offset_of

    name_token, arguments = node.children
    name = str(name_token)
    args = [] if arguments is None else list(arguments.children)
    if name not in READERS:
        raise ExpressionError(f"unknown function '{name}' in a metric expression; the metric reads "
                              f"{', '.join(n + '()' for n in READERS)}", where(offset_of(name_token)))
    if len(args) != 1:
        raise ExpressionError(f"{name}() reads one token or token set, e.g. {name}(answer), got {len(args)} "
                              "arguments", where(offset_of(node)))
    readers.add(name)
    pick = _token_set(args[0], where, tokenizer)
    read = {"logit": lambda r, ids, mask: r.set_logit(ids, mask),
            "prob": lambda r, ids, mask: r.set_logprob(ids, mask).exp(),
            "logprob": lambda r, ids, mask: r.set_logprob(ids, mask)}[name]
    return lambda r: read(r, *pick(r))


def _token_set(node, where, tokenizer) -> Callable:
    """fn(readout) -> (ids [B, K], mask [B, K]) of the argument."""
    from .expr.parser import offset_of
    from .expr.values import unescape

    if isinstance(node, Tree) and node.data == "name" and str(node.children[0]) in ("answer", "foil"):
        which = str(node.children[0])
        return (lambda r: (r.answers, r.answer_mask)) if which == "answer" else (lambda r: (r.foils, r.foil_mask))
    if isinstance(node, Tree) and node.data == "string_literal":
        return _constant_set([unescape(node.children[0], where)], node, where, tokenizer)
    if isinstance(node, Tree) and node.data == "call" and str(node.children[0]) in SET_FUNCTIONS:
        inner = [] if node.children[1] is None else list(node.children[1].children)
        if len(inner) == 1 and isinstance(inner[0], Tree) and inner[0].data == "string_literal":
            text = unescape(inner[0].children[0], where)
            alternatives = text.split("|") if str(node.children[0]) == "first_tokens" else [text]
            return _constant_set(alternatives, node, where, tokenizer)
    raise ExpressionError("a metric reads answer, foil, a string (its first token) or "
                          "first_tokens(\"...|...\")", where(offset_of(node)))


def _constant_set(texts, node, where, tokenizer) -> Callable:
    """The strings' first tokens in the bound tokenizer (checked now, located); unbound (no
    tokenizer: the plan before prepare binds it), the metric refuses to compute."""
    from .expr.parser import offset_of

    if tokenizer is None:
        def unbound(r):
            raise RuntimeError(f"the metric expression's strings {texts} were not bound to a tokenizer "
                               "(compile.prepare binds the plan's metrics)")
        return unbound
    ids = _first_tokens(texts, tokenizer, lambda text: ExpressionError(f"{text!r} has no tokens",
                                                                      where(offset_of(node))))

    def pick(r):
        import torch

        row = torch.tensor(ids, device=r.x.device)[None, :].expand(r.x.shape[0], -1)
        return row, row >= 0

    return pick


def _first_tokens(texts, tokenizer, fault) -> list:
    ids: list = []
    for text in texts:
        encoded = tokenizer.encode(text)
        if not encoded:
            raise fault(text)
        if encoded[0] not in ids:
            ids.append(encoded[0])
    return ids
