"""`extends`: deep merge over a base spec, paths relative to the file that wrote them,
inherited values located in their own file, cycles and missing bases refused."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mi_dsl.errors import FileAccessError, MiError, SpecMeaningError
from mi_dsl.spec import load_spec

BASE = """\
version: 1
seed: 7
model: {source: random, architecture: gpt_neox, size: tiny, tokenizer: tok.json, prepend_bos: true}
vocabularies:
  categories: {file: cats.txt}
  nouns: {items: [Dogs, Cows]}
prompts:
  template: "All {category} are big. {noun} are {category}."
  slots: {category: categories, noun: nouns}
  answer: 'first_token(" " + noun)'
  foil: 'first_token(" " + category)'
analyses:
  - {kind: logit_lens}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def lab(tmp_path):
    """A lab's base spec in lab/, a researcher's child spec in me/: outside the child's tree, so
    every use allows it from the command line (spec/paths.py); test_confinement.py refuses it."""
    write(tmp_path / "lab" / "base.yaml", BASE)
    write(tmp_path / "lab" / "cats.txt", "birds\n# a comment\nfish\n")
    write(tmp_path / "lab" / "tok.json", "{}")
    return tmp_path


def test_child_overrides_merge_and_replace(lab):
    child = write(lab / "me" / "child.yaml", """\
        extends: ../lab/base.yaml
        name: child
        model: {seed: 3}
        vocabularies:
          nouns: {items: [Wolves]}
        analyses:
          - {kind: layer_attribution}
        """)
    spec = load_spec(child, allowed_roots=[lab / "lab" / "base.yaml"])  # a lab's base, allowed by the user
    assert spec.name == "child"
    assert spec.model.seed == 3 and spec.model.architecture == "gpt_neox"      # mappings merge
    assert spec.vocabularies["nouns"].items == ("Wolves",)                      # lists are replaced
    assert [a["kind"] for a in spec.analyses] == ["layer_attribution"]
    assert spec.vocabularies["categories"].items == ("birds", "fish")           # file relative to the base
    assert spec.model.tokenizer == str((lab / "lab" / "tok.json").resolve())
    assert spec.seed == 7
    assert "extends" not in spec.data


def test_inherited_value_is_located_in_its_own_file(lab):
    write(lab / "lab" / "base.yaml", BASE.replace("first_token(\" \" + noun)", "first_tokn(\" \" + noun)"))
    child = write(lab / "me" / "child.yaml", "extends: ../lab/base.yaml\n")
    from mi_dsl.compile import prepare

    with pytest.raises(MiError) as err:
        prepare(str(child), [], [lab / "lab"], need_tokenizer=False)
    loc = err.value.location
    assert loc.file.endswith("base.yaml") and loc.line == 10
    assert "first_tokn" in err.value.message and "first_token" in err.value.format()


def test_child_error_is_located_in_the_child(lab):
    child = write(lab / "me" / "child.yaml", "extends: ../lab/base.yaml\nmodel: {dtype: float64}\n")
    with pytest.raises(MiError) as err:
        load_spec(child, allowed_roots=[lab / "lab"])
    assert err.value.location.file.endswith("child.yaml") and err.value.location.line == 2


def test_cycle_and_missing_base(lab):
    write(lab / "a.yaml", "extends: b.yaml\n")
    write(lab / "b.yaml", "extends: a.yaml\n")
    with pytest.raises(SpecMeaningError, match="cycle: a.yaml -> b.yaml -> a.yaml") as err:
        load_spec(lab / "a.yaml")
    assert err.value.location.line == 1 and err.value.location.column == 10
    write(lab / "self.yaml", "extends: self.yaml\n")
    with pytest.raises(SpecMeaningError, match="cycle"):
        load_spec(lab / "self.yaml")
    write(lab / "orphan.yaml", "version: 1\nextends: nowhere.yaml\n")
    with pytest.raises(FileAccessError, match="nowhere.yaml") as err:
        load_spec(lab / "orphan.yaml")
    assert (err.value.location.line, err.value.location.column) == (2, 10)


def test_set_overrides_apply_after_extends(lab):
    child = write(lab / "me" / "child.yaml", "extends: ../lab/base.yaml\n")
    spec = load_spec(child, overrides=["model.seed=11", "prompts.equal_lengths=false"], allowed_roots=[lab / "lab"])
    assert spec.model.seed == 11 and spec.prompts["equal_lengths"] is False


def test_extends_with_a_null_byte_is_a_located_error(tmp_path):
    """Found by the property test: a NUL in `extends` reached os.path as a raw ValueError."""
    from mi_dsl.errors import SpecMeaningError
    from mi_dsl.spec import load_spec

    child = tmp_path / "child.yaml"
    child.write_text('version: 1\nextends: "\\0"\nmodel: {source: embedded, prepend_bos: true}\n')
    with pytest.raises(SpecMeaningError) as raised:
        load_spec(str(child))
    assert raised.value.location.line == 2
