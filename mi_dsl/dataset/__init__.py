"""The dataset stage: Spec + tokenizer -> clean/corrupted prompt pairs (no torch).

tokenizer (the one tokenizer resolver) -> templates (slot filling) -> build (vocabulary
filters, slot product, pairing, answers, spans).
"""
from .build import (Dataset, Prompt, PromptPair, VocabReport, build_dataset, check_without_tokenizer,
                    slot_vocabularies)

__all__ = ["Dataset", "Prompt", "PromptPair", "VocabReport", "build_dataset", "check_without_tokenizer",
           "slot_vocabularies"]
