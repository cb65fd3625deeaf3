"""Issue 27, findings 1, 2, 5 (FIFO) and 9: a shared spec reads nothing outside its own tree.

One rule (mi_dsl/spec/paths.py) for every path a spec names: relative to the file that wrote
it, links followed, inside that file's tree unless the command line allows it. Each test here
failed before the rule: the base outside the tree was read and its vocabulary file printed,
`/etc/passwd` was opened as a base, a symlinked base was followed, model paths outside the tree
were read, `name: '..'` put the run one folder up, a FIFO blocked validate forever, and a spec
over 2 MB had no line:col.
"""
from __future__ import annotations

import os
import shutil
import textwrap
import threading
from pathlib import Path

import pytest

from mi_dsl.errors import FileAccessError, MiError, SchemaError
from mi_dsl.spec import load_spec
ALLOW_ENV = "MI_DSL_ALLOW_PATH"  # mi_dsl/spec/paths.py: the environment's --allow-path

MODEL = "model: {source: pretrained, name: mi-dsl-tests/no-such-model, prepend_bos: true, tokenizer: tok.json}\n"
BODY = """\
vocabularies:
  animal: {items: [cats, dogs]}
  size: {pairs: [[big, small]]}
prompts:
  template: "The {animal} are {size}. Are the {animal}"
  answer: 'first_token(" " + size)'
  foil: 'first_token(" " + opposite(size))'
  corrupt: {swap: size}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def shared(tmp_path, monkeypatch, tiny_tokenizer):
    """lab/: the researcher's folder (a spec and its tokenizer); outside/: another folder holding a
    secret and a base spec that reads it. Nothing is allowed from the environment here."""
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    lab, outside = tmp_path / "lab", tmp_path / "outside"
    for folder in (lab, outside):
        folder.mkdir()
        shutil.copy(tiny_tokenizer, folder / "tok.json")
    write(outside / "secret.txt", "Secretwords\n")
    write(outside / "base.yaml", "version: 1\n" + MODEL + BODY.replace("{items: [cats, dogs]}", "{file: secret.txt}")
          + "output: {dir: ../elsewhere}\n")
    return tmp_path


def test_a_base_outside_the_tree_is_refused_where_extends_names_it(shared):
    child = write(shared / "lab" / "spec.yaml", "extends: ../outside/base.yaml\nname: mine\n")
    with pytest.raises(FileAccessError) as err:
        load_spec(child)
    assert "outside the spec's directory tree" in err.value.message and "--allow-path" in err.value.hint
    assert (err.value.location.line, err.value.location.column, err.value.location.path) == (1, 10, "extends")


def test_plan_prints_nothing_of_a_file_outside_the_tree(shared, cli):
    """The issue's probe: `mi-run plan` printed `clean: The word is Secretwords`."""
    child = write(shared / "lab" / "spec.yaml", "extends: ../outside/base.yaml\nname: mine\n")
    code, out, err = cli("plan", child)
    assert code == 2 and "Secretwords" not in out + err
    assert f"{child}:1:10: file error: base spec (extends) '../outside/base.yaml' is outside" in err


@pytest.mark.parametrize("target", ["/etc/passwd", "/proc/self/status", "../../../../../../../etc/hostname"])
def test_absolute_and_system_bases_are_refused_before_they_are_opened(shared, target, monkeypatch):
    child = write(shared / "lab" / "spec.yaml", f"extends: {target}\n")
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k))
    with pytest.raises(FileAccessError, match="outside the spec's directory tree"):
        load_spec(child)
    assert not any(p.startswith(("/etc", "/proc")) for p in opened)


def test_a_symlinked_base_is_where_it_leads(shared):
    base_file = shared / "outside" / "base.yaml"
    write(base_file, base_file.read_text().replace("output: {dir: ../elsewhere}\n", ""))
    (shared / "lab" / "base.yaml").symlink_to(base_file)
    child = write(shared / "lab" / "spec.yaml", "extends: base.yaml\n")
    with pytest.raises(FileAccessError, match="outside the spec's directory tree") as err:
        load_spec(child)
    assert err.value.location.path == "extends"


def test_a_base_allowed_from_the_command_line_reads_its_own_tree_and_never_widens_the_child(shared):
    child = write(shared / "lab" / "spec.yaml", "extends: ../outside/base.yaml\nname: mine\n")
    base_file = shared / "outside" / "base.yaml"
    write(base_file, base_file.read_text().replace("output: {dir: ../elsewhere}\n", "output: {dir: runs}\n"))
    spec = load_spec(child, allowed_roots=[base_file])  # exactly that file is allowed
    assert spec.vocabularies["animal"].items == ("Secretwords",)  # the base's own file, in its own tree
    assert spec.output_dir == (shared / "outside" / "runs").resolve()
    # the child may not read the base's folder because the base is allowed
    write(child, "extends: ../outside/base.yaml\nvocabularies:\n  animal: {file: ../outside/secret.txt}\n")
    with pytest.raises(FileAccessError) as err:
        load_spec(child, allowed_roots=[base_file])
    assert err.value.location.file == str(child.resolve()) and err.value.location.line == 3


def test_a_base_output_dir_outside_its_tree_is_refused(shared):
    child = write(shared / "lab" / "spec.yaml", "extends: ../outside/base.yaml\n")
    write(shared / "outside" / "secret.txt", "cats\n")
    with pytest.raises(FileAccessError, match="output directory '../elsewhere' is outside") as err:
        load_spec(child, allowed_roots=[shared / "outside" / "base.yaml"])
    assert err.value.location.file.endswith("base.yaml")


def test_a_base_inside_the_tree_reads_only_its_own_subtree(shared):
    """A base in lab/bases/ names ../words.txt: inside the child's tree but not the base's."""
    write(shared / "lab" / "words.txt", "cats\n")
    write(shared / "lab" / "bases" / "base.yaml", "version: 1\n" + MODEL
          + BODY.replace("{items: [cats, dogs]}", "{file: ../words.txt}"))
    shutil.copy(shared / "lab" / "tok.json", shared / "lab" / "bases" / "tok.json")
    child = write(shared / "lab" / "spec.yaml", "extends: bases/base.yaml\n")
    with pytest.raises(FileAccessError, match="vocabulary file '../words.txt' is outside"):
        load_spec(child)


def test_model_paths_and_tokenizers_outside_the_tree_need_the_command_line(shared):
    spec_file = write(shared / "lab" / "spec.yaml", "version: 1\n" + MODEL.replace("tok.json", "../outside/tok.json")
                      + BODY)
    with pytest.raises(FileAccessError, match="tokenizer '../outside/tok.json' is outside") as err:
        load_spec(spec_file)
    assert err.value.location.path == "model.tokenizer"
    allowed = load_spec(spec_file, allowed_roots=[shared / "outside"])
    assert allowed.model.tokenizer == str(shared / "outside" / "tok.json")
    given = load_spec(spec_file, [f"model.tokenizer={shared / 'outside' / 'tok.json'}"])  # --set: the user's
    assert given.model.tokenizer == str(shared / "outside" / "tok.json")
    (shared / "outside" / "model").mkdir()
    local = write(shared / "lab" / "local.yaml", "version: 1\nmodel: {source: local, path: ../outside/model, "
                  "prepend_bos: true}\n" + BODY)
    with pytest.raises(FileAccessError, match="model path .* is outside") as err:
        load_spec(local)
    assert err.value.location.path == "model.path"


def test_a_model_folder_inside_the_tree_may_not_link_out(shared):
    folder = shared / "lab" / "model"
    folder.mkdir()
    (folder / "config.json").symlink_to(shared / "outside" / "secret.txt")
    spec_file = write(shared / "lab" / "spec.yaml",
                      "version: 1\nmodel: {source: local, path: model, prepend_bos: true}\n" + BODY)
    with pytest.raises(FileAccessError, match="holds 'config.json', a link to .* outside"):
        load_spec(spec_file)


@pytest.mark.parametrize("name", ["..", ".", ".store", "a/b", "x" * 101, ""])
def test_a_run_name_is_one_folder_name(shared, name):
    spec_file = write(shared / "lab" / "spec.yaml", f"version: 1\nname: '{name}'\n" + MODEL + BODY)
    with pytest.raises(SchemaError) as err:
        load_spec(spec_file)
    assert err.value.location.line == 2


def test_a_spec_file_name_that_is_no_folder_name_needs_a_name(shared):
    spec_file = write(shared / "lab" / "...yaml", "version: 1\n" + MODEL + BODY)  # its stem is '..'
    with pytest.raises(SchemaError, match="the run name '..' cannot name a folder") as err:
        load_spec(spec_file)
    assert (err.value.location.line, err.value.location.column) == (1, 1)
    write(spec_file, "version: 1\nname: fine\n" + MODEL + BODY)
    assert load_spec(spec_file).name == "fine"


def test_a_fifo_vocabulary_file_is_refused_without_blocking(shared):
    fifo = shared / "lab" / "words.txt"
    os.mkfifo(fifo)
    spec_file = write(shared / "lab" / "spec.yaml", "version: 1\n" + MODEL + BODY.replace("{items: [cats, dogs]}",
                                                                                     "{file: words.txt}"))
    outcome = {}

    def validate():
        try:
            load_spec(spec_file)
        except MiError as err:
            outcome["error"] = err

    worker = threading.Thread(target=validate, daemon=True)
    worker.start()
    worker.join(timeout=20)
    if worker.is_alive():  # release the blocked reader before failing
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading the FIFO blocked")
    assert isinstance(outcome.get("error"), FileAccessError)
    assert "not a regular file" in outcome["error"].message and outcome["error"].location.line == 4


def test_a_device_is_not_a_vocabulary_file_even_when_allowed(shared):
    spec_file = write(shared / "lab" / "spec.yaml", "version: 1\n" + MODEL + BODY.replace("{items: [cats, dogs]}",
                                                                                     "{file: /dev/zero}"))
    with pytest.raises(FileAccessError, match="not a regular file"):
        load_spec(spec_file, allowed_roots=["/dev/zero"])


def test_a_spec_over_the_size_limit_is_located(shared):
    from mi_dsl.spec.loader import MAX_SPEC_BYTES

    line = "# " + "x" * 98 + "\n"
    big = write(shared / "lab" / "big.yaml", "version: 1\n" + line * (MAX_SPEC_BYTES // len(line) + 5))
    with pytest.raises(FileAccessError, match="larger than 2,000,000 bytes") as err:
        load_spec(big)
    passed_on = (MAX_SPEC_BYTES - len("version: 1\n")) // len(line) + 2  # the line holding byte MAX_SPEC_BYTES
    assert err.value.location.line == passed_on and err.value.location.column is not None
