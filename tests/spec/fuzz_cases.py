"""Seeded mutations of the shipped specs for the hostile-input fuzz test (test_fuzz_hostile.py).

Each case is a spec text built from one shipped spec by one to three mutations: a key deleted,
a value replaced by a hostile one (paths out of the tree, links, huge or non-finite numbers,
generators asking for a billion elements, folder names such as '..', deep nesting), a value
typed wrongly, a key renamed, or the text cut or garbled. Deterministic for a seed.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, List, Tuple

import yaml

SECRET = "Secretwords"  # in outside/secret.txt: must never be printed

# Values a hostile or careless spec puts anywhere.
HOSTILE_SCALARS: List[Any] = [
    "../outside/secret.txt", "/etc/passwd", "/proc/self/status", "/dev/zero", "../outside/fifo",
    "link_out/secret.txt", "..", ".", ".store", "x" * 300, "", " ", "{", "}", "{nope}", "\x00",
    "number_tokens('', 0, 1000000000)", "first_tokens('" + "|a" * 3000 + "')", "((((((((((1))))))))))",
    "-" * 150 + "1", "top(nope, 3)", "L99H99", "cuda:7", "../", "~/.ssh/id_rsa", "é\u202e\u0301",
    10 ** 101, -(10 ** 30), 2 ** 63, 1.0e308, float("inf"), float("nan"), -1, 0, 1, 4096, 10 ** 9,
    True, False, None, 3.5,
]
HOSTILE_NODES: List[Any] = [[], {}, [1, [2, [3]]], {"a": {"b": {"c": None}}}, ["x"] * 50]

# Keys whose values name paths or sizes: mutated more often, with values aimed at them.
AIMED = {
    ("extends",): ["../outside/base.yaml", "/etc/passwd", "/proc/self/status", "link_out/base.yaml",
                   "../outside/fifo", "fuzz_self.yaml"],
    ("name",): ["..", ".", ".store", "a/b", "x" * 300, "../escape"],
    ("seed",): [10 ** 101, -5, 1.0e308, 2 ** 63],
    ("output", "dir"): ["../outside", "/tmp", "link_out", "runs/../../outside", "data/countries.csv"],
    ("model", "path"): ["../outside", "/etc", "link_out", "../outside/model"],
    ("model", "tokenizer"): ["../outside/tok.json", "/etc/passwd", "link_out/tok.json", "../outside/fifo"],
    ("model", "device"): ["cuda:7", "tpu", "cuda:99999999999999999999"],
    ("prompts", "max_prompts"): [2 ** 63 - 1, 10 ** 18, 1.0e308],
    ("prompts", "answer"): ["number_tokens('', 0, 1000000000)", "first_token(' ' + nope)", "tokens(' a' * 3)"],
    ("prompts", "template"): [" ".join(["{x}"] * 400), "{" * 50, "no slots here", "x" * 70_000],
    ("run", "memory_gb"): [1e-12, 1e308, 0],
    ("run", "max_cost"): [0, -1, 1e308],
}
ANALYSIS_MUTATIONS: List[dict] = [
    {"kind": "head_detection", "seq_len": 4096, "batch": 1000},
    {"kind": "activation_patching", "target": "z_by_position"},
    {"kind": "head_attribution", "top_k": 1.0e308},
    {"kind": "attention", "heads": "top(nope, 3)"},
    {"kind": "predictions", "index": 10 ** 12},
    {"kind": "circuit", "steps": 10 ** 6},
    {"kind": "nope"},
]


def shipped_specs(root: Path) -> List[Path]:
    return sorted(p for p in (root / "specs").glob("*.yaml") if "pythia160m" not in p.name)


def cases(root: Path, count: int, seed: int = 27) -> List[Tuple[str, str, str]]:
    """(case id, source spec name, YAML text) for `count` mutations."""
    rng = random.Random(seed)
    sources = [(p.name, p.read_text()) for p in shipped_specs(root)]
    out = []
    for i in range(count):
        name, text = sources[i % len(sources)]
        out.append((f"case{i:03d}-{name}", name, mutate(text, rng)))
    return out


def mutate(text: str, rng: random.Random) -> str:
    if rng.random() < 0.12:
        return _garble(text, rng)
    data = yaml.safe_load(text)
    for _ in range(rng.randint(1, 3)):
        rng.choice([_delete, _replace, _aimed, _aimed, _aimed, _vocabulary_file, _retype, _rename, _analysis,
                    _nest])(data, rng)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=10 ** 6)


def _paths(node: Any, prefix=()) -> List[tuple]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, prefix + (index,))
    return found


def _parent(data, path):
    for part in path[:-1]:
        data = data[part]
    return data


def _delete(data, rng):
    path = rng.choice(_paths(data))
    parent = _parent(data, path)
    del parent[path[-1]]


def _replace(data, rng):
    path = rng.choice(_paths(data))
    _parent(data, path)[path[-1]] = rng.choice(HOSTILE_SCALARS + HOSTILE_NODES)


def _aimed(data, rng):
    path = rng.choice(list(AIMED))
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {}) if isinstance(node, dict) else {}
        if not isinstance(node, dict):
            return
    node[path[-1]] = rng.choice(AIMED[path])


def _vocabulary_file(data, rng):
    """One vocabulary read from a hostile file instead (its name is the spec's own, so a read shows)."""
    vocabularies = data.get("vocabularies")
    if isinstance(vocabularies, dict) and vocabularies:
        name = rng.choice(sorted(vocabularies, key=str))
        vocabularies[name] = {"file": rng.choice(["../outside/secret.txt", "link_out/secret.txt", "/dev/zero",
                                                  "../outside/fifo", "/proc/self/environ", "data"])}


def _retype(data, rng):
    path = rng.choice(_paths(data))
    value = _parent(data, path)[path[-1]]
    _parent(data, path)[path[-1]] = [value] if not isinstance(value, list) else {"x": value}


def _rename(data, rng):
    path = rng.choice([p for p in _paths(data) if isinstance(p[-1], str)] or [("version",)])
    parent = _parent(data, path)
    if isinstance(parent, dict) and path[-1] in parent:
        key = path[-1]
        parent[key[:-1] or "x"] = parent.pop(key)


def _analysis(data, rng):
    data["analyses"] = [dict(rng.choice(ANALYSIS_MUTATIONS))] + (data.get("analyses") or [])[:2]


def _nest(data, rng):
    deep: Any = 1
    for _ in range(rng.choice([10, 70, 200])):
        deep = {"a": deep}
    data["description"] = deep


def _garble(text: str, rng: random.Random) -> str:
    cut = rng.randrange(len(text))
    choice = rng.random()
    if choice < 0.4:
        return text[:cut]
    if choice < 0.7:
        return text[:cut] + rng.choice(["\t", ":", "{", "[", "&a", "*a", "!!python/object:os.system", "\x01", "'"]) \
            + text[cut:]
    return text[:cut] + "\n" + ("  " * rng.randint(0, 5)) + "extra: [" + text[cut:]
