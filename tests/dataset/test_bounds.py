"""Issue 27, finding 5: validate always ends. Bounds a spec cannot lift (mi_dsl/limits.py), each
checked before the work it bounds; only the command line (`--limit NAME=N`) raises them.

Before: `number_tokens('', 0, 1000000000)` reached 6 GB in 23 s, a spec raised its own
max_prompts to 2^63 and a 200^3 product ran for minutes, 90,000 prompts of 400 placeholders ran
for minutes. Now each is a located error, found before the work is done.
"""
from __future__ import annotations

import pytest

from mi_dsl.compile import prepare
from mi_dsl.errors import ExpressionError, SchemaError, SpecMeaningError
from tests.spec.test_hostile_values import SPEC as HOSTILE_SPEC, folder, write  # noqa: F401  (a fixture)

# the small animal task of test_hostile_values, without its analysis (3 animals x 4 sizes = 12 prompts)
SPEC = HOSTILE_SPEC.split("analyses:")[0].replace("{items: [cats, dogs]}", "{items: [cats, dogs, owls]}")


def test_number_tokens_is_bounded_before_it_allocates(folder, monkeypatch):
    from mi_dsl.expr import functions

    made = []
    real = functions._token_set
    monkeypatch.setattr(functions, "_token_set", lambda *a: made.append(len(a[1])) or real(*a))
    text = SPEC.replace("answer: 'first_token(\" \" + size)'", "answer: 'number_tokens(\"\", 0, 1000000000)'")
    with pytest.raises(ExpressionError, match="1,000,000,000 elements, more than the 100,000") as err:
        prepare(write(folder, text))
    assert not made, "no list of numbers was built"
    assert err.value.location.line == 9 and err.value.location.column == 12
    from mi_dsl import limits  # imported where first used: the assertions above run on any version
    with limits.using({"elements": 2_000_000}):  # the command line may raise it
        with pytest.raises(ExpressionError, match="1,000,000,000 elements, more than the 2,000,000"):
            prepare(write(folder, text))


@pytest.mark.parametrize("asked", [10 ** 18, 2 ** 63 - 1, 100_001])
def test_a_spec_cannot_raise_its_own_max_prompts(folder, asked):

    with pytest.raises(SpecMeaningError, match="above the bound of 100,000 prompts, which a spec cannot raise") as err:
        prepare(write(folder, SPEC + f"  max_prompts: {asked}\n"))
    assert err.value.location.path == "prompts.max_prompts" and "--limit prompts=N" in err.value.hint
    from mi_dsl import limits  # imported where first used: the assertions above run on any version
    with limits.using({"prompts": asked}):  # the command line can
        assert len(prepare(write(folder, SPEC + f"  max_prompts: {asked}\n")).dataset.pairs) == 12


def test_a_large_product_is_refused_before_any_prompt_is_built(folder, monkeypatch):
    from mi_dsl.dataset import build

    monkeypatch.setattr(build._PairBuilder, "pair", lambda *a: pytest.fail("a prompt was built"))
    words = ", ".join(f"w{i}" for i in range(200))
    text = (SPEC.replace("animal: {items: [cats, dogs, owls]}",
                         f"animal: {{items: [{words}]}}\n  b: {{items: [{words}]}}\n  c: {{items: [{words}]}}")
            .replace("template: \"The {animal}", "template: \"{b} {c} The {animal}"))
    with pytest.raises(SpecMeaningError, match="would make 32,000,000 prompts .* more than the bound of 100,000"):
        prepare(write(folder, text))


def test_many_placeholders_pass_the_work_bound_quickly_and_say_where(folder):
    """The issue's 90,000 prompts of 400 placeholders: refused after a bounded amount of work."""

    words = ", ".join(f"w{i}" for i in range(150))  # 150 x 4 x 150: 90,000 prompts, under the prompts bound
    template = " ".join(["{animal}"] * 400) + " {size} {b}"
    text = (SPEC.replace("animal: {items: [cats, dogs, owls]}",
                         f"animal: {{items: [{words}]}}\n  b: {{items: [{words}]}}")
            .replace('"The {animal} are {size}. Are the {animal}"', f'"{template}"'))
    from mi_dsl import limits  # imported where first used: the assertions above run on any version
    assert limits.DEFAULT.dataset_work == 25_000_000  # about ten seconds; a tenth of it keeps the test short
    with limits.using({"dataset_work": 2_500_000}), \
            pytest.raises(SpecMeaningError, match="passes the work bound of 2,500,000 units") as err:
        prepare(write(folder, text))
    assert err.value.location.path == "prompts.template" and "--limit dataset_work=N" in err.value.hint


def test_a_prompt_over_the_token_bound_is_refused(folder):

    long = " ".join(["cats"] * 2000)
    text = SPEC.replace('"The {animal} are {size}. Are the {animal}"', f'"{long} {{animal}} are {{size}}"')
    with pytest.raises(SpecMeaningError, match="longer than the bound of 1,024 tokens per prompt") as err:
        prepare(write(folder, text))
    assert err.value.location.path == "prompts.template"
    from mi_dsl import limits  # imported where first used: the assertions above run on any version
    with limits.using({"prompt_tokens": 4096}):
        assert prepare(write(folder, text)).dataset.pairs


def test_a_joined_string_is_bounded_before_it_is_made(folder):
    (folder / "long.txt").write_text("x" * 60_000 + "\n")
    text = SPEC.replace("animal: {items: [cats, dogs, owls]}",
                        "animal: {items: [cats, dogs, owls]}\n  long: {file: long.txt, filter: 'len(item + item) > 0'}")
    with pytest.raises(ExpressionError, match="joining these makes 120,000 elements") as err:
        prepare(write(folder, text))
    assert err.value.location.path == "vocabularies.long.filter"


def test_a_resampled_corruption_over_a_large_pool_is_metered(folder):

    words = ", ".join(f"w{i}" for i in range(3000))
    text = SPEC.replace("animal: {items: [cats, dogs, owls]}", f"animal: {{items: [{words}]}}").replace(
        "corrupt: {swap: size}", "corrupt: {resample: animal, where: 'len(new) >= len(animal)'}")
    from mi_dsl import limits  # imported where first used: the assertions above run on any version
    with limits.using({"dataset_work": 2_000_000}):
        with pytest.raises(SpecMeaningError, match="passes the work bound of 2,000,000"):
            prepare(write(folder, text))


def test_limits_from_the_command_line_are_checked(folder, cli):
    spec = write(folder, SPEC)
    code, _, err = cli("validate", spec, "--limit", "prompt=5")
    assert code == 2 and "unknown limit 'prompt'; did you mean 'prompts'?" in err
    code, _, err = cli("validate", spec, "--limit", "prompts=many")
    assert code == 2 and "--limit prompts expects a whole number >= 1" in err
    code, out, err = cli("validate", spec, "--limit", "prompts=11")  # the spec makes 12
    assert code == 2 and "would make 12 prompts" in err
    assert cli("validate", spec, "--limit", "prompts=12")[0] == 0


def test_the_limits_parse_and_describe():
    from mi_dsl import limits
    assert limits.parse(["prompts=1_000", "nesting=8"]) == limits.Limits(prompts=1000, nesting=8)
    with pytest.raises(SchemaError):
        limits.parse(["prompts"])
    assert "prompts=100,000" in limits.DEFAULT.describe()
