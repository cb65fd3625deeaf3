"""The schema part of `dataset:`: fixed clean/corrupted pairs read from a file.

The field's datasets are lists of pairs (EAP-IG's CSVs, MIB's datasets), not templates. A
spec gives either `prompts:` (a template filled by the product over vocabularies) or
`dataset:` (one pair per row of a file); both become the same pairs with answer and foil
tokens and named token spans, so the pipeline, the metrics and every analysis read them
alike. docs/datasets.md documents each layout's columns.
"""
from __future__ import annotations

from typing import Any, Dict

LAYOUTS = ("columns", "eap_ig", "mib")
ANSWER_READINGS = ("token", "first_token", "token_set", "token_id", "continuation")
SPAN_MODES = ("none", "markers", "offsets")
MIB_TASKS = ("ioi", "mcqa", "arc", "arithmetic")
COLUMN_ROLES = {"clean": "the clean prompt's text", "corrupted": "the corrupted prompt's text",
                "answer": "the answer (eap_ig: correct_idx)", "foil": "the foil (eap_ig: incorrect_idx)",
                "clean_spans": "the clean prompt's span offsets (spans: offsets)",
                "corrupted_spans": "the corrupted prompt's span offsets (spans: offsets)"}


def _str(description: str, **extra) -> Dict[str, Any]:
    return {"type": "string", "description": description, **extra}


DATASET: Dict[str, Any] = {
    "type": "object",
    "description": "Fixed prompt pairs read from a file, one pair per row (instead of `prompts:`): the clean "
                   "prompt, its corrupted partner, the answer and the foil, and optionally named spans so "
                   "named positions (io, s#2, name[-1]) work without templates. See docs/datasets.md.",
    "additionalProperties": False,
    "required": ["file"],
    "properties": {
        "file": _str("The pair file, relative to the spec and inside its tree: CSV (a header row names the "
                     "columns), JSONL (one JSON object per line) or Parquet."),
        "format": _str("How to read `file` (default from its suffix: .csv, .jsonl, .parquet).",
                       enum=["csv", "jsonl", "parquet"]),
        "layout": _str("Which columns hold what. `columns` (default): clean, corrupted, answer, foil (rename "
                       "them with `columns:`). `eap_ig`: EAP-IG's CSV: clean, corrupted, correct_idx, "
                       "incorrect_idx (token ids of the model EAP-IG's file was made for). `mib`: a MIB dataset's "
                       "rows (prompt, a counterfactual column, the task's answer fields; `task:` says which).",
                       enum=list(LAYOUTS)),
        "columns": {"type": "object", "additionalProperties": False, "minProperties": 1,
                    "description": "layout columns: the column holding each part, when not named after it "
                                   "(a dotted path reads inside a JSON object, e.g. counterfactual.prompt).",
                    "properties": {role: _str(f"The column holding {what}; default {role}.")
                                   for role, what in COLUMN_ROLES.items()}},
        "answers": _str("How the answer and foil columns are read. `token` (default for layout columns): text "
                        "that is exactly one token (e.g. ' Mary'), or a list of such texts as a token set. "
                        "`first_token`: the text's first token (as EAP-IG and MIB read theirs; default for mib). "
                        "`token_set`: alternatives separated by '|' (or a list), each one token. `token_id`: a "
                        "token id, or a list of ids as a set (default for eap_ig). `continuation`: the text's "
                        "tokens in order, read by the continuation_* metrics.", enum=list(ANSWER_READINGS)),
        "spans": _str("Named spans of the prompts' text, so position selectors can name them. `none` "
                      "(default). `markers`: the text marks them as {name:text}, e.g. 'When {io:Mary} and "
                      "{s:John} went to the store, {s:John} gave a drink to' (the braces are removed; {{ and }} "
                      "are literal braces). `offsets`: columns clean_spans and corrupted_spans hold JSON "
                      "objects name -> [start, end] or a list of them, character offsets (end excluded).",
                      enum=list(SPAN_MODES)),
        "task": _str("layout mib: the MIB task whose fields give the answer and foil: ioi (metadata."
                     "indirect_object vs metadata.subject, each after a space), mcqa or arc (the choice label "
                     "at answerKey), arithmetic (label).", enum=list(MIB_TASKS)),
        "counterfactual": _str("layout mib: the column of the corrupted prompt (default: "
                               "s2_io_flip_counterfactual for ioi, symbol_counterfactual for mcqa and arc, "
                               "random_counterfactual for arithmetic).", pattern="^[A-Za-z_][A-Za-z0-9_]*$"),
        "equal_lengths": {"type": "boolean",
                          "description": "Opt-in filter: keep only the pairs whose clean and corrupted prompts "
                                         "both have the most common token length, saying how many were dropped."},
    },
    "allOf": [
        {"if": {"properties": {"layout": {"const": "mib"}}, "required": ["layout"]},
         "then": {"required": ["task"]}},
    ],
}
