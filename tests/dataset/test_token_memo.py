"""The tokenizer's memo (mi_dsl/dataset/token_memo.py): a later run answers from it without parsing
the file, with the same answers; a changed file, another library version or a damaged memo is
never trusted."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mi_dsl.dataset import token_memo, tokenizer as tokenizer_module
from mi_dsl.models.cache import CACHE_ENV, file_fingerprint
from tests.word_tokenizer import LISTED, word_level_tokenizer

WORDS = ["<bos>", *LISTED.read_text().split()[:60]]
TEXTS = [" ".join(WORDS[i:i + 5]) for i in range(1, 50, 5)]


@pytest.fixture
def memo_cache(tmp_path, monkeypatch):
    """Every tokenizer keeps a memo file, in a cache of this test's own."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(token_memo, "FILE_BYTES", 0)
    tokenizer_module._load_cached.cache_clear()
    yield tmp_path / "cache"
    tokenizer_module._load_cached.cache_clear()


def load(file: Path):
    """A fresh process's load: nothing kept in memory."""
    tokenizer_module._load_cached.cache_clear()
    return tokenizer_module._from_file(file, None, str(file), None)


def answers(tok) -> tuple:
    return ([tok.encode_with_offsets(t) for t in TEXTS], tok.token_strs(range(len(WORDS))), tok.bos_id,
            tok.vocab_size)


def memo_files(cache: Path) -> list:
    return sorted(cache.rglob("*.json"))


def test_a_second_load_answers_from_the_memo_without_parsing(memo_cache, tmp_path):
    file = word_level_tokenizer(WORDS, tmp_path)
    first = load(file)
    assert first.parsed  # no memo yet: parsed at load, so a bad file fails there
    expected = answers(first)
    first.remember()
    assert len(memo_files(memo_cache)) == 1
    second = load(file)
    assert not second.parsed
    assert answers(second) == expected and not second.parsed
    assert second.bos_id == 0 and expected[0][0][0] == [1, 2, 3, 4, 5]  # the answers are the tokenizer's
    # a question the memo lacks parses the file then, and answers as the library does
    unseen = " ".join(reversed(WORDS[1:6]))
    assert second.encode(unseen) == [5, 4, 3, 2, 1] and second.parsed


def test_answers_equal_the_library_s(memo_cache, tmp_path):
    from tokenizers import Tokenizer as RustTokenizer

    file = word_level_tokenizer(WORDS, tmp_path)
    first = load(file)
    answers(first)
    first.remember()
    rust = RustTokenizer.from_file(str(file))
    warm = load(file)
    for text in TEXTS:
        enc = rust.encode(text, add_special_tokens=False)
        assert warm.encode_with_offsets(text) == (list(enc.ids), list(enc.offsets))
    assert warm.token_strs([3, 7]) == [rust.decode([3], skip_special_tokens=False),
                                       rust.decode([7], skip_special_tokens=False)]
    assert not warm.parsed


def test_returned_lists_are_copies(memo_cache, tmp_path):
    tok = load(word_level_tokenizer(WORDS, tmp_path))
    ids = tok.encode(TEXTS[0])
    ids.insert(0, tok.bos_id)  # as a caller prepending BOS might
    assert tok.encode(TEXTS[0]) == ids[1:]


def test_a_changed_file_is_parsed_again(memo_cache, tmp_path):
    file = word_level_tokenizer(WORDS, tmp_path)
    first = load(file)
    answers(first)
    first.remember()
    # the same words in another order: every id changes, the file's size does not
    shuffled = [WORDS[0], *reversed(WORDS[1:])]
    word_level_tokenizer(shuffled, tmp_path)
    os.utime(file, ns=(os.stat(file).st_atime_ns, os.stat(file).st_mtime_ns + 10 ** 9))
    again = load(file)
    assert again.parsed
    assert again.encode(TEXTS[0]) == [shuffled.index(w) for w in TEXTS[0].split()]


def test_another_library_version_does_not_read_the_memo(memo_cache, tmp_path, monkeypatch):
    file = word_level_tokenizer(WORDS, tmp_path)
    first = load(file)
    answers(first)
    first.remember()
    monkeypatch.setattr(token_memo, "_library_version", lambda: "0.0.0-other")
    assert load(file).parsed


@pytest.mark.parametrize("fault", ["value", "truncated", "version"])
def test_a_damaged_memo_is_ignored(memo_cache, tmp_path, fault):
    file = word_level_tokenizer(WORDS, tmp_path)
    first = load(file)
    expected = answers(first)
    first.remember()
    [memo] = memo_files(memo_cache)
    outer = json.loads(memo.read_text())
    if fault == "value":  # a plausible wrong id, the checksum left as it was
        outer["body"] = outer["body"].replace("[1, 2, 3, 4, 5]", "[1, 2, 3, 4, 6]", 1)
        assert outer["body"] != json.loads(memo.read_text())["body"]
        memo.write_text(json.dumps(outer))
    elif fault == "truncated":
        memo.write_text(memo.read_text()[:100])
    else:
        outer["version"] = token_memo.MEMO_VERSION + 1
        memo.write_text(json.dumps(outer))
    again = load(file)
    assert again.parsed and answers(again) == expected
    again.remember()  # the next save replaces the damaged file
    assert load(file).parsed is False


def test_small_tokenizers_keep_no_file(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    file = word_level_tokenizer(WORDS, tmp_path)
    assert file.stat().st_size < token_memo.FILE_BYTES
    tok = load(file)
    answers(tok)
    tok.remember()
    assert not (tmp_path / "cache").exists()
    assert tok.encode(TEXTS[0]) == tok.encode(TEXTS[0]) == [1, 2, 3, 4, 5]


def test_a_big_memo_keeps_only_what_this_process_asked(memo_cache, tmp_path, monkeypatch):
    monkeypatch.setattr(token_memo, "MAX_TEXTS", 3)
    file = word_level_tokenizer(WORDS, tmp_path)
    first = load(file)
    for text in TEXTS[:3]:
        first.encode(text)
    first.remember()
    second = load(file)
    for text in TEXTS[3:5]:
        second.encode(text)
    second.remember()  # 5 texts > 3: only the two this process asked stay
    third = load(file)
    assert sorted(third.memo.encodings) == sorted(TEXTS[3:5])


def test_an_unwritable_memo_path_is_not_an_error(memo_cache, tmp_path):
    file = word_level_tokenizer(WORDS, tmp_path)
    tok = load(file)
    expected = answers(tok)
    memo_cache.parent.mkdir(parents=True, exist_ok=True)
    memo_cache.write_text("")  # the cache root is a file: no folder can be made in it
    tok.remember()
    assert answers(load(file)) == expected
    memo_cache.unlink()


@pytest.mark.slow
def test_the_embedded_gemma_spec_compiles_the_same_from_the_memo():
    """The real 262k-token tokenizer: a cold memo and a warm one give the same dataset, bit for bit,
    and the warm one never parses the 33 MB file."""
    from mi_dsl.compile import prepare

    spec = Path(__file__).resolve().parents[2] / "specs" / "syllogism.yaml"
    tokenizer_module._load_cached.cache_clear()
    file = Path(prepare(spec).tokenizer.file)
    memo = token_memo.TokenMemo.for_file(file, file_fingerprint(file)).path
    assert memo is not None  # 33 MB: over FILE_BYTES
    memo.unlink(missing_ok=True)  # a cold start (the memo is a cache: the run below writes it again)

    def compiled():
        tokenizer_module._load_cached.cache_clear()
        prepared = prepare(spec)
        rows = [(p.clean.ids, p.corrupted.ids, p.clean.spans, p.corrupted.spans, p.answer, p.foil)
                for p in prepared.dataset.pairs]
        parsed = prepared.tokenizer.parsed
        strings = prepared.tokenizer.token_strs(prepared.dataset.pairs[0].clean.ids)  # as a report asks
        prepared.tokenizer.remember()  # as the run does after its report's questions
        return prepared.tokenizer, rows, strings, parsed

    cold, cold_rows, cold_strs, cold_parsed = compiled()
    assert cold_parsed and memo.is_file()
    warm, warm_rows, warm_strs, warm_parsed = compiled()
    assert not warm_parsed and not warm.parsed
    assert warm_rows == cold_rows and warm_strs == cold_strs and warm.bos_id == cold.bos_id
    assert warm.vocab_size == cold.vocab_size == 262_144
    tokenizer_module._load_cached.cache_clear()


def test_a_tokenizer_pickles_parsed_or_not(memo_cache, tmp_path):
    """A Prepared travels to other processes (notebooks, workers): its tokenizer with it."""
    import pickle

    file = word_level_tokenizer(WORDS, tmp_path)
    first = load(file)
    expected = answers(first)
    first.remember()
    warm = load(file)
    assert not warm.parsed
    copy = pickle.loads(pickle.dumps(warm))
    assert answers(copy) == expected and copy.encode(" ".join(reversed(WORDS[1:6]))) == [5, 4, 3, 2, 1]
    assert answers(pickle.loads(pickle.dumps(first))) == expected
