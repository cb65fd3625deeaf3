"""Issue 27, findings 7 and 9: values that used to pass validate and end in a traceback after the
model loaded, and the smaller findings (a typo hinted as mis-indentation, a silent missing
corruption, a model folder that needs its own code). Each test failed before its fix."""
from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from mi_dsl.compile import prepare
from mi_dsl.errors import SchemaError, SpecMeaningError
from mi_dsl.spec import load_spec

SPEC = """\
version: 1
name: t
model: {source: pretrained, name: mi-dsl-tests/no-such-model, prepend_bos: true, tokenizer: tok.json}
vocabularies:
  animal: {items: [cats, dogs]}
  size: {pairs: [[big, small], [tall, short]]}
prompts:
  template: "The {animal} are {size}. Are the {animal}"
  answer: 'first_token(" " + size)'
  foil: 'first_token(" " + opposite(size))'
  corrupt: {swap: size}
analyses:
  - {kind: head_attribution, top_k: 3}
"""


@pytest.fixture
def folder(tmp_path, tiny_tokenizer):
    shutil.copy(tiny_tokenizer, tmp_path / "tok.json")
    return tmp_path


def write(folder: Path, text: str) -> Path:
    path = folder / "spec.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_an_integer_parameter_refuses_a_float_that_looks_integral(folder):
    """`top_k: 1.0e+308` passed JSON Schema's integer check and failed as a slice index in the run."""
    with pytest.raises(SchemaError, match="'top_k' must be an integer, not a number") as err:
        load_spec(write(folder, SPEC.replace("top_k: 3", "top_k: 1.0e+308")))
    assert (err.value.location.line, err.value.location.column) == (13, 37)


def test_a_seed_beyond_64_bits_is_refused_at_validate_time(folder):
    """A seed of 101 digits overflowed torch.manual_seed after the model loaded."""
    with pytest.raises(SchemaError, match="does not fit in 64 bits") as err:
        load_spec(write(folder, SPEC.replace("name: t\n", "name: t\nseed: " + "9" * 101 + "\n")))
    assert err.value.location.line == 3
    assert load_spec(write(folder, SPEC.replace("name: t\n", f"name: t\nseed: {2 ** 63 - 1}\n"))).seed == 2 ** 63 - 1


def test_a_non_finite_number_is_refused(folder):
    with pytest.raises(SchemaError, match="not a finite number"):
        load_spec(write(folder, SPEC + "run: {memory_gb: .inf}\n"))


def test_a_misspelt_key_is_called_a_typo_not_a_misindentation(folder):
    """`fil:` for `foil:` was hinted as belonging in prompts.slots (which takes any name)."""
    with_slots = SPEC.replace("  answer:", "  slots: {animal: animal, size: size}\n  answer:")
    assert load_spec(write(folder, with_slots)).prompts["slots"]
    with pytest.raises(SchemaError) as err:
        load_spec(write(folder, with_slots.replace("  foil:", "  fil:")))
    assert err.value.message == "unknown key 'fil' in 'prompts'; did you mean 'foil'?"
    assert "indent" not in err.value.format()


def test_prompts_without_a_corruption_warn_when_something_reads_corrupted_prompts(folder):
    text = SPEC.replace("  corrupt: {swap: size}\n", "").replace(
        "  - {kind: head_attribution, top_k: 3}", "  - {kind: activation_patching, target: resid_pre}")
    prepared = prepare(write(folder, text))
    [warning] = [w for w in prepared.dataset.warnings if "corrupt" in w.message]
    assert "every corrupted prompt equals its clean prompt" in warning.message
    assert "activation_patching" in warning.message and warning.location.line == 7
    quiet = prepare(write(folder, SPEC.replace("  corrupt: {swap: size}\n", "")))  # head attribution: clean only
    assert not [w for w in quiet.dataset.warnings if "corrupt" in str(w)]


def test_a_model_folder_that_needs_its_own_code_is_refused_before_loading(folder):
    model = folder / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "model_type": "my_custom", "auto_map": {"AutoModelForCausalLM": "modeling_custom.CustomLM"},
        "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 40}))
    text = SPEC.replace("{source: pretrained, name: mi-dsl-tests/no-such-model,", "{source: local, path: model,")
    with pytest.raises(SpecMeaningError,
                       match="needs its own Python code .*modeling_custom.CustomLM.* never runs") as err:
        prepare(write(folder, text), need_tokenizer=False)
    assert err.value.location.path == "model.path" and err.value.location.line == 3


def test_a_model_config_that_is_not_json_does_not_stop_validate(folder):
    model = folder / "model"
    model.mkdir()
    (model / "config.json").write_text("{not json")
    text = SPEC.replace("{source: pretrained, name: mi-dsl-tests/no-such-model,", "{source: local, path: model,")
    assert prepare(write(folder, text), need_tokenizer=False).plan is not None


def test_a_memory_budget_too_large_to_count_is_refused(folder):
    """Found by the fuzz test: run.memory_gb: 1.0e+308 made the plan's batch size NaN (a traceback)."""
    with pytest.raises(SchemaError, match="greater than the maximum of 1000000") as err:
        load_spec(write(folder, SPEC + "run: {memory_gb: 1.0e+308}\n"))
    assert err.value.location.path == "run.memory_gb"
