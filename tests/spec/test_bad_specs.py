"""The corpus of broken specs (tests/bad_specs/): each is refused with one located message.

Every case states, in bad_specs/EXPECTED.yaml, the LINE:COL its message must start with
and the words it must contain; each must exit with code 2 and print no traceback. The
corpus runs in-process through `mi_dsl.cli.main` (fast), and a handful of cases run again
through the real `mi-run` executable.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

BAD = Path(__file__).resolve().parents[1] / "bad_specs"
EXPECTED = yaml.safe_load((BAD / "EXPECTED.yaml").read_text(encoding="utf-8"))
CORPUS = sorted(p.name for p in BAD.glob("*.yaml") if p.name != "EXPECTED.yaml")


def command_for(name: str, tiny_tokenizer: Path):
    """The mi-run arguments that check case `name`."""
    case = EXPECTED[name]
    if case.get("needs") == "tokenizer":
        return ["plan", BAD / name, "--set", f"model.tokenizer={tiny_tokenizer}"]
    return ["validate", BAD / name]


def check_refusal(name: str, code: int, out: str, err: str) -> None:
    case = EXPECTED[name]
    file = BAD / case.get("file", name)
    assert code == 2, f"{name}: exit code {code}\nstdout: {out}\nstderr: {err}"
    assert "Traceback" not in err + out, err
    assert err.startswith(f"{file}:{case['at']}: "), f"{name}: expected {file}:{case['at']}, got:\n{err}"
    for words in case["says"]:
        assert words in err, f"{name}: {words!r} not in:\n{err}"
    assert not out.strip(), f"{name} printed to stdout: {out}"


def test_the_corpus_and_its_table_agree():
    assert len(CORPUS) >= 67
    assert sorted(EXPECTED) == CORPUS, "every broken spec needs a row in EXPECTED.yaml, and every row a spec"
    for name, case in EXPECTED.items():
        assert set(case) <= {"at", "says", "file", "needs"}, name
        assert case.get("needs") in (None, "tokenizer"), name
        assert case["says"], name


@pytest.mark.parametrize("name", CORPUS)
def test_bad_spec_is_refused_with_a_located_message(name, cli, tiny_tokenizer):
    code, out, err = cli(*command_for(name, tiny_tokenizer))
    check_refusal(name, code, out, err)


# A few cases again through the installed executable: argument parsing, exit status and
# stderr as a user's shell sees them.
SUBPROCESS_CASES = ["yaml_syntax_error.yaml", "anchor_bomb.yaml", "not_utf8.yaml", "unknown_top_key.yaml",
                    "template_unknown_slot.yaml", "too_many_prompts.yaml", "tokenizer_not_json.yaml",
                    "heads_cycle.yaml"]


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_bad_spec_through_the_mi_run_executable(name, run_mi, tiny_tokenizer):
    code, out, err = run_mi(*command_for(name, tiny_tokenizer))
    check_refusal(name, code, out, err)


def test_the_anchor_bomb_is_refused_without_expanding_it(cli, tiny_tokenizer):
    started = time.perf_counter()
    code, _, err = cli(*command_for("anchor_bomb.yaml", tiny_tokenizer))
    assert code == 2 and "billion laughs" in err
    assert time.perf_counter() - started < 2.0


def test_debug_shows_the_traceback_of_a_bad_spec(run_mi):
    code, _, err = run_mi("validate", BAD / "unknown_top_key.yaml", "--debug")
    assert code != 0
    assert "Traceback" in err and "SchemaError" in err and "vocabularys" in err


def test_validate_reports_every_bad_spec_of_a_list_and_fails(cli):
    names = ["wrong_type.yaml", "bad_enum.yaml", "unknown_function.yaml"]
    code, _, err = cli("validate", *(BAD / n for n in names))
    assert code == 2
    lines = [line for line in err.splitlines() if not line.startswith("  hint:")]
    assert [line.split(": ", 1)[0] for line in lines] == [f"{BAD / n}:{EXPECTED[n]['at']}" for n in names]


TOKENIZER_CASES = [n for n in CORPUS if EXPECTED[n].get("needs") == "tokenizer"]


@pytest.mark.parametrize("name", TOKENIZER_CASES)
def test_validate_without_a_tokenizer_skips_only_the_tokenizer_checks(name, cli):
    """These faults show only once prompts are tokenized; offline, `validate` says it skipped them."""
    code, out, err = cli("validate", BAD / name)
    assert code == 0, err
    assert "tokenizer checks skipped" in out and "not in the local Hugging Face cache" in out
