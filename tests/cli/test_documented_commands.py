"""Every `mi-run ...` command line in README.md and docs/ parses, and runs where that is cheap.

Issue 24 found documented commands the CLI refused (`mi-run --threads N SPEC`, `--set` on
commands that had none, `mi-run list KIND`). Here each command is taken from the docs as
written: lines of code blocks as they stand (placeholders such as SPEC filled in), inline
mentions (`mi-run plan`, `mi-run --out DIR`) completed with the positional argument they
leave out. Each must parse; the cheap ones (validate, plan, schema, list, --version) run
in this process and must exit 0; run and sweep only parse (each is a model run).
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import List, Tuple

import pytest

from mi_dsl.cli.main import COMMANDS, parse_arguments

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SPEC, SWEEP = "specs/tutorial.yaml", "specs/sweeps/tutorial.yaml"
# placeholder -> a value that exists (whole words only)
PLACEHOLDERS = {"SPEC": SPEC, "SWEEP.yaml": SWEEP, "spec.yaml": SPEC, "pNNN.yaml": SPEC, "N": "1",
                "DIR": "runs-doc-test", "KEY=VALUE": "seed=1", "ADDR": "127.0.0.1:6379",
                "HEAD:6379": "127.0.0.1:6379", "i/n": "0/2", "KIND": "logit_lens", "NAME": "logit_lens"}
VALUE_OPTIONS = {"--set": "seed=1", "--out": "runs-doc-test", "--threads": "1", "--address": "127.0.0.1:6379",
                 "--shard": "0/2", "--backend": "local", "--allow-path": "specs"}


def documented() -> List[Tuple[str, str, bool]]:
    """(where, command, whole): code-block lines are whole commands; inline mentions are fragments."""
    found = []
    for file in DOCS:
        text = file.read_text()
        for line in shell_lines(text):
            for part in line.split("&&"):
                part = part.split(" # ")[0].strip().lstrip("$ ").strip()
                if part.startswith("mi-run"):
                    found.append((f"{file.name}: {line.strip()}", part, True))
        for inline in re.findall(r"`(mi-run[^`]*)`", text):
            found.append((f"{file.name}: `{inline}`", inline, False))
    return found


def shell_lines(text: str) -> List[str]:
    """The lines of the ```bash (or unlabelled) code blocks."""
    lines, language = [], None
    for line in text.splitlines():
        if line.startswith("```"):
            language = None if language is not None else (line[3:].strip() or "text")
            continue
        if language in ("bash", "sh", "console", "text"):
            lines.append(line)
    return lines


def normalised(command: str) -> List[str]:
    command = command.replace("\\|", "|")
    command = re.sub(r"\[([^\]]*)\]", r"\1", command)          # [--json] -> --json
    command = re.sub(r"(\S+)\|\S+", r"\1", command)             # local|ray -> local
    command = command.replace("SPEC...", "SPEC")
    words = [PLACEHOLDERS.get(w, w) for w in shlex.split(command)[1:]]
    return words


def completed(words: List[str]) -> List[str]:
    """A fragment with the values and positional argument it leaves out."""
    out = []
    for i, word in enumerate(words):
        out.append(word)
        if word in VALUE_OPTIONS and (i + 1 == len(words) or words[i + 1].startswith("-")):
            out.append(VALUE_OPTIONS[word])
    command = next((w for w in out if w in COMMANDS), None)
    positional = [w for w in out if w.endswith(".yaml")]
    if command in (None, "run", "validate", "plan") and not positional and "--version" not in out and out != []:
        out.append(SPEC)
    if command == "sweep" and not positional:
        out.append(SWEEP)
    return out


COMMAND_LINES = documented()


def test_the_docs_show_commands():
    assert len(COMMAND_LINES) > 40
    assert any(whole for _, _, whole in COMMAND_LINES)


@pytest.mark.parametrize("where, command, whole", COMMAND_LINES, ids=[w for w, _, _ in COMMAND_LINES])
def test_every_documented_command_parses(where, command, whole):
    words = normalised(command)
    if not whole:
        words = completed(words)
    for word in words:
        if word.endswith(".yaml"):
            assert (ROOT / word).is_file(), f"{where}: {word} does not exist"
    try:
        args = parse_arguments(words)
    except SystemExit as exit_:
        if exit_.code == 0 and "--version" in words:
            return
        pytest.fail(f"{where}: `mi-run {' '.join(words)}` does not parse (exit {exit_.code})")
    assert args.command is not None or not words, where


CHEAP = sorted({tuple(w) for w in (completed(normalised(c)) if not whole else normalised(c)
                                   for _, c, whole in COMMAND_LINES)
                if w and next((x for x in w if x in COMMANDS), None) in ("validate", "plan", "schema", "list")}
               | {("--version",), ("list", "activation_patching"), ("list", "logit_diff")})


@pytest.mark.parametrize("words", CHEAP, ids=[" ".join(w) for w in CHEAP])
def test_the_cheap_documented_commands_run(words, cli, monkeypatch):
    monkeypatch.chdir(ROOT)
    if words == ("--version",):
        with pytest.raises(SystemExit) as done:
            cli(*words)
        assert done.value.code == 0
        return
    code, out, err = cli(*words)
    assert code == 0, err
    assert out.strip()
