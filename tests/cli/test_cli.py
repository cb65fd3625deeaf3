"""mi-run's commands as a user runs them: validate, plan (--json), --set, --debug, schema, list."""
from __future__ import annotations

import json
import os

import pytest

from tests.conftest import REPO, SPECS

SHIPPED = sorted(SPECS.glob("*.yaml"))

# A small spec for the tiny tokenizer: 3 animals x 4 sizes = 12 prompts of 9 tokens (BOS included).
SMALL = """\
version: 1
name: small
model: {source: pretrained, name: mi-dsl-tests/no-such-model, prepend_bos: true}
vocabularies:
  animal:
    items: [cats, dogs, owls]
  size:
    pairs: [[big, small], [tall, short]]
prompts:
  template: "The {animal} are {size}. Are the {animal}"
  answer: 'first_token(" " + size)'
  foil: 'first_token(" " + opposite(size))'
  corrupt: {swap: size}
pipeline:
  - sample: {n: 5, seed: 1}
"""


@pytest.fixture
def small(tmp_path, tiny_tokenizer):
    """(spec path, the --set naming the tiny tokenizer)."""
    spec = tmp_path / "small.yaml"
    spec.write_text(SMALL)
    return spec, f"model.tokenizer={tiny_tokenizer}"


def plan_json(cli, *args):
    code, out, err = cli("plan", *args, "--json")
    assert code == 0, err
    return json.loads(out)


# --------------------------------------------------------------------------- shipped specs

@pytest.mark.parametrize("spec", SHIPPED, ids=[s.name for s in SHIPPED])
def test_every_shipped_spec_validates(spec, cli):
    code, out, err = cli("validate", spec)
    assert code == 0, err
    assert f"{spec}: valid" in out
    assert "Traceback" not in err


def test_the_pythia_plan_matches_the_seed_notebook(run_mi, pythia_tokenizer):
    """The seed's data setup on the real Pythia tokenizer, through the installed executable."""
    relative = os.path.relpath(pythia_tokenizer, REPO)  # a --set path is relative to the working directory
    code, out, err = run_mi("plan", "specs/syllogism_pythia160m.yaml", "--json",
                            "--set", f"model.tokenizer={relative}", cwd=REPO)
    assert code == 0, err
    plan = json.loads(out)
    sizes = {name: (v["before"], v["after"]) for name, v in plan["vocab"].items()}
    assert sizes == {"categories": (9, 9), "descriptors": (10, 10), "nouns": (30, 16)}
    assert plan["dataset"]["candidates"] == 1440 == 9 * 10 * 16
    assert plan["dataset"]["token_lengths"] == [17]
    by_word = {row["values"]["descriptor"]: (row["answer"], row["foil"]) for row in plan["dataset"]["answer_pairs"]}
    assert by_word["herbivorous"] == (23008, 27771)
    assert by_word["carnivorous"] == (27771, 23008)
    assert by_word["bipedal"] == (15086, 42227)
    assert by_word["quadrupedal"] == (42227, 15086)
    assert all(row["prompts"] == 144 for row in plan["dataset"]["answer_pairs"])
    assert plan["dataset"]["slot_positions"]["descriptor"] == [[4, 5, 6]]  # token indices, as the report writes them
    assert plan["dataset"]["slot_positions"]["noun"][1] == [15]
    assert any("'Pigs'" in w for w in plan["warnings"])
    assert [row["prompts_after"] for row in plan["pipeline"]][1:] == ["<= 64 (the model decides)",
                                                                      "<= 128 (the model decides)"]


def test_plan_as_text(cli, small):
    spec, tokenizer = small
    code, out, err = cli("plan", spec, "--set", tokenizer)
    assert code == 0, err
    assert "12 candidate prompts; token lengths [9]" in out
    assert "clean:     The cats are big. Are the cats" in out
    assert "corrupted: The cats are small. Are the cats" in out


def test_plan_json_names_slot_values_of_each_answer_pair(cli, small):
    spec, tokenizer = small
    plan = plan_json(cli, spec, "--set", tokenizer)
    rows = {r["values"]["size"]: r for r in plan["dataset"]["answer_pairs"]}
    assert set(rows) == {"big", "small", "tall", "short"}
    assert (rows["big"]["answer_token"], rows["big"]["foil_token"], rows["big"]["prompts"]) == ("big", "small", 3)
    assert "animal" not in rows["big"]["values"]  # the animals vary within the group
    assert plan["pipeline"][0]["prompts_after"] == 5


def test_validate_without_a_tokenizer_says_what_it_skipped(cli, small):
    spec, _ = small
    code, out, _ = cli("validate", spec)
    assert code == 0
    assert "tokenizer checks skipped" in out


def test_plan_without_a_tokenizer_is_a_clean_error(cli, small):
    spec, _ = small
    code, out, err = cli("plan", spec)
    assert code == 2 and not out
    assert "not in the local Hugging Face cache" in err and "--set model.tokenizer=PATH" in err


# --------------------------------------------------------------------------- --set

def test_set_overrides_a_scalar_by_dotted_path(cli, small):
    spec, tokenizer = small
    plan = plan_json(cli, spec, "--set", tokenizer, "--set", "name=renamed", "--set", "model.prepend_bos=false")
    assert plan["name"] == "renamed"
    assert plan["model"]["prepend_bos"] is False
    assert plan["dataset"]["token_lengths"] == [8]  # no BOS


def test_set_overrides_list_items_by_index(cli, small):
    spec, tokenizer = small
    plan = plan_json(cli, spec, "--set", tokenizer, "--set", "vocabularies.animal.items.0=mice",
                     "--set", "vocabularies.size.pairs.1.1=slow", "--set", "pipeline.0.sample.n=3")
    assert plan["vocab"]["animal"]["kept"] == ["mice", "dogs", "owls"]
    assert plan["vocab"]["size"]["kept"] == ["big", "small", "tall", "slow"]
    assert plan["pipeline"][0]["prompts_after"] == 3


def test_set_value_is_read_as_yaml_scalar(cli, small):
    spec, tokenizer = small
    code, _, err = cli("plan", spec, "--set", tokenizer, "--set", "prompts.max_prompts=10")
    assert code == 2 and "would make 12 prompts" in err  # 10 is an int, compared as one


@pytest.mark.parametrize("override, words", [
    ("seed", "--set expects KEY=VALUE, got 'seed'"),
    ("a..b=1", "'a..b' is not a dotted path"),
    ("model.source.x=1", "'model.source' is a scalar, not a mapping"),
    ("vocabularies.animal.items.7=x", "no item 7 in that list"),
    ("vocabularies.size.pairs.9.0=x", "'vocabularies.size.pairs.9' is not an item of the list"),
    ("seed=[1, 2]", "--set overrides scalars only; '[1, 2]' is a list"),
    ("seed={a: 1}", "--set overrides scalars only"),
])
def test_set_refuses_a_bad_path_or_a_non_scalar(override, words, cli, small):
    spec, _ = small
    code, out, err = cli("validate", spec, "--set", override)
    assert code == 2 and not out.strip()
    assert err.startswith("--set: ") and words in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("override, words", [
    ("modle.x=1", "unknown key 'modle' in the spec; did you mean 'model'?"),
    ("model.dtype=float64", "unknown value 'float64' for 'dtype'"),
    ("prompts.answer=first_token(size", "closing ')' is missing"),
])
def test_faults_in_set_values_point_at_the_set(override, words, cli, small):
    spec, _ = small
    code, _, err = cli("validate", spec, "--set", override)
    assert code == 2
    assert err.startswith(f"--set {override}: ") and words in err, err


def test_a_set_path_is_relative_to_the_working_directory(run_mi, small, tiny_tokenizer):
    spec, _ = small
    code, out, err = run_mi("plan", spec, "--json", "--set", "model.tokenizer=tokenizer.json",
                            cwd=tiny_tokenizer.parent)
    assert code == 0, err
    assert json.loads(out)["tokenizer"] == str(tiny_tokenizer)


# --------------------------------------------------------------------------- --debug, help, schema, list

def test_no_traceback_without_debug_and_one_with_it(run_mi, small):
    spec, _ = small
    for args in (["plan", spec, "--set", "seed=x"], ["--debug", "plan", spec, "--set", "seed=x"],
                 ["plan", spec, "--set", "seed=x", "--debug"]):
        code, _, err = run_mi(*args)
        assert code != 0
        assert ("Traceback" in err) == ("--debug" in args), err
        assert "'seed' must be an integer, not a string" in err


def test_no_command_prints_help_and_fails(cli):
    code, out, _ = cli()
    assert code == 2 and "mi-run validate SPEC" in out


def test_schema_prints_the_json_schema(cli):
    code, out, _ = cli("schema")
    assert code == 0
    schema = json.loads(out)
    assert schema["properties"]["version"]["const"] == 1


def test_list_names_the_analyses_and_metrics(cli):
    from mi_dsl.core.registry import load_all

    code, out, _ = cli("list")
    assert code == 0
    for kind in load_all():
        assert kind in out
    assert "logit_diff" in out and "first_token" in out


def test_run_options_may_come_before_the_spec():
    """`mi-run --threads N SPEC` and `mi-run --debug SPEC` failed (issue 24): the first word was taken as a command."""
    from mi_dsl.cli.main import parse_arguments

    args = parse_arguments(["--threads", "2", "--debug", "specs/tutorial.yaml"])
    assert (args.command, args.threads, args.debug, args.spec) == ("run", 2, True, "specs/tutorial.yaml")
    args = parse_arguments(["--set", "seed=3", "specs/tutorial.yaml", "--quiet"])
    assert (args.command, args.overrides, args.quiet) == ("run", ["seed=3"], True)
    assert parse_arguments(["--debug", "validate", "specs/tutorial.yaml"]).command == "validate"


def test_version_and_list_one_name(cli, capsys):
    from mi_dsl import __version__

    with pytest.raises(SystemExit) as done:
        cli("--version")
    assert done.value.code == 0 and capsys.readouterr().out == f"mi-run {__version__} (spec language version 1)\n"
    code, out, _ = cli("list", "ablation")
    assert code == 0 and out.startswith("analysis ablation: ")
    assert "  method (one of `zero`, `mean`, `resample`); default \"zero\"" in out
    assert "  positions (string or integer): " in out
    assert "example (specs/" in out and "kind: ablation" in out.split("example")[1]
    code, out, _ = cli("list", "prob_diff")
    assert code == 0 and "linear in the final residual: no" in out
    code, _, err = cli("list", "path_patching")
    assert code == 2 and "unknown analysis, metric or function 'path_patching'" in err


def test_no_seed_jargon_where_users_read(cli):
    """'the seed's ...' meant a notebook the user has never seen (issue 24): user-facing text says
    'the reference notebook' (README introduces it) or names the convention; `seed` is the spec key only."""
    import re

    code, listing, _ = cli("list")
    texts = {"README.md": (REPO / "README.md").read_text(),
             "schema": (REPO / "schemas" / "spec.schema.json").read_text(),
             "reference": (REPO / "docs" / "spec-reference.md").read_text(), "mi-run list": listing}
    for name, text in texts.items():
        assert not re.search(r"\bseed's|\bthe seed\b(?! of)|seed notebook|seed style", text, re.I), name


def test_the_console_script_exits_with_mains_code_and_freezes_only_after_it(monkeypatch):
    """`mi-run` exits with main's code; the collector is frozen only once main has returned (a frozen
    heap skips the interpreter's teardown collections), never inside main, which tests call in-process."""
    import gc
    import sys
    import tomllib

    import mi_dsl.cli  # noqa: F401  (the package re-exports main() under the module's name)
    from mi_dsl.cli import allocator

    calls = []

    def fake_main():
        calls.append(("main", gc.get_freeze_count()))
        return 3
    module = sys.modules["mi_dsl.cli.main"]
    monkeypatch.setattr(module, "main", fake_main)
    # the allocator setting is tested in a process of its own (test_allocator.py), not this one
    monkeypatch.setattr(allocator, allocator.keep_freed_memory.__name__, lambda: calls.append((allocator, 0)))
    assert gc.get_freeze_count() == 0
    try:
        with pytest.raises(SystemExit) as done:
            module.console()
        assert done.value.code == 3 and calls == [(allocator, 0), ("main", 0)] and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
    project = next(REPO.glob("pyproject.*"))  # (named by a glob: each word of a test's strings is a token)
    scripts = tomllib.loads(project.read_text())["project"]["scripts"]
    assert scripts["mi-run"] == "mi_dsl.cli:console"
