"""Spec snippets the tests share: the seed's syllogism and the small animal/size task.

Each builder returns YAML text in the layout the tests wrote by hand (block mappings at the
top level, flow lists inside), so a test that locates an error by line and column still
counts the same lines. Join parts with `spec_text`.
"""
from __future__ import annotations

import textwrap
from typing import Iterable, Optional, Sequence, Tuple

# The seed's prompt: the descriptor is the answer, its opposite the foil and the corruption.
SYLLOGISM_PROMPTS = """\
prompts:
  template: "All {category} are {descriptor}. {noun} are {category}. Therefore, {lower(noun)} are"
  slots: {category: categories, descriptor: descriptors, noun: nouns}
  answer: 'first_token(" " + descriptor)'
  foil: 'first_token(" " + opposite(descriptor))'
  corrupt: {swap: descriptor}
"""

ANIMAL_TEMPLATE = "The {animal} are {size}. Are the {animal}"
# The small task: the size is the answer, its opposite the foil and the corruption.
ANIMAL_PROMPTS = f"""\
prompts:
  template: "{ANIMAL_TEMPLATE}"
  answer: 'first_token(" " + size)'
  foil: 'first_token(" " + opposite(size))'
  corrupt: {{swap: size}}
"""


def _items(words: Iterable[str]) -> str:
    return "{items: [%s]}" % ", ".join(words)


def _pairs(pairs: Iterable[Tuple[str, str]]) -> str:
    return "{pairs: [%s]}" % ", ".join(f"[{a}, {b}]" for a, b in pairs)


def _equal_lengths(value: Optional[bool]) -> str:
    return "" if value is None else f"  equal_lengths: {str(value).lower()}\n"


def syllogism(categories: Sequence[str] = ("birds", "fish", "mammals"),
              descriptors: Sequence[Tuple[str, str]] = (("herbivorous", "carnivorous"), ("bipedal", "quadrupedal")),
              nouns: Sequence[str] = ("Cows", "Horses", "Wolves"), equal_lengths: Optional[bool] = None) -> str:
    """`vocabularies:` (categories, descriptor pairs, nouns) and the seed's `prompts:`."""
    return ("vocabularies:\n"
            f"  categories: {_items(categories)}\n"
            f"  descriptors: {_pairs(descriptors)}\n"
            f"  nouns: {_items(nouns)}\n"
            + SYLLOGISM_PROMPTS + _equal_lengths(equal_lengths))


def animals(names: Sequence[str] = ("cats", "dogs", "owls"),
            sizes: Sequence[Tuple[str, str]] = (("big", "small"), ("tall", "short")),
            template: str = ANIMAL_TEMPLATE) -> str:
    """`vocabularies:` (animal, size pairs) and `prompts:` whose answer is the size, swapped."""
    return ("vocabularies:\n"
            f"  animal: {_items(names)}\n"
            f"  size: {_pairs(sizes)}\n"
            + ANIMAL_PROMPTS.replace(ANIMAL_TEMPLATE, template))


def spec_text(*parts: str) -> str:
    """The parts (each dedented; a later part's opening blank line dropped) one after another,
    each ending in a newline."""
    texts = [textwrap.dedent(part) if i == 0 else textwrap.dedent(part).lstrip("\n") for i, part in enumerate(parts)]
    return "".join(t if t.endswith("\n") else t + "\n" for t in texts)
