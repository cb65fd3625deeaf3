"""A tokenizer built inside the test run, so runtime tests need no downloaded file.

Byte-level pre-tokenization (GPT-2/Pythia style: a leading space belongs to the word)
over a word-level vocabulary of every word the shipped specs and the tests' strings use, so
most words are one token; the words in SPLIT come out in the pieces given there (as Pythia
splits them), so multi-token slots are tested too. Unknown words are "<unk>". "<|endoftext|>" is BOS
and EOS. Tests whose point is the seed's own numbers use the real Pythia tokenizer.

Ids are stable (LISTED, SIZE): editing a test's text does not change the random test models.
"""
from __future__ import annotations

import ast
import os
import re
import tempfile
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPECIAL = ["<|endoftext|>", "<unk>"]
# Words that come out in several tokens, as Pythia splits them: the test specs' nouns and
# descriptors then have Pythia's token lengths (slots of one, two and three tokens, equal
# lengths where the specs ask for them), and those specs need no downloaded file.
SPLIT = {" Cows": [" C", "ows"], " Horses": [" H", "orses"], " Pigs": [" P", "igs"], " Wolves": [" W", "olves"],
         " Elephants": [" Ele", "phants"], " herbivorous": [" herb", "iv", "orous"],
         " carnivorous": [" carn", "iv", "orous"], " bipedal": [" bip", "ed", "al"],
         " quadrupedal": [" quadrup", "ed", "al"], " interpretability": [" interpret", "ability"]}


# The words the vocabulary starts with, in order: token ids stay what they are when test text
# changes (a new word takes a free id at the end), and the vocabulary keeps SIZE tokens, so a
# seeded random model is the same model whatever words the tests add (its numbers once moved
# with every edit of a test file: a Spearman threshold passed or failed by chance).
LISTED = Path(__file__).with_name("word_tokenizer_words.txt")
SIZE = 8192


def _words() -> list:
    """The listed words, then any word the tests' strings and the specs use that the list lacks."""
    listed = LISTED.read_text().split()
    known = set(listed)
    return listed + [w for w in _found_words() if w not in known]


def _found_words() -> list:
    """Every word of the shipped specs and of the test files' string literals (prompts, spec texts,
    vocabularies). Names, comments and docstrings are left out: no prompt reads them, and each new
    word of theirs took two of the few free ids. (The list holds every word the whole test files
    used until then, so no id moved when this narrowed.)"""
    text = "\n".join([*(p.read_text() for p in ROOT.glob("specs/*.yaml")),
                      *(" ".join(_strings(p)) for p in ROOT.glob("tests/**/*.py"))])
    words = set(re.findall(r"[A-Za-z]+|[0-9]", text))
    words |= {w.lower() for w in words}  # `lower(noun)` in a template makes words no file spells
    punctuation = set(".,:;!?'\"-()[]{}")
    return sorted(words | punctuation)


def _strings(path: Path) -> list:
    """The string constants of a Python file (f-strings' literal parts too), its docstrings left out."""
    tree = ast.parse(path.read_text())
    documented = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, documented) and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


@lru_cache(maxsize=1)
def word_tokenizer_file() -> Path:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    # Isolate each later piece of a SPLIT word where its earlier pieces precede it.
    rules = []
    for pieces in SPLIT.values():
        for i in range(1, len(pieces)):
            rules.append(f"(?<={re.escape(''.join(pieces[:i]))}){re.escape(pieces[i])}"
                         + (r"\b" if i == len(pieces) - 1 else ""))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex("|".join(rules)), behavior="isolated"), byte_level])
    vocab = {token: i for i, token in enumerate(SPECIAL)}
    for word in _words():
        for form in (word, " " + word):
            for piece, _ in pre.pre_tokenize_str(form):
                vocab.setdefault(piece, len(vocab))
    if len(vocab) > SIZE:
        raise ValueError(f"the test vocabulary outgrew {SIZE} tokens: raise SIZE (every random test model changes)")
    for i in range(len(vocab), SIZE):
        vocab[f"<unused{i}>"] = i
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(SPECIAL)
    path = Path(tempfile.mkdtemp(prefix="mi-dsl-test-tokenizer-")) / "tokenizer.json"
    backend.save(str(path))
    allow_for_tests(path)
    return path


def allow_for_tests(path: Path) -> None:
    """The test specs name this shared tokenizer from their own temporary folders, outside their
    trees: the tests allow it as a user would, through MI_DSL_ALLOW_PATH (spec/paths.py), which
    the CLI subprocesses inherit. Confinement tests clear the variable."""
    from mi_dsl.spec.paths import ALLOW_ENV

    allowed = [p for p in os.environ.get(ALLOW_ENV, "").split(os.pathsep) if p]
    if str(path) not in allowed:
        os.environ[ALLOW_ENV] = os.pathsep.join([*allowed, str(path)])


def word_level_tokenizer(words: list, folder: Path) -> Path:
    """A plain word-level tokenizer.json over `words` (ids in order) in `folder`: whitespace and
    punctuation split, "[UNK]" for unknown words, "<bos>" a special token."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(["<bos>"])
    path = Path(folder) / "tokenizer.json"
    backend.save(str(path))
    return path
