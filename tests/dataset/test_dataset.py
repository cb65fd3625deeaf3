"""mi_dsl.dataset (and the pipeline's sampling and symmetric pairing): the seed's data setup as data.

The seed notebook's check_len, generate_combinations, random.seed(42)/random.sample and
pair_opposites are restated here in a few lines each and compared with what mi-dsl builds.
Most tests use the tiny word-level tokenizer (tests/conftest.py); the Pythia ones skip
without the shared tokenizer file.
"""
from __future__ import annotations

import itertools
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, SPECS
from tests.spec_parts import ANIMAL_PROMPTS
from mi_dsl.dataset import build_dataset
from mi_dsl.errors import FileAccessError, SchemaError, SpecMeaningError
from mi_dsl.spec import load_spec
from mi_dsl.dataset.tokenizer import load_tokenizer

PYTHIA_SPEC = SPECS / "syllogism_pythia160m.yaml"

SMALL = """\
version: 1
seed: 42
model: {source: pretrained, name: mi-dsl-tests/no-such-model, prepend_bos: true}
vocabularies:
  animal:
    items: [cats, dogs, owls, mice]
  size:
    pairs: [[big, small], [tall, short], [fast, slow]]
""" + ANIMAL_PROMPTS


@pytest.fixture
def build(tmp_path, tiny_tokenizer):
    """build(spec text with optional replacements, *overrides) -> (spec, tokenizer, dataset)."""

    def run(text: str = SMALL, *overrides, name: str = "small.yaml"):
        file = tmp_path / name
        file.write_text(text)
        spec = load_spec(file, [f"model.tokenizer={tiny_tokenizer}", *overrides])
        tokenizer = load_tokenizer(spec.model, spec.bos_token)
        return spec, tokenizer, build_dataset(spec, tokenizer)

    return run


# --------------------------------------------------------------------------- the seed, restated

def check_len(tokenizer, items, specified_len, check_lowercase=False, lowercase_spec_len=None):
    """The seed's check_len, with the raw tokenizer in place of model.to_str_tokens (minus BOS)."""
    def n(text):
        return len(tokenizer.encode(text))

    return [item for item in items if n(" " + item) == specified_len
            and (not check_lowercase or n(" " + item.lower()) == lowercase_spec_len)]


def pair_opposites(prompts_list, opposites_prompts_list, answer_tokens_list):
    """The seed's pair_opposites (answer tokens as tuples instead of tensors)."""
    prompts, answer_tokens = [], []
    for i in range(len(prompts_list)):
        if prompts_list[i] not in prompts:
            prompts.append(prompts_list[i])
            answer_tokens.append(answer_tokens_list[i])
        if opposites_prompts_list[i] not in prompts:
            prompts.append(opposites_prompts_list[i])
            answer_tokens.append((answer_tokens_list[i][1], answer_tokens_list[i][0]))
    return prompts, answer_tokens


# --------------------------------------------------------------------------- Pythia: the seed's experiment

@pytest.fixture(scope="module")
def pythia(pythia_tokenizer):
    spec = load_spec(PYTHIA_SPEC, [f"model.tokenizer={pythia_tokenizer}"])
    tokenizer = load_tokenizer(spec.model, spec.bos_token)
    return spec, tokenizer, build_dataset(spec, tokenizer)


def test_pythia_filters_match_the_seeds_check_len(pythia):
    spec, tokenizer, dataset = pythia
    vocab = {name: v.items for name, v in spec.vocabularies.items()}
    assert dataset.vocab["categories"].kept == check_len(tokenizer, vocab["categories"], 1)
    assert dataset.vocab["descriptors"].kept == check_len(tokenizer, vocab["descriptors"], 3)
    nouns = check_len(tokenizer, vocab["nouns"], 2, check_lowercase=True, lowercase_spec_len=1)
    assert dataset.vocab["nouns"].kept == nouns and len(nouns) == 16 and nouns.count("Pigs") == 2


def test_pythia_prompts_follow_the_seeds_generate_combinations(pythia):
    _, _, dataset = pythia
    kept = {name: r.kept for name, r in dataset.vocab.items()}
    expected = [f"All {c} are {d}. {n} are {c}. Therefore, {n.lower()} are"
                for c, d, n in itertools.product(kept["categories"], kept["descriptors"], kept["nouns"])]
    assert [p.clean.text for p in dataset.pairs] == expected


def test_pythia_slot_spans_include_bos(pythia):
    _, tokenizer, dataset = pythia
    assert tokenizer.bos_id == tokenizer.backend.token_to_id("<|endoftext|>")
    for pair in dataset.pairs:
        values = dict(pair.values)
        for prompt in (pair.clean, pair.corrupted):
            assert prompt.ids[0] == tokenizer.bos_id and len(prompt.ids) == 17
            assert prompt.spans["descriptor"] == ((4, 7),)
            assert prompt.spans["noun"][1] == (15, 16)
            assert prompt.spans["category"] == ((2, 3), (11, 12))
        assert tokenizer.backend.decode(list(pair.clean.ids[4:7])) == " " + values["descriptor"]
        assert tokenizer.backend.decode(list(pair.clean.ids[15:16])) == " " + values["noun"].lower()


def test_pythia_answers_are_first_tokens_of_the_descriptor_and_its_opposite(pythia):
    spec, tokenizer, dataset = pythia
    opposite = {a: b for a, b in spec.vocabularies["descriptors"].pairs}
    opposite.update({b: a for a, b in spec.vocabularies["descriptors"].pairs})
    for pair in dataset.pairs:
        word = dict(pair.values)["descriptor"]
        assert pair.answer == tokenizer.encode(" " + word)[0]
        assert pair.foil == tokenizer.encode(" " + opposite[word])[0]
        assert pair.corrupted.text == pair.clean.text.replace(f" {word}.", f" {opposite[word]}.", 1)
    herbivorous = next(p for p in dataset.pairs if dict(p.values)["descriptor"] == "herbivorous")
    assert (herbivorous.answer, herbivorous.foil) == (23008, 27771)


def test_pythia_duplicate_pigs_warn_and_dedupe_drops_them(pythia, pythia_tokenizer):
    _, _, dataset = pythia
    assert [w.message for w in dataset.warnings] == [
        "vocabulary 'nouns' lists 'Pigs' more than once; duplicates are kept (set dedupe: true to drop them)"]
    assert dataset.vocab["nouns"].duplicates == ["Pigs"]
    spec = load_spec(PYTHIA_SPEC, [f"model.tokenizer={pythia_tokenizer}", "vocabularies.nouns.dedupe=true"])
    deduped = build_dataset(spec, load_tokenizer(spec.model, spec.bos_token))
    assert deduped.warnings == []
    assert deduped.vocab["nouns"].kept.count("Pigs") == 1 and deduped.vocab["nouns"].after == 15
    assert len(deduped.pairs) == 9 * 10 * 15


def test_pythia_sample_and_symmetric_reproduce_the_seed(pythia):
    """random.seed(42); random.sample(range(1440), 64); pair_opposites(...), as the notebook does."""
    from mi_dsl.runtime.pipeline import _sample, symmetric

    _, _, dataset = pythia
    random.seed(42)
    indices = random.sample(range(len(dataset.pairs)), 64)
    clean = [dataset.pairs[i].clean.text for i in indices]
    corrupted = [dataset.pairs[i].corrupted.text for i in indices]
    answers = [(dataset.pairs[i].answer, dataset.pairs[i].foil) for i in indices]
    prompts, answer_tokens = pair_opposites(clean, corrupted, answers)

    ours = symmetric(_sample(dataset.pairs, 64, 42, executor=None))
    assert [p.clean.text for p in ours] == prompts
    assert [(p.answer, p.foil) for p in ours] == answer_tokens


# --------------------------------------------------------------------------- vocabularies and filters

def test_a_pair_is_dropped_when_one_member_fails_the_filter(build):
    text = SMALL.replace("[fast, slow]]", "[fast, very slow]]\n    filter: 'ntokens(\" \" + item) == 1'")
    _, _, dataset = build(text)
    report = dataset.vocab["size"]
    assert report.kept == ["big", "small", "tall", "short"]
    assert report.dropped == ["fast", "very slow"]  # "fast" passes alone but loses its partner
    assert (report.before, report.after) == (6, 4)
    assert {dict(p.values)["size"] for p in dataset.pairs} == {"big", "small", "tall", "short"}


def test_item_filters_duplicates_and_dedupe(build):
    text = SMALL.replace("[cats, dogs, owls, mice]", "[cats, dogs, cats, zebras]\n    filter: 'item != \"zebras\"'")
    _, _, dataset = build(text)
    assert dataset.vocab["animal"].kept == ["cats", "dogs", "cats"]
    assert dataset.vocab["animal"].dropped == ["zebras"]
    assert "'cats' more than once" in dataset.warnings[0].message
    _, _, deduped = build(text, "vocabularies.animal.dedupe=true")
    assert deduped.vocab["animal"].kept == ["cats", "dogs"] and not deduped.warnings


def test_duplicate_pairs_dedupe(build):
    _, _, dataset = build(SMALL.replace("[fast, slow]]", "[fast, slow], [big, small]]"),
                          "vocabularies.size.dedupe=true")
    assert dataset.vocab["size"].kept == ["big", "small", "tall", "short", "fast", "slow"]


def test_prompts_are_the_product_in_slot_order(build):
    _, _, dataset = build()
    assert dataset.slots == ["animal", "size"]
    assert len(dataset.pairs) == 4 * 6
    assert [dict(p.values)["size"] for p in dataset.pairs[:6]] == ["big", "small", "tall", "short", "fast", "slow"]
    first = dataset.pairs[0]
    assert first.clean.text == "The cats are big. Are the cats"
    assert first.corrupted.text == "The cats are small. Are the cats"


def test_explicit_slots_set_the_product_order(build):
    _, _, dataset = build(SMALL.replace("  corrupt:", "  slots: {size: size, animal: animal}\n  corrupt:"))
    assert dataset.slots == ["size", "animal"]
    assert [dict(p.values)["animal"] for p in dataset.pairs[:4]] == ["cats", "dogs", "owls", "mice"]


# --------------------------------------------------------------------------- spans

def test_spans_of_repeated_and_multi_token_slots(build):
    _, tokenizer, dataset = build(SMALL.replace("[fast, slow]]", "[fast, very slow]]"), "prompts.equal_lengths=false")
    pair = next(p for p in dataset.pairs if dict(p.values) == {"animal": "owls", "size": "fast"})
    assert pair.clean.spans == {"animal": ((2, 3), (8, 9)), "size": ((4, 5),)}
    assert pair.corrupted.spans == {"animal": ((2, 3), (9, 10)), "size": ((4, 6),)}  # "very slow"
    assert tokenizer.token_strs(pair.corrupted.ids[4:6]) == ["very", "slow"]


def test_without_bos_spans_start_at_zero(build):
    _, tokenizer, dataset = build(SMALL, "model.prepend_bos=false")
    pair = dataset.pairs[0]
    assert pair.clean.ids[0] != tokenizer.bos_id and len(pair.clean.ids) == 8
    assert pair.clean.spans == {"animal": ((1, 2), (7, 8)), "size": ((3, 4),)}


def test_a_transformed_placeholder_spans_its_rendered_text(build):
    text = SMALL.replace("Are the {animal}", "Are the {upper(animal)}").replace("[cats, dogs, owls, mice]",
                                                                           "[Cats, Dogs]")
    _, _, dataset = build(text, "prompts.equal_lengths=false")
    pair = dataset.pairs[0]
    assert pair.clean.text == "The Cats are big. Are the CATS"
    assert pair.clean.spans["animal"][1] == (8, 9)


# --------------------------------------------------------------------------- corruption

def test_corrupt_by_template(build):
    text = SMALL.replace("corrupt: {swap: size}", "corrupt: {template: \"The {animal} is {size}. Are the {animal}\"}")
    _, _, dataset = build(text)
    for pair in dataset.pairs:
        assert pair.corrupted.text == pair.clean.text.replace(" are ", " is ", 1)
        assert pair.corrupted.spans == pair.clean.spans
    big = dataset.pairs[0]
    assert (big.answer, big.foil) == (dataset.pairs[1].foil, dataset.pairs[1].answer)  # answer/foil as written


def test_corrupt_by_resample_is_seeded_deterministic_and_never_the_same_word(build):
    text = SMALL.replace("corrupt: {swap: size}", "corrupt: {resample: animal, seed: 7}")
    _, _, first = build(text)
    _, _, again = build(text)
    chosen = [p.corrupted.text.split()[1] for p in first.pairs]
    assert chosen == [p.corrupted.text.split()[1] for p in again.pairs]
    for pair, word in zip(first.pairs, chosen):
        original = dict(pair.values)["animal"]
        assert word != original and word in ("cats", "dogs", "owls", "mice")
        assert pair.corrupted.text == pair.clean.text.replace(original, word)  # both occurrences
    # the same draws as Python's random.Random(seed).choice over the other words, in prompt order
    rng = random.Random(7)
    assert chosen == [rng.choice([w for w in ["cats", "dogs", "owls", "mice"] if w != dict(p.values)["animal"]])
                      for p in first.pairs]
    _, _, other = build(text.replace("seed: 7", "seed: 8"))
    assert [p.corrupted.text.split()[1] for p in other.pairs] != chosen


def test_resample_seed_defaults_to_the_spec_seed(build):
    _, _, with_default = build(SMALL.replace("corrupt: {swap: size}", "corrupt: {resample: animal}"))
    _, _, explicit = build(SMALL.replace("corrupt: {swap: size}", "corrupt: {resample: animal, seed: 42}"))
    assert [p.corrupted.text for p in with_default.pairs] == [p.corrupted.text for p in explicit.pairs]


def test_no_corruption_makes_the_clean_prompt_its_own_partner(build):
    _, _, dataset = build(SMALL.replace("  corrupt: {swap: size}\n", ""))
    assert all(p.corrupted == p.clean for p in dataset.pairs)


# --------------------------------------------------------------------------- sampling and symmetric pairing

def test_random_Random_sample_reproduces_the_seeds_global_sampling():
    for seed, n, k in [(42, 1440, 64), (0, 10, 10), (7, 100, 1)]:
        random.seed(seed)
        expected = random.sample(range(n), k)
        assert random.Random(seed).sample(range(n), k) == expected


def test_symmetric_dedupes_in_the_seeds_order(build):
    from mi_dsl.runtime.pipeline import _sample, symmetric

    _, _, dataset = build()
    sizes = []
    for seed in range(5):
        sampled = _sample(dataset.pairs, 10, seed, executor=None)
        expected = pair_opposites([p.clean.text for p in sampled], [p.corrupted.text for p in sampled],
                                  [(p.answer, p.foil) for p in sampled])
        ours = symmetric(sampled)
        assert ([p.clean.text for p in ours], [(p.answer, p.foil) for p in ours]) == expected
        sizes.append(len(ours))
    assert min(sizes) < 20  # some swaps were another sampled prompt's clean: dropped, as the seed does
    everything = symmetric(dataset.pairs)
    assert [p.clean.text for p in everything] == [p.clean.text for p in dataset.pairs]  # already symmetric


def test_symmetric_swaps_answer_and_foil():
    from mi_dsl.runtime.pipeline import symmetric

    class P:  # a stand-in PromptPair
        def __init__(self, clean, corrupted, answer, foil):
            self.clean, self.corrupted, self.answer, self.foil = clean, corrupted, answer, foil

        def swapped(self):
            return P(self.corrupted, self.clean, self.foil, self.answer)

    class T:
        def __init__(self, text):
            self.text = text

    out = symmetric([P(T("a"), T("b"), 1, 2), P(T("b"), T("a"), 2, 1), P(T("c"), T("d"), 3, 4)])
    assert [(p.clean.text, p.answer, p.foil) for p in out] == [("a", 1, 2), ("b", 2, 1), ("c", 3, 4), ("d", 4, 3)]


def test_sample_larger_than_the_set_keeps_all_and_warns():
    from mi_dsl.runtime.pipeline import _sample

    class Executor:
        warnings = []

        def warn(self, message, where=None):
            self.warnings.append(message)

    executor = Executor()
    assert _sample([1, 2, 3], 5, 0, executor) == [1, 2, 3]
    assert "only 3 are left" in executor.warnings[0]


# --------------------------------------------------------------------------- vocabulary files

VOCAB_FILES_SPEC = """\
version: 1
model: {source: pretrained, name: mi-dsl-tests/no-such-model, prepend_bos: true}
vocabularies:
  animal: {file: vocab/animals.txt}
  size: {file: vocab/sizes.txt, format: pairs}
""" + ANIMAL_PROMPTS


@pytest.fixture
def vocab_tree(tmp_path):
    root = tmp_path / "experiment"
    (root / "vocab").mkdir(parents=True)
    (root / "spec.yaml").write_text(VOCAB_FILES_SPEC)
    (root / "vocab" / "animals.txt").write_text("# animals, one a line\n\ncats\n  dogs  \n# owls are out\nmice\n")
    (root / "vocab" / "sizes.txt").write_text("# word, opposite\nbig, small\ntall\tshort\n\n   # indented comment\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    return root


def test_vocabulary_files_are_read_relative_to_the_spec(vocab_tree, monkeypatch, tiny_tokenizer):
    monkeypatch.chdir(vocab_tree.parent / "elsewhere")
    spec = load_spec(vocab_tree / "spec.yaml", [f"model.tokenizer={tiny_tokenizer}"])
    assert spec.vocabularies["animal"].items == ("cats", "dogs", "mice")
    assert spec.vocabularies["animal"].pairs is None
    assert spec.vocabularies["size"].pairs == (("big", "small"), ("tall", "short"))
    assert spec.vocabularies["size"].items == ("big", "small", "tall", "short")
    dogs = spec.vocabularies["animal"].item_locations[1]
    assert (Path(dogs.file).name, dogs.line, dogs.column) == ("animals.txt", 4, 3)
    dataset = build_dataset(spec, load_tokenizer(spec.model, spec.bos_token))
    assert len(dataset.pairs) == 3 * 4
    assert dataset.pairs[0].corrupted.text == "The cats are small. Are the cats"


def test_a_vocabulary_file_with_only_comments_is_an_error(vocab_tree):
    (vocab_tree / "vocab" / "animals.txt").write_text("# nothing here\n\n")
    with pytest.raises(SchemaError, match="has no items") as info:
        load_spec(vocab_tree / "spec.yaml")
    assert info.value.location.line == 4


def test_a_vocabulary_file_outside_the_tree_needs_allow_path(vocab_tree):
    outside = vocab_tree.parent / "shared_vocab"
    outside.mkdir()
    (outside / "animals.txt").write_text("cats\ndogs\n")
    text = VOCAB_FILES_SPEC.replace("vocab/animals.txt", "../shared_vocab/animals.txt")
    (vocab_tree / "spec.yaml").write_text(text)
    with pytest.raises(FileAccessError, match="outside the spec's directory tree"):
        load_spec(vocab_tree / "spec.yaml")
    spec = load_spec(vocab_tree / "spec.yaml", allowed_roots=[outside])
    assert spec.vocabularies["animal"].items == ("cats", "dogs")


def test_a_symlink_out_of_the_tree_is_still_outside(vocab_tree):
    outside = vocab_tree.parent / "secret.txt"
    outside.write_text("cats\n")
    (vocab_tree / "vocab" / "link.txt").symlink_to(outside)
    (vocab_tree / "spec.yaml").write_text(VOCAB_FILES_SPEC.replace("vocab/animals.txt", "vocab/link.txt"))
    with pytest.raises(FileAccessError, match="outside"):
        load_spec(vocab_tree / "spec.yaml")


# --------------------------------------------------------------------------- meaning errors from the dataset

def test_empty_vocabulary_after_filter_names_the_words(build):
    with pytest.raises(SpecMeaningError, match=r"all 4 items were dropped \(cats, dogs, owls, mice\)"):
        build(SMALL.replace("[cats, dogs, owls, mice]", "[cats, dogs, owls, mice]\n    filter: 'len(item) > 9'"))


def test_unequal_lengths_are_kept_unless_equal_lengths_filters_them(build):
    text = SMALL.replace("[fast, slow]]", "[fast, very slow]]")
    _, _, dataset = build(text)
    assert dataset.token_lengths == [9, 10]
    _, _, filtered = build(text, "prompts.equal_lengths=true")
    assert filtered.token_lengths == [9] and 0 < len(filtered.pairs) < len(dataset.pairs)
    kept = f"kept {len(filtered.pairs)} of {len(dataset.pairs)} prompt pairs (9 tokens)"
    assert kept in filtered.warnings[-1].format()
    only_long = text.replace("[[big, small], [tall, short], [fast, very slow]]", "[[fast, very slow]]")
    assert only_long != text
    with pytest.raises(SpecMeaningError, match="none has"):
        build(only_long, "prompts.equal_lengths=true")


# --------------------------------------------------------------------------- no torch before the runtime

LIGHT_SCRIPT = """
import sys
from mi_dsl.cli import main
from mi_dsl.compile.compiler import compile_plan
from mi_dsl.dataset import build_dataset
from mi_dsl.expr import Scope, compile_expression, parse_heads
from mi_dsl.spec import load_spec
from mi_dsl.dataset.tokenizer import load_tokenizer

spec = load_spec(sys.argv[1], ["model.tokenizer=" + sys.argv[2]])
plan = compile_plan(spec)
dataset = build_dataset(spec, load_tokenizer(spec.model, spec.bos_token))
compile_expression('ntokens(" " + item) == 1', Scope.filter())
parse_heads("top(head_attr, 3)")
assert main(["validate", sys.argv[1], "--set", "model.tokenizer=" + sys.argv[2]]) == 0
assert main(["plan", sys.argv[1], "--json", "--set", "model.tokenizer=" + sys.argv[2]]) == 0
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformer_lens", "transformers", "plotly"))
print("HEAVY", heavy, len(dataset.pairs), file=sys.stderr)
"""


def _light(spec: Path, tokenizer: Path) -> str:
    done = subprocess.run([sys.executable, "-c", LIGHT_SCRIPT, str(spec), str(tokenizer)], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stderr.strip().splitlines()[-1]


def test_spec_to_dataset_imports_no_torch(tmp_path, tiny_tokenizer):
    spec = tmp_path / "small.yaml"
    spec.write_text(SMALL + "analyses:\n  - kind: head_attribution\n    id: head_attr\n")
    assert _light(spec, tiny_tokenizer) == "HEAVY [] 24"


def test_the_pythia_spec_to_dataset_imports_no_torch(pythia_tokenizer):
    assert _light(PYTHIA_SPEC, pythia_tokenizer) == "HEAVY [] 1440"


def test_the_equal_lengths_warning_is_located_and_prints_any_prompt_text():
    """It was a bare string among SpecWarnings, printed by `.format()`: a dropped prompt with a brace in
    its text raised KeyError instead of warning, and the warning had no file:line:col."""
    from types import SimpleNamespace

    from mi_dsl.dataset.build import keep_equal_lengths
    from mi_dsl.errors import Location

    def prompt(n, text):
        return SimpleNamespace(ids=list(range(n)), text=text)

    pairs = [SimpleNamespace(clean=prompt(4, "a b c"), corrupted=prompt(4, "a b d")),
             SimpleNamespace(clean=prompt(4, "a b e"), corrupted=prompt(4, "a b f")),
             SimpleNamespace(clean=prompt(5, "the {odd} one"), corrupted=prompt(5, "the {odd} two"))]
    here = Location(file="s.yaml", line=7, column=3, path="prompts.equal_lengths")
    spec = SimpleNamespace(data={"prompts": {"equal_lengths": True}}, loc=lambda *keys: here)
    dataset = SimpleNamespace(pairs=list(pairs), warnings=[])
    keep_equal_lengths(spec, dataset)
    assert len(dataset.pairs) == 2
    (text,) = [w.format() for w in dataset.warnings]
    assert text.startswith("s.yaml:7:3: warning: equal_lengths: kept 2 of 3") and "'the {odd} one'" in text
