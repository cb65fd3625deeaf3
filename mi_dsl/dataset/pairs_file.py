"""`dataset: {file: ...}`: fixed prompt pairs from a file -> the same `Dataset` templates make.

Each row (dataset/pair_rows.py) gives a clean and a corrupted text, an answer and a foil.
Named spans, marked in the text ({io:Mary}) or given as character offsets, become token
spans by the rule templates use (dataset/build.tokenized_prompt: the tokens a span's
characters overlap), so `io`, `s#2` and `name[-1]` select positions in file prompts as in
templated ones, and patching aligns prompts of different lengths by them. The answer and
foil are read as the spec's `answers:` says (one token, first token, token set, token id,
continuation), every fault located at the row. No torch.
"""
from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import Location, SchemaError, SpecMeaningError, SpecWarning
from .answers import CONTINUATION
from .build import Dataset, PromptPair, keep_equal_lengths, tokenized_prompt
from .pair_rows import ANSWER_DEFAULTS, RawPair, read_pair_rows

CharSpans = List[Tuple[str, int, int]]  # (name, char start, char end) in order of the text
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LOOKS_MARKED = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*:")


def answer_reading(spec) -> str:
    raw = spec.data["dataset"]
    return raw.get("answers", ANSWER_DEFAULTS[raw.get("layout", "columns")])


def answers_are_continuations(spec) -> bool:
    """Known without a tokenizer, as for templates: the compiler checks metrics against it."""
    return answer_reading(spec) == CONTINUATION


def span_names(spec) -> List[str]:
    """The named spans of the clean prompts, in order of first appearance (position selectors name them)."""
    names: Dict[str, None] = {}
    for _text, spans, _values in (_spans_of(spec, row, "clean") for row in read_pair_rows(spec)):
        for name, _a, _b in spans:
            names.setdefault(name)
    return list(names)


def check_pairs_file(spec) -> List[SpecWarning]:
    """What needs no tokenizer: the file, its columns, markers and offsets (`mi-run validate`)."""
    rows = read_pair_rows(spec)
    for row in rows:
        for side in ("clean", "corrupted"):
            _spans_of(spec, row, side)
    return _unmarked_warning(spec, rows)


def build_pairs_dataset(spec, tokenizer) -> Dataset:
    rows = read_pair_rows(spec)
    reading = answer_reading(spec)
    pairs = []
    for row in rows:
        clean_text, clean_spans, values = _spans_of(spec, row, "clean")
        corrupted_text, corrupted_spans, corrupted_values = _spans_of(spec, row, "corrupted")
        clean = tokenized_prompt(clean_text, clean_spans, tokenizer, spec.model.prepend_bos)
        corrupted = tokenized_prompt(corrupted_text, corrupted_spans, tokenizer, spec.model.prepend_bos)
        answers = read_answer(row.answer, reading, tokenizer, row.where, "answer")
        foils = read_answer(row.foil, reading, tokenizer, row.where, "foil")
        _check_distinct(answers, foils, reading, tokenizer, row)
        pairs.append(PromptPair(clean, corrupted, answers, foils, values, corrupted_values,
                                reading == CONTINUATION))
    names = list(dict.fromkeys(name for p in pairs for name in p.clean.spans))
    dataset = Dataset(pairs, {}, names, _unmarked_warning(spec, rows))
    keep_equal_lengths(spec, dataset, "dataset")
    return dataset


# ----------------------------------------------------------------------------- named spans

def _spans_of(spec, row: RawPair, side: str) -> Tuple[str, CharSpans, Tuple[Tuple[str, str], ...]]:
    """(text without markers, named character spans, (name, text) of each name's first span)."""
    text = getattr(row, side)
    mode = spec.data["dataset"].get("spans", "none")
    if mode == "markers":
        text, spans = parse_markers(text, row.where, side)
    elif mode == "offsets":
        spans = _offsets(getattr(row, side + "_spans"), text, row.where, side)
    else:
        spans = []
    values: Dict[str, str] = {}
    for name, start, end in spans:
        values.setdefault(name, text[start:end])
    return text, spans, tuple(values.items())


def parse_markers(text: str, where: Location, side: str = "clean") -> Tuple[str, CharSpans]:
    """'When {io:Mary} and {s:John} ...' -> ('When Mary and John ...', [(io, 5, 9), (s, 14, 18)]);
    {{ and }} are literal braces."""
    out: List[str] = []
    spans: CharSpans = []
    length, i = 0, 0
    while i < len(text):
        if text.startswith("{{", i) or text.startswith("}}", i):
            out.append(text[i])
            length += 1
            i += 2
            continue
        if text[i] == "}":
            raise SchemaError(f"unmatched '}}' in the {side} prompt '{text}'; write '}}}}' for a literal brace", where)
        if text[i] != "{":
            out.append(text[i])
            length += 1
            i += 1
            continue
        close = text.find("}", i + 1)
        name, colon, inner = text[i + 1:close].partition(":") if close > 0 else ("", "", "")
        if close < 0 or not colon or not _NAME.fullmatch(name) or "{" in inner or not inner:
            raise SchemaError(f"a marker in the {side} prompt '{text}' is not {{name:text}}, e.g. {{io:Mary}}", where,
                              hint="write '{{' and '}}' for literal braces")
        spans.append((name, length, length + len(inner)))
        out.append(inner)
        length += len(inner)
        i = close + 1
    return "".join(out), spans


def _offsets(value: Any, text: str, where: Location, side: str) -> CharSpans:
    """name -> [start, end] or a list of them (JSON, or JSON text in a CSV cell), end excluded."""
    if value in (None, ""):
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise SchemaError(f"the {side} spans are not JSON: {err.msg}", where) from None
    if not isinstance(value, dict):
        raise SchemaError(f"the {side} spans must be an object name -> [start, end], not {value!r}", where)
    spans: CharSpans = []
    for name, given in value.items():
        pieces = given if given and isinstance(given[0], (list, tuple)) else [given]
        for piece in pieces:
            if (not _NAME.fullmatch(str(name)) or not isinstance(piece, (list, tuple)) or len(piece) != 2
                    or not all(isinstance(x, int) for x in piece) or not 0 <= piece[0] < piece[1] <= len(text)):
                raise SchemaError(f"{side} span {name!r}: {piece!r} is not [start, end] with 0 <= start < end <= "
                                  f"{len(text)} (the text's length) for '{text}'", where)
            spans.append((str(name), piece[0], piece[1]))
    return sorted(spans, key=lambda s: s[1])  # s#2 is the second occurrence in the text


def _unmarked_warning(spec, rows: Sequence[RawPair]) -> List[SpecWarning]:
    """Markers written without `spans: markers` would be read as text, braces and all."""
    if spec.data["dataset"].get("spans", "none") == "markers":
        return []
    marked = next((r for r in rows if _LOOKS_MARKED.search(r.clean) or _LOOKS_MARKED.search(r.corrupted)), None)
    if marked is None:
        return []
    return [SpecWarning(f"the prompt '{marked.clean}' looks marked ({{name:text}}), but the dataset does not say "
                        "`spans: markers`, so the braces are read as text", marked.where)]


# ----------------------------------------------------------------------------- answers

def read_answer(value: Any, reading: str, tokenizer, where: Location, role: str) -> Tuple[int, ...]:
    """An answer or foil cell as token ids: one token, a set, or a continuation in order."""
    if reading == "token_id":
        ids = value if isinstance(value, list) else [value]
        return tuple(dict.fromkeys(_token_id(v, tokenizer, where, role) for v in ids))
    if reading == CONTINUATION:
        ids = tokenizer.encode(_string(value, where, role))
        if not ids:
            raise SchemaError(f"the {role} {value!r} has no tokens, and a continuation needs one", where)
        return tuple(ids)
    if isinstance(value, list):
        texts = value
    elif reading == "token_set":
        texts = _string(value, where, role).split("|")
    else:
        texts = [value]
    return tuple(dict.fromkeys(_one_token(_string(t, where, role), reading, tokenizer, where, role) for t in texts))


def _string(value: Any, where: Location, role: str) -> str:
    if not isinstance(value, str) or not value:
        hint = "a number is read as a token id with `answers: token_id`" if isinstance(value, int) else ""
        raise SchemaError(f"the {role} must be text here, not {value!r}", where, hint=hint)
    return value


def _one_token(text: str, reading: str, tokenizer, where: Location, role: str) -> int:
    ids = tokenizer.encode(text)
    if not ids:
        raise SchemaError(f"the {role} {text!r} has no tokens", where)
    if len(ids) > 1 and reading != "first_token":
        shown = ", ".join(repr(t) for t in tokenizer.token_strs(ids))
        raise SchemaError(f"the {role} {text!r} is {len(ids)} tokens ({shown}), not one", where,
                          hint="a multi-token answer is a continuation (`answers: continuation`, read by the "
                               "continuation_* metrics); `answers: first_token` compares the first tokens only")
    return ids[0]


def _token_id(value: Any, tokenizer, where: Location, role: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < tokenizer.vocab_size:
        raise SchemaError(f"the {role} {value!r} is not a token id of this tokenizer (0 to "
                          f"{tokenizer.vocab_size - 1})", where,
                          hint="token ids belong to the tokenizer the file was made for; give the answer as "
                               "text (`answers: token`) to tokenize it with this model's")
    return value


def _check_distinct(answers, foils, reading: str, tokenizer, row: RawPair) -> None:
    shared = answers == foils if reading == CONTINUATION else [t for t in answers if t in foils]
    if shared:
        shown = tokenizer.token_strs(list(answers) if reading == CONTINUATION else shared[:1])
        raise SpecMeaningError(f"answer and foil share {shown} for the prompt '{row.clean}', so the metric cannot "
                               "tell them apart", row.where, hint="check the row's answer and foil columns")


def dataset_location(spec, key: Optional[str] = None) -> Location:
    return spec.loc("dataset", key) if key and key in spec.data["dataset"] else spec.loc("dataset")
