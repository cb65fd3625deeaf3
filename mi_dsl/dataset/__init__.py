"""The dataset stage: Spec + tokenizer -> clean/corrupted prompt pairs (no torch).

tokenizer (the one tokenizer resolver) -> templates (slot filling) -> build (vocabulary
filters, slot product, pairing, answers, spans); or pair_rows + pairs_file (fixed pairs
from a CSV, JSONL or Parquet file); source picks one for a spec.
"""
from .build import Dataset, Prompt, PromptPair, VocabReport, slot_vocabularies
from .source import build_dataset, check_without_tokenizer

__all__ = ["Dataset", "Prompt", "PromptPair", "VocabReport", "build_dataset", "check_without_tokenizer",
           "slot_vocabularies"]
